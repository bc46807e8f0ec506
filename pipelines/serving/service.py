"""The BentoML scoring service: `FraudService = build(bootstrap())`, the one line run at import.

BentoML needs a module-level service object whose decorator arguments (workers, timeout, host,
port) are known when the module is imported; everything else happens in `build` (the class, the
endpoint chosen by `serving.batching`, the middlewares) and in the instance (models, store, log).

Per batch of requests: enrich from the online feature store with the shared feature code, score
with the champion, decide, append the batch to the store (so the next request sees it), log
every record to the prediction log. The batch path works on plain arrays (scorer.py): a pandas
frame per batch cost more than the arithmetic. `score` batches adaptively: the record lists of
concurrent requests are merged into one model call of at most `serving.max_batch_size` records
(`serving.batching`: the service's own batcher by default, BentoML's dispatcher, or off; see
batching.py for why the default).

The online store is `serving.feature_store` (a SQLite file for one host, Redis for replicas on
many). When it does not answer, the service keeps scoring on request-level features, flags
those answers `history: unavailable`, and replays the scored events once it is back
(online_history.py).

A well-formed `POST /score` is answered by fastpath.py's middleware (validated with this
endpoint's own BentoML input model) instead of BentoML's per-request routing and IO machinery,
which cost more CPU than scoring; invalid input and a full queue are answered by the BentoML
endpoint, unchanged.

Readiness: the service scores only with the model a gate promoted (the registry's champion
pointer) and only on a seeded online store built for its features (a store that cannot say,
being down, does not hold it back). Until both hold it is not ready: `/readyz` answers 503 with
the reasons, `/score` answers 503 naming what is missing, and the log says so once.
`serving.model` serves a given version instead, for experiments: logged as a warning.

Zero-downtime promotion is an in-process swap: a watcher thread polls the champion pointer; on a
change it loads the new model *beside* the old one and then replaces one reference. A batch
takes that reference once, so it is scored entirely by one version, and no request waits on a
load or fails during the switch.

Importing this module pulls in no Prefect, DVC, Great Expectations or Evidently.
"""

import asyncio
import collections
import datetime as dt
import functools
import gc
import importlib.metadata
import logging
import threading
import time
import uuid
from typing import Annotated, Any

import bentoml
import numpy as np
import pydantic_core
from pydantic import Field, ValidationError

from pipelines.config import Settings
from pipelines.core.features import FeatureSpec
from pipelines.core.history import History
from pipelines.core.model import TabularModel
from pipelines.io import gate_reference, model_remote, registry
from pipelines.io.feature_store import open_store, redacted
from pipelines.io.prediction_log import PredictionLog
from pipelines.runtime import bootstrap
from pipelines.serving import instruments, metrics, scorer, timeout
from pipelines.serving.batching import AdaptiveBatcher, Overloaded
from pipelines.serving.edge import SCORE_PATH, Answer, Edge, Hooks, error
from pipelines.serving.fastpath import FastPath
from pipelines.serving.online_history import OnlineHistory
from pipelines.serving.schema import describe, example_record, parse_json, record_model, score_model

log = logging.getLogger("fraud.service")
NAME = "fraud_service"
GC_YOUNG_THRESHOLD = 10_000  # net new container objects before a young collection (default 700)


def bundled_tag(settings: Settings) -> str | None:
    """The model a built bento carries: the one it will serve (the override, else the champion)."""
    try:
        return settings.serving.model or registry.champion_tag()
    except Exception:  # no store yet: nothing to bundle
        return None


