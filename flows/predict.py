"""batch-predict: the batch-scoring job (`pipelines.jobs.predict`) as a Prefect flow.

    python -m flows.predict SOURCE TARGET [MODEL]

A table at `source` scored by the champion (or the version `model`) and written to `target`;
the run ends Completed with a table artifact of the decisions, or Failed naming the problem
(no champion, an unreadable or invalid table: nothing is written then).
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.common import run_from_command_line, settings
from pipelines.jobs import predict as predict_job


@flow(name="batch-predict", log_prints=True)
def batch_predict(source: str, target: str, model: str | None = None) -> dict[str, Any]:
    """Score `source` into `target`; returns the job's summary."""
    summary = predict_job.run(settings(), source, target, model)
    create_table_artifact(
        key="batch-predict",
        table=[{"decision": d, "rows": n} for d, n in summary["decisions"].items()],
        description=f"{summary['rows']:,} rows of {source} scored by {summary['model_version']}",
    )
    get_run_logger().info(
        "batch-predict: %d rows scored by %s → %s",
        summary["rows"],
        summary["model_version"],
        target,
    )
    return summary


if __name__ == "__main__":
    run_from_command_line(
        batch_predict,
        source=sys.argv[1],
        target=sys.argv[2],
        model=sys.argv[3] if len(sys.argv) > 3 else None,
    )
