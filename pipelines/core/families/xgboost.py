"""XGBoost (histogram trees, native categorical splits and missing values)."""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import numpy as np

from pipelines.config import XGBoostParams
from pipelines.core.families.base import Columns, Family


class XGBoost(Family):
    """`XGBClassifier` on the matrix, categorical columns declared as such."""

    tag = "xgboost"
    distributed = True

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, columns: Columns, params: Any, seed: int) -> XGBoost:
        import xgboost as xgb

        est = xgb.XGBClassifier(**_settings(params, columns, seed))
        est.fit(X, y)
        return cls(est)

    @classmethod
    def fit_distributed(cls, X: Any, y: Any, columns: Columns, params: Any, seed: int) -> XGBoost:
        """XGBoost's `DaskXGBClassifier` (histograms reduced over the workers), with the
        settings of `fit`; its booster, the same object a single-machine fit holds."""
        import xgboost.dask as xgb_dask

        est = xgb_dask.DaskXGBClassifier(**_settings(params, columns, seed))
        est.fit(X, y)
        return cls(est.get_booster())

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Depth and minimum child weight for capacity, sampling and L2 for variance, learning
        rate on a log scale; the number of trees stays the params'."""
        return {
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
            "max_depth": trial.suggest_int("max_depth", 3, 10),
            "min_child_weight": trial.suggest_float("min_child_weight", 0.1, 50.0, log=True),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 30.0, log=True),
        }

    @property
    def booster(self) -> Any:
        """The `xgboost.Booster` (a fitted model holds the classifier, a restored one the
        booster)."""
        get = getattr(self.estimator, "get_booster", None)
        return get() if get else self.estimator

    def predict(self, X: np.ndarray, threads: int | None = None) -> np.ndarray:
        """(Threads are the booster's own `nthread`, set once by `single_threaded`: setting it
        per call costs more than a small batch's prediction.)"""
        return np.asarray(self.booster.inplace_predict(X, predict_type="value"), dtype=np.float64)

    def single_threaded(self) -> XGBoost:
        copy = XGBoost(deepcopy(self.estimator))
        copy.booster.set_param({"nthread": 1})
        return copy

    def importance(self) -> np.ndarray:
        gain = self.booster.get_score(importance_type="total_gain")
        n = self.booster.num_features()
        return np.array([gain.get(f"f{i}", 0.0) for i in range(n)], dtype=np.float64)

    def files(self) -> dict[str, bytes]:
        """XGBoost's Universal Binary JSON model (its own format; trees, categories and
        feature types included)."""
        return {MODEL_FILE: bytes(self.booster.save_raw(raw_format="ubj"))}

    @classmethod
    def restore(cls, files: dict[str, bytes], columns: Columns, state: dict[str, Any]) -> XGBoost:
        import xgboost as xgb

        booster = xgb.Booster()
        try:
            booster.load_model(bytearray(files[MODEL_FILE]))
        except (KeyError, xgb.core.XGBoostError) as err:
            raise ValueError(f"{MODEL_FILE} is not a readable XGBoost model: {err}") from None
        return cls(booster)


MODEL_FILE = "xgboost.ubj"


def _settings(p: XGBoostParams, columns: Columns, seed: int) -> dict[str, Any]:
    """The classifier's arguments, the same for one process and a cluster."""
    return {
        "n_estimators": p.n_estimators,
        "learning_rate": p.learning_rate,
        "max_depth": p.max_depth,
        "min_child_weight": p.min_child_weight,
        "subsample": p.subsample,
        "colsample_bytree": p.colsample_bytree,
        "reg_lambda": p.reg_lambda,
        "n_jobs": p.n_jobs,
        "tree_method": "hist",
        "enable_categorical": True,
        "feature_types": ["c" if c else "q" for c in columns.categorical],
        "random_state": seed,
        "verbosity": 0,
    }
