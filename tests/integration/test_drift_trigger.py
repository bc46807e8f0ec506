"""On a real Prefect server with the project's deployments served: a drift check that errors starts
no retraining; a confirmed drift starts exactly one; a second confirmed drift while it runs
starts none (the deployment's concurrency limit)."""

from __future__ import annotations

import contextlib
import datetime as dt
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
from pipelines.core.dataset import join_labels
from pipelines.core.features import FeatureSpec, build_features
from pipelines.io import model_files
from pipelines.io.prediction_log import PredictionLog
from pipelines.sources import simulator
from tests.conftest import make_repo, run, write_params
from tests.e2e.test_loop import api, flow_runs, wait_for
from tests.integration.conftest import PrefectServer, free_port, stop_group

pytestmark = pytest.mark.integration
SHIFT = "2026-01-23"
PARAMS = {
    "simulate": {
        "cards": 400,
        "days": 30,
        "tx_per_day": 1200,
        "start": "2026-01-01",
        "scenario": "covariate_shift",
        "scenario_start": SHIFT,
    },
    "ingest": {"start": None, "end": None, "window": "60 days"},
    "split": {"test": "6 days"},
    "train": {"lightgbm": {"n_estimators": 40}, "validation": "4 days"},
    "deploy": {"floor": 0.5, "recent": "6 days", "service_url": None},  # no service: the gate alone
    # Every check of the drifted log confirms at once: persistence 1, no cooldown.
    "drift": {
        "window": "30 days",
        "min_rows": 300,
        "min_labelled": 200,
        "persistence": 1,
        "cooldown_hours": 0,
    },
}


def log_the_drifted_days(repo: Path) -> None:
    """What the service would have logged for the days from SHIFT, scored by the champion just now."""
    s = load_settings(repo / "params.yaml")
    spec, c = FeatureSpec.from_settings(s), s.contract
    tx, labels = simulator.generate(s.simulate)
    raw = join_labels(tx, labels, c)
    feats = build_features(raw, spec)
    later = (raw[c.timestamp] >= pd.Timestamp(SHIFT)).to_numpy()
    _, model = model_files.chosen(s.located(repo))  # what the package stage promoted
    part = pd.concat(
        [
            raw.loc[later, [c.id, c.timestamp, c.entity]].reset_index(drop=True),
            feats[later].reset_index(drop=True),
        ],
        axis=1,
    )
    n = len(part)
    part = part.assign(
        probability=model.predict_proba(feats[later]),
        decision="approve",
        model_version="m",
        unknown_categories="",
        batch_id="b",
        scored_at=pd.Timestamp(dt.datetime.now(dt.UTC).replace(tzinfo=None)).as_unit("us"),
    )
    assert n > 1000
    log = PredictionLog(
        str(repo / s.serving.prediction_log),
        timestamp_column=c.timestamp,
        spool_dir=repo / "spool",
        flush_rows=n + 1,
    )
    log.append(part)
    log.close()


