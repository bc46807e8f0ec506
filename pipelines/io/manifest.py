"""The raw snapshot's manifest: what ingest read (source, resolved window, rows, content hash),
written once by ingest and read by what comes after it (validate, featurize, package lineage)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipelines.config import Settings
from pipelines.core.layout import Layout
from pipelines.io import storage


def write(settings: Settings, record: dict[str, Any]) -> None:
    """Write the manifest (JSON; dates as ISO strings)."""
    storage.write_json(Layout(settings).manifest, record)


def read(settings: Settings) -> dict[str, Any]:
    """The manifest. Raises FileNotFoundError naming it when ingest has not run."""
    return storage.read_json(Layout(settings).manifest)  # type: ignore[no-any-return]


def window(settings: Settings) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The window [start, end) ingest resolved. Raises FileNotFoundError when ingest has not run."""
    record = read(settings)
    return pd.Timestamp(record["start"]), pd.Timestamp(record["end"])
