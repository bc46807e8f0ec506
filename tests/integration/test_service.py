"""The BentoML service, started for real with `bentoml serve` on a free port."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from pipelines.config import load_settings
from pipelines.core.features import FeatureSpec, build_features
from pipelines.io import model_files
from pipelines.io.prediction_log import read_log
from pipelines.sources import simulator
from tests.conftest import run
from tests.integration.conftest import Service

pytestmark = pytest.mark.integration


def record(i: int, **overrides: object) -> dict:
    base = {
        "transaction_id": f"probe-{i}-{time.monotonic_ns()}",
        "ts": "2026-01-22T10:00:00",
        "card_id": f"probe-card-{i}",
        "amount": 42.5,
        "merchant_category": "grocery",
        "merchant_country": "US",
        "channel": "pos",
    }
    return {**base, **overrides}


def as_records(df: pd.DataFrame) -> list[dict]:
    out = df.copy()
    out["ts"] = out["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return json.loads(out.to_json(orient="records"))


def wait_for_log(url: str, ids: set[str], timeout: float = 30.0) -> pd.DataFrame:
    deadline = time.monotonic() + timeout
    while True:
        log = read_log(url)
        if not log.empty and ids <= set(log["transaction_id"]):
            return log[log["transaction_id"].isin(ids)]
        if time.monotonic() > deadline:
            have = 0 if log.empty else len(ids & set(log["transaction_id"]))
            raise AssertionError(
                f"only {have} of {len(ids)} records reached the prediction log at {url}"
            )
        time.sleep(0.2)


def test_online_features_and_scores_equal_offline(service: Service, served_repo: Path) -> None:
    """Replay the days after the training window in time order; compare with the offline path."""
    s = load_settings(served_repo / "params.yaml")
    spec = FeatureSpec.from_settings(s)
    tx, _ = simulator.generate(s.simulate)
    future = tx[tx["ts"] >= pd.Timestamp(s.ingest.end)].sort_values("ts", kind="stable").head(300)
    answers = []
    for start in range(0, len(future), 10):  # several records per request: they see each other too
        resp = service.score(as_records(future.iloc[start : start + 10]))
        assert resp.status_code == 200, resp.text
        answers += resp.json()
    served = pd.DataFrame(answers).set_index("transaction_id")

    raw = pd.read_parquet(served_repo / s.paths.raw / "transactions.parquet")
    events = pd.concat([raw[list(tx.columns)], future], ignore_index=True)
    offline = (
        build_features(events, spec).iloc[len(raw) :].set_index(future["transaction_id"].to_numpy())
    )
    _, model = model_files.chosen(s.located(served_repo))  # what the package stage saved
    expected = pd.Series(model.predict_proba(offline), index=offline.index)

    logged = wait_for_log(
        str(served_repo / s.serving.prediction_log), set(future["transaction_id"])
    )
    logged = logged.set_index("transaction_id").loc[offline.index]
    for col in spec.numeric:
        np.testing.assert_allclose(
            logged[col].to_numpy(float),
            offline[col].to_numpy(float),
            rtol=0,
            atol=1e-6,
            err_msg=col,
        )
    for col in spec.categorical:
        assert logged[col].astype(str).tolist() == offline[col].astype(str).tolist(), col
    np.testing.assert_allclose(logged["probability"], expected, atol=1e-6)
    np.testing.assert_allclose(served.loc[offline.index, "probability"], expected, atol=1e-6)
    assert served["model_version"].nunique() == 1
    assert served["model_version"].iloc[0].startswith("fraud-model:")
    assert set(served["decision"]) <= {"approve", "review", "decline"}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"records": [', "json"),
        ({"records": [record(1) | {"amount": "lots"}]}, "amount"),
        ({"records": [record(1) | {"amount": -3.0}]}, "amount"),
        ({"records": [{k: v for k, v in record(1).items() if k != "card_id"}]}, "card_id"),
        ({"records": [record(1) | {"ts": "yesterday"}]}, "ts"),
        ({"records": [record(1) | {"merchant_country": 7.5}]}, "merchant_country"),
        ({"records": [record(1) | {"channel": True}]}, "channel"),
        ({"records": [record(1) | {"surprise": 1}]}, "surprise"),
        ({"records": []}, "records"),
        ({"records": [record(i) for i in range(501)]}, "records"),
        ({"records": "all of them"}, "records"),
        ({}, "records"),
    ],
)
def test_bad_input_is_a_4xx_that_names_the_problem(
    service: Service, body: object, named: str
) -> None:
    if isinstance(body, bytes):
        resp = httpx.post(
            f"{service.url}/score", content=body, headers={"content-type": "application/json"}
        )
    else:
        resp = httpx.post(f"{service.url}/score", json=body)
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text)
    assert named in resp.text.lower(), resp.text


@pytest.mark.parametrize(
    "media", ["text/plain", "multipart/form-data", "application/x-www-form-urlencoded"]
)
def test_a_body_declared_as_anything_but_json_is_refused_with_415(
    service: Service, media: str
) -> None:
    body = json.dumps(
        {"records": [record(4)]}
    )  # well-formed JSON: the declaration alone is refused
    resp = httpx.post(f"{service.url}/score", content=body, headers={"content-type": media})
    assert resp.status_code == 415, (resp.status_code, resp.text)
    assert media in resp.json()["error"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_amounts_are_rejected(service: Service, literal: str) -> None:
    body = json.dumps({"records": [record(2)]}).replace("42.5", literal)
    resp = httpx.post(
        f"{service.url}/score", content=body, headers={"content-type": "application/json"}
    )
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text)
    assert "amount" in resp.text


def test_unseen_category_is_scored_flagged_counted_and_logged(
    service: Service, served_repo: Path
) -> None:
    rec = record(3, merchant_category="crypto")
    resp = service.score([rec, record(4)])
    assert resp.status_code == 200, resp.text
    first, second = resp.json()
    assert (
        first["unknown_categories"] == ["merchant_category"] and second["unknown_categories"] == []
    )
    assert 0.0 <= first["probability"] <= 1.0
    metrics = httpx.get(f"{service.url}/metrics").text
    assert re.search(
        r'fraud_unknown_category_total\{column="merchant_category"[^}]*\} [1-9]', metrics
    ), metrics[-3000:]
    s = load_settings(served_repo / "params.yaml")
    logged = wait_for_log(str(served_repo / s.serving.prediction_log), {rec["transaction_id"]})
    assert logged["unknown_categories"].tolist() == ["merchant_category"]


def test_health_and_prometheus_metrics(service: Service) -> None:
    assert httpx.get(f"{service.url}/healthz").status_code == 200
    assert httpx.get(f"{service.url}/readyz").status_code == 200
    assert service.score([record(5)]).status_code == 200
    text = httpx.get(f"{service.url}/metrics").text
    for name in (
        "fraud_model_info",
        "fraud_batch_size",
        "fraud_decisions_total",
        "fraud_prediction_log_lag_seconds",
        "fraud_prediction_log_pending_rows",
    ):
        assert name in text, name
    assert re.search(r'fraud_model_info\{model_version="fraud-model:[^"]+"\} 1', text)


def bentoml_series(url: str) -> dict[tuple[str, str, str], float]:
    """BentoML's request series on /metrics: (sample name, endpoint, status) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    page = httpx.get(f"{url}/metrics").text
    return {
        (s.name, s.labels.get("endpoint", ""), s.labels.get("http_response_code", "")): s.value
        for family in text_string_to_metric_families(page)
        if family.name.startswith("bentoml_service_")
        for s in family.samples
        if not s.name.endswith("_bucket")
    }