def described(spec: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """BentoML's OpenAPI document with the project's title, description and version, and a working
    example for POST /score."""
    try:
        version = importlib.metadata.version("fraud-pipelines")
    except importlib.metadata.PackageNotFoundError:  # a bento's environment: its own version
        version = f"bento {spec['info'].get('version')}"
    spec["info"] = {
        "title": "Card-fraud scoring",
        "version": version,
        "description": (
            f"POST a JSON list of records to /score; each gets the probability of "
            f"{settings.contract.target}, a decision "
            f"({' / '.join(scorer.Policy.of(settings.serving.decisions, settings.serving.default_decision).labels)}) "
            "and the model version that scored it. "
            "Invalid input is answered 400 naming the field. /readyz says whether the "
            "service has a gated champion and a seeded feature store, and why not."
        ),
    }
    score = spec["paths"]["/score"]["post"]
    score["requestBody"]["required"] = True  # an empty body is refused: the document says so
    score["requestBody"]["content"]["application/json"]["example"] = {
        "records": [example_record(settings)]
    }
    # Every status /score answers, each with the body it has ({"error": "..."} for all errors).
    refused = {"application/json": {"schema": {"$ref": "#/components/schemas/InvalidArgument"}}}
    for status, why in (
        ("400", "Invalid input: the message names each field and the problem"),
        ("413", "The body is larger than serving.max_body_bytes"),
        ("415", "The body is declared as something else than application/json"),
        (
            "503",
            "Not ready (no gated champion, or the store was never seeded), or "
            "overloaded; see Retry-After",
        ),
    ):
        score["responses"][status] = {"description": why, "content": refused}
    return spec


def build(settings: Settings) -> Any:
    """The BentoML service class for `settings` (decorated: a `bentoml.Service`)."""
    # The gate's derived reference bounds requests as it bounded the training data.
    settings = gate_reference.completed(settings)
    serving = settings.serving
    spec = FeatureSpec.from_settings(settings)
    transaction = record_model(settings)
    Score = score_model(settings.contract)  # noqa: N806 (a class)
    policy = scorer.Policy.of(serving.decisions, serving.default_decision)
    # A request is a non-empty list of at most max_records_per_request records; pydantic names the
    # offending record and field, and BentoML turns that into a 400.
    limit = Field(min_length=1, max_length=serving.max_records_per_request)
    records_type = Annotated[list[transaction], limit]  # type: ignore[valid-type]
    hooks = Hooks(max_body_bytes=serving.max_body_bytes)
    meters = metrics.create(settings.project)
    # Every cause from 0: a counter that appears at its first increase shows no rate until its next.
    for cause in metrics.REFUSAL_CAUSES:
        meters.refused.labels(cause=cause)
    for status in metrics.HISTORY_STATUSES:
        meters.history.labels(status=status)
    bundled = bundled_tag(settings)
    remote = model_remote.url_of(None, settings.paths.model_remote)
    store_name = redacted(serving.feature_store)

    class FraudService:
        def __init__(self) -> None:
            self._current: tuple[TabularModel, str] | None = None
            self._stop = threading.Event()
            self._said: tuple[str, ...] | None = None  # the last reasons, once known
            self._dropped = 0
            self.history = (
                OnlineHistory(
                    open_store(serving.feature_store, spec, serving.store_timeout_seconds),
                    serving.store_replay_max_events,
                    serving.store_retry_seconds,
                    on_change=self._store_changed,
                )
                if spec.has_history
                else None
            )
            if self.history is not None:
                self._store_changed(True, 0, 0)
            self.predictions = PredictionLog(
                serving.prediction_log,
                timestamp_column=settings.contract.timestamp,
                flush_rows=serving.log_flush_rows,
                flush_seconds=serving.log_flush_seconds,
                spool_dir=serving.spool_dir,
            )
            self.batcher = (
                AdaptiveBatcher(self.score_batch, serving.max_batch_size, serving.max_queue_records)
                if serving.batching == "adaptive"
                else None
            )
            self._follow_champion()
            hooks.not_ready = self.not_ready
            hooks.refused = lambda cause: meters.refused.labels(cause=cause).inc()
            # The bentoml mode measures BentoML's own dispatcher: the fast path only refuses a
            # bad body there (BentoML's endpoint logs each as an ERROR with a traceback).
            hooks.score = self._score_json if serving.batching != "bentoml" else self._refusal
            self._watcher = threading.Thread(
                target=self._watch, name="champion-watcher", daemon=True
            )
            self._watcher.start()
            # Full collections walked every object the imports and the model created (60-150 ms
            # pauses every ~2 s under load, the whole p99): freeze them out of the collector's view.
            gc.collect()
            gc.freeze()
            # A batch's requests allocate thousands of objects that die with it; at the default
            # threshold (700) that started ~260 young and 2 full collections a second at c=64,
            # 3.6 % of the CPU (gc.callbacks, 20,000 requests). Above a batch's peak, they start
            # only for what outlives batches: none in the same 20,000 requests.
            gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])

        # -- model lifecycle and readiness ---------------------------------------------------

        def _wanted(self) -> tuple[str | None, str | None]:
            """The version to serve and when it was promoted: the override (no promotion), else
            the champion of the configured source (a remote champion missing from the local
            store is fetched first)."""
            if serving.model:
                return serving.model, None
            record = (
                registry.champion()
                if serving.champion_source == "local"
                else model_remote.champion(remote)
            )
            if record is None:
                return None, None
            if serving.champion_source == "remote" and (
                self._current is None or self._current[1] != record["tag"]
            ):
                model_remote.fetch_model(remote, record["tag"])
            return str(record["tag"]), record.get("since")

        def _follow_champion(self) -> None:
            try:
                tag, since = self._wanted()
            except Exception as err:  # e.g. the remote is unreachable: keep serving what we have
                log.error("cannot read the champion from %s: %s", remote, err)
                return
            if since is not None:
                promoted = dt.datetime.fromisoformat(since)
                if promoted.tzinfo is None:  # the project's naive timestamps are UTC
                    promoted = promoted.replace(tzinfo=dt.UTC)
                meters.champion_age.set((dt.datetime.now(dt.UTC) - promoted).total_seconds())
            if tag is None or (self._current and self._current[1] == tag):
                return
            try:
                model = registry.load(tag).serving_copy()
                absent = sorted(set(model.features) - set(spec.names))
                if absent:  # trained on other settings: it would fail every request
                    raise ValueError(
                        f"it needs features this service does not compute: {absent} "
                        "(params.yaml's contract or features differ from its training's)"
                    )
            except Exception as err:  # keep serving the model we have
                log.error(
                    "cannot load model %s: %s; keeping %s",
                    tag,
                    err,
                    self._current[1] if self._current else "no model",
                )
                return
            previous = self._current[1] if self._current else None
            self._current = (model, tag)  # the swap: one reference assignment
            if previous:
                meters.model_info.labels(model_version=previous).set(0)
            meters.model_info.labels(model_version=tag).set(1)
            if serving.model:
                log.warning(
                    "serving %s by serving.model, not the gated champion (experiments only)", tag
                )
            else:
                log.info("serving the champion %s (was %s)", tag, previous)

        def not_ready(self) -> list[str]:
            """Why the service must not score yet (empty: ready); also exported as metrics."""
            no_champion = self._current is None
            store_problem = self.history.unusable() if self.history is not None else None
            reasons = []
            if no_champion:
                where = (
                    remote
                    if serving.champion_source == "remote" and not serving.model
                    else registry.home()
                )
                reasons.append(
                    f"no champion loaded from {where}: promote a model (python -m pipelines promote, "
                    f"or the deploy flow's gate); if there is one, the log says why it cannot load"
                )
            if store_problem:
                reasons.append(f"online feature store {store_name}: {store_problem}")
            if tuple(reasons) != self._said:  # once per change: this runs for every request
                self._said = tuple(reasons)
                meters.ready.set(0 if reasons else 1)
                meters.not_ready.labels(reason="no_champion").set(int(no_champion))
                meters.not_ready.labels(reason="store_not_seeded").set(int(bool(store_problem)))
                if reasons:
                    log.warning("not ready: %s", "; ".join(reasons))
                else:
                    log.info("ready")
            return reasons

        def _watch(self) -> None:
            while not self._stop.wait(serving.reload_seconds):
                try:
                    self._follow_champion()
                    self.not_ready()
                    stats = self.predictions.stats()
                    meters.log_lag.set(stats.lag_seconds)
                    meters.log_pending.set(stats.rows_buffered + stats.rows_spooled)
                    meters.log_spooled.set(stats.rows_spooled)
                except Exception:  # the watch must outlive any one bad tick
                    log.exception("champion watch: one tick failed")

        def _store_changed(self, up: bool, pending: int, dropped: int) -> None:
            meters.store_up.set(int(up))
            meters.store_pending.set(pending)
            if dropped > self._dropped:
                meters.store_dropped.inc(dropped - self._dropped)
                self._dropped = dropped

        def __is_ready__(self) -> bool:
            return not self.not_ready()

        @bentoml.on_shutdown
        def shutdown(self) -> None:
            hooks.score = hooks.not_ready = None
            self._stop.set()
            self.predictions.close()  # flushes: a graceful stop loses no record
            if self.history is not None:
                self.history.close()

        # -- scoring ---------------------------------------------------------------------------

        async def _submit(self, records: list) -> list[dict]:
            if self.batcher is None:
                return await asyncio.to_thread(self.score_batch, records)
            return await self.batcher.submit(records)

        async def _refusal(self, body: bytes) -> Answer | None:
            """fastpath's handler with `serving.batching: bentoml`: the 400 for a bad body, else
            None (BentoML's endpoint answers)."""
            try:
                input_model.model_validate(parse_json(body))
            except ValidationError as err:
                return error(400, describe(err), "bad_input")
            except ValueError as err:  # not JSON, or a key given twice
                return error(400, str(err), "bad_input")
            return None

        async def _score_json(self, body: bytes) -> Answer:
            """fastpath's handler: the answer to one `POST /score` body."""
            try:
                records = input_model.model_validate(parse_json(body)).records
            except ValidationError as err:
                return error(400, describe(err), "bad_input")
            except ValueError as err:  # not JSON, or a key given twice
                return error(400, str(err), "bad_input")
            try:
                answers = await self._submit(records)
            except Overloaded as err:
                return error(503, str(err), "overloaded", retry_after=1)
            return Answer(200, pydantic_core.to_json(answers))

        def score_batch(self, records: list) -> list[dict]:
            """Score one batch: enrich from the store, score, decide, remember, log."""
            current = self._current
            if current is None:
                raise bentoml.exceptions.ServiceUnavailable(
                    "; ".join(self.not_ready()) or "no model loaded"
                )
            model, version = current
            batch = scorer.record_columns(records, spec)
            history = self.history
            histories: dict[str, History] | None = {}
            if history:
                began, direct = time.perf_counter(), history.up
                histories = history.read(scorer.distinct_entities(batch, spec))
                if direct:  # a call was made (a failed one shows its timeout)
                    meters.store_seconds.labels(op="read").observe(time.perf_counter() - began)
            scored = scorer.score_columns(
                batch,
                histories,
                model,
                spec,
                policy,
            )
            if history:
                began, direct = time.perf_counter(), history.up
                history.write(batch)
                if direct:
                    meters.store_seconds.labels(op="append").observe(time.perf_counter() - began)
            now = np.datetime64(dt.datetime.now(dt.UTC).replace(tzinfo=None), "us")
            self.predictions.append(
                scorer.log_columns(batch, scored, spec, version, uuid.uuid4().hex, now)
            )
            self._count(scored, version)
            return scorer.answers(batch, scored, spec, version)

        def _count(self, scored: scorer.Scored, version: str) -> None:
            meters.batch_size.observe(len(scored.probability))
            histogram = meters.score.labels(model_version=version)
            for p in scored.probability.tolist():
                histogram.observe(p)
            for status, n in collections.Counter(scored.history.tolist()).items():
                meters.history.labels(status=status).inc(n)
            for decision, n in collections.Counter(scored.decision.tolist()).items():
                meters.decisions.labels(decision=decision, model_version=version).inc(n)
            for col, n in zip(
                scored.categorical, scored.unknown_mask.sum(axis=0).tolist(), strict=True
            ):
                if n:
                    meters.unknown_category.labels(column=col).inc(n)

    if bundled:
        FraudService.bundled = bentoml.models.BentoModel(bundled)  # type: ignore[attr-defined]

    if serving.batching == "bentoml":

        def score(self: FraudService, records: records_type) -> list[Score]:  # type: ignore[valid-type]
            return [Score(**a) for a in self.score_batch(records)]

        FraudService.score = bentoml.api(  # type: ignore[attr-defined]
            batchable=True,
            max_batch_size=serving.max_batch_size,
            max_latency_ms=serving.max_latency_ms,
        )(score)
    else:

        async def score_async(self: FraudService, records: records_type) -> list[Score]:  # type: ignore[valid-type]
            # Normally fastpath.FastPath answers first; this is BentoML's route for the rest.
            try:
                answers = await self._submit(records)
            except Overloaded as err:
                raise bentoml.exceptions.ServiceUnavailable(str(err)) from None
            return [Score(**a) for a in answers]

        score_async.__name__ = "score"
        FraudService.score = bentoml.api(score_async)  # type: ignore[attr-defined]

    timeout.install()  # BentoML's own leaks a timer per request (serving/timeout.py)
    untraced = () if serving.access_log else (SCORE_PATH,)
    instruments.install(untraced)  # the same series and spans, cheaper (serving/instruments.py)
    service = bentoml.service(
        name=NAME,
        workers=serving.workers,
        traffic={"timeout": serving.request_timeout_seconds},
        http={"host": serving.host, "port": serving.port},
        # Per-request access lines and trace spans cost more CPU than scoring a record; the
        # prediction log and the Prometheus metrics already record every request.
        logging={"access": {"enabled": serving.access_log}},
        tracing={"excluded_urls": ",".join(untraced) or None},
    )(FraudService)
    service.add_asgi_middleware(Edge, hooks=hooks)
    service.add_asgi_middleware(FastPath, hooks=hooks, server_header=f"BentoML Service/{NAME}")
    input_model = service.apis["score"].input_spec
    hooks.openapi = functools.cache(lambda: described(service.openapi_spec.asdict(), settings))
    # BentoML derives a response's media type from the output model's JSON schema, regenerated on
    # every response (~13 % of the worker's CPU under load, profiled); it is always JSON here.
    service.apis["score"].output_spec.media_type = "application/json"
    return service


FraudService = build(bootstrap())
