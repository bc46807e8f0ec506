"""LightGBM (gradient-boosted trees, native categorical splits and missing values)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from pipelines.config import LightGBMParams
from pipelines.core.families.base import Columns, Family


class LightGBM(Family):
    """`LGBMClassifier`, predicted through its booster on the float matrix (no pandas)."""

    tag = "lightgbm"
    distributed = True

    @classmethod
    def fit(
        cls, X: np.ndarray, y: np.ndarray, columns: Columns, params: Any, seed: int
    ) -> LightGBM:
        import lightgbm as lgb

        est = lgb.LGBMClassifier(**_settings(params, seed))
        est.fit(
            X,
            y,
            feature_name=[_safe(n) for n in columns.names],
            categorical_feature=columns.categorical_indices,
        )
        return cls(est)

    @classmethod
    def fit_distributed(cls, X: Any, y: Any, columns: Columns, params: Any, seed: int) -> LightGBM:
        """LightGBM's `DaskLGBMClassifier` (data-parallel trees over the workers' rows), with
        the settings of `fit`; the single-machine classifier it returns (`to_local`)."""
        import lightgbm.dask as lgb_dask

        est = lgb_dask.DaskLGBMClassifier(**_settings(params, seed))
        with warnings.catch_warnings():
            # Threads are each worker's own: the estimator drops n_jobs, and says so every fit.
            warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
            est.fit(
                X,
                y,
                feature_name=[_safe(n) for n in columns.names],
                categorical_feature=columns.categorical_indices,
            )
        return cls(est.to_local())

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Ranges around LightGBM's parameter-tuning guide (leaves and minimum leaf size for
        capacity, sampling and L2 for variance), learning rate on a log scale; the number of
        trees stays the params'."""
        return {
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 8, 256, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 5, 400, log=True),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 30.0, log=True),
        }

    @property
    def booster(self) -> Any:
        """The `lightgbm.Booster` (a fitted model holds the classifier, a restored one the
        booster)."""
        return getattr(self.estimator, "booster_", self.estimator)

    def predict(self, X: np.ndarray, threads: int | None = None) -> np.ndarray:
        # The booster ignores the wrapper's n_jobs: without num_threads it uses training's, and a
        # small batch loses more to OpenMP start-up than it gains.
        extra = {"num_threads": threads} if threads else {}
        return np.asarray(self.booster.predict(X, **extra), dtype=np.float64)

    def importance(self) -> np.ndarray:
        return np.asarray(self.booster.feature_importance(importance_type="gain"), dtype=np.float64)

    def files(self) -> dict[str, bytes]:
        """LightGBM's text model (thresholds written exactly, so predictions round-trip)."""
        return {MODEL_FILE: self.booster.model_to_string().encode()}

    @classmethod
    def restore(cls, files: dict[str, bytes], columns: Columns, state: dict[str, Any]) -> LightGBM:
        import lightgbm as lgb

        try:
            return cls(lgb.Booster(model_str=files[MODEL_FILE].decode()))
        except (KeyError, UnicodeDecodeError, lgb.basic.LightGBMError) as err:
            raise ValueError(f"{MODEL_FILE} is not a readable LightGBM model: {err}") from None


MODEL_FILE = "lightgbm.txt"


def _settings(p: LightGBMParams, seed: int) -> dict[str, Any]:
    """The classifier's arguments, the same for one process and a cluster."""
    return {
        "n_estimators": p.n_estimators,
        "learning_rate": p.learning_rate,
        "num_leaves": p.num_leaves,
        "min_child_samples": p.min_child_samples,
        "subsample": p.subsample,
        "subsample_freq": p.subsample_freq,
        "colsample_bytree": p.colsample_bytree,
        "reg_lambda": p.reg_lambda,
        "n_jobs": p.num_threads,
        "random_state": seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbose": -1,
    }


def _safe(name: str) -> str:
    """LightGBM refuses JSON's special characters in feature names; the matrix's order, not the
    name, is what predictions use."""
    return "".join("_" if ch in '[]{}":,' else ch for ch in name)
