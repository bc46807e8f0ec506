"""The drift-check job: a window of the prediction log against the training reference.

Reads the window (`io.prediction_log.read_window_sample`: every row up to `drift.read_rows`, a
uniform sample of that size beyond), the labels that have arrived for it
(`io.source.read_labels`) and a seeded sample of the training table scored by the champion;
measures with Evidently (`io.drift_report`), judges with the rules of `core.drift`, and writes
the report, the summary and the check state (`core.layout` names them):

    <drift.reports>/<UTC stamp>/report.html    Evidently's self-contained report (absent without a verdict)
    <drift.reports>/<UTC stamp>/summary.json   the result, the verdict, the window, where everything is
    <drift.reports>/state.json                 what persistence and cooldown remember between checks

The report opens with the verdict and every fact it rests on (each check's finding, persistence,
cooldown, labelled quality through Evidently's classification metrics). Check directories older
than `drift.retention_days` are deleted, except those of checks that confirmed drift.

Local writes are atomic (temp file + rename). The job stays cheap on a large log: log files
flushed before the window are skipped by name, only the columns the check uses are decoded, rows
are filtered by `scored_at` while reading, a window past `drift.read_rows` is sampled a batch at
a time (memory does not grow with traffic), and the reference is scored on a sample.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import pandas as pd

from pipelines.config import Drift, Settings
from pipelines.core import drift
from pipelines.core.drift import CheckState, columns_to_check, naive_utc, sample
from pipelines.core.features import FeatureSpec
from pipelines.core.layout import Layout
from pipelines.io import drift_metrics, drift_report, registry, source, storage
from pipelines.io.prediction_log import LogColumn, read_window_sample

log = logging.getLogger(__name__)
STAMP = "%Y%m%dT%H%M%SZ"  # a check's directory: the UTC time it ran


def run(settings: Settings, now: dt.datetime | None = None) -> dict[str, Any]:
    """One check of the last `drift.window` of the prediction log, as of `now` (default: the
    current UTC time). Returns the summary it wrote (see the module docstring) and pushes it to
    `monitoring.pushgateway`; a check that fails pushes its failure time, then raises.

    Raises ValueError when the check state is unreadable or a column is missing, StorageError
    when a location cannot be read.
    """
    now = naive_utc(now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    gateway = settings.monitoring.pushgateway
    try:
        summary = check(settings, now)
    except Exception:
        if gateway:
            _best_effort(
                lambda: drift_metrics.push_failure(gateway, now, settings.project), gateway
            )
        raise
    if gateway:
        _best_effort(
            lambda: drift_metrics.push_result(
                gateway, summary, settings.drift.min_quality, settings.project
            ),
            gateway,
        )
    return summary


def _best_effort(push: Callable[[], None], gateway: str) -> None:
    """Monitoring must not turn a check into a failure: a Pushgateway outage is logged (and seen in
    Prometheus as a stale last-success time)."""
    try:
        push()
    except OSError as err:
        log.warning("drift check: cannot push to %s: %s", gateway, err)


def check(settings: Settings, now: dt.datetime) -> dict[str, Any]:
    """The check itself (see `run`)."""
    d, c, layout = settings.drift, settings.contract, Layout(settings)
    start = d.window.before(pd.Timestamp(now)).to_pydatetime()
    columns = columns_to_check(settings)
    current, window_rows = read_window_sample(
        settings.serving.prediction_log,
        start,
        now,
        list(dict.fromkeys([c.id, c.timestamp, *columns, LogColumn.PROBABILITY])),
        d.read_rows,
        c.id,
        d.seed,
    )
    reference, champion = pd.DataFrame(), None
    if len(current) >= d.min_rows:  # below it there is no verdict: spare the reads
        first_day = pd.Timestamp(current[c.timestamp].min()).date()
        labels = source.read_labels(
            settings.paths.source, c, current[c.id].unique().tolist(), first_day, now
        )
        current = current.merge(
            labels[[c.id, c.target]], on=c.id, how="left"
        )  # ids are unique in labels
        reference, champion = read_reference(settings, columns)
    # Without a champion the reference has no predictions: prediction drift is not judged, but
    # quality still is, from the logged predictions.
    result, snapshots = drift_report.check(
        reference, current, columns, d, LogColumn.PROBABILITY, c.target
    )
    verdict, state = drift.alarm(result, load_state(layout.drift_state), now, d)

    stamp = now.strftime(STAMP)
    report = layout.drift_report(stamp) if snapshots is not None else None
    if snapshots is not None and report is not None:
        storage.write_text(
            report, drift_report.html(snapshots, *explained(result, verdict, state, d, champion))
        )
    summary = {
        **result.to_dict(),
        "confirmed": verdict.confirmed,
        "message": verdict.reason,
        "verdict": verdict.to_dict(),
        "checked_at": now.isoformat(),
        "window": {
            "start": start.isoformat(),
            "end": now.isoformat(),
            "span": str(d.window),
            "rows": window_rows,  # `rows` above counts those read: a sample past drift.read_rows
        },
        "columns": columns,
        "champion": champion,
        "state": state.to_dict(),
        "report": report,
        "summary": layout.drift_summary(stamp),
        "paths": {
            "prediction_log": settings.serving.prediction_log,
            "reference": layout.train_table,
            "state": layout.drift_state,
        },
    }
    storage.write_json(summary["summary"], summary)
    save_state(layout.drift_state, state)  # last: a check whose summary is lost does not count
    prune(settings, now)
    return summary


def explained(
    result: drift.DriftResult,
    verdict: drift.Verdict,
    state: CheckState,
    params: Drift,
    champion: str | None,
) -> tuple[str, str, list[tuple[str, str]]]:
    """The report's header: a headline, the findings in Markdown, and (label, value) facts."""
    if verdict.confirmed:
        headline = "DRIFT CONFIRMED: retraining is triggered"
    elif result.detected:
        headline = "drift detected, not (yet) an alarm"
    else:
        headline = "no drift"
    lines = [f"**Verdict:** {verdict.reason}", ""]
    for f in result.findings:
        lines.append(
            f"- **{f.check.replace('_', ' ')}**: {'DETECTED' if f.detected else 'not detected'}"
            f"{' - ' + f.text if f.text else ''}"
        )
    m = result.measurement
    quality = m.quality if m is not None else None
    cooldown = (
        (state.last_retrain_at + dt.timedelta(hours=params.cooldown_hours)).isoformat(
            timespec="minutes"
        )
        if state.last_retrain_at is not None
        else "none"
    )
    facts = [
        ("rows in the window", f"{result.rows:,}"),
        ("labelled rows", f"{m.labelled:,}" if m is not None else "0"),
        (
            "ROC-AUC (labelled)",
            f"{quality.roc_auc:.3f} (floor {params.min_quality})" if quality else "not judged",
        ),
        (
            "detections in a row",
            f"{state.consecutive} of {params.persistence}"
            if not verdict.confirmed
            else f"{params.persistence} of {params.persistence}",
        ),
        ("cooldown after retraining until", cooldown),
        ("champion", champion or "none (prediction drift not judged)"),
    ]
    return headline, "\n".join(lines), facts


