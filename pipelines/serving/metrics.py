"""The service's Prometheus series: one definition of each name, for the service that exports
them (`create`) and for what reads them (the rollout check through `served_version`, the README,
alert rules and dashboards).

Served at `/metrics` in Prometheus' text format next to BentoML's own request series; counters
get Prometheus' `_total` suffix there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PREFIX = "fraud"
MODEL_INFO = f"{PREFIX}_model_info"  # gauge: 1 for the model version being served
BATCH_SIZE = f"{PREFIX}_batch_size"  # histogram: records per model call
DECISIONS = f"{PREFIX}_decisions"  # counter by decision and model_version
UNKNOWN_CATEGORY = f"{PREFIX}_unknown_category"  # counter by column
LOG_LAG = f"{PREFIX}_prediction_log_lag_seconds"  # gauge: since the log last delivered to its sink
LOG_PENDING = f"{PREFIX}_prediction_log_pending_rows"  # gauge: buffered or spooled, not delivered


@dataclass(frozen=True)
class ServiceMetrics:
    """The service's metric objects (BentoML's Prometheus wrappers)."""

    batch_size: Any
    decisions: Any
    unknown_category: Any
    model_info: Any
    log_lag: Any
    log_pending: Any


def create() -> ServiceMetrics:
    """Register the series with BentoML's registry (once per process: Prometheus refuses a
    second registration of a name)."""
    import bentoml

    m = bentoml.metrics
    return ServiceMetrics(
        batch_size=m.Histogram(
            name=BATCH_SIZE,
            documentation="Records per model call (adaptive batching).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        ),
        decisions=m.Counter(
            name=DECISIONS,
            documentation="Decisions made.",
            labelnames=["decision", "model_version"],
        ),
        unknown_category=m.Counter(
            name=UNKNOWN_CATEGORY,
            documentation="Category values the model never saw.",
            labelnames=["column"],
        ),
        model_info=m.Gauge(
            name=MODEL_INFO,
            documentation="1 for the model version being served.",
            labelnames=["model_version"],
            multiprocess_mode="livemax",
        ),
        log_lag=m.Gauge(
            name=LOG_LAG,
            documentation="Seconds since the prediction log last delivered to its sink.",
            multiprocess_mode="max",
        ),
        log_pending=m.Gauge(
            name=LOG_PENDING,
            documentation="Logged rows not yet delivered (buffered or spooled).",
            multiprocess_mode="sum",
        ),
    )


def served_version(text: str) -> str | None:
    """The model version a `/metrics` page (Prometheus text) reports as served, or None."""
    from prometheus_client.parser import text_string_to_metric_families

    served = [
        s.labels["model_version"]
        for family in text_string_to_metric_families(text)
        if family.name == MODEL_INFO
        for s in family.samples
        if s.value == 1
    ]
    return served[-1] if served else None
