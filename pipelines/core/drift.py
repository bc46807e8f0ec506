"""Drift rules: is a window of logged predictions different from the training reference, and
does that difference deserve an alarm?

`check` measures one window: per-column feature drift and prediction drift with Evidently (the
methods and thresholds come from `params.drift`, numeric and categorical columns separately),
and model quality (ROC-AUC) on the rows whose delayed label has arrived. `decide` turns a run
of such results into an alarm: drift must persist over consecutive checks, and a retraining
buys a cooldown in which nothing alarms (the new model needs time to meet traffic).

No file or network I/O here; Evidently is imported only when a check actually runs, so that
importing this module stays cheap for the service.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipelines.config import Drift, Settings

_DRIFTED, _NOT_DRIFTED = "FAIL", "SUCCESS"


def columns_to_check(settings: Settings) -> list[str]:
    """The configured columns, else the request-level inputs of the contract."""
    c = settings.contract
    return list(settings.drift.columns or (*c.numeric, *c.categorical))


def sample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most `n` rows drawn without replacement, in their original order; all rows if fewer."""
    if len(df) <= n:
        return df
    keep = np.sort(np.random.default_rng(seed).choice(len(df), size=n, replace=False))
    return df.iloc[keep]


# --- one check --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftResult:
    rows: int                     # current rows in the window (before sampling)
    reference_rows: int
    sufficient: bool              # rows >= min_rows: below it there is no verdict at all
    min_rows: int
    drifted_columns: list[str]
    column_scores: dict[str, dict[str, Any]]  # name -> {method, score, threshold, drifted}
    share: float                  # drifted / tested columns
    drift_share: float
    data_drift: bool
    prediction: dict[str, Any] | None  # like a column score; None when not judged
    prediction_drift: bool
    labelled: int                 # current rows with a known target and a prediction
    quality: dict[str, Any] | None     # {roc_auc, labelled, positives, min_quality}; None: too few labels
    quality_drift: bool
    detected: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    params: Drift,
    prediction: str | None = "probability",
    target: str | None = None,
) -> tuple[DriftResult, Any]:
    """Compare `current` with `reference`; returns the result and the Evidently snapshot.

    Prediction drift is judged when both frames have the `prediction` column (without a champion
    the reference has none); quality needs only `current`'s predictions and `target`. Both frames
    are sampled to `params.sample_rows`; quality uses every labelled current row.
    """
    if len(current) < params.min_rows:
        return _insufficient(reference, current, params), None
    missing = [c for c in columns if c not in current.columns or c not in reference.columns]
    if missing:
        raise ValueError(f"drift columns {missing} are missing from the reference or the current window")
    judge_prediction = prediction is not None and prediction in reference.columns and prediction in current.columns
    ref = sample(reference, params.sample_rows, params.seed)
    cur = sample(current, params.sample_rows, params.seed)
    snapshot = _run_evidently(ref, cur, columns, params, prediction if judge_prediction else None)
    scores = _scores(snapshot.dict())
    column_scores = {c: scores[c] for c in columns}
    drifted = [c for c in columns if column_scores[c]["drifted"]]
    share = len(drifted) / len(columns)
    pred = scores[prediction] if judge_prediction and prediction is not None else None
    labelled, quality = _quality(current, prediction, target, params)
    quality_drift = bool(quality is not None and params.min_quality is not None
                         and quality["roc_auc"] < params.min_quality)
    data_drift = share >= params.drift_share
    prediction_drift = bool(pred and pred["drifted"])
    return DriftResult(
        rows=len(current), reference_rows=len(reference), sufficient=True, min_rows=params.min_rows,
        drifted_columns=drifted, column_scores=column_scores, share=share, drift_share=params.drift_share,
        data_drift=data_drift, prediction=pred, prediction_drift=prediction_drift,
        labelled=labelled, quality=quality, quality_drift=quality_drift,
        detected=data_drift or prediction_drift or quality_drift,
    ), snapshot


def _insufficient(reference: pd.DataFrame, current: pd.DataFrame, params: Drift) -> DriftResult:
    return DriftResult(
        rows=len(current), reference_rows=len(reference), sufficient=False, min_rows=params.min_rows,
        drifted_columns=[], column_scores={}, share=0.0, drift_share=params.drift_share,
        data_drift=False, prediction=None, prediction_drift=False,
        labelled=0, quality=None, quality_drift=False, detected=False,
    )


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)


def _run_evidently(ref: pd.DataFrame, cur: pd.DataFrame, columns: list[str], params: Drift,
                   prediction: str | None) -> Any:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    numeric = [c for c in columns if _is_numeric(ref[c])]
    categorical = [c for c in columns if c not in numeric]
    keep = [*columns, *([prediction] if prediction else [])]
    definition = DataDefinition(numerical_columns=numeric + ([prediction] if prediction else []),
                                categorical_columns=categorical)
    metrics: list[Any] = [DataDriftPreset(
        columns=list(columns), drift_share=params.drift_share,
        num_method=params.num_method, num_threshold=params.num_threshold,
        cat_method=params.cat_method, cat_threshold=params.cat_threshold,
    )]
    if prediction:
        # Kept out of the preset so that it does not count in the share of drifted inputs.
        metrics.append(ValueDrift(column=prediction, method=params.num_method, threshold=params.num_threshold))
    datasets = {name: Dataset.from_pandas(frame[keep].reset_index(drop=True), data_definition=definition)
                for name, frame in (("current", cur), ("reference", ref))}
    report = Report(metrics, include_tests=True)
    return report.run(current_data=datasets["current"], reference_data=datasets["reference"])


