"""scikit-learn's histogram gradient boosting (native categorical splits and missing values)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from pipelines.config import HistGradientBoostingParams
from pipelines.core.families import portable
from pipelines.core.families.base import Columns, Family


@functools.cache
def _openmp() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


# Its categorical codes must be below max_bins (255); a column with more levels is split as a
# number (its level codes are sorted text, so neighbours are alphabetical, not similar).
MAX_LEVELS = 254


class HistGradientBoosting(Family):
    """`HistGradientBoostingClassifier` on the matrix; early stopping off so that the number of
    trees is the params' and a rerun gives the same model."""

    tag = "hist_gradient_boosting"

    @classmethod
    def fit(
        cls, X: np.ndarray, y: np.ndarray, columns: Columns, params: Any, seed: int
    ) -> HistGradientBoosting:
        from sklearn.ensemble import HistGradientBoostingClassifier

        p: HistGradientBoostingParams = params
        native = [
            is_cat and len(columns.levels[name]) <= MAX_LEVELS
            for name, is_cat in zip(columns.names, columns.categorical, strict=True)
        ]
        est = HistGradientBoostingClassifier(
            max_iter=p.max_iter,
            learning_rate=p.learning_rate,
            max_leaf_nodes=p.max_leaf_nodes,
            min_samples_leaf=p.min_samples_leaf,
            l2_regularization=p.l2_regularization,
            categorical_features=np.array(native, dtype=bool),
            early_stopping=False,
            random_state=seed,
        )
        est.fit(X, y)
        return cls(est)

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Leaves and minimum leaf size for capacity, L2 for variance, learning rate on a log
        scale; the number of iterations stays the params'."""
        return {
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
            "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", 8, 256, log=True),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 5, 400, log=True),
            "l2_regularization": trial.suggest_float("l2_regularization", 1e-3, 30.0, log=True),
        }

    def predict(self, X: np.ndarray, threads: int | None = None) -> np.ndarray:
        if threads:
            # One controller for the process: building one scans every loaded library (~ms);
            # limiting through it is cheap.
            with _openmp().limit(limits=threads, user_api="openmp"):
                return np.asarray(self.estimator.predict_proba(X)[:, 1], dtype=np.float64)
        return np.asarray(self.estimator.predict_proba(X)[:, 1], dtype=np.float64)

    def files(self) -> dict[str, bytes]:
        return {portable.SKOPS_FILE: portable.dumps(self.estimator)}

    @classmethod
    def restore(
        cls, files: dict[str, bytes], columns: Columns, state: dict[str, Any]
    ) -> HistGradientBoosting:
        return cls(portable.loads(files[portable.SKOPS_FILE], portable.SKOPS_FILE))

    def importance(self) -> np.ndarray:
        """How often each column splits a tree (the estimator has no gain importance)."""
        counts = np.zeros(self.estimator.n_features_in_)
        for trees in self.estimator._predictors:  # one list of trees per iteration
            for tree in trees:
                nodes = tree.nodes
                inner = nodes["is_leaf"] == 0
                np.add.at(counts, nodes["feature_idx"][inner], 1.0)
        return counts
