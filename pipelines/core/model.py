"""One small model interface over several families, so serving never cares which one won.

A `TabularModel` owns everything needed to turn a feature frame into probabilities: the column
order, the category levels seen in training (an unseen level becomes missing, explicitly) and
the fitted estimator. It pickles as one object.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipelines.config import LightGBMParams, LogisticParams
from pipelines.core.features import FeatureSpec

FAMILIES = ("lightgbm", "logistic")


@dataclass
class TabularModel:
    """A fitted model with its feature order and training category levels (unseen level: missing)."""

    family: str
    numeric: list[str]
    categorical: list[str]
    categories: dict[str, list[str]]
    estimator: Any
    info: dict[str, Any] = field(default_factory=dict)
    # Threads per prediction; None: the estimator's own setting (training's num_threads).
    predict_threads: int | None = None

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def unknown_mask(self, X: pd.DataFrame) -> np.ndarray:
        """Rows × categorical columns: True where the value was never seen in training."""
        if not self.categorical:
            return np.zeros((len(X), 0), dtype=bool)
        cols = [
            ~X[c].isin(self.categories[c]).to_numpy() & X[c].notna().to_numpy()
            for c in self.categorical
        ]
        return np.column_stack(cols)

    def prepare(self, X: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in self.features if c not in X.columns]
        if missing:
            raise ValueError(f"feature frame lacks columns {missing}")
        out = X[self.numeric].astype(np.float64)
        for c in self.categorical:
            # Fixed levels: an unseen value becomes NaN (missing) instead of a new code.
            out[c] = pd.Categorical(X[c].astype(object), categories=self.categories[c])
        return out

    def serving_copy(self) -> TabularModel:
        """A copy that predicts with one thread: small batches lose more to OpenMP start-up than
        they gain, and the serving process needs its other core for HTTP. (The booster ignores
        the wrapper's n_jobs and predicts with training's num_threads: ~5 ms for a 32-row batch
        on a pinned core instead of ~0.2 ms with one thread.)"""
        return dataclasses.replace(self, predict_threads=1)

    def matrix(self, X: pd.DataFrame) -> np.ndarray:
        """`prepare` as one float matrix, categoricals as their fixed-level codes (NaN if unseen):
        exactly what LightGBM derives from the categorical frame, without its per-call pandas
        conversion (~4 ms, most of a small batch's scoring time)."""
        columns = {c: X[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in self.numeric}
        columns.update({c: X[c].astype(object).to_numpy() for c in self.categorical})
        return self._encode(columns)[0]

    def _encode(self, columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The float matrix and the unknown-category mask (rows × categorical columns), in one
        pass over plain arrays (numerics float64, categoricals objects)."""
        n = len(columns[self.features[0]]) if self.features else 0
        out = np.empty((n, len(self.features)), dtype=np.float64)
        unknown = np.zeros((n, len(self.categorical)), dtype=bool)
        for j, c in enumerate(self.numeric):
            out[:, j] = columns[c]
        levels = self._level_codes
        for k, c in enumerate(self.categorical):
            codes = levels[c]
            values = columns[c]
            # A dict lookup per value: a batch's few values cost less than building an index.
            found = np.fromiter((codes.get(v, -1) for v in values), dtype=np.float64, count=n)
            missing = found < 0
            unknown[:, k] = missing & ~pd.isna(values)
            found[missing] = np.nan
            out[:, len(self.numeric) + k] = found
        return out, unknown

    @functools.cached_property
    def _level_codes(self) -> dict[str, dict[object, int]]:
        return {c: {v: i for i, v in enumerate(self.categories[c])} for c in self.categorical}

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        if len(X) == 0:
            return np.zeros(0)
        if self.family == "lightgbm":
            return self._predict_matrix(self.matrix(X))
        return np.asarray(self.estimator.predict_proba(self.prepare(X))[:, 1], dtype=np.float64)

    def predict_columns(self, columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Serving path: probabilities and the unknown-category mask of feature arrays
        (`core.features.online_features`' output), with no pandas frame for LightGBM."""
        X, unknown = self._encode(columns)
        if not len(X):
            return np.zeros(0), unknown
        if self.family == "lightgbm":
            return self._predict_matrix(X), unknown
        return self.predict_proba(pd.DataFrame({c: columns[c] for c in self.features})), unknown

    def _predict_matrix(self, X: np.ndarray) -> np.ndarray:
        threads = {"num_threads": self.predict_threads} if self.predict_threads else {}
        return np.asarray(self.estimator.booster_.predict(X, **threads), dtype=np.float64)


def _levels(X: pd.DataFrame, spec: FeatureSpec) -> dict[str, list[str]]:
    return {c: sorted(X[c].dropna().astype(str).unique().tolist()) for c in spec.categorical}


def fit(
    family: str, X: pd.DataFrame, y: np.ndarray, spec: FeatureSpec, params: Any, seed: int
) -> TabularModel:
    """Fit `family` on features `X` (rows × spec.names) and 0/1 labels `y` (rows).

    Raises ValueError for an unknown family or a single class in `y`.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")
    if len(np.unique(y)) < 2:
        raise ValueError("training labels contain a single class; widen the window or check labels")
    counts = np.isinf(X[spec.numeric].to_numpy(dtype=np.float64)).sum(axis=0)
    infinite = {c: int(n) for c, n in zip(spec.numeric, counts, strict=True) if n}
    if infinite:
        raise ValueError(
            f"features hold infinite values (count per column: {infinite}); every feature must "
            "be finite or missing"
        )
    model = TabularModel(family, spec.numeric, spec.categorical, _levels(X, spec), None)
    Xp = model.prepare(X)
    if family == "lightgbm":
        model.estimator = _fit_lightgbm(Xp, y, params, seed)
    else:
        model.estimator = _fit_logistic(Xp, y, params, seed, spec)
    return model


def _fit_lightgbm(X: pd.DataFrame, y: np.ndarray, p: LightGBMParams, seed: int) -> Any:
    import lightgbm as lgb

    est = lgb.LGBMClassifier(
        n_estimators=p.n_estimators,
        learning_rate=p.learning_rate,
        num_leaves=p.num_leaves,
        min_child_samples=p.min_child_samples,
        subsample=p.subsample,
        subsample_freq=p.subsample_freq,
        colsample_bytree=p.colsample_bytree,
        reg_lambda=p.reg_lambda,
        n_jobs=p.num_threads,
        random_state=seed,
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
    )
    est.fit(X, y)
    return est


def _fit_logistic(
    X: pd.DataFrame, y: np.ndarray, p: LogisticParams, seed: int, spec: FeatureSpec
) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, QuantileTransformer

    numeric = make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        # Heavy tails (amounts, ratios) wreck a linear model; ranks do not.
        QuantileTransformer(
            n_quantiles=200, output_distribution="normal", subsample=200_000, random_state=seed
        ),
    )
    categorical = OneHotEncoder(handle_unknown="ignore", min_frequency=20)
    pre = ColumnTransformer(
        [("num", numeric, spec.numeric), ("cat", categorical, spec.categorical)]
    )
    est = make_pipeline(pre, LogisticRegression(C=p.C, max_iter=p.max_iter, random_state=seed))
    # OneHotEncoder wants plain objects with a missing marker, not pandas categoricals.
    Xo = X.copy()
    for c in spec.categorical:
        Xo[c] = Xo[c].astype(object).where(Xo[c].notna(), "__missing__")
    if p.max_rows is not None and len(Xo) > p.max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(len(Xo), p.max_rows, replace=False))
        Xo, y = Xo.iloc[keep], y[keep]
    est.fit(Xo, y)
    return _ObjectCategoricals(est, spec.categorical)


class _ObjectCategoricals:
    """Feeds a scikit-learn pipeline categoricals as objects, matching how it was fitted."""

    def __init__(self, pipeline: Any, categorical: list[str]) -> None:
        self.pipeline = pipeline
        self.categorical = categorical

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        Xo = X.copy()
        for c in self.categorical:
            Xo[c] = Xo[c].astype(object).where(Xo[c].notna(), "__missing__")
        return self.pipeline.predict_proba(Xo)


def feature_importance(model: TabularModel) -> pd.DataFrame:
    """Gain importance for LightGBM, |coefficient| mass for the linear baseline."""
    if model.family == "lightgbm":
        booster = model.estimator.booster_
        gain = booster.feature_importance(importance_type="gain")
        imp = pd.DataFrame({"feature": booster.feature_name(), "importance": gain})
    else:
        pipe = model.estimator.pipeline
        names = pipe[0].get_feature_names_out()
        coef = np.abs(pipe[-1].coef_[0])
        base = [n.split("__", 1)[1] for n in names]
        owner = [
            next((f for f in model.features if b == f or b.startswith(f + "_")), b) for b in base
        ]
        imp = (
            pd.DataFrame({"feature": owner, "importance": coef})
            .groupby("feature", as_index=False)
            .sum()
        )
    total = imp["importance"].sum() or 1.0
    imp["importance"] = imp["importance"] / total
    return imp.sort_values("importance", ascending=False, ignore_index=True)
