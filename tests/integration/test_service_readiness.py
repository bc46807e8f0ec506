"""A real `bentoml serve` that must not score without a gated champion and a seeded store, that
follows the champion recorded in the model store's remote across replicas, and whose API page
loads nothing from outside."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from pipelines.config import load_settings
from pipelines.io.prediction_log import read_log
from tests.conftest import eventually, run
from tests.integration.conftest import Service, start_service
from tests.integration.test_service import record

pytestmark = pytest.mark.integration


def overrides(**serving: object) -> dict[str, str]:
    return {"PIPELINES_OVERRIDES": json.dumps({"serving": serving})}


def store_without_champion(served_repo: Path, home: Path) -> Path:
    """A copy of the served repo's model store: every version, no champion pointer."""
    shutil.copytree(served_repo / ".bentoml", home)
    (home / "registry" / "champion.json").unlink()
    return home


def isolated(served_repo: Path, tmp_path: Path, params: dict) -> dict[str, str]:
    """The environment of a service of the served repo's champion with `params` over its own:
    its own copies of the model store and the seeded online store, its own prediction log."""
    shutil.copytree(served_repo / ".bentoml", tmp_path / "bentoml")
    shutil.copytree(served_repo / "data" / "online", tmp_path / "online", symlinks=True)
    store = tmp_path / "online" / "features.sqlite"
    serving = {
        "feature_store": str(store),
        "prediction_log": str(tmp_path / "predictions"),
        "spool_dir": str(tmp_path / "spool"),
    }
    merged = {**params, "serving": {**serving, **params.get("serving", {})}}
    return {"BENTOML_HOME": str(tmp_path / "bentoml"), "PIPELINES_OVERRIDES": json.dumps(merged)}


def test_no_champion_or_unseeded_store_is_not_ready_says_why_and_scores_nothing(
    served_repo: Path, tmp_path: Path
) -> None:
    home = store_without_champion(served_repo, tmp_path / "bentoml")
    log_dir, store = tmp_path / "predictions", tmp_path / "online" / "features.sqlite"
    env = {
        "BENTOML_HOME": str(home),
        **overrides(
            prediction_log=str(log_dir), feature_store=str(store), spool_dir=str(tmp_path / "spool")
        ),
    }
    service = start_service(served_repo, env=env, ready=False)
    try:
        resp = httpx.get(f"{service.url}/readyz")
        assert resp.status_code == 503
        reasons = resp.json()["reasons"]
        assert len(reasons) == 2 and reasons[0].startswith("no champion loaded from " + str(home))
        assert "was never seeded" in reasons[1] and "python -m pipelines materialize" in reasons[1]
        scored = service.score([record(1)])
        assert scored.status_code == 503 and scored.headers["retry-after"] == "5"
        assert scored.json()["error"].startswith("the service is not ready: no champion loaded")
        log = service.log.read_text()
        assert "not ready: no champion loaded" in log and "Traceback" not in log

        # A promotion reaches it without a restart; the unseeded store still holds it back.
        promoted = run(
            ["python", "-m", "pipelines", "promote", "latest", "--reason", "test: first champion"],
            served_repo,
            env=env,
        ).stdout
        tag = promoted.split()[1]
        eventually(
            lambda: len(httpx.get(f"{service.url}/readyz").json().get("reasons", [])) == 1, 30
        )
        assert "never seeded" in httpx.get(f"{service.url}/readyz").json()["reasons"][0]

        run(["python", "-m", "pipelines", "materialize"], served_repo, env=env)
        eventually(lambda: httpx.get(f"{service.url}/readyz").status_code == 200, 30)
        accepted = record(2)
        resp = service.score([accepted])
        assert resp.status_code == 200 and resp.json()[0]["model_version"] == tag
    finally:
        service.stop()
    logged = read_log(str(log_dir))
    assert logged["transaction_id"].tolist() == [
        accepted["transaction_id"]
    ]  # nothing scored before


