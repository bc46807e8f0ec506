"""evaluate: every candidate on the time-split test set.

`metrics/evaluate.json` is a DVC metrics file: the chosen candidate's numbers (train's
`selection.json`) at the top level with its name under `model`, every candidate's under
`candidates`; slices go to `metrics/slices.json` (per candidate); curves, calibration and
feature importance are CSV files declared as DVC plots, one directory per plot.
"""

from __future__ import annotations

import pandas as pd

from pipelines.config import Settings
from pipelines.core import metrics
from pipelines.core.features import FeatureSpec
from pipelines.core.layout import Layout
from pipelines.core.model import feature_importance
from pipelines.io import model_files, storage


def _csv(df: pd.DataFrame, url: str) -> None:
    storage.write_text(url, df.to_csv(index=False, float_format="%.6g"))


def run(settings: Settings) -> dict:
    """Every candidate on the test table: the metrics, slices and plots files (see the module
    docstring). Raises FileNotFoundError when train has not run."""
    spec, layout = FeatureSpec.from_settings(settings), Layout(settings)
    c, e = settings.contract, settings.evaluate
    test = storage.read_parquet(layout.test_table)
    y = test[c.target].to_numpy()
    chosen = storage.read_json(layout.selection)["chosen"]
    results, slice_report = {}, {}
    for family in settings.train.candidates:
        model = model_files.load(layout.model(family))
        p = model.predict_proba(test[spec.names])
        results[family] = metrics.summary(y, p, e.alert_rate, e.calibration_bins)
        roc, pr = metrics.curves(y, p)
        _csv(roc, layout.plot(family, "roc"))
        _csv(pr, layout.plot(family, "pr"))
        _csv(
            metrics.calibration_table(y, p, e.calibration_bins), layout.plot(family, "calibration")
        )
        _csv(feature_importance(model), layout.plot(family, "importance"))
        frame = test[[c.target, *spec.categorical]].assign(_p=p)
        slice_report[family] = metrics.slices(
            frame, c.target, "_p", list(e.slice_by), e.alert_rate, e.min_slice_rows
        )
    report = {**results[chosen], "model": chosen, "candidates": results}
    storage.write_json(layout.evaluation, report)
    storage.write_json(layout.slices, slice_report)
    scores = " | ".join(
        f"{f} roc_auc={r.get('roc_auc', float('nan')):.4f}" for f, r in results.items()
    )
    print(
        f"evaluate: {scores} (chosen: {chosen}) → {layout.evaluation}, plots in {settings.paths.plots}/"
    )
    return report