def _scores(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Column -> {method, score, threshold, drifted} from the per-column drift tests.

    Evidently has no per-column boolean in its metric values: the verdict is the status of the
    ValueDrift test, which also gets the direction right for p-value methods (lower = drift).
    """
    values = {m["id"]: m["value"] for m in snapshot["metrics"]}
    out: dict[str, dict[str, Any]] = {}
    for test in snapshot["tests"]:
        config = test["metric_config"]
        params = config["params"]
        if not params["type"].endswith(":ValueDrift"):
            continue
        if test["status"] not in (_DRIFTED, _NOT_DRIFTED):
            raise RuntimeError(f"Evidently could not test drift of {params['column']!r}: {test['description']}")
        out[params["column"]] = {
            "method": params.get("method"),
            "score": float(values[config["metric_id"]]),
            "threshold": params.get("threshold"),
            "drifted": test["status"] == _DRIFTED,
        }
    return out


def _quality(current: pd.DataFrame, prediction: str | None, target: str | None,
             params: Drift) -> tuple[int, dict[str, Any] | None]:
    """(labelled rows, quality); quality is None unless enough labelled rows of both classes."""
    if prediction is None or target is None or prediction not in current or target not in current:
        return 0, None
    y = pd.to_numeric(current[target], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    p = pd.to_numeric(current[prediction], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    known = ~np.isnan(y) & ~np.isnan(p)
    labelled, positives = int(known.sum()), int((y[known] > 0).sum())
    if labelled < params.min_labelled or positives in (0, labelled):
        return labelled, None
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(y[known] > 0, p[known]))
    return labelled, {"roc_auc": auc, "labelled": labelled, "positives": positives,
                      "min_quality": params.min_quality}


# --- from checks to an alarm ------------------------------------------------------------------


@dataclass(frozen=True)
class CheckState:
    """What `decide` remembers between checks."""

    consecutive: int = 0                   # detected checks in a row, since the last alarm
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
        return cls(
            consecutive=int(data.get("consecutive", 0)),
            last_alarm_at=_parse(data.get("last_alarm_at")),
            last_retrain_at=_parse(data.get("last_retrain_at")),
        )


@dataclass(frozen=True)
class Verdict:
    confirmed: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"confirmed": self.confirmed, "reason": self.reason}


def decide(result: DriftResult, state: CheckState, now: dt.datetime, params: Drift) -> tuple[Verdict, CheckState]:
    """Persistence and cooldown over successive check results.

    An insufficient window says nothing either way, so it neither counts nor resets. Inside the
    cooldown a detection does not accumulate: the drift it sees is what the retraining is about
    to address, and counting it would fire the moment the cooldown ends.
    """
    now = naive_utc(now)
    if not result.sufficient:
        return Verdict(False, f"no verdict: {result.rows} logged rows in the window, fewer than "
                              f"drift.min_rows={result.min_rows}"), state
    if not result.detected:
        return Verdict(False, f"no drift: {describe(result)}"), dataclasses.replace(state, consecutive=0)
    cooldown_end = _cooldown_end(state, params)
    if cooldown_end is not None and now < cooldown_end:
        return Verdict(False, f"drift detected but not counted (cooldown after retraining until "
                              f"{cooldown_end.isoformat(timespec='minutes')}): {describe(result)}"), \
            dataclasses.replace(state, consecutive=0)
    seen = state.consecutive + 1
    if seen < params.persistence:
        return Verdict(False, f"drift detected in {seen} of {params.persistence} consecutive checks "
                              f"needed: {describe(result)}"), dataclasses.replace(state, consecutive=seen)
    return Verdict(True, f"drift confirmed in {seen} consecutive checks: {describe(result)}"), \
        dataclasses.replace(state, consecutive=0, last_alarm_at=now)


def describe(result: DriftResult) -> str:
    """What the check found, in one line a person can act on."""
    parts = []
    if result.drifted_columns:
        cmp = ">=" if result.data_drift else "<"
        parts.append(f"{', '.join(result.drifted_columns)} (share {result.share:.2f} {cmp} {result.drift_share:.2f})")
    else:
        parts.append("no input column drifted")
    if result.prediction_drift and result.prediction:
        p = result.prediction
        parts.append(f"prediction drift ({p['method']} {p['score']:.3f}, threshold {p['threshold']})")
    if result.quality is not None:
        q = result.quality
        if result.quality_drift:
            parts.append(f"quality drop (ROC-AUC {q['roc_auc']:.3f} < {q['min_quality']} "
                         f"on {q['labelled']:,} labelled rows)")
        else:
            parts.append(f"ROC-AUC {q['roc_auc']:.3f} on {q['labelled']:,} labelled rows")
    return "; ".join(parts)


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
