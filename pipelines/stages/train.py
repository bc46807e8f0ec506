"""train: the promoted family and its baseline, seeded so the same inputs give the same bytes."""

from __future__ import annotations

import pandas as pd

from pipelines.config import Settings
from pipelines.core.features import FeatureSpec
from pipelines.core.layout import Layout
from pipelines.core.model import FAMILIES, TabularModel, fit
from pipelines.io import model_files, storage


def run(settings: Settings) -> dict[str, TabularModel]:
    """Fit every family on the train table and write each to `Layout.model(family)`.

    Raises ValueError when the labels hold a single class.
    """
    spec, layout = FeatureSpec.from_settings(settings), Layout(settings)
    data = storage.read_parquet(layout.train_table)
    X, y = data[spec.names], data[settings.contract.target].to_numpy()
    t = settings.train
    models = {}
    for family in FAMILIES:
        params = getattr(t, family)
        model = fit(family, X, y, spec, params, t.seed)
        model.info = {
            "family": family,
            "params": params.model_dump(),
            "train_rows": len(data),
            "positives": int(y.sum()),
            "train_end": str(pd.Timestamp(data[settings.contract.timestamp].max())),
        }
        model_files.save(model, layout.model(family))
        models[family] = model
        print(
            f"train: {family} on {len(data):,} rows ({int(y.sum()):,} positive) → {layout.model(family)}"
        )
    return models
