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
                f"model_files.load({str(served_repo / s.paths.models / 'logistic.pkl')!r}), {{}}))",
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
