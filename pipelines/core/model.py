"""One small model interface over every family, so serving never cares which one won.

A `TabularModel` owns everything needed to turn a feature frame into probabilities: the column
order, the category levels seen in training (an unseen level becomes missing, explicitly) and
the fitted family (`core.families`), which scores the float matrix built here. It pickles as one
object; versions pickled before families were classes keep loading (`__setstate__`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.families import FAMILIES, Columns, Family
from pipelines.core.features import FeatureSpec


@dataclass
class TabularModel:
    """A fitted model with its feature order and training category levels (unseen level: missing)."""

    family: str
    numeric: list[str]
    categorical: list[str]
    categories: dict[str, list[str]]
    estimator: Family
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
        they gain, and the serving process needs its other core for HTTP (each family's
        `single_threaded`). (LightGBM's booster ignores the wrapper's n_jobs and predicts with
        training's num_threads: ~5 ms for a 32-row batch on a pinned core instead of ~0.2 ms
        with one thread.)"""
        return dataclasses.replace(
            self, predict_threads=1, estimator=self.estimator.single_threaded()
        )

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
            if missing.any():  # a value never seen in training, or none (pandas only then)
                unknown[missing, k] = ~pd.isna(np.asarray(values, dtype=object)[missing])
                found[missing] = np.nan
            out[:, len(self.numeric) + k] = found
        return out, unknown

    @functools.cached_property
    def _level_codes(self) -> dict[str, dict[object, int]]:
        return {c: {v: i for i, v in enumerate(self.categories[c])} for c in self.categorical}

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """P(y = 1) per row of `X` (rows × at least `features`). Raises KeyError for a missing
        feature column."""
        if len(X) == 0:
            return np.zeros(0)
        return self.estimator.predict(self.matrix(X), self.predict_threads)

    def predict_columns(self, columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Serving path: probabilities and the unknown-category mask of feature arrays
        (`core.features.online_features`' output), with no pandas frame."""
        X, unknown = self._encode(columns)
        if not len(X):
            return np.zeros(0), unknown
        return self.estimator.predict(X, self.predict_threads), unknown

    @property
    def columns(self) -> Columns:
        """The matrix's columns, as the family was fitted on them."""
        return Columns(
            self.features,
            [False] * len(self.numeric) + [True] * len(self.categorical),
            self.categories,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Load a version pickled before families were classes: its estimator was the bare
        LGBMClassifier, or the logistic pipeline fed a frame (`_ObjectCategoricals`)."""
        estimator = state.get("estimator")
        if estimator is not None and not isinstance(estimator, Family):
            if state["family"] == "lightgbm":
                state["estimator"] = FAMILIES["lightgbm"](estimator)
            else:
                state["estimator"] = _LegacyFrameModel(estimator, state)
        self.__dict__.update(state)


def levels_of(values: Mapping[str, Iterable[Any]]) -> dict[str, list[str]]:
    """Each categorical column's training levels from its distinct non-missing values as text
    (`values`), sorted (code i is level i)."""
    return {c: sorted({str(v) for v in vals}) for c, vals in values.items()}


def check_labels(classes: int) -> None:
    """Raises ValueError when the training labels hold fewer than two `classes`."""
    if classes < 2:
        raise ValueError("training labels contain a single class; widen the window or check labels")


def check_finite(infinite: Mapping[str, int]) -> None:
    """Raises ValueError naming the feature columns with infinite values (`infinite`: count per
    column)."""
    counts = {c: int(n) for c, n in infinite.items() if n}
    if counts:
        raise ValueError(
            f"features hold infinite values (count per column: {counts}); every feature must "
            "be finite or missing"
        )


def unfitted(family: str, spec: FeatureSpec, levels: dict[str, list[str]]) -> TabularModel:
    """The model `family` will be fitted into, its columns and levels set (its `matrix` works).
    Raises ValueError for an unknown family."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {list(FAMILIES)}")
    return TabularModel(family, spec.numeric, spec.categorical, levels, None)  # type: ignore[arg-type]


def fit(
    family: str, X: pd.DataFrame, y: np.ndarray, spec: FeatureSpec, params: Any, seed: int
) -> TabularModel:
    """Fit `family` (a tag of `core.families.FAMILIES`) with its `params` on features `X`
    (rows × spec.names) and 0/1 labels `y` (rows).

    Raises ValueError for an unknown family, a single class in `y` or an infinite feature.
    """
    unfitted(family, spec, {})
    check_labels(len(np.unique(y)))
    counts = np.isinf(X[spec.numeric].to_numpy(dtype=np.float64)).sum(axis=0)
    check_finite(dict(zip(spec.numeric, counts, strict=True)))
    levels = {c: X[c].dropna().astype(str).unique() for c in spec.categorical}
    model = unfitted(family, spec, levels_of(levels))
    model.estimator = FAMILIES[family].fit(
        model.matrix(X), np.asarray(y), model.columns, params, seed
    )
    return model


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


class _LegacyFrameModel(Family):
    """A pre-family logistic model: rebuilds the frame it was fitted on from the matrix."""

    tag = "logistic"

    def __init__(self, estimator: Any, state: dict[str, Any]) -> None:
        super().__init__(estimator)
        self.numeric, self.categorical = state["numeric"], state["categorical"]
        self.categories = state["categories"]

    @classmethod
    def fit(cls, *args: Any, **kwargs: Any) -> Family:
        raise TypeError("a legacy model is loaded, never fitted")

    def files(self) -> dict[str, bytes]:
        raise TypeError("a legacy pickled model has no portable form; retrain it")

    @classmethod
    def restore(cls, *args: Any, **kwargs: Any) -> Family:
        raise TypeError("a legacy model is only ever unpickled")

    def predict(self, X: np.ndarray, threads: int | None = None) -> np.ndarray:
        frame = pd.DataFrame(X[:, : len(self.numeric)], columns=self.numeric)
        for k, c in enumerate(self.categorical):
            codes = X[:, len(self.numeric) + k]
            levels = np.asarray([*self.categories[c], None], dtype=object)
            values = levels[np.where(np.isnan(codes), -1, codes).astype(np.int64)]
            frame[c] = pd.Categorical(values, categories=self.categories[c])
        return np.asarray(self.estimator.predict_proba(frame)[:, 1], dtype=np.float64)

    def importance(self) -> np.ndarray:
        return np.zeros(len(self.numeric) + len(self.categorical))


def feature_importance(model: TabularModel) -> pd.DataFrame:
    """Each feature's share of the family's importance (rows: feature, importance; sorted)."""
    raw = np.asarray(model.estimator.importance(), dtype=np.float64)
    imp = pd.DataFrame({"feature": model.features, "importance": raw})
    total = imp["importance"].sum() or 1.0
    imp["importance"] = imp["importance"] / total
    return imp.sort_values("importance", ascending=False, ignore_index=True)