def test_every_request_is_counted_once_in_bentomls_series(service: Service) -> None:
    """The service keeps BentoML's request series (serving/instruments.py keeps their labelled
    children): every answered request counts once under its path and status, in the counter
    and the duration histogram, whoever answered it (the fast path, the edge, BentoML)."""
    before = bentoml_series(service.url)
    sent = {("/score", "200"): 3, ("/score", "400"): 2, ("/score", "415"): 1, ("/nope", "404"): 2}
    with httpx.Client(base_url=service.url) as client:
        for i in range(3):
            assert client.post("/score", json={"records": [record(900 + i)]}).status_code == 200
        for body in ({"records": []}, {"records": [record(903, amount="lots")]}):
            assert client.post("/score", json=body).status_code == 400
        refused = client.post("/score", content="{}", headers={"content-type": "text/plain"})
        assert refused.status_code == 415
        for _ in range(2):
            assert client.get("/nope").status_code == 404
    after = bentoml_series(service.url)

    def added(sample: str, endpoint: str, status: str) -> float:
        key = (sample, endpoint, status)
        return after.get(key, 0.0) - before.get(key, 0.0)

    for (endpoint, status), n in sent.items():
        assert added("bentoml_service_request_total", endpoint, status) == n, (endpoint, status)
        assert added("bentoml_service_request_duration_seconds_count", endpoint, status) == n
        assert added("bentoml_service_request_duration_seconds_sum", endpoint, status) > 0
    assert after[("bentoml_service_request_in_progress", "/score", "")] == 0
    assert after[("bentoml_service_last_request_timestamp_seconds", "", "")] > time.time() - 60


