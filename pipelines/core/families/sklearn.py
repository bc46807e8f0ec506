"""Any scikit-learn classifier or pipeline, by import path and keyword parameters (params only:
a team's own estimator plugs in without code)."""

from __future__ import annotations

import importlib
import inspect
from copy import deepcopy
from typing import Any

import numpy as np
import pandas as pd

from pipelines.config import SklearnParams
from pipelines.core.families import portable
from pipelines.core.families.base import Columns, Family


class SklearnEstimator(Family):
    """The estimator named by `train.sklearn.estimator`, fitted on the matrix or, with
    `input: frame`, on a DataFrame with the feature names and categories as text (missing: None)."""

    tag = "sklearn"

    @classmethod
    def fit(
        cls, X: np.ndarray, y: np.ndarray, columns: Columns, params: Any, seed: int
    ) -> SklearnEstimator:
        p: SklearnParams = params
        factory = load(p.estimator)
        kwargs = dict(p.params)
        if "random_state" in inspect.signature(factory).parameters:
            kwargs.setdefault("random_state", seed)
        try:
            est = factory(**kwargs)
        except TypeError as err:
            raise ValueError(f"train.sklearn.params do not fit {p.estimator}: {err}") from None
        if not hasattr(est, "predict_proba"):
            raise ValueError(f"train.sklearn.estimator {p.estimator} has no predict_proba")
        model = cls(est, columns, p.input)
        est.fit(model._input(X), y)
        return model

    def __init__(self, estimator: Any, columns: Columns, input_: str) -> None:
        super().__init__(estimator)
        self.columns, self.input = columns, input_

    def _input(self, X: np.ndarray) -> Any:
        if self.input == "matrix":
            return X
        frame = {}
        for j, (name, is_cat) in enumerate(
            zip(self.columns.names, self.columns.categorical, strict=True)
        ):
            if is_cat:
                levels = np.asarray([*self.columns.levels[name], None], dtype=object)
                codes = np.where(np.isnan(X[:, j]), -1, X[:, j]).astype(np.int64)
                frame[name] = levels[codes]  # -1: the trailing None
            else:
                frame[name] = X[:, j]
        return pd.DataFrame(frame)

    def predict(self, X: np.ndarray, threads: int | None = None) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(self._input(X))[:, 1], dtype=np.float64)

    def single_threaded(self) -> SklearnEstimator:
        """A copy whose `n_jobs` parameters (a pipeline's steps' included) are 1: joblib starting
        workers on every call costs tens of ms per single record. A deep copy keeps the fitted
        state (scikit-learn's `clone` would not)."""
        jobs = [k for k in self.estimator.get_params() if k == "n_jobs" or k.endswith("__n_jobs")]
        if not jobs:
            return self
        copy = deepcopy(self.estimator)
        copy.set_params(**dict.fromkeys(jobs, 1))
        return SklearnEstimator(copy, self.columns, self.input)

    def files(self) -> dict[str, bytes]:
        return {portable.SKOPS_FILE: portable.dumps(self.estimator)}

    def state(self) -> dict[str, Any]:
        return {"input": self.input}

    @classmethod
    def restore(
        cls, files: dict[str, bytes], columns: Columns, state: dict[str, Any]
    ) -> SklearnEstimator:
        estimator = portable.loads(files[portable.SKOPS_FILE], portable.SKOPS_FILE)
        return cls(estimator, columns, state["input"])

    def importance(self) -> np.ndarray:
        """The estimator's `feature_importances_` or |coef_| (its last step's, for a pipeline)
        when it has one per input column; else zeros."""
        final = self.estimator[-1] if hasattr(self.estimator, "steps") else self.estimator
        n = len(self.columns.names)
        for attr in ("feature_importances_", "coef_"):
            values = getattr(final, attr, None)
            if values is not None:
                flat = np.abs(np.asarray(values, dtype=np.float64)).reshape(-1)
                if len(flat) == n:
                    return flat
        return np.zeros(n)


def load(path: str) -> Any:
    """The class at `module.Class` or `module:Class`. Raises ValueError naming the path when it
    cannot be imported."""
    module, _, name = path.replace(":", ".").rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"train.sklearn.estimator {path!r} cannot be imported: {err}") from None
