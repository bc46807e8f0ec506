"""Sources as they come from other systems: time zones, dtypes that mean the same data, CSV
dialects. Each is read into the one form the pipeline uses, or refused with the column named; the
gate then judges the data, not its encoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.config import Settings, parse_settings
from pipelines.core.dataset import join_labels
from pipelines.core.layout import Layout
from pipelines.io import source, storage
from pipelines.sources import simulator
from pipelines.stages import ingest, validate

WORLD = {"cards": 200, "days": 6, "tx_per_day": 400, "start": "2026-01-01"}


def settings_for(tmp_path: Path, src: str, **ingest_params: object) -> Settings:
    return parse_settings(
        {
            "paths": {
                "source": src,
                "raw": str(tmp_path / "raw"),
                "validation": str(tmp_path / "validation"),
                "gate_reference": str(tmp_path / "gate_reference.yaml"),
            },
            "simulate": WORLD,
            "ingest": {"start": "2026-01-01", "end": "2026-01-07", **ingest_params},
            "validate": {"min_rows": 100, "label_rate": [0.0, 0.2]},
        }
    )


def world() -> tuple[pd.DataFrame, pd.DataFrame]:
    return simulator.generate(parse_settings({"simulate": WORLD}).simulate)


def ingested(settings: Settings) -> pd.DataFrame:
    ingest.run(settings)
    return storage.read_parquet(Layout(settings).raw_table)


def passes_the_gate(settings: Settings) -> bool:
    return validate.main(settings) == 0


def test_a_csv_with_z_and_offset_timestamps_is_read_as_naive_utc(tmp_path: Path) -> None:
    tx, labels = world()
    table = join_labels(tx, labels, Settings().contract).head(600)
    expected = table["ts"].copy()
    as_text = table.astype({"ts": "string", "label_ts": "string"})
    as_text["ts"] = [
        (t.isoformat(timespec="microseconds") + "Z")
        if i % 2
        else (t + pd.Timedelta(hours=1)).isoformat(timespec="microseconds") + "+01:00"
        for i, t in enumerate(expected)
    ]
    as_text["label_ts"] = [t.isoformat() + "Z" for t in table["label_ts"]]
    as_text.to_csv(tmp_path / "table.csv", index=False)
    settings = settings_for(tmp_path, str(tmp_path / "table.csv"))
    raw = ingested(settings)
    assert raw["ts"].dt.tz is None
    np.testing.assert_array_equal(
        raw.sort_values("transaction_id")["ts"].to_numpy(),
        table.sort_values("transaction_id")["ts"].to_numpy(),
    )


def test_tz_aware_and_categorical_partitions_are_conformed_and_pass_the_gate(
    tmp_path: Path,
) -> None:
    """The partitioned layout with datetime64[us, UTC] timestamps and pandas `category` columns."""
    tx, labels = world()
    tx = tx.assign(
        ts=tx["ts"].dt.tz_localize("UTC"),
        channel=tx["channel"].astype("category"),
        merchant_category=tx["merchant_category"].astype("category"),
    )
    labels = labels.assign(label_ts=labels["label_ts"].dt.tz_localize("UTC"))
    src = str(tmp_path / "source")
    for day, part in source.split_by_day(tx, "ts").items():
        storage.write_partition(part, storage.join(src, source.TRANSACTIONS), day)
    for day, part in source.split_by_day(labels, "label_ts").items():
        storage.write_partition(part, storage.join(src, source.LABELS), day)
    settings = settings_for(tmp_path, src)
    raw = ingested(settings)
    assert raw["ts"].dt.tz is None and raw["label_ts"].dt.tz is None
    assert raw["channel"].dtype == "string" and set(raw["channel"].dropna()) <= set(
        simulator.CHANNELS
    )
    assert passes_the_gate(settings)


def test_a_semicolon_csv_with_decimal_commas_and_a_bom(tmp_path: Path) -> None:
    tx, labels = world()
    table = join_labels(tx, labels, Settings().contract).head(600)
    path = tmp_path / "semicolon.csv"
    path.write_bytes(b"\xef\xbb\xbf" + table.to_csv(index=False, sep=";", decimal=",").encode())
    raw = ingested(settings_for(tmp_path, str(path), csv_decimal=","))
    assert list(raw.columns[:2]) == ["transaction_id", "ts"]  # the BOM is not part of a name
    np.testing.assert_allclose(
        raw.sort_values("transaction_id")["amount"], table.sort_values("transaction_id")["amount"]
    )


def test_category_codes_that_look_numeric_stay_text(tmp_path: Path) -> None:
    tx, labels = world()
    table = join_labels(tx, labels, Settings().contract).head(600)
    table["channel"] = table["channel"].map({c: f"0{i}" for i, c in enumerate(simulator.CHANNELS)})
    table.to_csv(tmp_path / "codes.csv", index=False)
    raw = ingested(settings_for(tmp_path, str(tmp_path / "codes.csv")))
    assert set(raw["channel"]) <= {"00", "01", "02", "03"}  # not 0, 1, 2, 3


def test_a_missing_column_is_named_with_the_columns_found(tmp_path: Path) -> None:
    tx, labels = world()
    table = join_labels(tx, labels, Settings().contract).head(50).rename(columns={"ts": "when"})
    table.to_csv(tmp_path / "renamed.csv", index=False, sep=";")
    with pytest.raises(
        ValueError,
        match=r"has no column 'ts' \(contract.timestamp\); its columns are "
        r"\['transaction_id', 'when', 'card_id'",
    ):
        ingest.run(settings_for(tmp_path, str(tmp_path / "renamed.csv")))


def test_a_timestamp_that_is_no_timestamp_is_named(tmp_path: Path) -> None:
    tx, labels = world()
    table = join_labels(tx, labels, Settings().contract).head(50).astype({"ts": "string"})
    table.loc[7, "ts"] = "yesterday"
    table.to_csv(tmp_path / "table.csv", index=False)
    with pytest.raises(
        ValueError, match="column 'ts' holds 1 values that are not timestamps, e.g. 'yesterday'"
    ):
        ingest.run(settings_for(tmp_path, str(tmp_path / "table.csv")))


def test_integer_and_categorical_codes_of_the_same_values_are_equal() -> None:
    from pipelines.core.dataset import as_text

    forms = [
        pd.Series([21, 1, None], dtype="Int64"),
        pd.Series([21.0, 1.0, np.nan]),
        pd.Series(["21", "1", None], dtype="category"),
        pd.Series(["21", "1", None], dtype=object),
    ]
    assert all(as_text(f).tolist() == ["21", "1", pd.NA] for f in forms)


def single_table(tmp_path: Path, name: str = "table.csv") -> tuple[pd.DataFrame, Path]:
    """The simulated world as one table with its target (true/false in the file) and label time."""
    tx, labels = world()
    table = join_labels(tx, labels, parse_settings({}).contract)
    table["is_fraud"] = table["is_fraud"].astype(bool)
    path = tmp_path / name
    table.to_csv(path, index=False)
    return table, path


def test_a_true_false_target_is_read_as_0_1_and_passes_the_gate(tmp_path: Path) -> None:
    table, path = single_table(tmp_path)
    assert "True" in path.read_text()[:100_000]
    settings = settings_for(tmp_path, str(path))
    raw = ingested(settings)
    assert sorted(raw["is_fraud"].dropna().unique().tolist()) == [0, 1]
    assert raw["is_fraud"].sum() == table["is_fraud"].sum()
    assert passes_the_gate(settings)


def test_a_single_tables_labels_are_its_target_column(tmp_path: Path) -> None:
    """The drift check's labelled quality on a one-file source: the labels are the table's own
    target, for the ids asked, known from their label time on (so a decay can be seen)."""
    table, path = single_table(tmp_path)
    c = parse_settings({}).contract
    ids = table["transaction_id"].iloc[::7].tolist()
    now = pd.Timestamp("2026-01-10")
    got = source.read_labels(str(path), c, ids, now.date(), now.to_pydatetime())
    known = table[table["transaction_id"].isin(ids) & (table["label_ts"] <= now)]
    assert 0 < len(got) == len(known) < len(ids)
    merged = got.merge(known, on="transaction_id", suffixes=("", "_table"))
    assert (merged["is_fraud"] == merged["is_fraud_table"].astype(float)).all()
