"""drift-check: Evidently on a window of the prediction log against the training reference.

The run ends Failed when drift is confirmed (persistence and cooldown from params applied), with
a message naming the drifted columns; the Prefect server turns that failure into a retraining
run (see flows/serve.py).
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.common import run_from_command_line, settings
from pipelines import monitoring


class DriftConfirmed(RuntimeError):
    pass


@flow(name="drift-check", log_prints=True)
def drift_check() -> dict:
    summary = monitoring.drift_check(settings())
    create_markdown_artifact(
        key="drift-check",
        markdown=f"**{'DRIFT' if summary['confirmed'] else 'no alarm'}**: {summary['message']}\n\n"
                 f"report: `{summary.get('report')}`  \nsummary: `{summary.get('summary')}`",
        description="Drift check verdict",
    )
    print(f"drift-check: {summary['message']} (report: {summary.get('report')})")
    if summary["confirmed"]:
        raise DriftConfirmed(summary["message"])
    return summary


if __name__ == "__main__":
    run_from_command_line(drift_check)
