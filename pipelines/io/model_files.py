"""Fitted models as files: what the train stage writes and evaluate and package read."""

from __future__ import annotations

from pipelines.config import Settings
from pipelines.core import artifact
from pipelines.core.layout import Layout
from pipelines.core.model import TabularModel
from pipelines.io import storage


def to_bytes(model: TabularModel) -> bytes:
    """The file's content (`core.artifact`'s archive): the same fitted model gives the same
    bytes."""
    return artifact.pack(model)


def save(model: TabularModel, url: str) -> None:
    """Write `model` to `url` atomically."""
    storage.write_bytes(url, to_bytes(model))


def load(url: str) -> TabularModel:
    """The model at `url`. Raises FileNotFoundError if absent, ValueError naming it if it is not
    a model archive or a member does not match its contract (`core.artifact.unpack`)."""
    return artifact.unpack(storage.read_bytes(url), url)


def chosen(settings: Settings) -> tuple[str, TabularModel]:
    """The candidate train chose to package (`Layout.selection`) and its model. Raises
    FileNotFoundError when train has not run."""
    layout = Layout(settings)
    family = storage.read_json(layout.selection)["chosen"]
    return family, load(layout.model(family))