def prune(settings: Settings, now: dt.datetime) -> list[str]:
    """Delete the check directories older than `drift.retention_days`, except those of checks that
    confirmed drift (kept for the post-mortem). Returns the URLs removed."""
    d, layout = settings.drift, Layout(settings)
    oldest = now - dt.timedelta(days=d.retention_days)
    fs, base = storage.filesystem(d.reports)
    removed = []
    for entry in fs.ls(base, detail=False) if fs.exists(base) else []:
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        try:
            when = dt.datetime.strptime(name, STAMP)
        except ValueError:
            continue  # not a check directory (state.json, ...)
        if when >= oldest:
            continue
        try:
            confirmed = storage.read_json(layout.drift_summary(name)).get("confirmed", False)
        except (FileNotFoundError, ValueError):
            confirmed = False
        if not confirmed:
            storage.remove(layout.drift_run(name))
            removed.append(layout.drift_run(name))
    return removed


def record_retrain(settings: Settings, when: dt.datetime | None = None) -> None:
    """A retraining happened at `when` (default: now): start the cooldown and forget the
    detections that led to it."""
    url = Layout(settings).drift_state
    state = load_state(url)
    when = naive_utc(when or dt.datetime.now(dt.UTC))
    storage.write_json(url, CheckState(0, state.last_alarm_at, when).to_dict())


def save_state(url: str, state: CheckState) -> None:
    """Write `state`, unless a retraining was recorded since it was read: that one wins.

    The retraining flow calls `record_retrain` while scheduled checks keep running; a check that
    read the state before it must not write the cooldown away.
    """
    latest = load_state(url)
    if latest.last_retrain_at is not None and (
        state.last_retrain_at is None or latest.last_retrain_at > state.last_retrain_at
    ):
        state = CheckState(0, state.last_alarm_at, latest.last_retrain_at)
    storage.write_json(url, state.to_dict())


def load_state(url: str) -> CheckState:
    """The stored state, or a fresh one if there is none. Raises ValueError naming `url` when it is
    unreadable: a corrupt state must not silently reset persistence and cooldown."""
    try:
        data = storage.read_json(url)
    except FileNotFoundError:
        return CheckState()
    except ValueError as err:
        raise ValueError(
            f"drift check state {url} is unreadable ({err}); fix or delete it"
        ) from None
    return CheckState.from_dict(data)


def read_reference(settings: Settings, columns: list[str]) -> tuple[pd.DataFrame, str | None]:
    """A seeded sample of the training table and the champion's tag; the sample carries the
    champion's predictions when there is one."""
    d = settings.drift
    spec = FeatureSpec.from_settings(settings)
    tag = registry.champion_tag()
    needed = list(dict.fromkeys([*columns, *(spec.names if tag else [])]))
    reference = sample(
        storage.read_parquet(Layout(settings).train_table, columns=needed), d.sample_rows, d.seed
    )
    if tag is None:
        return reference, None
    model = registry.load(tag)
    return reference.assign(
        **{LogColumn.PROBABILITY: model.predict_proba(reference[spec.names])}
    ), tag
