"""The Evidently adapter: measure one window against the reference, and render the report.

`measure` samples both frames (seeded) and runs two Evidently reports: per-column drift tests
(the method and threshold per column type from `params.drift`) on the inputs and, when the
reference carries the champion's predictions, on the prediction; and, on the current rows whose
label has arrived, Evidently's classification metrics (its ROC-AUC is the quality the checks
judge). What the numbers mean is decided in `core.drift`. `html` renders both reports as one
self-contained page under a header with the verdict and every fact it rests on.

Evidently is imported only when a check runs, so importing this module stays cheap. The page is
assembled from Evidently 0.7's own widgets (`render_widgets`, `text_widget`, a snapshot's
widgets): internal API, pinned with the version in the lock file and covered by a test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipelines.config import Drift
from pipelines.core.drift import (
    ColumnDrift,
    DriftResult,
    Measurement,
    Quality,
    insufficient,
    judge,
    sample,
)

_DRIFTED, _NOT_DRIFTED = "FAIL", "SUCCESS"


@dataclass(frozen=True)
class Snapshots:
    """Evidently's results on one window: the drift report, and the classification report on the
    labelled rows (None when there were too few)."""

    drift: Any
    quality: Any | None


def check(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    params: Drift,
    prediction: str | None = "probability",
    target: str | None = None,
) -> tuple[DriftResult, Snapshots | None]:
    """Measure and judge one window: the result and Evidently's snapshots (None below
    `params.min_rows` current rows, when nothing is measured). See `measure`."""
    if len(current) < params.min_rows:
        return insufficient(len(current), len(reference), params), None
    measurement, snapshots = measure(reference, current, columns, params, prediction, target)
    return judge(measurement, params), snapshots


def measure(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    params: Drift,
    prediction: str | None = "probability",
    target: str | None = None,
) -> tuple[Measurement, Snapshots]:
    """What `current` (rows × columns, plus `prediction` and `target`) shows against `reference`.

    Prediction drift is measured when both frames have the `prediction` column (without a champion
    the reference has none); quality needs `current`'s predictions and `target`, with at least
    `params.min_labelled` labelled rows of both classes. Every frame is sampled (seeded) to at most
    `params.sample_rows` rows. A column with no value at all on either side cannot be tested: it
    is reported as such, the others are tested. Raises ValueError naming the columns missing from
    either frame.
    """
    missing = [c for c in columns if c not in current.columns or c not in reference.columns]
    if missing:
        raise ValueError(
            f"drift columns {missing} are missing from the reference or the current window"
        )
    untestable = {
        c: f"no values in the {side}"
        for c in columns
        for side, frame in (("current window", current), ("reference", reference))
        if frame[c].isna().all()
    }
    tested = [c for c in columns if c not in untestable]
    judged = (
        prediction is not None and prediction in reference.columns and prediction in current.columns
    )
    ref = sample(reference, params.sample_rows, params.seed)
    cur = sample(current, params.sample_rows, params.seed)
    drift = _drift_report(ref, cur, tested, params, prediction if judged else None)
    scores = _scores(drift.dict())
    labelled, positives, quality_snapshot = _quality_report(
        reference if judged else None, current, prediction, target, params
    )
    quality = None
    if quality_snapshot is not None:
        quality = Quality(
            roc_auc=_roc_auc(quality_snapshot.dict()), labelled=labelled, positives=positives
        )
    return Measurement(
        rows=len(current),
        reference_rows=len(reference),
        columns={c: scores[c] for c in tested},
        untestable=untestable,
        prediction=scores[prediction] if judged and prediction else None,
        labelled=labelled,
        quality=quality,
    ), Snapshots(drift, quality_snapshot)


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)


def _drift_report(
    ref: pd.DataFrame, cur: pd.DataFrame, columns: list[str], params: Drift, prediction: str | None
) -> Any:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    numeric = [c for c in columns if _is_numeric(ref[c])]
    categorical = [c for c in columns if c not in numeric]
    keep = [*columns, *([prediction] if prediction else [])]
    definition = DataDefinition(
        numerical_columns=numeric + ([prediction] if prediction else []),
        categorical_columns=categorical,
    )
    metrics: list[Any] = []
    if columns:
        metrics.append(
            DataDriftPreset(
                columns=list(columns),
                drift_share=params.drift_share,
                num_method=params.num_method,
                num_threshold=params.num_threshold,
                cat_method=params.cat_method,
                cat_threshold=params.cat_threshold,
            )
        )
    if prediction:
        # Kept out of the preset so that it does not count in the share of drifted inputs.
        metrics.append(
            ValueDrift(column=prediction, method=params.num_method, threshold=params.num_threshold)
        )
    datasets = {
        name: Dataset.from_pandas(frame[keep].reset_index(drop=True), data_definition=definition)
        for name, frame in (("current", cur), ("reference", ref))
    }
    return Report(metrics, include_tests=True).run(
        current_data=datasets["current"], reference_data=datasets["reference"]
    )


def _labelled(frame: pd.DataFrame, prediction: str, target: str) -> pd.DataFrame:
    """The rows with a known label and a prediction, the label as 0/1."""
    y = pd.to_numeric(frame[target], errors="coerce")
    p = pd.to_numeric(frame[prediction], errors="coerce")
    known = (y.notna() & p.notna()).to_numpy()
    return pd.DataFrame(
        {
            target: (y[known] > 0).astype(np.int64).to_numpy(),
            prediction: p[known].astype(np.float64).to_numpy(),
        }
    )


def _quality_report(
    reference: pd.DataFrame | None,
    current: pd.DataFrame,
    prediction: str | None,
    target: str | None,
    params: Drift,
) -> tuple[int, int, Any]:
    """(labelled rows, positives, Evidently's classification snapshot or None if too few rows of
    both classes to judge)."""
    if prediction is None or target is None or prediction not in current or target not in current:
        return 0, 0, None
    cur = _labelled(current, prediction, target)
    labelled, positives = len(cur), int(cur[target].sum())
    if labelled < params.min_labelled or positives in (0, labelled):
        return labelled, positives, None
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    definition = DataDefinition(
        classification=[
            BinaryClassification(target=target, prediction_probas=prediction, pos_label=1)
        ]
    )
    ref = (
        _labelled(reference, prediction, target)
        if reference is not None and target in reference
        else None
    )
    datasets = [
        Dataset.from_pandas(
            sample(frame, params.sample_rows, params.seed).reset_index(drop=True),
            data_definition=definition,
        )
        if frame is not None and len(frame)
        else None
        for frame in (cur, ref)
    ]
    snapshot = Report([ClassificationPreset()]).run(
        current_data=datasets[0], reference_data=datasets[1]
    )
    return labelled, positives, snapshot


def _roc_auc(snapshot: dict[str, Any]) -> float:
    """Evidently's ROC-AUC of the current rows, from its classification snapshot."""
    for metric in snapshot["metrics"]:
        if metric["config"]["type"].endswith(":RocAuc"):
            return float(metric["value"])
    raise RuntimeError("Evidently's classification report has no ROC-AUC")


