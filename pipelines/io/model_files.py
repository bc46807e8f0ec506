"""Fitted models as files: what the train stage writes and evaluate and package read."""

from __future__ import annotations

import pickle

from pipelines.config import Settings
from pipelines.core.layout import Layout
from pipelines.core.model import TabularModel
from pipelines.io import storage


def to_bytes(model: TabularModel) -> bytes:
    """The file's content: the same fitted model gives the same bytes."""
    return pickle.dumps(model, protocol=5)


def save(model: TabularModel, url: str) -> None:
    """Write `model` to `url` atomically."""
    storage.write_bytes(url, to_bytes(model))


def load(url: str) -> TabularModel:
    """The model at `url`. Raises FileNotFoundError if absent, TypeError if it is not a model."""
    model = pickle.loads(storage.read_bytes(url))
    if not isinstance(model, TabularModel):
        raise TypeError(f"{url} does not hold a TabularModel")
    return model


def chosen(settings: Settings) -> tuple[str, TabularModel]:
    """The candidate train chose to package (`Layout.selection`) and its model. Raises
    FileNotFoundError when train has not run."""
    layout = Layout(settings)
    family = storage.read_json(layout.selection)["chosen"]
    return family, load(layout.model(family))
