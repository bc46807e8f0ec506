"""The BentoML fraud-scoring service.

`score` batches adaptively: the record lists of concurrent requests are merged into one model
call of at most `serving.max_batch_size` records (`serving.batching`: the service's own batcher
by default, BentoML's dispatcher, or off; see batching.py for why the default). Per batch: enrich
from the online feature store with the shared feature code, score with the champion, decide,
append the batch to the store (so the next request sees it), log every record to the
prediction log. The batch path works on plain arrays (scorer.py): a pandas frame per batch
cost more than the arithmetic.

A well-formed `POST /score` is answered by fastpath.py's middleware (validated with this
endpoint's own BentoML input model) instead of BentoML's per-request routing and IO machinery,
which cost more CPU than scoring; every other case (invalid input, no model, full queue) is
answered by the BentoML endpoint below, unchanged.

Zero-downtime promotion is an in-process swap: a watcher thread polls the registry's champion
pointer; on a change it loads the new model *beside* the old one and then replaces one
reference. A batch takes that reference once, so it is scored entirely by one version, and
no request waits on a load or fails during the switch.

Importing this module pulls in no Prefect, DVC, Great Expectations or Evidently.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import gc
import logging
import threading
import uuid
from typing import Annotated

import bentoml
import numpy as np
import pydantic_core
from pydantic import Field, ValidationError

from pipelines.core.features import FeatureSpec
from pipelines.core.model import TabularModel
from pipelines.io import registry
from pipelines.io.feature_store import SQLiteStore
from pipelines.io.prediction_log import PredictionLog
from pipelines.runtime import bootstrap
from pipelines.serving import fastpath, scorer
from pipelines.serving.batching import AdaptiveBatcher, Overloaded
from pipelines.serving.edge import JsonOnly
from pipelines.serving.fastpath import FastPath
from pipelines.serving.schema import Score, record_model

log = logging.getLogger("fraud.service")

# Relative locations in params are relative to the params file, not to wherever the server
# starts: a built bento runs from its own directory, and state must never land inside it.
SETTINGS = bootstrap()
SERVING = SETTINGS.serving
SPEC = FeatureSpec.from_settings(SETTINGS)
Transaction = record_model(SETTINGS.contract)
# A request is a non-empty list of at most max_records_per_request records; pydantic names the
# offending record and field, and BentoML turns that into a 400.
Records = Annotated[list[Transaction], Field(min_length=1, max_length=SERVING.max_records_per_request)]  # type: ignore[valid-type]

BATCH_SIZE = bentoml.metrics.Histogram(
    name="fraud_batch_size", documentation="Records per model call (adaptive batching).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
DECISIONS = bentoml.metrics.Counter(name="fraud_decisions", documentation="Decisions made.",
                                    labelnames=["decision", "model_version"])
UNKNOWN = bentoml.metrics.Counter(name="fraud_unknown_category", documentation="Category values the model never saw.",
                                  labelnames=["column"])
MODEL_INFO = bentoml.metrics.Gauge(name="fraud_model_info", documentation="1 for the model version being served.",
                                   labelnames=["model_version"], multiprocess_mode="livemax")
LOG_LAG = bentoml.metrics.Gauge(name="fraud_prediction_log_lag_seconds",
                                documentation="Seconds since the prediction log last delivered to its sink.",
                                multiprocess_mode="max")
LOG_PENDING = bentoml.metrics.Gauge(name="fraud_prediction_log_pending_rows",
                                    documentation="Logged rows not yet delivered (buffered or spooled).",
                                    multiprocess_mode="sum")


def _bundled_tag() -> str | None:
    """The model a built bento carries: the champion (or newest version) at build time."""
    try:
        versions = registry.versions()
        return registry.champion_tag() or (versions[-1] if versions else None)
    except Exception:  # an empty or missing store: the service starts unready instead
        return None


_BUNDLED = _bundled_tag()


@bentoml.service(
    name="fraud_service",
    workers=SERVING.workers,
    traffic={"timeout": SERVING.request_timeout_seconds},
    http={"host": SERVING.host, "port": SERVING.port},
    # Per-request access lines and trace spans cost more CPU than scoring a record; the
    # prediction log and the Prometheus metrics already record every request.
    logging={"access": {"enabled": SERVING.access_log}},
    tracing={"excluded_urls": None if SERVING.access_log else "/score"},
)
class FraudService:
    if _BUNDLED:
        bundled = bentoml.models.BentoModel(_BUNDLED)

    def __init__(self) -> None:
        self._current: tuple[TabularModel, str] | None = None
        self._stop = threading.Event()
        self._load_champion()
        self.store = SQLiteStore(SERVING.feature_store, SPEC) if SPEC.has_history else None
        self.predictions = PredictionLog(
            SERVING.prediction_log, timestamp_column=SETTINGS.contract.timestamp,
            flush_rows=SERVING.log_flush_rows, flush_seconds=SERVING.log_flush_seconds,
            spool_dir=SERVING.spool_dir,
        )
        self.batcher = (AdaptiveBatcher(self.score_batch, SERVING.max_batch_size, SERVING.max_queue_records)
                        if SERVING.batching == "adaptive" else None)
        if SERVING.batching != "bentoml":  # that mode measures BentoML's own dispatcher
            fastpath.serve("/score", self._score_json)
        self._watcher = threading.Thread(target=self._watch, name="champion-watcher", daemon=True)
        self._watcher.start()
        # Full collections walked every object the imports and the model created (60-150 ms
        # pauses every ~2 s under load, the whole p99): freeze them out of the collector's view.
        gc.collect()
        gc.freeze()

    # -- model lifecycle -------------------------------------------------------------------

    def _load_champion(self) -> None:
        tag = registry.champion_tag() or _BUNDLED
        if tag is None or (self._current and self._current[1] == tag):
            return
        try:
            model = registry.load(tag).for_serving()
        except Exception as err:  # keep serving the model we have
            log.error("cannot load champion %s: %s; keeping %s", tag, err,
                      self._current[1] if self._current else "no model")
            return
        previous = self._current[1] if self._current else None
        self._current = (model, tag)  # the swap: one reference assignment
        if previous:
            MODEL_INFO.labels(model_version=previous).set(0)
        MODEL_INFO.labels(model_version=tag).set(1)
        log.info("serving model %s (was %s)", tag, previous)

    def _watch(self) -> None:
        while not self._stop.wait(SERVING.reload_seconds):
            self._load_champion()
            stats = self.predictions.stats()
            LOG_LAG.set(stats.lag_seconds)
            LOG_PENDING.set(stats.rows_buffered + stats.rows_spooled)

    def __is_ready__(self) -> bool:
        return self._current is not None

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        fastpath.stop("/score")
        self._stop.set()
        self.predictions.close()  # flushes: a graceful stop loses no record
        if self.store is not None:
            self.store.close()

    # -- the endpoint ----------------------------------------------------------------------

    if SERVING.batching == "bentoml":
        @bentoml.api(batchable=True, max_batch_size=SERVING.max_batch_size, max_latency_ms=SERVING.max_latency_ms)
        def score(self, records: Records) -> list[Score]:
            return [Score(**a) for a in self.score_batch(records)]
    else:
        @bentoml.api
        async def score(self, records: Records) -> list[Score]:
            # Normally fastpath.FastPath answers first; this is BentoML's route for the rest.
            try:
                answers = await self._submit(records)
            except Overloaded as err:
                raise bentoml.exceptions.ServiceUnavailable(str(err)) from None
            return [Score(**a) for a in answers]

    async def _submit(self, records: list) -> list[dict]:
        if self.batcher is None:
            return await asyncio.to_thread(self.score_batch, records)
        return await self.batcher.submit(records)

    async def _score_json(self, body: bytes) -> bytes | None:
        """fastpath's handler: the response body, or None to let BentoML's endpoint answer."""
        try:
            records = INPUT.model_validate_json(body or b"{}").records  # what BentoML would parse
        except ValidationError:
            return None  # BentoML's 400, in its format
        if self._current is None:
            return None  # BentoML's 503
        try:
            answers = await self._submit(records)
        except Overloaded:
            return None  # queued nothing: BentoML's route tries once more, then answers 503
        return pydantic_core.to_json(answers)

    def score_batch(self, records: list) -> list[dict]:
        """Score one batch: enrich from the store, score, decide, remember, log."""
        current = self._current
        if current is None:
            raise bentoml.exceptions.ServiceUnavailable("no model is loaded yet")
        model, version = current
        batch = scorer.record_columns(records, SPEC)
        store = self.store
        past, folded = store.history_arrays(*scorer.earliest(batch, SPEC)) if store else (None, None)
        scored = scorer.score(batch, past, folded, model, SPEC, SERVING.review_threshold, SERVING.decline_threshold)
        if store:
            store.append_columns(batch)
        now = np.datetime64(dt.datetime.now(dt.UTC).replace(tzinfo=None), "us")
        self.predictions.append(scorer.log_columns(batch, scored, SPEC, version, uuid.uuid4().hex, now))
        self._count(scored, version)
        return scorer.answers(batch, scored, SPEC, version)

    def _count(self, scored: scorer.Scored, version: str) -> None:
        BATCH_SIZE.observe(len(scored.probability))
        for decision, n in collections.Counter(scored.decision.tolist()).items():
            DECISIONS.labels(decision=decision, model_version=version).inc(n)
        for col, n in zip(scored.categorical, scored.unknown_mask.sum(axis=0).tolist(), strict=True):
            if n:
                UNKNOWN.labels(column=col).inc(n)


# The decorator made FraudService a bentoml Service object, which mypy cannot see.
FraudService.add_asgi_middleware(JsonOnly)  # type: ignore[attr-defined]
FraudService.add_asgi_middleware(FastPath, server_header="BentoML Service/fraud_service")  # type: ignore[attr-defined]
INPUT = FraudService.apis["score"].input_spec  # type: ignore[attr-defined]
# BentoML derives a response's media type from the output model's JSON schema, regenerated on
# every response (~13 % of the worker's CPU under load, profiled); it is always JSON here.
FraudService.apis["score"].output_spec.media_type = "application/json"  # type: ignore[attr-defined]
