"""The service's Prometheus series: one definition of each name, for the service that exports
them (`create`) and for what reads them (the rollout check through `served_version`, the alert
rules in monitoring/alerts.yml and the Grafana dashboard, which a test checks against these).

Served at `/metrics` in Prometheus' text format next to BentoML's own request series
(`bentoml_service_request_total`, `bentoml_service_request_duration_seconds`); counters get
Prometheus' `_total` suffix there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

from pipelines.config import DEFAULT_PROJECT, series
from pipelines.serving.schema import HistoryStatus

# The names as the card example exports them; another `project` exports `series(name, project)`.
PREFIX = DEFAULT_PROJECT
MODEL_INFO = f"{PREFIX}_model_info"  # gauge: 1 for the model version being served
READY = f"{PREFIX}_ready"  # gauge: 1 ready, 0 not (see NOT_READY for why)
NOT_READY = f"{PREFIX}_not_ready"  # gauge by reason: 1 while that reason holds the service back
CHAMPION_AGE = f"{PREFIX}_champion_age_seconds"  # gauge: since the served champion was promoted
BATCH_SIZE = f"{PREFIX}_batch_size"  # histogram: records per model call
SCORE = f"{PREFIX}_score"  # histogram by model_version: the probability of every scored record
DECISIONS = f"{PREFIX}_decisions"  # counter by decision and model_version
UNKNOWN_CATEGORY = f"{PREFIX}_unknown_category"  # counter by column
REFUSED = f"{PREFIX}_requests_refused"  # counter by cause (REFUSAL_CAUSES)
LOG_LAG = f"{PREFIX}_prediction_log_lag_seconds"  # gauge: since the log last delivered to its sink
LOG_PENDING = f"{PREFIX}_prediction_log_pending_rows"  # gauge: buffered or spooled, not delivered
LOG_SPOOLED = f"{PREFIX}_prediction_log_spooled_rows"  # gauge: waiting in the local spool
HISTORY = f"{PREFIX}_history_records"  # counter by status (HISTORY_STATUSES): scored records
STORE_UP = f"{PREFIX}_online_store_up"  # gauge: 1 while the online store answers, else 0
STORE_PENDING = f"{PREFIX}_online_store_pending_events"  # gauge: waiting to be replayed
STORE_DROPPED = f"{PREFIX}_online_store_dropped_events"  # counter: replay buffer overflowed
STORE_SECONDS = f"{PREFIX}_online_store_seconds"  # histogram by op (STORE_OPS): one per batch

# Why a request to /score was not scored (the `cause` label; the alert rules tell them apart).
REFUSAL_CAUSES = ("bad_input", "too_large", "media_type", "not_ready", "overloaded", "error")
NOT_READY_REASONS = ("no_champion", "store_not_seeded")
HISTORY_STATUSES = get_args(HistoryStatus)  # the `status` label of HISTORY
STORE_OPS = ("read", "append")  # the `op` label of STORE_SECONDS
# BentoML's own series for every request, the fast path's included (its middleware runs first).
REQUESTS = "bentoml_service_request_total"  # counter by endpoint and http_response_code
LATENCY = "bentoml_service_request_duration_seconds"  # histogram by endpoint


@dataclass(frozen=True)
class ServiceMetrics:
    """The service's metric objects (BentoML's Prometheus wrappers)."""

    batch_size: Any
    score: Any
    decisions: Any
    unknown_category: Any
    refused: Any
    model_info: Any
    ready: Any
    not_ready: Any
    champion_age: Any
    log_lag: Any
    log_pending: Any
    log_spooled: Any
    history: Any
    store_up: Any
    store_pending: Any
    store_dropped: Any
    store_seconds: Any


def create(project: str = DEFAULT_PROJECT) -> ServiceMetrics:
    """Register the series, named for `project`, with BentoML's registry (once per process:
    Prometheus refuses a second registration of a name)."""
    import bentoml

    m = bentoml.metrics

    def named(name: str) -> str:
        return series(name, project)

    return ServiceMetrics(
        batch_size=m.Histogram(
            name=named(BATCH_SIZE),
            documentation="Records per model call (adaptive batching).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        ),
        score=m.Histogram(
            name=named(SCORE),
            documentation="Fraud probability of each scored record.",
            labelnames=["model_version"],
            buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99),
        ),
        decisions=m.Counter(
            name=named(DECISIONS),
            documentation="Decisions made.",
            labelnames=["decision", "model_version"],
        ),
        unknown_category=m.Counter(
            name=named(UNKNOWN_CATEGORY),
            documentation="Category values the model never saw.",
            labelnames=["column"],
        ),
        refused=m.Counter(
            name=named(REFUSED),
            documentation="Requests to /score not scored, by cause.",
            labelnames=["cause"],
        ),
        model_info=m.Gauge(
            name=named(MODEL_INFO),
            documentation="1 for the model version being served.",
            labelnames=["model_version"],
            multiprocess_mode="livemax",
        ),
        ready=m.Gauge(
            name=named(READY),
            documentation="1 when the service may score, else 0.",
            multiprocess_mode="livemin",
        ),
        not_ready=m.Gauge(
            name=named(NOT_READY),
            documentation="1 while this reason keeps the service from scoring.",
            labelnames=["reason"],
            multiprocess_mode="livemax",
        ),
        champion_age=m.Gauge(
            name=named(CHAMPION_AGE),
            documentation="Seconds since the served champion was promoted.",
            multiprocess_mode="livemax",
        ),
        log_lag=m.Gauge(
            name=named(LOG_LAG),
            documentation="Seconds since the prediction log last delivered to its sink.",
            multiprocess_mode="max",
        ),
        log_pending=m.Gauge(
            name=named(LOG_PENDING),
            documentation="Logged rows not yet delivered (buffered or spooled).",
            multiprocess_mode="sum",
        ),
        log_spooled=m.Gauge(
            name=named(LOG_SPOOLED),
            documentation="Logged rows waiting in the local spool for the sink.",
            multiprocess_mode="sum",
        ),
        history=m.Counter(
            name=named(HISTORY),
            documentation="Scored records by where their history features came from.",
            labelnames=["status"],
        ),
        store_up=m.Gauge(
            name=named(STORE_UP),
            documentation="1 while the online feature store answers (every worker), else 0.",
            multiprocess_mode="livemin",
        ),
        store_pending=m.Gauge(
            name=named(STORE_PENDING),
            documentation="Scored events kept to replay into the online store once it answers.",
            multiprocess_mode="livesum",
        ),
        store_dropped=m.Counter(
            name=named(STORE_DROPPED),
            documentation="Events dropped from a full replay buffer (lost to the online store).",
        ),
        store_seconds=m.Histogram(
            name=named(STORE_SECONDS),
            documentation="Seconds per online-store call (one per batch; while the store is down "
            "none is made), by op: read (a batch's histories) or append (its events).",
            labelnames=["op"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        ),
    )


def served_version(text: str, project: str = DEFAULT_PROJECT) -> str | None:
    """The model version a `/metrics` page (Prometheus text) of `project`'s service reports as
    served, or None."""
    from prometheus_client.parser import text_string_to_metric_families

    served = [
        s.labels["model_version"]
        for family in text_string_to_metric_families(text)
        if family.name == series(MODEL_INFO, project)
        for s in family.samples
        if s.value == 1
    ]
    return served[-1] if served else None
