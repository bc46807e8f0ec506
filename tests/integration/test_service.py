"""The BentoML service, started for real with `bentoml serve` on a free port."""

from __future__ import annotations

import json
import re
import time
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
    model = model_files.load(str(served_repo / s.paths.models / "lightgbm.pkl"))
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
        ({"records": [record(1) | {"merchant_country": 7}]}, "merchant_country"),
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


def test_openapi_fuzz_finds_no_server_error(service: Service, tmp_path: Path) -> None:
    res = run(
        [
            "schemathesis",
            "run",
            f"{service.url}/docs.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "60",
            "--include-path",
            "/score",
            "--seed",
            "1",
        ],
        tmp_path,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