def _scores(snapshot: dict[str, Any]) -> dict[str, ColumnDrift]:
    """Column -> its drift test, from Evidently's per-column tests.

    Evidently has no per-column boolean in its metric values: the verdict is the status of the
    ValueDrift test, which also gets the direction right for p-value methods (lower = drift).
    """
    values = {m["id"]: m["value"] for m in snapshot["metrics"]}
    out: dict[str, ColumnDrift] = {}
    for test in snapshot["tests"]:
        config = test["metric_config"]
        params = config["params"]
        if not params["type"].endswith(":ValueDrift"):
            continue
        if test["status"] not in (_DRIFTED, _NOT_DRIFTED):
            raise RuntimeError(
                f"Evidently could not test drift of {params['column']!r}: {test['description']}"
            )
        out[params["column"]] = ColumnDrift(
            method=params.get("method"),
            score=float(values[config["metric_id"]]),
            threshold=params.get("threshold"),
            drifted=test["status"] == _DRIFTED,
        )
    return out


def html(
    snapshots: Snapshots, headline: str, summary_markdown: str, facts: Sequence[tuple[str, str]]
) -> str:
    """One self-contained HTML page: `headline` and `facts` (label, value) as counters on top,
    `summary_markdown` under them, then Evidently's drift report and its classification report on
    the labelled rows (when there were enough). No external resource is loaded."""
    from evidently.core.metric_types import render_widgets
    from evidently.legacy.renderers.html_widgets import (
        CounterData,
        counter,
        group_widget,
        text_widget,
    )

    widgets = [
        counter(counters=[CounterData(headline, "")], title="Verdict"),
        counter(counters=[CounterData(label, value) for label, value in facts]),
        text_widget(text=summary_markdown, title="What the verdict rests on"),
        group_widget(
            title="Data drift and prediction drift (Evidently)",
            widgets=list(snapshots.drift._widgets),
        ),
    ]
    if snapshots.quality is not None:
        widgets.append(
            group_widget(
                title="Model quality on the labelled rows (Evidently classification metrics)",
                widgets=list(snapshots.quality._widgets),
            )
        )
    widgets += list(snapshots.drift._tests_widgets)
    return str(render_widgets(widgets, as_iframe=False))
