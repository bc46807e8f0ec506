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


def test_a_dataset_directory_reads_in_part_order_and_only_when_complete(tmp_path: Path) -> None:
    import pandas as pd

    url = tmp_path / "train.parquet"
    url.mkdir()
    for i, values in enumerate([[1.0, 2.0], [3.0], []]):
        pd.DataFrame({"x": values}, dtype="float64").to_parquet(url / f"part-{i:05d}.parquet")
    with pytest.raises(ValueError, match="incomplete Parquet dataset .*no _metadata"):
        storage.read_parquet(str(url))
    (url / storage.DATASET_MARKER).write_bytes(b"")  # written last by the writer
    assert storage.read_parquet(str(url))["x"].tolist() == [1.0, 2.0, 3.0]
    (url / "part-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="cannot read the Parquet dataset"):
        storage.read_parquet(str(url))


def test_a_table_file_and_a_dataset_directory_replace_each_other(tmp_path: Path) -> None:
    import pandas as pd

    target = tmp_path / "train.parquet"
    storage.write_parquet(pd.DataFrame({"x": [1.0]}), str(target))
    staged = tmp_path / f"train.parquet{storage.STAGING}1"
    staged.mkdir()
    pd.DataFrame({"x": [2.0]}).to_parquet(staged / "part-00000.parquet")
    (staged / storage.DATASET_MARKER).write_bytes(b"")
    storage.replace_table(str(staged), str(target))
    assert target.is_dir() and not staged.exists()
    assert storage.read_parquet(str(target))["x"].tolist() == [2.0]
    storage.write_parquet(pd.DataFrame({"x": [3.0]}), str(target))
    assert target.is_file() and storage.read_parquet(str(target))["x"].tolist() == [3.0]
    assert [p.name for p in tmp_path.iterdir()] == ["train.parquet"]


def test_a_directory_that_is_not_a_table_is_never_replaced(tmp_path: Path) -> None:
    import pandas as pd

    kept = tmp_path / "reports"
    kept.mkdir()
    (kept / "index.html").write_text("a report")
    with pytest.raises(storage.StorageError, match="reports"):
        storage.write_parquet(pd.DataFrame({"x": [1.0]}), str(kept))
    with pytest.raises(storage.StorageError, match="reports"):
        storage.write_json(str(kept), {"a": 1})
    assert (kept / "index.html").read_text() == "a report"
    assert [p.name for p in tmp_path.iterdir()] == ["reports"]


def test_a_files_schema_is_read_from_its_footer_as_read_parquet_types_it(tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame(
        {
            "id": ["a", "b"],
            "ts": pd.to_datetime(["2026-01-01", "2026-01-02"]),
            "y": pd.array([1, None], dtype="Int8"),
            "x": [1.5, 2.0],
        }
    )
    url = str(tmp_path / "part.parquet")
    storage.write_parquet(frame, url)
    schema = storage.read_schema(url)
    assert schema.empty and list(schema.columns) == list(frame.columns)
    assert schema.dtypes.to_dict() == storage.read_parquet(url).dtypes.to_dict()
    (tmp_path / "torn.parquet").write_bytes(b"PAR1 not a footer")
    with pytest.raises(ValueError, match="torn.parquet"):
        storage.read_schema(str(tmp_path / "torn.parquet"))
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        storage.read_schema(str(tmp_path / "missing.parquet"))
