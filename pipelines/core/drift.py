"""Drift rules: does a window of logged predictions differ from the training reference, and does
that difference deserve an alarm? Pure: the measuring (Evidently) lives in `io.drift_report`.

A `Measurement` is what one window measured: per-column drift tests (method and threshold per
column type from `params.drift`), prediction drift, and model quality on the rows whose delayed
label has arrived. Each `DriftCheck` judges one aspect of it and returns a `Finding`; `judge`
runs every check in `CHECKS`, so a new kind of check is one class added there (plus what it
measures, if that is new). `alarm` turns a run of results into an alarm: drift must persist over
consecutive checks, and a retraining buys a cooldown in which nothing alarms (the new model needs
time to meet traffic).

The field's terms: *data drift* (the inputs' distribution moved), *prediction drift* (the
model's output distribution moved), *concept drift* (the relation between inputs and label moved;
seen here as a quality drop once labels arrive).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from pipelines.config import Drift, Settings


def columns_to_check(settings: Settings) -> list[str]:
    """The configured `drift.columns`, else the request-level inputs of the contract."""
    c = settings.contract
    return list(settings.drift.columns or (*c.numeric, *c.categorical))


def sample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most `n` rows drawn without replacement, in their original order; `df` itself if smaller."""
    if len(df) <= n:
        return df
    keep = np.sort(np.random.default_rng(seed).choice(len(df), size=n, replace=False))
    return df.iloc[keep]


def sample_keys(ids: pd.Series, seed: int) -> np.ndarray:
    """(rows,) uint64: each row's place in a window's sample, pandas' hash of its id salted by
    `seed` (`hash_pandas_object`, SipHash): the same record always draws the same key, however
    the log is split into files."""
    salt = f"{seed:016d}"[-16:]
    return pd.util.hash_pandas_object(ids.astype(str), index=False, hash_key=salt).to_numpy()


def lowest_keys(frame: pd.DataFrame, key: str, n: int) -> pd.DataFrame:
    """The `n` rows of `frame` whose `key` is lowest (all of them if there are no more), in
    `frame`'s order. Taken part by part and again over the parts' winners, it gives the rows the
    whole would: a bottom-k sample (Cohen & Kaplan, "Summarizing data using bottom-k sketches",
    PODC 2007), uniform when the keys are hashes."""
    if len(frame) <= n:
        return frame
    keep = np.sort(np.argpartition(frame[key].to_numpy(), n - 1)[:n])
    return frame.iloc[keep]


# --- what one window measured -------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnDrift:
    """One column's drift test: `score` by `method` against `threshold`; `drifted` is the test's
    verdict (for p-value methods a low score is drift, so never recompute it from the score)."""

    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class Quality:
    """Ranking quality of the logged predictions on the labelled rows of the window."""

    roc_auc: float
    labelled: int
    positives: int


@dataclass(frozen=True)
class Measurement:
    """What the drift report measured on one window (`io.drift_report.measure`).

    `columns`: the tested input columns; `untestable`: columns that could not be tested, with why
    (e.g. every value missing); `prediction`: None when not judged (no champion scored the
    reference); `quality`: None when fewer than `drift.min_labelled` labelled rows of both classes.
    """

    rows: int  # current rows in the window, before sampling
    reference_rows: int
    columns: dict[str, ColumnDrift]
    untestable: dict[str, str]
    prediction: ColumnDrift | None
    labelled: int  # current rows with a known label and a prediction
    quality: Quality | None


