"""The model families: one small class per file (`base.Family`), chosen by its tag in params
(`train.candidates`). Adding a family is its file, its params section in `config.Train` and a
line here."""

from __future__ import annotations

from pipelines.core.families.base import Columns, Family
from pipelines.core.families.blend import Blend
from pipelines.core.families.hist_gradient_boosting import HistGradientBoosting
from pipelines.core.families.lightgbm import LightGBM
from pipelines.core.families.logistic import Logistic
from pipelines.core.families.sklearn import SklearnEstimator
from pipelines.core.families.xgboost import XGBoost

FAMILIES: dict[str, type[Family]] = {
    f.tag: f for f in (LightGBM, Logistic, HistGradientBoosting, XGBoost, SklearnEstimator, Blend)
}

__all__ = ["FAMILIES", "Columns", "Family"]
