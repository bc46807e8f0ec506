"""How the raw dataset is assembled: the source's partitions stacked, the latest label of an id,
and the content hash of a table split in parts."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.config import Settings
from pipelines.core import dataset

CONTRACT = Settings().contract

DAYS = {
    "typed": pd.DataFrame({"x": pd.Series([1, 2], dtype="int64"), "c": ["a", "b"]}),
    "without x": pd.DataFrame({"c": ["c"]}),
    "x as text": pd.DataFrame({"x": ["3"], "c": ["d"]}),
    "empty day": pd.DataFrame(),
}


@pytest.mark.parametrize(
    "names",
    [
        ["typed"],
        ["typed", "without x"],
        ["typed", "x as text"],
        ["typed", "without x", "x as text", "empty day"],
        ["empty day", "typed"],
    ],
)
def test_the_schema_known_before_reading_is_the_one_the_rows_stack_into(names: list[str]) -> None:
    frames = [DAYS[n] for n in names]
    stacked = dataset.stack(frames)
    schema = dataset.stacked_schema([f.iloc[:0] for f in frames])
    assert list(schema.columns) == list(stacked.columns)
    assert schema.dtypes.to_dict() == stacked.dtypes.to_dict()
    # Each part cast to that schema stacks into the same table (the cluster's path).
    parts = [f.reindex(columns=schema.columns).astype(schema.dtypes.to_dict()) for f in frames]
    cast = pd.concat([p for p in parts if len(p)], ignore_index=True)
    pd.testing.assert_frame_equal(cast, stacked)


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