# --- checks ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One check's judgement of a measurement: whether it found drift, in one line for a person,
    and the numbers behind it."""

    check: str
    detected: bool
    text: str
    facts: dict[str, Any]


class DriftCheck(Protocol):
    """A kind of drift, judged on a `Measurement` with the `params.drift` rules."""

    name: str

    def judge(self, m: Measurement, params: Drift) -> Finding: ...


class DataDrift:
    """Data drift: at least `drift.drift_share` of the tested input columns drifted (Evidently's
    dataset-drift rule, applied to per-column test verdicts)."""

    name = "data_drift"

    def judge(self, m: Measurement, params: Drift) -> Finding:
        drifted = [c for c, s in m.columns.items() if s.drifted]
        share = len(drifted) / len(m.columns) if m.columns else 0.0
        detected = bool(m.columns) and share >= params.drift_share
        if drifted:
            text = f"{', '.join(drifted)} (share {share:.2f} {'>=' if detected else '<'} {params.drift_share:.2f})"
        else:
            text = "no input column drifted"
        if m.untestable:
            text += (
                f"; not testable: {', '.join(f'{c} ({why})' for c, why in m.untestable.items())}"
            )
        return Finding(
            self.name,
            detected,
            text,
            {
                "drifted_columns": drifted,
                "share": share,
                "drift_share": params.drift_share,
                "columns": {c: dataclasses.asdict(s) for c, s in m.columns.items()},
                "untestable": dict(m.untestable),
            },
        )


class PredictionDrift:
    """Prediction drift: the champion's scores on the window moved away from its scores on the
    reference (the same drift test as a numeric input)."""

    name = "prediction_drift"

    def judge(self, m: Measurement, params: Drift) -> Finding:
        p = m.prediction
        if p is None:
            return Finding(self.name, False, "", {"prediction": None})
        text = (
            f"prediction drift ({p.method} {p.score:.3f}, threshold {p.threshold})"
            if p.drifted
            else ""
        )
        return Finding(self.name, p.drifted, text, {"prediction": dataclasses.asdict(p)})


class QualityDrop:
    """Concept drift, seen once labels arrive: ROC-AUC on the labelled rows below `drift.min_quality`."""

    name = "quality_drift"

    def judge(self, m: Measurement, params: Drift) -> Finding:
        q = m.quality
        facts: dict[str, Any] = {
            "labelled": m.labelled,
            "min_quality": params.min_quality,
            "quality": None if q is None else dataclasses.asdict(q),
        }
        if q is None:
            return Finding(self.name, False, "", facts)
        dropped = params.min_quality is not None and q.roc_auc < params.min_quality
        if dropped:
            text = f"quality drop (ROC-AUC {q.roc_auc:.3f} < {params.min_quality} on {q.labelled:,} labelled rows)"
        else:
            text = f"ROC-AUC {q.roc_auc:.3f} on {q.labelled:,} labelled rows"
        return Finding(self.name, dropped, text, facts)


CHECKS: tuple[DriftCheck, ...] = (DataDrift(), PredictionDrift(), QualityDrop())


# --- one window's result --------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftResult:
    """The checks' findings on one window; `measurement` is None when the window had fewer than
    `drift.min_rows` rows (no verdict either way)."""

    rows: int
    reference_rows: int
    min_rows: int
    measurement: Measurement | None
    findings: tuple[Finding, ...] = ()

    @property
    def sufficient(self) -> bool:
        return self.measurement is not None

    @property
    def detected(self) -> bool:
        return any(f.detected for f in self.findings)

    def found(self, check: str) -> bool:
        """Whether the check named `check` found drift (False if it did not run)."""
        return any(f.detected for f in self.findings if f.check == check)

    def finding(self, check: str) -> Finding | None:
        return next((f for f in self.findings if f.check == check), None)

    def describe(self) -> str:
        """What the checks found, in one line a person can act on."""
        return "; ".join(f.text for f in self.findings if f.text)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the sizes, every finding, and each finding's facts at the top level (the
        summary file's flat keys: drifted_columns, share, prediction, quality, ...)."""
        out: dict[str, Any] = {
            "rows": self.rows,
            "reference_rows": self.reference_rows,
            "min_rows": self.min_rows,
            "sufficient": self.sufficient,
            "detected": self.detected,
            "labelled": 0,
            "quality": None,
            "prediction": None,
            "drifted_columns": [],
            "share": 0.0,
            "untestable": {},
        }
        out.update({check.name: False for check in CHECKS})  # an unmeasured window found nothing
        for f in self.findings:
            out.update(f.facts)
            out[f.check] = f.detected
        out["column_scores"] = out.pop("columns", {})
        out["findings"] = [dataclasses.asdict(f) for f in self.findings]
        return out


