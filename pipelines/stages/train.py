"""train: every candidate family, one chosen on a validation span, seeded so that the same
inputs give the same bytes.

Each candidate in `train.candidates` is fitted on the training rows before `train.validation`
and scored (`train.metric`) on that last span: the test period is never seen, it stays for
evaluate and the champion/challenger gate. The best (or `train.model`, when set) is the one to
package. Then every candidate is refitted on the whole training window, so the packaged model has
seen the newest rows and evaluate compares the candidates as they would ship.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.config import Settings
from pipelines.core import metrics
from pipelines.core.features import FeatureSpec
from pipelines.core.layout import Layout
from pipelines.core.model import TabularModel, fit
from pipelines.io import model_files, storage


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


def run(settings: Settings) -> dict[str, TabularModel]:
    """Fit, score and refit every candidate; write each to `Layout.model(family)` and the choice
    to `Layout.selection`.

    Raises ValueError when the labels hold a single class or the validation span leaves no rows
    to fit on or to score.
    """
    spec, layout, t = FeatureSpec.from_settings(settings), Layout(settings), settings.train
    c = settings.contract
    data = storage.read_parquet(layout.train_table)
    ts = data[c.timestamp]
    cut = t.validation.before(ts.max())
    early, late = data[(ts < cut).to_numpy()], data[(ts >= cut).to_numpy()]
    if early.empty or late.empty:
        raise ValueError(
            f"train.validation ({t.validation}) before the newest training row leaves "
            f"{len(early)} rows to fit and {len(late)} to validate: shorten or lengthen it"
        )
    y_late = late[c.target].to_numpy(dtype=np.int64)
    scores: dict[str, float] = {}
    for family in t.candidates:
        model = fit(
            family, early[spec.names], early[c.target].to_numpy(), spec, t.params_of(family), t.seed
        )
        p = model.predict_proba(late[spec.names])
        summary = metrics.summary(y_late, p, settings.evaluate.alert_rate)
        scores[family] = float(summary.get(t.metric, np.nan))
        print(f"train: {family} {t.metric}={scores[family]:.4f} on the validation span")
    chosen = choose(scores, t.model)

    X, y = data[spec.names], data[c.target].to_numpy()
    models: dict[str, TabularModel] = {}
    for family in t.candidates:
        params = t.params_of(family)
        model = fit(family, X, y, spec, params, t.seed)
        model.info = {
            "family": family,
            "params": params.model_dump(),
            "train_rows": len(data),
            "positives": int(y.sum()),
            "train_end": str(pd.Timestamp(ts.max())),
            "validation": {t.metric: scores[family], "from": str(cut)},
        }
        model_files.save(model, layout.model(family))
        models[family] = model
        print(
            f"train: {family} on {len(data):,} rows ({int(y.sum()):,} positive) → {layout.model(family)}"
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
                "rows": len(late),
                "positives": int(y_late.sum()),
                "fit_rows": len(early),
            },
        },
    )
    print(f"train: {chosen} is the candidate to package ({'train.model' if t.model else t.metric})")
    return models
