"""retraining: train on the newest data, gate, deploy, and record why.

Started by the Prefect server on a confirmed drift (the drift check's event, see flows/serve.py);
at most one runs at a time (the deployment's concurrency limit drops a second trigger). Nothing
is edited: with the rolling window (`ingest.end: null`) the training flow's `dvc repro` sees the
new days in the source and trains on the newest `ingest.window`; the window it resolved is
recorded in the raw snapshot's manifest (DVC-tracked) and in the model's lineage. The drift
check's cooldown starts when the retraining starts, so checks during it raise no second alarm.
Its lineage - why it ran, which drift run, which window - goes into the registry history.
"""

from __future__ import annotations

from prefect import flow

from flows.common import run_from_command_line, settings
from flows.deploy import deploy
from flows.training import training
from pipelines.io import manifest, registry
from pipelines.jobs import drift_check


@flow(name="retraining", log_prints=True)
def retraining(reason: str = "manual", drift_run: str | None = None) -> dict:
    """Train on the newest window, gate, deploy; returns (and records) the lineage of the run.

    `reason` and `drift_run` come from the trigger (the drift-check run that confirmed drift).
    """
    s = settings()
    drift_check.record_retrain(s)  # the cooldown starts now: no second alarm while this runs
    trained = training()
    deployed = deploy(challenger=trained["package"]["model_tag"])
    drift_check.record_retrain(s)  # and counts from the deployment
    snapshot = manifest.read(s)
    decision = deployed["decision"]
    lineage = {
        "event": "retraining",
        "reason": reason,
        "drift_run": drift_run,
        "window": {"start": snapshot["start"], "end": snapshot["end"]},
        "drift_reports": s.drift.reports,
        "challenger": deployed["challenger"],
        "promoted": bool(decision and decision["promote"]),
        "gate": decision["reason"] if decision else deployed["message"],
    }
    registry.record_decision(lineage)
    return lineage


if __name__ == "__main__":
    run_from_command_line(retraining)