def test_replicas_follow_the_champion_in_the_model_store_remote(
    served_repo: Path, tmp_path: Path
) -> None:
    s = load_settings(served_repo / "params.yaml")
    remote = tmp_path / "model-store"
    where = {"BENTOML_HOME": str(served_repo / ".bentoml"), "MODEL_REMOTE": str(remote)}
    run(["python", "-m", "pipelines", "registry", "push"], served_repo, env=where)
    champion = json.loads((remote / "registry" / "champion.json").read_text())["tag"]
    # Two replicas with empty model stores of their own: each fetches the champion from the remote.
    replicas: list[Service] = []
    try:
        for i in range(2):
            env = {
                "BENTOML_HOME": str(tmp_path / f"replica-{i}"),
                "MODEL_REMOTE": str(remote),
                **overrides(champion_source="remote"),
            }
            replicas.append(start_service(served_repo, env=env))
        assert {
            r.score([record(10 + i)]).json()[0]["model_version"] for i, r in enumerate(replicas)
        } == {champion}

        # One promotion, made where training ran and published to the remote: both follow it.
        saved = run(
            [
                "python",
                "-c",
                "from pipelines.io import model_files, registry; print(registry.save("
                f"model_files.load({str(served_repo / s.paths.models / 'logistic.zip')!r}), {{}}))",
            ],
            served_repo,
            env=where,
        ).stdout.strip()
        run(
            ["python", "-m", "pipelines", "promote", saved, "--reason", "test: replicas"],
            served_repo,
            env=where,
        )
        for replica in replicas:
            eventually(
                lambda r=replica: r.score([record(99)]).json()[0]["model_version"] == saved, 60
            )
    finally:
        for replica in replicas:
            replica.stop()
        run(
            ["python", "-m", "pipelines", "promote", champion, "--reason", "test: restore"],
            served_repo,
            env=where,
        )


def test_the_api_page_loads_nothing_from_outside_and_its_example_scores(service: Service) -> None:
    page = httpx.get(f"{service.url}/").text
    assert "googletagmanager" not in page and "validatorUrl: null" in page
    assert "://" not in page.replace("http-equiv", "")  # every asset is the service's own
    spec = httpx.get(f"{service.url}/docs.json").json()
    assert spec["info"]["title"] == "Card-fraud scoring" and spec["info"]["version"] not in (
        "",
        "None",
    )
    assert "BentoML" not in json.dumps(spec["info"])
    example = spec["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"][
        "example"
    ]
    resp = httpx.post(f"{service.url}/score", json=example)
    assert (
        resp.status_code == 200
        and resp.json()[0]["transaction_id"] == example["records"][0]["transaction_id"]
    )


BAD_BODIES = [
    b'{"records": [',
    json.dumps({"records": [record(1) | {"amount": "lots"}]}).encode(),
    json.dumps({"records": [record(1) | {"surprise": 1}]}).encode(),
    json.dumps({"records": []}).encode(),
]


@pytest.mark.parametrize("batching", ["adaptive", "bentoml"])
def test_a_client_mistake_is_a_400_and_not_a_server_error_in_the_log(
    served_repo: Path, tmp_path: Path, batching: str
) -> None:
    """A client's mistake is answered 400 and logged as nothing worse than a warning: ERROR
    lines and tracebacks are for the server's own failures, which they would bury. BentoML's
    endpoint logs a refused body as an ERROR with a traceback, so in its batching mode too the
    body is checked before it reaches BentoML; a valid one is still scored there."""
    env = isolated(served_repo, tmp_path, {"serving": {"batching": batching}})
    svc = start_service(served_repo, env=env)
    try:
        before = svc.log.stat().st_size
        for body in BAD_BODIES:
            resp = httpx.post(
                f"{svc.url}/score", content=body, headers={"content-type": "application/json"}
            )
            assert resp.status_code == 400, (resp.status_code, resp.text)
        assert svc.score([record(2)]).status_code == 200
    finally:
        svc.stop()
    logged = svc.log.read_bytes()[before:].decode(errors="replace")
    assert "Traceback" not in logged and " ERROR " not in logged and "ERROR:" not in logged, logged


def test_a_champion_needing_features_the_service_does_not_compute_is_not_loaded(
    served_repo: Path, tmp_path: Path
) -> None:
    """Settings that drop a feature the champion was trained on (here the request features)
    leave the service not ready, saying why, instead of failing every request."""
    env = isolated(served_repo, tmp_path, {"features": {"request": []}})
    svc = start_service(served_repo, env=env, ready=False)
    try:
        ready = httpx.get(f"{svc.url}/readyz")
        assert ready.status_code == 503 and "no champion loaded" in ready.text
        assert svc.score([record(3)]).status_code == 503
    finally:
        svc.stop()
    assert "needs features this service does not compute: ['day_of_week', 'hour']" in (
        svc.log.read_text()
    )


def test_a_field_the_gate_lets_have_gaps_may_be_null_or_left_out(
    served_repo: Path, tmp_path: Path
) -> None:
    env = isolated(served_repo, tmp_path, {"validate": {"null_shares": {"channel": 0.1}}})
    svc = start_service(served_repo, env=env)
    try:
        left_out = {k: v for k, v in record(4).items() if k != "channel"}
        resp = svc.score([left_out, record(5, channel=None), record(6)])
        assert resp.status_code == 200, resp.text
        assert [a["unknown_categories"] for a in resp.json()] == [[], [], []]
        refused = svc.score([record(7, merchant_country=None)])
        assert refused.status_code == 400 and "merchant_country" in refused.text
    finally:
        svc.stop()
