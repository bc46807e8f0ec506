"""train: every candidate family, one chosen on a validation span, seeded so that the same
inputs give the same bytes.

Each candidate in `train.candidates` is fitted on the training rows before `train.validation`
and scored (`train.metric`) on that last span: the test period is never seen, it stays for
evaluate and the champion/challenger gate. The best (or `train.model`, when set) is the one to
package. With tune.trials above 0, each family's parameters are the tune stage's best
(`Layout.tuned`) over its params section. Then every candidate is refitted on the whole training
window, so the packaged model has seen the newest rows and evaluate compares the candidates as
they would ship.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ValidationError

from pipelines.config import ResolvedBlend, Settings
from pipelines.core import metrics
from pipelines.core.dataset import validation_split
from pipelines.core.features import FeatureSpec
from pipelines.core.layout import Layout
from pipelines.core.model import TabularModel
from pipelines.io import compute, model_files, storage


def choose(scores: dict[str, float], forced: str | None) -> str:
    """The candidate to package: `forced`, else the best score (NaN never wins; ties: the first
    listed). Raises ValueError when no candidate has a score."""
    if forced is not None:
        return forced
    ranked = [(s, -i, f) for i, (f, s) in enumerate(scores.items()) if not np.isnan(s)]
    if not ranked:
        raise ValueError(
            "no candidate could be scored on the validation span (one class only?): widen "
            "train.validation or set train.model"
        )
    return max(ranked)[2]


def tuned_overrides(settings: Settings) -> dict[str, dict[str, Any]]:
    """The tune stage's best parameters per family (`Layout.tuned`); none when tune.trials is 0.
    Raises FileNotFoundError naming the file when tuning is on and it has not run."""
    if settings.tune.trials == 0:
        return {}
    path = Layout(settings).tuned
    try:
        return storage.read_json(path)  # type: ignore[no-any-return]
    except FileNotFoundError:
        raise FileNotFoundError(
            f"tune.trials is {settings.tune.trials} but {path} does not exist: run the tune stage "
            "first (dvc repro runs it)"
        ) from None


def tuned_params(settings: Settings, overrides: dict[str, dict[str, Any]]) -> dict[str, BaseModel]:
    """Each candidate's parameters: its params section, with tune's best values (`overrides`,
    per family) over it; a blend's members get theirs too. Raises ValueError naming the family
    when a tuned value does not fit its section."""
    t = settings.train

    def tuned(family: str) -> BaseModel:
        base = t.params_of(family)
        if isinstance(base, ResolvedBlend):
            return base.model_copy(update={"members": {m: tuned(m) for m in base.members}})
        if family not in overrides:
            return base
        try:
            return type(base).model_validate({**base.model_dump(), **overrides[family]})
        except ValidationError as err:
            raise ValueError(
                f"tuned parameters of {family} do not fit train.{family}: {err}"
            ) from None

    return {family: tuned(family) for family in t.candidates}


def _tuned_in(family: str, settings: Settings) -> list[str]:
    """The families whose tuned parameters `family` is fitted with: itself, or a blend's
    members."""
    return list(settings.train.blend.members) if family == "blend" else [family]


def run(settings: Settings) -> dict[str, TabularModel]:
    """Fit, score and refit every candidate on the `compute` engine; write each to
    `Layout.model(family)` and the choice to `Layout.selection`.

    Raises ValueError when the labels hold a single class or the validation span leaves no rows
    to fit on or to score.
    """
    with compute.engine(settings) as engine:
        return _run(settings, engine)


def _run(settings: Settings, engine: compute.Engine) -> dict[str, TabularModel]:
    spec, layout, t = FeatureSpec.from_settings(settings), Layout(settings), settings.train
    c = settings.contract
    data = engine.read_parquet(layout.train_table)
    early, late, cut = validation_split(data, c.timestamp, t.validation, engine.values)
    counted = engine.values(data[c.target].count(), data[c.target].sum(), data[c.timestamp].max())
    rows, positives, newest = int(counted[0]), int(counted[1]), counted[2]
    overrides = tuned_overrides(settings)
    params = tuned_params(settings, overrides)
    on = "" if engine.tag == "local" else f" on {engine.tag}"
    scores: dict[str, float] = {}
    y_late = np.zeros(0, dtype=np.int64)
    for family in t.candidates:
        model = engine.fit(family, early[spec.names], early[c.target], spec, params[family], t.seed)
        y_late, p = engine.scores(model, late, c.target)
        summary = metrics.summary(y_late, p, settings.evaluate.alert_rate)
        scores[family] = float(summary.get(t.metric, np.nan))
        print(f"train: {family}{on} {t.metric}={scores[family]:.4f} on the validation span")
    chosen = choose(scores, t.model)

    models: dict[str, TabularModel] = {}
    for family in t.candidates:
        model = engine.fit(family, data[spec.names], data[c.target], spec, params[family], t.seed)
        model.info = {
            "family": family,
            "params": params[family].model_dump(),
            "tuned": {m: overrides[m] for m in _tuned_in(family, settings) if m in overrides}
            or None,
            "train_rows": rows,
            "positives": positives,
            "train_end": str(pd.Timestamp(newest)),
            "validation": {t.metric: scores[family], "from": str(cut)},
        }
        model_files.save(model, layout.model(family))
        models[family] = model
        print(
            f"train: {family}{on} on {rows:,} rows ({positives:,} positive) → {layout.model(family)}"
        )
    storage.write_json(
        layout.selection,
        {
            "chosen": chosen,
            "forced": t.model is not None,
            "metric": t.metric,
            "scores": scores,
            "validation": {
                "from": str(cut),
                "rows": len(y_late),
                "positives": int(y_late.sum()),
                "fit_rows": rows - len(y_late),
            },
        },
    )
    print(f"train: {chosen} is the candidate to package ({'train.model' if t.model else t.metric})")
    return models
