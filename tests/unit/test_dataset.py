"""How the raw dataset is assembled: the source's partitions stacked, the latest label of an id,
and the content hash of a table split in parts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.config import Settings
from pipelines.core import dataset

CONTRACT = Settings().contract


def day_files(root: Path) -> dict[str, str]:
    """Day files as other writers leave them: pandas' own, and pyarrow's with an integer and a
    boolean column holding nulls (pandas reads those as float and object)."""
    frames = {
        "typed": pd.DataFrame({"x": pd.Series([1, 2], dtype="int64"), "c": ["a", "b"]}),
        "without x": pd.DataFrame({"c": ["c"]}),
        "x as text": pd.DataFrame({"x": ["3"], "c": ["d"]}),
        "empty day": pd.DataFrame(),
    }
    urls = {}
    for name, frame in frames.items():
        urls[name] = str(root / f"{name}.parquet")
        frame.to_parquet(urls[name], index=False)
    gaps = pa.table({"x": pa.array([4, None], pa.int64()), "flag": [True, None], "c": ["e", "f"]})
    urls["int with gaps"] = str(root / "gaps.parquet")
    pq.write_table(gaps, urls["int with gaps"])
    return urls


@pytest.mark.parametrize(
    "names",
    [
        ["typed"],
        ["typed", "without x"],
        ["typed", "x as text"],
        ["typed", "int with gaps"],
        ["typed", "without x", "x as text", "empty day"],
        ["empty day", "typed", "int with gaps"],
    ],
)
def test_partitions_stack_as_pandas_concatenates_them_with_a_schema_known_from_the_footers(
    names: list[str], tmp_path: Path
) -> None:
    """What every engine reads (`Engine.read_parts`, here pandas'): the rows pandas'
    concatenation gives, a column the files disagree on as text, and the schema the cluster
    takes from the footers alone is the one the rows have."""
    from pipelines.io import storage
    from pipelines.io.compute import Local

    urls = day_files(tmp_path)
    got = Local().read_parts([urls[n] for n in names], lambda part: part)
    frames = [storage.read_parquet(urls[n]) for n in names]
    expected = dataset.uniform_types(
        pd.concat([f for f in frames if len(f.columns)], ignore_index=True)
    )
    pd.testing.assert_frame_equal(got.drop(columns=dataset.SOURCE_ORDER), expected)
    schema = dataset.stacked_schema([storage.read_schema(urls[n]) for n in names])
    assert schema.dtypes.to_dict() == expected.dtypes.to_dict()


def test_the_latest_label_of_an_id_wins_by_source_order_not_row_order() -> None:
    c = CONTRACT
    labels = pd.DataFrame(
        {
            c.id: ["t1", "t2", "t1"],
            c.target: pd.array([0, 1, 1], dtype="Int8"),
            c.label_timestamp: pd.to_datetime(["2026-01-03", "2026-01-02", "2026-01-01"]),
            dataset.SOURCE_ORDER: [5, 1, 2],  # the first row arrived last
        }
    )
    latest = dataset.latest_labels(labels, c).set_index(c.id)[c.target]
    assert latest.to_dict() == {"t1": 0, "t2": 1}
    assert dataset.latest_labels(pd.DataFrame(), c).empty  # only empty days: no label


def test_a_table_hashed_in_parts_hashes_as_the_whole() -> None:
    table = pd.DataFrame({"a": range(10), "b": [f"v{i}" for i in range(10)]})
    whole = dataset.content_hash(table)
    parts = [dataset.row_hashes(table.iloc[i : i + 3]) for i in range(0, 10, 3)]
    assert dataset.chained_hash(table.dtypes, parts) == whole
    assert dataset.chained_hash(table.dtypes, parts[::-1]) != whole  # the order counts
    assert dataset.content_hash(table.astype({"a": "float64"})) != whole  # so do the dtypes


def test_a_partition_whose_values_the_schema_would_change_is_named(tmp_path: Path) -> None:
    """Text timestamps: the footer says text, so the schema takes pandas' unit for text (µs);
    a file whose text carries nanoseconds would lose them, and is refused by name."""
    from pipelines.io.compute import Local

    url = str(tmp_path / "nanos.parquet")
    pd.DataFrame({"ts": ["2026-01-01T10:00:00.123456789Z"]}).to_parquet(url, index=False)

    def timestamps(part: pd.DataFrame) -> pd.DataFrame:
        return part.assign(ts=dataset.naive_utc(part["ts"], "ts"))

    with pytest.raises(ValueError, match="nanos.parquet: column 'ts'"):
        Local().read_parts([url], timestamps)
    micros = str(tmp_path / "micros.parquet")
    pd.DataFrame({"ts": ["2026-01-01T10:00:00.123456Z"]}).to_parquet(micros, index=False)
    got = Local().read_parts([micros], timestamps)
    assert got["ts"].iloc[0] == pd.Timestamp("2026-01-01T10:00:00.123456")
