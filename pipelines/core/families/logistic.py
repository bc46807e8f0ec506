"""The linear baseline: logistic regression over rank-transformed numerics and one-hot levels."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from pipelines.config import LogisticParams
from pipelines.core.families import portable
from pipelines.core.families.base import Columns, Family


class Logistic(Family):
    """A scikit-learn pipeline on the matrix: numerics imputed (with a missing indicator) and
    mapped to normal scores by rank, levels one-hot (missing and unseen are one more level)."""

    tag = "logistic"

    @classmethod
    def fit(
        cls, X: np.ndarray, y: np.ndarray, columns: Columns, params: Any, seed: int
    ) -> Logistic:
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, QuantileTransformer

        p: LogisticParams = params
        numeric = [i for i, c in enumerate(columns.categorical) if not c]
        numeric_steps = make_pipeline(
            SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
            # Heavy tails (amounts, ratios) wreck a linear model; ranks do not.
            QuantileTransformer(
                n_quantiles=200, output_distribution="normal", subsample=200_000, random_state=seed
            ),
        )
        levels = make_pipeline(
            SimpleImputer(strategy="constant", fill_value=-1.0, keep_empty_features=True),
            OneHotEncoder(handle_unknown="ignore", min_frequency=20),
        )
        pre = ColumnTransformer(
            [("num", numeric_steps, numeric), ("cat", levels, columns.categorical_indices)]
        )
        est = make_pipeline(pre, LogisticRegression(C=p.C, max_iter=p.max_iter, random_state=seed))
        if p.max_rows is not None and len(X) > p.max_rows:
            keep = np.sort(np.random.default_rng(seed).choice(len(X), p.max_rows, replace=False))
            X, y = X[keep], y[keep]
        est.fit(X, y)
        return cls(est, len(columns.names))

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """The inverse regularisation strength, on a log scale."""
        return {"C": trial.suggest_float("C", 1e-3, 1e2, log=True)}

    def __init__(self, estimator: Any, n_columns: int) -> None:
        super().__init__(estimator)
        self.n_columns = n_columns

    def predict(self, X: np.ndarray, threads: int | None = None) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(X)[:, 1], dtype=np.float64)

    def files(self) -> dict[str, bytes]:
        return {portable.SKOPS_FILE: portable.dumps(self.estimator)}

    @classmethod
    def restore(cls, files: dict[str, bytes], columns: Columns, state: dict[str, Any]) -> Logistic:
        return cls(
            portable.loads(files[portable.SKOPS_FILE], portable.SKOPS_FILE), len(columns.names)
        )

    def importance(self) -> np.ndarray:
        """|coefficient| mass of each input column (its missing indicator and levels summed)."""
        names = self.estimator[
            0
        ].get_feature_names_out()  # num__x0, num__missingindicator_x0, cat__x3_2.0
        coef = np.abs(self.estimator[-1].coef_[0])
        owner = [int(_INPUT.match(n.split("__", 1)[1])[1]) for n in names]  # type: ignore[index]
        return np.bincount(owner, weights=coef, minlength=self.n_columns).astype(np.float64)


_INPUT = re.compile(r"^(?:missingindicator_)?x(\d+)")