@contextlib.contextmanager
def deployments_served(server: PrefectServer, repo: Path) -> Iterator[None]:
    env = {
        **os.environ,
        **server.env,
        "PIPELINES_PARAMS": str(repo / "params.yaml"),
        "BENTOML_HOME": str(repo / ".bentoml"),
        # An S3 endpoint nobody listens on: where the "unreachable log" points.
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
    }
    runner = subprocess.Popen(
        [sys.executable, "-m", "flows.serve", "--no-schedule"],
        cwd=repo,
        env=env,
        stdout=(repo / "flows-serve.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(
            "the deployments",
            lambda: (
                {"drift-check", "retraining"}
                <= {d["name"] for d in api(server, "/deployments/filter")}
            ),
            90,
        )
        yield
    finally:
        stop_group(runner, timeout=60)


def drift_check(server: PrefectServer) -> dict:
    deployment = next(d for d in api(server, "/deployments/filter") if d["name"] == "drift-check")
    created = api(server, f"/deployments/{deployment['id']}/create_flow_run", {})
    return wait_for(
        "the drift check",
        lambda: next(  # type: ignore[return-value]
            (
                r
                for r in flow_runs(server, "drift-check")
                if r["id"] == created["id"]
                and r["state_type"] in ("FAILED", "COMPLETED", "CRASHED")
            ),
            None,
        ),
        240,
    )


def state_types(server: PrefectServer, flow_run: dict) -> list[str]:
    """Every state a flow run went through, in order."""
    resp = server.call("GET", "/flow_run_states/", params={"flow_run_id": flow_run["id"]})
    return [state["type"] for state in sorted(resp.json(), key=lambda st: st["timestamp"])]


def started_by(server: PrefectServer, check: dict) -> list[dict]:
    """The retraining runs the server started for drift-check run `check` (the session's server
    holds other tests' runs too)."""
    return [
        r
        for r in flow_runs(server, "retraining")
        if r["parameters"].get("drift_run") == check["id"]
    ]


def test_only_a_confirmed_drift_starts_a_retraining_and_only_one_at_a_time(
    prefect_server: PrefectServer, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo", PARAMS)
    run(["python", "-m", "pipelines", "simulate", "--until", SHIFT], repo)
    run(["dvc", "repro"], repo)
    run(["python", "-m", "pipelines", "promote", "latest", "--reason", "first model"], repo)
    log_the_drifted_days(repo)
    run(
        ["python", "-m", "pipelines", "simulate"], repo
    )  # the upstream lands the new days and labels
    params = yaml.safe_load((repo / "params.yaml").read_text())
    state = repo / "reports/drift/state.json"
    before = {r["id"] for r in flow_runs(prefect_server, "retraining")}

    with deployments_served(prefect_server, repo):
        # Errors of the check: Failed runs, never a retraining.
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text("{not json")
        broken_state = drift_check(prefect_server)
        assert broken_state["state_type"] == "FAILED"
        assert "state.json is unreadable" in broken_state["state"]["message"]
        state.unlink()
        write_params(
            repo / "params.yaml",
            {
                **params,
                "serving": {
                    **params["serving"],
                    "prediction_log": "s3://unreachable-log/predictions",
                },
            },
        )
        no_log = drift_check(prefect_server)
        assert (
            no_log["state_type"] == "FAILED"
            and "s3://unreachable-log" in no_log["state"]["message"]
        )
        write_params(repo / "params.yaml", params)
        time.sleep(5)  # a trigger would have created its run within this (it takes < 0.1 s)
        assert (
            started_by(prefect_server, broken_state) == []
            and started_by(prefect_server, no_log) == []
        )
        unexpected = [
            r["parameters"]
            for r in flow_runs(prefect_server, "retraining")
            if r["id"] not in before
        ]
        assert not unexpected, unexpected

        # A confirmed drift: one retraining, started by the server.
        confirmed = drift_check(prefect_server)
        assert (
            confirmed["state_type"] == "COMPLETED"
            and confirmed["state"]["name"] == "Drift confirmed"
        )
        first = wait_for(
            "the retraining to run",
            lambda: next(
                (r for r in started_by(prefect_server, confirmed) if r["state_type"] == "RUNNING"),
                None,
            ),
            60,
        )
        assert len(started_by(prefect_server, confirmed)) == 1

        # Drift confirmed again while it runs: the trigger fires, the concurrency limit cancels it.
        again = drift_check(prefect_server)
        assert again["state"]["name"] == "Drift confirmed"
        second = wait_for(
            "the second trigger's run to be dropped",
            lambda: next(
                (r for r in started_by(prefect_server, again) if r["state_type"] == "CANCELLED"),
                None,
            ),
            60,
        )
        assert (
            "RUNNING" not in state_types(prefect_server, second)
            and len(started_by(prefect_server, again)) == 1
        )
        done = wait_for(
            "the retraining to finish",
            lambda: next(
                (
                    r
                    for r in started_by(prefect_server, confirmed)
                    if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")
                ),
                None,
            ),
            420,
        )
        assert done["id"] == first["id"] and done["state_type"] == "COMPLETED", (
            repo / "flows-serve.log"
        ).read_text()[-4000:]
