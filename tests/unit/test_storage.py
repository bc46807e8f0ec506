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


def test_an_unreachable_prediction_log_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backends word it as an endpoint ("Could not connect to http://..."): the reader says which log."""
    import datetime as dt
    import socket

    from pipelines.io.prediction_log import read_window

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    for var, value in {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
    }.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(
        storage.StorageError, match="cannot access s3://unreachable-log/predictions"
    ):
        read_window(
            "s3://unreachable-log/predictions",
            dt.datetime(2026, 1, 1),
            dt.datetime(2026, 1, 2),
            ["ts"],
        )