def judge(
    measurement: Measurement, params: Drift, checks: Sequence[DriftCheck] = CHECKS
) -> DriftResult:
    """Every check's finding on a sufficient window's measurement."""
    return DriftResult(
        measurement.rows,
        measurement.reference_rows,
        params.min_rows,
        measurement,
        tuple(check.judge(measurement, params) for check in checks),
    )


def insufficient(rows: int, reference_rows: int, params: Drift) -> DriftResult:
    """The result of a window with fewer than `drift.min_rows` rows: nothing measured."""
    return DriftResult(rows, reference_rows, params.min_rows, None)


# --- from checks to an alarm ----------------------------------------------------------------------


@dataclass(frozen=True)
class CheckState:
    """What `alarm` remembers between checks."""

    consecutive: int = 0  # detected checks in a row, since the last alarm
    last_alarm_at: dt.datetime | None = None
    last_retrain_at: dt.datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "consecutive": self.consecutive,
            "last_alarm_at": _iso(self.last_alarm_at),
            "last_retrain_at": _iso(self.last_retrain_at),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckState:
        """From `to_dict`'s form; aware timestamps are converted to naive UTC. Raises ValueError
        on a malformed value."""
        return cls(
            consecutive=int(data.get("consecutive", 0)),
            last_alarm_at=_parse(data.get("last_alarm_at")),
            last_retrain_at=_parse(data.get("last_retrain_at")),
        )


@dataclass(frozen=True)
class Verdict:
    """Whether the checks so far amount to an alarm, and why, in one line."""

    confirmed: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"confirmed": self.confirmed, "reason": self.reason}


def alarm(
    result: DriftResult, state: CheckState, now: dt.datetime, params: Drift
) -> tuple[Verdict, CheckState]:
    """Persistence and cooldown over successive check results: the verdict and the next state.

    An insufficient window says nothing either way, so it neither counts nor resets. Inside the
    cooldown a detection does not accumulate: the drift it sees is what the retraining is about
    to address, and counting it would fire the moment the cooldown ends.
    """
    now = naive_utc(now)
    if not result.sufficient:
        return Verdict(
            False,
            f"no verdict: {result.rows} logged rows in the window, fewer than "
            f"drift.min_rows={result.min_rows}",
        ), state
    if not result.detected:
        return Verdict(False, f"no drift: {result.describe()}"), dataclasses.replace(
            state, consecutive=0
        )
    cooldown_end = _cooldown_end(state, params)
    if cooldown_end is not None and now < cooldown_end:
        return Verdict(
            False,
            f"drift detected but not counted (cooldown after retraining until "
            f"{cooldown_end.isoformat(timespec='minutes')}): {result.describe()}",
        ), dataclasses.replace(state, consecutive=0)
    seen = state.consecutive + 1
    if seen < params.persistence:
        return Verdict(
            False,
            f"drift detected in {seen} of {params.persistence} consecutive checks "
            f"needed: {result.describe()}",
        ), dataclasses.replace(state, consecutive=seen)
    return Verdict(
        True, f"drift confirmed in {seen} consecutive checks: {result.describe()}"
    ), dataclasses.replace(state, consecutive=0, last_alarm_at=now)


def _cooldown_end(state: CheckState, params: Drift) -> dt.datetime | None:
    if state.last_retrain_at is None:
        return None
    return state.last_retrain_at + dt.timedelta(hours=params.cooldown_hours)


def naive_utc(t: dt.datetime) -> dt.datetime:
    """The project keeps naive UTC timestamps; an aware one is converted, not reinterpreted."""
    return t.astimezone(dt.UTC).replace(tzinfo=None) if t.tzinfo is not None else t


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _parse(value: str | None) -> dt.datetime | None:
    return None if value is None else naive_utc(dt.datetime.fromisoformat(value))
