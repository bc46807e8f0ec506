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
from pipelines.core.model import FAMILIES, feature_importance
from pipelines.io import storage
from pipelines.stages.train import load_model, model_url


def _csv(df: pd.DataFrame, url: str) -> None:
    storage.write_text(url, df.to_csv(index=False, float_format="%.6g"))


def run(settings: Settings) -> dict:
    spec = FeatureSpec.from_settings(settings)
    c, e = settings.contract, settings.evaluate
    test = storage.read_parquet(storage.join(settings.paths.features, "test.parquet"))
    y = test[c.target].to_numpy()
    primary = settings.train.model
    results, slice_report = {}, {}
    for family in FAMILIES:
        model = load_model(model_url(settings, family))
        p = model.predict_proba(test[spec.names])
        results[family] = metrics.summary(y, p, e.alert_rate, e.calibration_bins)
        roc, pr = metrics.curves(y, p)
        plots = storage.join(settings.paths.plots, family)
        _csv(roc, storage.join(plots, "roc.csv"))
        _csv(pr, storage.join(plots, "pr.csv"))
        _csv(metrics.calibration_table(y, p, e.calibration_bins), storage.join(plots, "calibration.csv"))
        _csv(feature_importance(model), storage.join(plots, "importance.csv"))
        frame = test[[c.target, *spec.categorical]].assign(_p=p)
        slice_report[family] = metrics.slices(frame, c.target, "_p", list(e.slice_by), e.alert_rate, e.min_slice_rows)

    baseline = next(f for f in FAMILIES if f != primary)
    report = {**results[primary], "model": primary, "baseline": results[baseline]}
    if "roc_auc" in results[primary] and "roc_auc" in results[baseline]:
        report["roc_auc_lift_over_baseline"] = results[primary]["roc_auc"] - results[baseline]["roc_auc"]
    m, pl = settings.paths.metrics, settings.paths.plots
    storage.write_json(storage.join(m, "evaluate.json"), report)
    storage.write_json(storage.join(m, "slices.json"), slice_report)
    print(f"evaluate: {primary} roc_auc={report.get('roc_auc', float('nan')):.4f} "
          f"ap={report.get('average_precision', float('nan')):.4f} | {baseline} roc_auc="
          f"{results[baseline].get('roc_auc', float('nan')):.4f} → {m}/evaluate.json, plots in {pl}/")
    return report
