"""retraining: move the training window to the newest data, train, gate and deploy.

Started by the Prefect server when a drift-check run fails (see flows/serve.py); at most one
runs at a time (the deployment's concurrency limit drops a second trigger). Its lineage -
why it ran, which drift report, which window - goes into the registry history.
"""

from __future__ import annotations

import datetime as dt

from prefect import flow, task

from flows.common import repo_root, run_from_command_line, settings
from flows.deploy import deploy
from flows.training import training
from pipelines import monitoring
from pipelines.io import registry, storage
from pipelines.io.params_file import set_ingest_window


@task
def move_window() -> dict:
    s = settings()
    days = storage.list_partitions(storage.join(s.paths.source, "transactions"))
    if not days:
        raise FileNotFoundError(f"no transaction partitions under {s.paths.source}/transactions")
    end = max(days) + dt.timedelta(days=1)
    # Never before the oldest data: empty days would (rightly) fail the gate's volume check.
    start = max(end - dt.timedelta(days=s.retrain.window_days), min(days))
    set_ingest_window(repo_root() / "params.yaml", start, end)
    return {"start": start.isoformat(), "end": end.isoformat(),
            "previous": {"start": s.ingest.start.isoformat(), "end": s.ingest.end.isoformat()}}


@flow(name="retraining", log_prints=True)
def retraining(reason: str = "manual", drift_run: str | None = None) -> dict:
    window = move_window()
    trained = training()
    deployed = deploy(challenger=trained["package"]["model_tag"])
    s = settings()
    monitoring.record_retrain(s)  # starts the drift check's cooldown
    lineage = {"event": "retraining", "reason": reason, "drift_run": drift_run, "window": window,
               "drift_reports": s.drift.reports, "challenger": deployed["challenger"],
               "promoted": deployed["decision"]["promote"], "gate": deployed["decision"]["reason"]}
    registry.record_decision(lineage)
    return lineage


if __name__ == "__main__":
    run_from_command_line(retraining)
