"""The closed loop on real servers: drift in the traffic → the drift check confirms it (its run
Completed as "Drift confirmed", its event emitted) → the Prefect server starts retraining on that
event (the test never calls it) → a new champion → the running service serves it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipelines.config import load_settings
from pipelines.io import registry
from pipelines.sources import simulator
from tests.conftest import make_repo, run, train_for_serving, write_params
from tests.integration.conftest import PrefectServer, Service, start_service
from tests.integration.test_service import as_records

pytestmark = pytest.mark.e2e
SHIFT = "2026-01-29"  # the end of the first training window, and where the scenario starts

LOOP_PARAMS = {
    "simulate": {
        "cards": 400,
        "days": 40,
        "tx_per_day": 1200,
        "start": "2026-01-01",
        "scenario": "concept_shift",
        "scenario_start": "2026-01-29",
    },
    # Rolling: the window ends at the newest data in the source, so new days move it.
    "ingest": {"start": None, "end": None, "window": "60 days"},
    "split": {"test": "6 days"},
    "train": {"lightgbm": {"n_estimators": 80}, "validation": "4 days"},
    "serving": {"log_flush_seconds": 0.5, "reload_seconds": 0.5},
    "deploy": {"floor": 0.6, "recent": "6 days", "rollout_timeout_seconds": 60},
    # A small world: the model's normal ROC-AUC is ~0.85 here, so quality drift is judged at 0.8.
    "drift": {
        "window": "1 hour",
        "min_rows": 300,
        "min_labelled": 200,
        "persistence": 1,
        "cooldown_hours": 0,
        "min_quality": 0.8,
    },
}


def api(server: PrefectServer, path: str, body: dict | None = None) -> list[dict] | dict:
    return server.call("POST", path, json=body or {}).json()


def flow_runs(server: PrefectServer, flow_name: str) -> list[dict]:
    return api(
        server,
        "/flow_runs/filter",
        {
            "flows": {"name": {"any_": [flow_name]}},  # type: ignore[return-value]
            "sort": "EXPECTED_START_TIME_DESC",
        },
    )


def wait_for(what: str, check, timeout: float) -> object:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextlib.contextmanager
def running_loop(
    prefect_server: PrefectServer, repo: Path, trained: bool = False
) -> Iterator[Service]:
    """A trained, promoted repo with its service and every deployment served; unless `trained`
    (the caller did it), the simulated source holds the days before SHIFT (the upstream lands
    the rest later)."""
    if not trained:
        train_for_serving(repo, reason="first model", simulate=["--until", SHIFT])
    service = start_service(repo)
    runner = None
    try:
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["deploy"]["service_url"] = service.url
        write_params(repo / "params.yaml", params)
        env = {
            **os.environ,
            **prefect_server.env,
            "PIPELINES_PARAMS": str(repo / "params.yaml"),
            "BENTOML_HOME": str(repo / ".bentoml"),
        }
        runner = subprocess.Popen(
            [sys.executable, "-m", "flows.serve", "--no-schedule"],
            cwd=repo,
            env=env,
            stdout=(repo / "flows-serve.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(
            "the deployments",
            lambda: (
                {"training", "deploy", "drift-check", "retraining"}
                <= {d["name"] for d in api(prefect_server, "/deployments/filter")}
            ),
            60,
        )
        yield service
    finally:
        if runner is not None:
            runner.terminate()
            runner.wait(timeout=60)
        service.stop()


def replay_after_window(service: Service, repo: Path) -> None:
    """The days after the training window, in time order, through the service; then the upstream
    lands them (and the labels that have arrived) in the source."""
    s = load_settings(repo / "params.yaml")
    tx, _ = simulator.generate(s.simulate)
    later = tx[tx["ts"] >= pd.Timestamp(SHIFT)].sort_values("ts", kind="stable")
    for start in range(0, len(later), 250):
        assert service.score(as_records(later.iloc[start : start + 250])).status_code == 200
    run(["python", "-m", "pipelines", "simulate"], repo)
    time.sleep(2 * s.serving.log_flush_seconds)


def run_drift_check(prefect_server: PrefectServer) -> dict:
    deployment = next(
        d for d in api(prefect_server, "/deployments/filter") if d["name"] == "drift-check"
    )
    created = api(prefect_server, f"/deployments/{deployment['id']}/create_flow_run", {})
    return wait_for(
        "the drift check",
        lambda: next(  # type: ignore[return-value]
            (
                r
                for r in flow_runs(prefect_server, "drift-check")
                if r["id"] == created["id"] and r["state_type"] in ("FAILED", "COMPLETED")
            ),
            None,
        ),
        180,
    )


def retrained(prefect_server: PrefectServer, repo: Path, drift_run: str) -> dict:
    """The retraining run the drift check `drift_run` started, once it has ended (the server is
    shared: other tests' runs are not this one); it must have completed."""
    done: dict = wait_for(  # type: ignore[assignment]
        "retraining to finish",
        lambda: next(
            (
                r
                for r in flow_runs(prefect_server, "retraining")
                if r["parameters"].get("drift_run") == drift_run
                and r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")
            ),
            None,
        ),
        420,
    )
    assert done["state_type"] == "COMPLETED", (
        done["state"],
        (repo / "flows-serve.log").read_text()[-4000:],
    )
    return done


def test_drift_triggers_retraining_and_the_new_champion_serves(
    prefect_server: PrefectServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "repo", LOOP_PARAMS)
    monkeypatch.setenv("BENTOML_HOME", str(repo / ".bentoml"))
    with running_loop(prefect_server, repo) as service:
        first = registry.champion_tag()
        replay_after_window(service, repo)
        check = run_drift_check(prefect_server)
        assert check["state_type"] == "COMPLETED" and check["state"]["name"] == "Drift confirmed", (
            check["state"]
        )
        assert "drift confirmed" in (check["state"]["message"] or "").lower()

        retrain = wait_for(
            "the server to start retraining",
            lambda: next(iter(flow_runs(prefect_server, "retraining")), None),
            60,
        )
        assert retrain["parameters"]["reason"].startswith(
            "drift confirmed: drift confirmed in 1 consecutive"
        )
        assert retrain["parameters"]["drift_run"] == check["id"]
        retrained(prefect_server, repo, check["id"])

        new = registry.champion_tag()
        assert new and new != first
        resp = service.score(
            [
                {
                    "transaction_id": "after-retrain",
                    "ts": "2026-02-10T12:00:00",
                    "card_id": "c000001",
                    "amount": 12.0,
                    "merchant_category": "grocery",
                    "merchant_country": "US",
                    "channel": "pos",
                }
            ]
        )
        assert resp.status_code == 200 and resp.json()[0]["model_version"] == new
        lineage = [h for h in registry.history() if h.get("event") == "retraining"]
        assert lineage and lineage[-1]["promoted"] and lineage[-1]["window"]["end"] == "2026-02-10"
        assert len(flow_runs(prefect_server, "retraining")) == 1
        s = load_settings(repo / "params.yaml")
        summaries = [
            json.loads(p.read_text()) for p in (repo / s.drift.reports).glob("*/summary.json")
        ]
        assert any(x["confirmed"] for x in summaries)


def test_no_drift_no_retraining(
    prefect_server: PrefectServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The false-alarm side: the same loop on drift-free traffic never retrains."""
    params = {
        **LOOP_PARAMS,
        "simulate": {**LOOP_PARAMS["simulate"], "scenario": "none", "seed": 21},
    }
    repo = make_repo(tmp_path / "repo", params)
    monkeypatch.setenv("BENTOML_HOME", str(repo / ".bentoml"))
    before = len(flow_runs(prefect_server, "retraining"))
    with running_loop(prefect_server, repo) as service:
        first = registry.champion_tag()
        replay_after_window(service, repo)
        check = run_drift_check(prefect_server)
        assert check["state_type"] == "COMPLETED" and check["state"]["name"] == "Completed", check[
            "state"
        ]
        time.sleep(5)  # an automation would have created its run within this (it takes < 0.1 s)
        assert len(flow_runs(prefect_server, "retraining")) == before
        assert registry.champion_tag() == first
