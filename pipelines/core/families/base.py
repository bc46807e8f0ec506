"""What a model family is to the rest of the pipeline: fit on a float matrix, predict
probabilities from one, say how much each column mattered.

The matrix is `core.model.TabularModel.matrix`'s, the same offline and online: numeric features
as float64 (NaN when missing), then each categorical feature as the code of its level among those
seen in training (NaN when missing or unseen). A family never sees pandas unless it asks for a
frame (the scikit-learn family's `input: frame`), so the service scores every family on the
array fast path.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel


@dataclass(frozen=True)
class Columns:
    """The matrix's columns: names in order, which are categorical, and each categorical's levels
    (code i is levels[name][i])."""

    names: list[str]
    categorical: list[bool]
    levels: dict[str, list[str]]

    @property
    def categorical_indices(self) -> list[int]:
        return [i for i, is_cat in enumerate(self.categorical) if is_cat]


class Family(ABC):
    """A fitted model of one family. Subclasses set `tag` (params' `train.candidates` entry) and
    are registered in `families.FAMILIES`."""

    tag: ClassVar[str]
    # Whether `fit_distributed` fits with the framework's own Dask estimator.
    distributed: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def fit(
        cls, X: np.ndarray, y: np.ndarray, columns: Columns, params: BaseModel, seed: int
    ) -> Family:
        """Fit on `X` (rows × columns, see the module docstring) and 0/1 labels `y` (rows),
        deterministically for a given `seed`."""

    @abstractmethod
    def predict(self, X: np.ndarray, threads: int | None = None) -> np.ndarray:
        """P(y = 1) per row of `X` (rows,), float64; `threads`: at most this many (None: the
        family's own setting)."""

    @abstractmethod
    def importance(self) -> np.ndarray:
        """A non-negative weight per column of the matrix (columns,): how much the model used it
        (the family's own measure; normalised by the caller)."""

    @abstractmethod
    def files(self) -> dict[str, bytes]:
        """The fitted model in its framework's own format, not pickle: file name → content. The
        same fitted model gives the same bytes."""

    def state(self) -> dict[str, Any]:
        """JSON-able settings `restore` needs besides `files` (default: none)."""
        return {}

    @classmethod
    @abstractmethod
    def restore(cls, files: dict[str, bytes], columns: Columns, state: dict[str, Any]) -> Family:
        """The model that `files` and `state` (from `files()` and `state()`) describe, for the
        matrix `columns`. Raises ValueError naming a file that cannot be read or is not trusted."""

    @classmethod
    def fit_distributed(
        cls, X: Any, y: Any, columns: Columns, params: BaseModel, seed: int
    ) -> Family:
        """Fit with the framework's own Dask estimator on the workers of the current
        `distributed.Client`: `X` a dask array (rows × columns, chunked by rows; the matrix of
        the module docstring), `y` the 0/1 labels chunked alike. Returns the ordinary
        single-machine model. Raises NotImplementedError for a family without a Dask estimator
        (`distributed` False: callers fit `fit` on the rows collected into their process)."""
        raise NotImplementedError(f"{cls.tag} has no Dask estimator")

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any] | None:
        """Parameters to try, drawn from an Optuna `trial` (`trial.suggest_*`), as overrides of
        the family's params section; None: the family is not tunable (the default)."""
        return None

    def single_threaded(self) -> Family:
        """This model for serving: predictions on one thread, set up once (a small batch loses
        more to starting threads than it gains, and the service needs its other core for HTTP).
        Default: itself, for families whose `predict` honours `threads` cheaply."""
        return self

    @property
    def estimator(self) -> Any:
        """The framework's fitted object (for people and tests; the pipeline never needs it)."""
        return self._estimator

    def __init__(self, estimator: Any) -> None:
        self._estimator = estimator
