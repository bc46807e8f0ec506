"""Hyperparameter search for one family: Optuna's seeded TPE sampler over the family's search
space (`Family.search_space`), each trial fitted on the rows before train's validation span and
scored on that span (the test period is not in the data it is given).

- **Reproducible.** The sampler is seeded and trials run one at a time, and every fit is seeded:
  the same data, params and seed give the same trials and the same best parameters.
- **Params as written first.** A trial fitting exactly the family's params (outside the search
  ranges too) is queued first and again until it completes, so "best" can only match or beat
  them, and the gain is measured against them on the same split.
- **Pruning.** With `prune_at`, a trial is first fitted on the newest `prune_at` share of the
  fitting rows and reported as step 0; Optuna's MedianPruner (Akiba et al. 2019, "Optuna",
  KDD; stop a trial whose intermediate value is worse than the median of earlier trials at the
  same step) stops the unpromising ones there, before their full fit.
- **Resumable.** The study lives in whatever Optuna storage the caller gives (the stage: a
  SQLite file); an existing study of the same name is continued up to `trials`, its sampler
  seeded by the trials it holds, so it draws new points (a resumed search is reproducible
  but not the same as one run with the larger budget from the start).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from pipelines.core import metrics
from pipelines.core.families import FAMILIES, Family
from pipelines.core.features import FeatureSpec
from pipelines.core.model import fit

STARTUP_TRIALS = 5  # trials the pruner lets finish before it compares (Optuna's default)
AS_WRITTEN = "as_written"  # the user attribute of the trial that fits the params as written


@dataclass(frozen=True)
class Split:
    """The rows a search fits on and scores on (both from the training window only)."""

    fit_X: pd.DataFrame
    fit_y: np.ndarray
    score_X: pd.DataFrame
    score_y: np.ndarray


@dataclass(frozen=True)
class Outcome:
    """One family's search: the best overrides, the params-as-written and best scores, what ran."""

    family: str
    best: dict[str, Any]
    default_score: float
    best_score: float
    trials: int
    pruned: int
    seconds: float

    def summary(self, metric: str) -> dict[str, Any]:
        """JSON-able figures for the DVC metrics file."""
        return {
            f"default_{metric}": self.default_score,
            f"best_{metric}": self.best_score,
            "gain": self.best_score - self.default_score,
            "trials": self.trials,
            "pruned": self.pruned,
            "seconds": round(self.seconds, 1),
            "best": self.best,
        }


def tunable(family: str) -> bool:
    """Whether `family` has a search space."""
    return FAMILIES[family].search_space.__func__ is not Family.search_space.__func__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Problem:
    """What one family's search optimises: `metric` (at `alert_rate` where it needs one) on the
    split's score rows of `family` fitted with `base` overridden by a trial's draw, seeded;
    `prune_at`: the newest share of the fitting rows a trial is first fitted on (None: no
    pruning)."""

    family: str
    split: Split
    spec: FeatureSpec
    base: BaseModel
    seed: int
    metric: str
    alert_rate: float
    prune_at: float | None


def objective(problem: Problem) -> Callable[[Any], float]:
    """The function Optuna maximises for `problem`. Raises optuna.TrialPruned when the pruner
    stops a trial."""
    import optuna

    p, split = problem, problem.split
    space = FAMILIES[p.family].search_space

    def score(X: pd.DataFrame, y: np.ndarray, params: BaseModel) -> float:
        model = fit(p.family, X, y, p.spec, params, p.seed)
        predicted = model.predict_proba(split.score_X)
        return float(metrics.summary(split.score_y, predicted, p.alert_rate).get(p.metric, np.nan))

    def run(trial: Any) -> float:
        as_written = bool(trial.user_attrs.get(AS_WRITTEN))
        if as_written:  # exactly the params, even where they fall outside the search ranges
            params = p.base
        else:
            draw = space(trial) or {}
            params = type(p.base).model_validate({**p.base.model_dump(), **draw})
        if p.prune_at is not None and not as_written:
            newest = int(len(split.fit_X) * (1 - p.prune_at))
            y_newest = split.fit_y[newest:]
            if len(np.unique(y_newest)) > 1:  # one class: no score to compare, no pruning step
                early = score(split.fit_X.iloc[newest:], y_newest, params)
                trial.report(early, step=0)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        return score(split.fit_X, split.fit_y, params)

    return run


def search(
    problem: Problem,
    *,
    trials: int,
    timeout: float | None,
    storage: str | None,
    study_name: str,
) -> tuple[Outcome, Any]:
    """Run (or continue) the study `study_name` in Optuna `storage` (None: in memory) up to
    `trials` finished trials or `timeout` seconds; returns the outcome and the study (for plots).

    The fitting rows must be in time order (the pruning step takes the newest share). Raises
    ValueError when the family has no search space or no trial could be scored."""
    import optuna

    family, seed = problem.family, problem.seed
    if not tunable(family):
        raise ValueError(f"model family {family!r} has no search space to tune")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Seeded by the trials already run: a resumed study draws new points, not its first ones again.
    sampler = optuna.samplers.TPESampler(seed=seed + _trials_in(study_name, storage))
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        load_if_exists=True,
        direction="maximize",
        sampler=sampler,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS)
        if problem.prune_at is not None
        else optuna.pruners.NopPruner(),
    )
    state = optuna.trial.TrialState
    finished = (state.COMPLETE, state.PRUNED)
    done = [t for t in study.trials if t.state in finished]
    written = [t for t in study.trials if t.user_attrs.get(AS_WRITTEN)]
    if not any(t.state in (state.COMPLETE, state.WAITING) for t in written):
        # New, or its as-written trial failed or was interrupted: queue it (first) again.
        study.enqueue_trial({}, user_attrs={AS_WRITTEN: True})
    started = time.monotonic()
    remaining = trials - len(done)
    if remaining > 0:
        study.optimize(
            objective(problem),
            n_trials=remaining,
            timeout=timeout,
        )
    seconds = time.monotonic() - started
    complete = [t for t in study.trials if t.state == state.COMPLETE]
    if not complete:
        raise ValueError(f"no {family} trial could be scored on the validation span")
    as_written = [t for t in complete if t.user_attrs.get(AS_WRITTEN)]
    best = study.best_trial
    outcome = Outcome(
        family=family,
        best=dict(best.params),  # {} when the params as written won
        default_score=float(as_written[0].value) if as_written else float("nan"),  # type: ignore[arg-type]
        best_score=float(best.value),  # type: ignore[arg-type]
        trials=len([t for t in study.trials if t.state in finished]),
        pruned=len([t for t in study.trials if t.state == state.PRUNED]),
        seconds=seconds,
    )
    return outcome, study


def _trials_in(study_name: str, storage: str | None) -> int:
    """How many trials the study `study_name` already holds in `storage` (0: none, or new)."""
    import optuna

    if storage is None:
        return 0
    summaries = optuna.get_all_study_summaries(storage)
    return next((s.n_trials for s in summaries if s.study_name == study_name), 0)