def test_the_service_accepts_exactly_what_its_openapi_document_says(
    service: Service, tmp_path: Path
) -> None:
    """Schemathesis with every check: positive and negative data, response schemas, status codes,
    content types; zero failures means the document and the service agree both ways."""
    res = run(
        [
            "schemathesis",
            "run",
            f"{service.url}/docs.json",
            "--checks",
            "all",
            "--mode",
            "all",
            "--max-examples",
            "80",
            "--include-path",
            "/score",
            "--seed",
            "1",
            "--generation-deterministic",
        ],
        tmp_path,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-12000:] + res.stderr[-2000:]


def post(service: Service, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{service.url}/score",
        content=body,
        headers={"content-type": "application/json", **headers},
        timeout=30,
    )


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("amount", True, "records[0].amount: Value error, must be a JSON number"),
        ("amount", "42.5", "records[0].amount: Value error, must be a JSON number"),
        ("amount", 1e308, "records[0].amount: Input should be less than or equal to 100000"),
        ("ts", "2026-02-30T10:00:00", "records[0].ts: Value error, must be an ISO 8601 date-time"),
        ("ts", 1767225600, "records[0].ts: Value error, must be an ISO 8601 date-time"),
    ],
)
def test_values_the_contract_forbids_are_refused_by_name(
    service: Service, field: str, value: object, named: str
) -> None:
    resp = post(service, json.dumps({"records": [record(5) | {field: value}]}).encode())
    assert resp.status_code == 400 and resp.json()["error"].startswith(named), resp.text


def test_a_refused_extreme_amount_never_reaches_the_cards_history(service: Service) -> None:
    card = f"poison-{time.monotonic_ns()}"
    assert (
        post(
            service, json.dumps({"records": [record(6, card_id=card, amount=1e308)]}).encode()
        ).status_code
        == 400
    )
    first = service.score([record(7, card_id=card, amount=10.0)])
    assert first.status_code == 200
    later = service.score([record(8, card_id=card, amount=30.0, ts="2026-01-22T10:05:00")])
    assert later.status_code == 200  # the mean it saw is 10, not 1e308 (checked in the log below)
    s = load_settings(Path(service.log).parent / "params.yaml")
    logged = wait_for_log(
        str(Path(service.log).parent / s.serving.prediction_log),
        {later.json()[0]["transaction_id"]},
    )
    assert logged["hist_amount_mean"].tolist() == [10.0] and logged["hist_n_prior"].tolist() == [
        1.0
    ]


def test_a_key_given_twice_is_refused_not_silently_overwritten(service: Service) -> None:
    body = json.dumps({"records": [record(9)]}).replace(
        '"amount": 42.5', '"amount": 1, "amount": 9999'
    )
    resp = post(service, body.encode())
    assert resp.status_code == 400 and resp.json() == {
        "error": "the key 'amount' appears twice in one JSON object"
    }


def test_an_oversize_body_is_refused_before_it_is_read(service: Service) -> None:
    s = load_settings(Path(service.log).parent / "params.yaml")
    limit = s.serving.max_body_bytes
    huge = (
        b'{"records": [' + b",".join([json.dumps(record(i)).encode() for i in range(6000)]) + b"]}"
    )
    assert len(huge) > limit
    declared = post(service, huge)
    assert declared.status_code == 413 and "serving.max_body_bytes" in declared.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: cut while reading
        for i in range(0, len(huge), 65536):
            yield huge[i : i + 65536]

    streamed = httpx.post(
        f"{service.url}/score", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413, streamed.text
    assert service.score([record(10)]).status_code == 200  # the service stays in service
