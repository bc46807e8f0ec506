"""drift-check: the drift-check job on a schedule, its verdict made visible and acted upon.

A confirmed drift is a verdict, not an error: the run ends Completed, in a state named
"Drift confirmed" (a clean check: "Completed"), with a Markdown artifact that leads with the
verdict and links the report, and it emits the event `DRIFT_CONFIRMED` carrying the verdict,
the checks that found drift and where the report is. The retraining deployment is triggered by
that event alone (flows/serve.py). A check that cannot run (unreadable state, unreachable log,
an Evidently error) raises: the run is Failed, which retrains nothing and is alerted on as an
error.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from prefect.runtime import flow_run
from prefect.states import Completed, State

from flows.common import run_from_command_line, settings
from pipelines.jobs import drift_check as drift_job

DRIFT_CONFIRMED = "pipelines.drift.confirmed"  # the event the retraining trigger expects
CONFIRMED_STATE = "Drift confirmed"


def verdict_markdown(summary: dict[str, Any]) -> str:
    """The artifact: the verdict first, then each check's finding, then where the evidence is."""
    head = (
        "DRIFT CONFIRMED"
        if summary["confirmed"]
        else ("drift detected" if summary["detected"] else "no drift")
    )
    lines = [f"## {head}", "", summary["message"], "", "| check | found drift |", "|---|---|"]
    lines += [
        f"| {f['check']} | {'**yes**' if f['detected'] else 'no'} |"
        for f in summary.get("findings", [])
    ]
    report = summary.get("report")
    lines += [
        "",
        f"- report: [{report}]({'file://' + report if report and '://' not in report else report})"
        if report
        else "- report: none (too few rows for a verdict)",
        f"- summary: `{summary['summary']}`",
        f"- window: {summary['window']['start']} .. {summary['window']['end']}",
    ]
    return "\n".join(lines)


@flow(name="drift-check", log_prints=True)
def drift_check() -> State:
    """One drift check: Completed (named "Drift confirmed" and with the event emitted when
    drift is confirmed), or Failed when the check itself cannot run.
    """
    summary = drift_job.run(settings())
    create_markdown_artifact(
        key="drift-check", markdown=verdict_markdown(summary), description="Drift check verdict"
    )
    get_run_logger().info("drift-check: %s (report: %s)", summary["message"], summary.get("report"))
    if not summary["confirmed"]:
        return Completed(message=summary["message"], data=summary)
    run_id = str(flow_run.get_id())
    emit_event(
        event=DRIFT_CONFIRMED,
        resource={
            "prefect.resource.id": f"pipelines.drift-check.{run_id}",
            "prefect.resource.name": "drift-check",
        },
        payload={
            "message": summary["message"],
            "flow_run_id": run_id,
            "report": summary.get("report"),
            "summary": summary["summary"],
            "found": [f["check"] for f in summary["findings"] if f["detected"]],
        },
    )
    return Completed(message=summary["message"], name=CONFIRMED_STATE, data=summary)


if __name__ == "__main__":
    run_from_command_line(drift_check)
