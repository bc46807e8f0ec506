"""The drift check's I/O: read a window of the prediction log, the labels that have arrived and
the training reference; run `core.drift`; write the report, the summary and the check state.

Layout under `drift.reports` (any URL; local writes are atomic: temp file + rename):

    <UTC stamp>/report.html    Evidently's self-contained report (absent when there was no verdict)
    <UTC stamp>/summary.json   the result, the verdict, the window and where everything is
    state.json                 what persistence and cooldown remember between checks

The check must stay cheap on a large log, so it reads only what it needs: log files flushed
before the window are skipped by name, only the columns the check uses are decoded, rows are
filtered by `scored_at` while reading, and the reference is scored on a sample.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from fsspec.implementations.local import LocalFileSystem

from pipelines.config import Settings
from pipelines.core.drift import CheckState, check, columns_to_check, decide, naive_utc, sample
from pipelines.core.features import FeatureSpec
from pipelines.io import registry, storage
from pipelines.io.prediction_log import PART_GLOB

SCORED_AT = "scored_at"
PREDICTION = "probability"
# PredictionLog names each file after the UTC time of its flush, which comes after every row's
# scored_at; the margin absorbs clock adjustments on the writer.
_FLUSH_STAMP = re.compile(r"part-(\d{8}T\d{6})\d*Z-")
_CLOCK_MARGIN = dt.timedelta(hours=1)


def drift_check(settings: Settings, now: dt.datetime | None = None) -> dict[str, Any]:
    """One scheduled check of the last `drift.window_hours` of the prediction log."""
    now = naive_utc(now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    d, c = settings.drift, settings.contract
    start = now - dt.timedelta(hours=d.window_hours)
    columns = columns_to_check(settings)
    current = read_window(settings.serving.prediction_log, start, now,
                          _unique([c.id, c.timestamp, *columns, PREDICTION]))
    reference, champion = pd.DataFrame(), None
    if len(current) >= d.min_rows:  # below it there is no verdict: spare the reads
        labels = read_labels(settings, current, now)
        current = current.merge(labels[[c.id, c.target]], on=c.id, how="left")  # ids are unique in labels
        reference, champion = read_reference(settings, columns)
    # Without a champion the reference has no predictions: check() then skips prediction drift
    # but still judges quality from the logged predictions.
    result, snapshot = check(reference, current, columns, d, PREDICTION, c.target)
    state_url = storage.join(d.reports, "state.json")
    verdict, state = decide(result, load_state(state_url), now, d)

    out = storage.join(d.reports, now.strftime("%Y%m%dT%H%M%SZ"))
    report = storage.join(out, "report.html") if snapshot is not None else None
    if report is not None:
        storage.write_text(report, snapshot.get_html_str(as_iframe=False))
    summary = {
        **result.to_dict(),
        "confirmed": verdict.confirmed,
        "message": verdict.reason,
        "verdict": verdict.to_dict(),
        "checked_at": now.isoformat(),
        "window": {"start": start.isoformat(), "end": now.isoformat(), "hours": d.window_hours},
        "columns": columns,
        "champion": champion,
        "state": state.to_dict(),
        "report": report,
        "summary": storage.join(out, "summary.json"),
        "paths": {"prediction_log": settings.serving.prediction_log,
                  "reference": _reference_url(settings), "state": state_url},
    }
    storage.write_json(summary["summary"], summary)
    save_state(state_url, state)  # last: a check whose summary is lost does not count
    return summary


def record_retrain(settings: Settings, when: dt.datetime | None = None) -> None:
    """A retraining happened: start the cooldown and forget the detections that led to it."""
    url = storage.join(settings.drift.reports, "state.json")
    state = load_state(url)
    when = naive_utc(when or dt.datetime.now(dt.UTC))
    storage.write_json(url, CheckState(0, state.last_alarm_at, when).to_dict())


def save_state(url: str, state: CheckState) -> None:
    """Write `state`, unless a retraining was recorded since it was read: that one wins.

    The retraining flow calls `record_retrain` while scheduled checks keep running; a check that
    read the state before it must not write the cooldown away.
    """
    latest = load_state(url)
    if latest.last_retrain_at is not None and (state.last_retrain_at is None
                                               or latest.last_retrain_at > state.last_retrain_at):
        state = CheckState(0, state.last_alarm_at, latest.last_retrain_at)
    storage.write_json(url, state.to_dict())


def load_state(url: str) -> CheckState:
    try:
        data = storage.read_json(url)
    except FileNotFoundError:
        return CheckState()
    except ValueError as err:  # a corrupt state must not silently reset persistence and cooldown
        raise ValueError(f"drift check state {url} is unreadable ({err}); fix or delete it") from None
    return CheckState.from_dict(data)


# --- reading ------------------------------------------------------------------------------------


def read_window(url: str, start: dt.datetime, end: dt.datetime, columns: list[str]) -> pd.DataFrame:
    """Logged rows with `start <= scored_at <= end`, only `columns` (plus scored_at).

    Not `read_log`: its date partitions are by transaction time, which says nothing about when
    a record was scored (a replay scores old transactions today), and it decodes every column.
    """
    fs, path = storage.filesystem(url)
    path = path.rstrip("/")
    fs.invalidate_cache(path)
    files = [f for f in sorted(fs.glob(f"{path}/{PART_GLOB}")) if _may_hold(f, start)]
    when = ds.field(SCORED_AT)
    window = (when >= _timestamp(start)) & (when <= _timestamp(end))
    return _scan(fs, files, _unique([*columns, SCORED_AT]), window, url).to_pandas()


def _may_hold(file: str, start: dt.datetime) -> bool:
    """False only for files flushed (by their name) before the window opened."""
    m = _FLUSH_STAMP.search(file.rsplit("/", 1)[-1])
    if m is None:
        return True  # not named by PredictionLog: read it and let scored_at decide
    return dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%S") >= start - _CLOCK_MARGIN


def read_labels(settings: Settings, current: pd.DataFrame, now: dt.datetime) -> pd.DataFrame:
    """Labels that had arrived by `now` for the transactions in `current`.

    The feed is partitioned by arrival day, and a label never arrives before its transaction,
    so only the days from the window's oldest transaction to today can hold one.
    """
    c = settings.contract
    base = storage.join(settings.paths.source, "labels")
    fs, path = storage.filesystem(base)
    first = pd.Timestamp(current[c.timestamp].min()).date()
    days = [day for day in storage.list_partitions(base) if first <= day <= now.date()]
    files = [f"{path.rstrip('/')}/date={day.isoformat()}/part-0.parquet" for day in days]
    keep = [c.id, c.target, *([c.label_timestamp] if c.label_timestamp else [])]
    if not files:
        return pd.DataFrame({name: pd.Series(dtype=current[c.id].dtype if name == c.id else "float64")
                             for name in keep})
    arrived = ds.field(c.label_timestamp) <= _timestamp(now) if c.label_timestamp else None
    table = _scan(fs, files, keep, arrived, base)
    # Arrow's hash lookup; pandas' isin on Arrow-backed strings walks the values in Python.
    table = table.filter(pc.is_in(table[c.id], value_set=pa.array(current[c.id].unique())))
    labels = table.to_pandas()
    if c.label_timestamp:  # a corrected label arrives later: the latest one wins
        labels = labels.sort_values(c.label_timestamp, kind="stable")
    return labels.drop_duplicates(c.id, keep="last")


def _scan(fs: Any, files: list[str], columns: list[str], where: ds.Expression | None, url: str) -> pa.Table:
    """`columns` of the rows of Parquet `files` that satisfy `where`, read in parallel."""
    if not files:
        return pa.table({name: pa.array([], pa.null()) for name in columns})
    arrow_fs = pafs.LocalFileSystem() if isinstance(fs, LocalFileSystem) else pafs.PyFileSystem(pafs.FSSpecHandler(fs))
    factory = ds.FileSystemDatasetFactory(arrow_fs, files, ds.ParquetFileFormat(), ds.FileSystemFactoryOptions())
    # Every file's schema, not the first one's: a column entirely null in one file is typed
    # `null` there, and the first file alone would decide the type for all of them.
    schema = factory.inspect(promote_options="permissive", fragments=None)
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise ValueError(f"{url} lacks columns {missing} (it has {schema.names})")
    return factory.finish(schema).to_table(columns=columns, filter=where)


def _timestamp(t: dt.datetime) -> pa.Scalar:
    return pa.scalar(t, pa.timestamp("us"))


def read_reference(settings: Settings, columns: list[str]) -> tuple[pd.DataFrame, str | None]:
    """A seeded sample of the training table, scored by the champion if there is one."""
    d = settings.drift
    spec = FeatureSpec.from_settings(settings)
    tag = registry.champion_tag()
    needed = _unique([*columns, *(spec.names if tag else [])])
    reference = sample(storage.read_parquet(_reference_url(settings), columns=needed), d.sample_rows, d.seed)
    if tag is None:
        return reference, None
    model = registry.load(tag)
    return reference.assign(**{PREDICTION: model.predict_proba(reference[spec.names])}), tag


def _reference_url(settings: Settings) -> str:
    return storage.join(settings.paths.features, "train.parquet")


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))
