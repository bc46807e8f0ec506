"""train: the promoted family and its baseline, seeded so the same inputs give the same bytes."""

from __future__ import annotations

import pickle

import pandas as pd

from pipelines.config import Settings
from pipelines.core.features import FeatureSpec
from pipelines.core.model import FAMILIES, TabularModel, fit
from pipelines.io import storage


def model_url(settings: Settings, family: str) -> str:
    return storage.join(settings.paths.models, f"{family}.pkl")


def dumps(model: TabularModel) -> bytes:
    return pickle.dumps(model, protocol=5)


def load_model(url: str) -> TabularModel:
    model = pickle.loads(storage.read_bytes(url))
    if not isinstance(model, TabularModel):
        raise TypeError(f"{url} does not hold a TabularModel")
    return model


def run(settings: Settings) -> dict[str, TabularModel]:
    spec = FeatureSpec.from_settings(settings)
    data = storage.read_parquet(storage.join(settings.paths.features, "train.parquet"))
    X, y = data[spec.names], data[settings.contract.target].to_numpy()
    t = settings.train
    models = {}
    for family in FAMILIES:
        params = getattr(t, family)
        model = fit(family, X, y, spec, params, t.seed)
        model.info = {"family": family, "params": params.model_dump(), "train_rows": len(data),
                      "positives": int(y.sum()), "train_end": str(pd.Timestamp(data[settings.contract.timestamp].max()))}
        storage.write_bytes(model_url(settings, family), dumps(model))
        models[family] = model
        print(f"train: {family} on {len(data):,} rows ({int(y.sum()):,} positive) → {model_url(settings, family)}")
    return models
