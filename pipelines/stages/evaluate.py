"""evaluate: the promoted model and its baseline on the time-split test set.

`metrics/evaluate.json` is a DVC metrics file (promoted model's numbers at the top level, the
baseline's under `baseline`); slices go to `metrics/slices.json`; curves, calibration and
feature importance are CSV files declared as DVC plots.
"""

from __future__ import annotations

import pandas as pd

from pipelines.config import Settings
from pipelines.core import metrics
from pipelines.core.features import FeatureSpec
from pipelines.core.layout import Layout
from pipelines.core.model import FAMILIES, feature_importance
from pipelines.io import model_files, storage


def _csv(df: pd.DataFrame, url: str) -> None:
    storage.write_text(url, df.to_csv(index=False, float_format="%.6g"))


def run(settings: Settings) -> dict:
    """Every family on the test table: the metrics, slices and plots files (see the module docstring)."""
    spec, layout = FeatureSpec.from_settings(settings), Layout(settings)
    c, e = settings.contract, settings.evaluate
    test = storage.read_parquet(layout.test_table)
    y = test[c.target].to_numpy()
    primary = settings.train.model
    results, slice_report = {}, {}
    for family in FAMILIES:
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

    baseline = next(f for f in FAMILIES if f != primary)
    report = {**results[primary], "model": primary, "baseline": results[baseline]}
    if "roc_auc" in results[primary] and "roc_auc" in results[baseline]:
        report["roc_auc_lift_over_baseline"] = (
            results[primary]["roc_auc"] - results[baseline]["roc_auc"]
        )
    storage.write_json(layout.evaluation, report)
    storage.write_json(layout.slices, slice_report)
    print(
        f"evaluate: {primary} roc_auc={report.get('roc_auc', float('nan')):.4f} "
        f"ap={report.get('average_precision', float('nan')):.4f} | {baseline} roc_auc="
        f"{results[baseline].get('roc_auc', float('nan')):.4f} → {layout.evaluation}, "
        f"plots in {settings.paths.plots}/"
    )
    return report
