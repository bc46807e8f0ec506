"""Storage: what a failure says."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.io import storage


def test_storage_errors_name_the_location(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    url = str(tmp_path / "file" / "inside.json")
    with pytest.raises(storage.StorageError, match="inside.json"):
        storage.write_json(url, {"a": 1})
    with pytest.raises(FileNotFoundError, match="no such file"):
        storage.read_bytes(str(tmp_path / "missing.parquet"))
