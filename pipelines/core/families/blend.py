"""An ensemble as a family: other families' probabilities combined by a mean or a stacker.

`stack` is holdout stacking ("blending", Wolpert 1992 "Stacked generalization", in the form
of the Netflix-prize blends): the members are fitted on the older rows, a logistic regression
learns on the newest `holdout` share how to combine their log-odds, then the members are refitted
on every row. The rows arrive in time order (the training table is sorted by time), so the
stacker learns on data after what its members saw, as serving will be. It is selected like any
candidate: only if it wins on train's validation span.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.config import ResolvedBlend
from pipelines.core.families.base import Columns, Family

_EPS = 1e-7  # probabilities are clipped to [eps, 1 - eps] before log-odds


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


class Blend(Family):
    """Members (name → fitted family) and how their probabilities combine: `weights` of the
    mean, or of the log-odds plus `intercept` for the stack."""

    tag = "blend"

    def __init__(
        self, members: dict[str, Family], method: str, weights: list[float], intercept: float
    ) -> None:
        super().__init__(members)
        self.members, self.method = members, method
        self.weights, self.intercept = weights, intercept

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, columns: Columns, params: Any, seed: int) -> Blend:
        from sklearn.linear_model import LogisticRegression

        from pipelines.core.families import FAMILIES

        p: ResolvedBlend = params

        def fit_members(rows: slice) -> dict[str, Family]:
            return {
                m: FAMILIES[m].fit(X[rows], y[rows], columns, mp, seed)
                for m, mp in p.members.items()
            }

        if p.method == "mean":
            weights = list(p.weights or [1.0] * len(p.members))
            total = sum(weights)
            return cls(fit_members(slice(None)), "mean", [w / total for w in weights], 0.0)
        cut = int(len(X) * (1 - p.holdout))
        if len(np.unique(y[:cut])) < 2 or len(np.unique(y[cut:])) < 2:
            raise ValueError(
                "train.blend.holdout leaves one class on a side of the stacking split; "
                "change it or use method: mean"
            )
        early = fit_members(slice(None, cut))
        logits = np.column_stack([_logit(f.predict(X[cut:])) for f in early.values()])
        stacker = LogisticRegression(C=1.0, max_iter=1000, random_state=seed).fit(logits, y[cut:])
        return cls(
            fit_members(slice(None)),
            "stack",
            [float(w) for w in stacker.coef_[0]],
            float(stacker.intercept_[0]),
        )

    def predict(self, X: np.ndarray, threads: int | None = None) -> np.ndarray:
        each = [f.predict(X, threads) for f in self.members.values()]
        if self.method == "mean":
            return np.asarray(sum(w * q for w, q in zip(self.weights, each, strict=True)))
        z = self.intercept + sum(w * _logit(q) for w, q in zip(self.weights, each, strict=True))
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)

    def single_threaded(self) -> Blend:
        members = {m: f.single_threaded() for m, f in self.members.items()}
        return Blend(members, self.method, self.weights, self.intercept)

    def importance(self) -> np.ndarray:
        """The members' importances, each normalised to sum 1, weighted by |weight|."""
        total = np.zeros(0)
        for w, f in zip(self.weights, self.members.values(), strict=True):
            imp = np.asarray(f.importance(), dtype=np.float64)
            share = imp / imp.sum() if imp.sum() else imp
            total = abs(w) * share if not total.size else total + abs(w) * share
        return total

    def files(self) -> dict[str, bytes]:
        """Each member's own files under `<member>/`."""
        return {
            f"{m}/{name}": data for m, f in self.members.items() for name, data in f.files().items()
        }

    def state(self) -> dict[str, Any]:
        """The members in their order (a list: the contract's JSON sorts object keys, and each
        weight belongs to its position), each with its weight and its own state."""
        return {
            "method": self.method,
            "intercept": self.intercept,
            "members": [
                {"family": m, "weight": w, "state": f.state()}
                for (m, f), w in zip(self.members.items(), self.weights, strict=True)
            ],
        }

    @classmethod
    def restore(cls, files: dict[str, bytes], columns: Columns, state: dict[str, Any]) -> Blend:
        from pipelines.core.families import FAMILIES

        members, weights = {}, []
        for entry in state["members"]:
            m, member_state = entry["family"], entry["state"]
            weights.append(float(entry["weight"]))
            if m not in FAMILIES or m == cls.tag:
                raise ValueError(f"blend member {m!r} is not a model family")
            prefix = f"{m}/"
            own = {k[len(prefix) :]: v for k, v in files.items() if k.startswith(prefix)}
            members[m] = FAMILIES[m].restore(own, columns, member_state)
        return cls(members, state["method"], weights, float(state["intercept"]))
