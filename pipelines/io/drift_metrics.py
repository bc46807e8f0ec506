"""The drift check's results as Prometheus series, pushed to a Pushgateway.

A drift check is a batch job (a Prefect flow run, a CronJob): it does not live long enough to be
scraped, so it pushes its results to `monitoring.pushgateway` (Prometheus' Pushgateway, scraped
like any target with `honor_labels: true`). A successful check replaces the job's series; a check
that fails only updates its failure time, so the last verdict stays visible next to it. The
names are defined here once, for the alert rules and the dashboard too (a test checks them), as
the card example exports them; another `project` pushes `series(name, project)`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pipelines.config import DEFAULT_PROJECT, series

JOB = "drift_check"
VERDICT = f"{DEFAULT_PROJECT}_drift_verdict"  # -1 no verdict, 0 no drift, 1 detected, 2 confirmed
FOUND = f"{DEFAULT_PROJECT}_drift_found"  # by check (data_drift, prediction_drift, quality_drift): 1 found
COLUMN_SCORE = f"{DEFAULT_PROJECT}_drift_column_score"  # by column and method
COLUMN_THRESHOLD = f"{DEFAULT_PROJECT}_drift_column_threshold"  # by column and method
PREDICTION_SCORE = f"{DEFAULT_PROJECT}_drift_prediction_score"
QUALITY = f"{DEFAULT_PROJECT}_drift_quality_roc_auc"  # on the labelled rows of the window
QUALITY_FLOOR = f"{DEFAULT_PROJECT}_drift_quality_floor"  # drift.min_quality
LABELLED = f"{DEFAULT_PROJECT}_drift_labelled_rows"
WINDOW_ROWS = f"{DEFAULT_PROJECT}_drift_window_rows"
LAST_SUCCESS = f"{DEFAULT_PROJECT}_drift_last_success_timestamp_seconds"
LAST_FAILURE = f"{DEFAULT_PROJECT}_drift_last_failure_timestamp_seconds"


def verdict_code(summary: dict[str, Any]) -> int:
    """The verdict as one number: -1 no verdict (too few rows), 0 no drift, 1 detected, 2 confirmed."""
    if not summary.get("sufficient"):
        return -1
    return 2 if summary["confirmed"] else (1 if summary["detected"] else 0)


def push_result(
    url: str, summary: dict[str, Any], min_quality: float | None, project: str = DEFAULT_PROJECT
) -> None:
    """Replace the job's series at the Pushgateway `url` with one check's `summary` (the drift
    job's), named for `project`. Raises OSError (URLError) when the Pushgateway cannot be
    reached."""
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    registry = CollectorRegistry()

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
        return Gauge(series(name, project), doc, labelnames=labels, registry=registry)

    gauge(VERDICT, "Last drift verdict: -1 none, 0 no drift, 1 detected, 2 confirmed.").set(
        verdict_code(summary)
    )
    found = gauge(FOUND, "1 when this check found drift in the last window.", ("check",))
    for finding in summary.get("findings", []):
        found.labels(check=finding["check"]).set(int(finding["detected"]))
    scores = gauge(COLUMN_SCORE, "Drift score of an input column.", ("column", "method"))
    thresholds = gauge(
        COLUMN_THRESHOLD, "Drift threshold of an input column.", ("column", "method")
    )
    for column, test in (summary.get("column_scores") or {}).items():
        scores.labels(column=column, method=test["method"]).set(test["score"])
        thresholds.labels(column=column, method=test["method"]).set(test["threshold"])
    if summary.get("prediction"):
        gauge(PREDICTION_SCORE, "Prediction drift score.").set(summary["prediction"]["score"])
    if summary.get("quality"):
        gauge(QUALITY, "ROC-AUC on the labelled rows of the window.").set(
            summary["quality"]["roc_auc"]
        )
    if min_quality is not None:
        gauge(QUALITY_FLOOR, "drift.min_quality: below it quality is concept drift.").set(
            min_quality
        )
    gauge(LABELLED, "Labelled rows the check read (a sample's, past drift.read_rows).").set(
        summary.get("labelled", 0)
    )
    window = summary.get("window") or {}
    gauge(WINDOW_ROWS, "Logged rows in the window.").set(window.get("rows", summary.get("rows", 0)))
    gauge(LAST_SUCCESS, "When the last check completed (Unix seconds).").set(
        _seconds(summary["checked_at"])
    )
    push_to_gateway(url, job=JOB, registry=registry)


def push_failure(url: str, when: dt.datetime, project: str = DEFAULT_PROJECT) -> None:
    """Record at the Pushgateway `url` that a check failed at `when` (naive UTC), keeping the last
    result's series. Raises OSError when the Pushgateway cannot be reached."""
    from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

    registry = CollectorRegistry()
    failed = Gauge(
        series(LAST_FAILURE, project), "When a check last failed (Unix seconds).", registry=registry
    )
    failed.set(_seconds(when.isoformat()))
    pushadd_to_gateway(url, job=JOB, registry=registry)


def _seconds(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).replace(tzinfo=dt.UTC).timestamp()
