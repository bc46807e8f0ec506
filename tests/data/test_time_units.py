"""Hourly, daily and yearly tables through ingest, the gate and the split, each with its windows
written in its own unit (`48 hours`, `20 days`, `5 years`): the rolling window ends at the unit
after the newest row, the test period is the last span, and the gate counts volume per period and
names the period a broken feed left empty."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest

from pipelines.config import Settings, parse_settings
from pipelines.core.layout import Layout
from pipelines.core.span import at
from pipelines.io import gate_reference, manifest, storage
from pipelines.sources import simulator
from pipelines.stages import featurize, ingest, validate

CONTRACT = {
    "id": "id",
    "timestamp": "ts",
    "entity": None,
    "target": "y",
    "label_timestamp": None,
    "numeric": ["x"],
    "amount": None,
    "categorical": ["c"],
    "novelty": [],
}


class Case(NamedTuple):
    unit: str  # pandas frequency of the table's periods
    periods: int
    window: str
    test: str
    period: str
    start: str  # the window ingest must resolve
    end: str
    split: str  # the first instant of the test period


CASES = {
    "hourly": Case(
        "h", 72, "48 hours", "6 hours", "1 hour", "2026-01-02", "2026-01-04", "2026-01-03T18:00:00"
    ),
    "daily": Case("D", 30, "20 days", "5 days", "1 day", "2026-01-11", "2026-01-31", "2026-01-26"),
    "yearly": Case(
        "YS", 8, "5 years", "1 year", "1 year", "2029-01-01", "2034-01-01", "2033-01-01"
    ),
}


def table(case: Case, rows_per_period: int = 40, seed: int = 0) -> pd.DataFrame:
    """`rows_per_period` rows in each of `case.periods` periods from 2026-01-01, spread within
    each period (never past its end)."""
    rng = np.random.default_rng(seed)
    starts = pd.date_range("2026-01-01", periods=case.periods + 1, freq=case.unit)
    first = np.repeat(starts[:-1].to_numpy(), rows_per_period)
    length = np.repeat(np.diff(starts.to_numpy()), rows_per_period)
    ts = first + (length * rng.uniform(0, 0.99, len(first))).astype("timedelta64[ns]")
    n = len(ts)
    x = rng.normal(size=n)
    return pd.DataFrame(
        {
            "id": np.arange(n).astype(str),
            "ts": pd.to_datetime(ts).as_unit("ms"),
            "x": x,
            "c": rng.choice(["a", "b", "c"], n),
            "y": (rng.random(n) < 1 / (1 + np.exp(-x))).astype("int8"),
        }
    )


def settings_for(tmp_path: Path, case: Case) -> Settings:
    return parse_settings(
        {
            "contract": CONTRACT,
            "paths": {
                "source": str(tmp_path / "table.parquet"),
                "raw": str(tmp_path / "raw"),
                "validation": str(tmp_path / "validation"),
                "features": str(tmp_path / "features"),
                "gate_reference": str(tmp_path / "gate_reference.yaml"),
            },
            "ingest": {"window": case.window},
            "validate": {"period": case.period},
            "split": {"test": case.test},
            "features": {"request": []},
            "evaluate": {"slice_by": []},
        }
    )


@pytest.mark.parametrize("name", list(CASES))
def test_windows_split_and_volume_in_the_datas_own_unit(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = CASES[name]
    settings = settings_for(tmp_path, case)
    data = table(case)
    storage.write_parquet(data, settings.paths.source)

    ingest.run(settings)
    start, end = manifest.window(settings)
    assert (start, end) == (pd.Timestamp(case.start), pd.Timestamp(case.end))
    assert manifest.read(settings)["requested"]["window"] == case.window
    inside = data[(data["ts"] >= start) & (data["ts"] < end)]
    assert len(storage.read_parquet(Layout(settings).raw_table)) == len(inside) > 0

    assert validate.main(settings) == 0, capsys.readouterr().err
    reference = gate_reference.load(settings)
    assert reference is not None and reference["min_rows_per_period"] == 1  # every period has rows

    featurize.run(settings)
    layout = Layout(settings)
    train, test = storage.read_parquet(layout.train_table), storage.read_parquet(layout.test_table)
    split = pd.Timestamp(case.split)
    assert featurize.split_time(settings) == split
    assert len(test) == int((inside["ts"] >= split).sum()) > 0
    assert len(train) == len(inside) - len(test) and train["ts"].max() < split <= test["ts"].min()

    # A feed that broke for one period inside the window: the gate, judging by the saved
    # reference, blocks the snapshot and names the empty period.
    gap = pd.Timestamp(start) + (split - pd.Timestamp(start)) / 2
    gap = settings.validate_.period.floor(gap)
    broken = data[
        ~((data["ts"] >= gap) & (data["ts"] < gap + settings.validate_.period.offset)).to_numpy()
    ]
    storage.write_parquet(broken, settings.paths.source)
    ingest.run(settings)
    capsys.readouterr()
    assert validate.main(settings) == validate.ex.DATA_REJECTED
    err = capsys.readouterr().err
    assert f"1 period(s) with fewer than 1 row(s): {at(gap)}" in err, err


def test_a_partitioned_source_honours_instants_within_a_day(tmp_path: Path) -> None:
    """The simulator's day partitions, a window and a label cutoff that fall within days: only
    the window's transactions, and only the labels that had arrived by the cutoff instant."""
    world = {"cards": 150, "days": 5, "tx_per_day": 300, "start": "2026-01-01"}
    tx, labels = simulator.generate(parse_settings({"simulate": world}).simulate)
    src = str(tmp_path / "source")
    simulator.write_source(src, tx, labels)
    start, end, cutoff = "2026-01-02 06:00", "2026-01-04 18:00", "2026-01-10 12:30"
    settings = parse_settings(
        {
            "paths": {"source": src, "raw": str(tmp_path / "raw")},
            "ingest": {"start": start, "end": end, "label_cutoff": cutoff},
        }
    )
    ingest.run(settings)
    raw = storage.read_parquet(Layout(settings).raw_table)
    inside = tx[(tx["ts"] >= pd.Timestamp(start)) & (tx["ts"] < pd.Timestamp(end))]
    assert sorted(raw["transaction_id"]) == sorted(inside["transaction_id"])
    known = labels[labels["label_ts"] < pd.Timestamp(cutoff)]
    expected = inside["transaction_id"].isin(known["transaction_id"])
    assert int(raw["is_fraud"].notna().sum()) == int(expected.sum()) > 0
    assert (raw["label_ts"].dropna() < pd.Timestamp(cutoff)).all()
    # The cutoff's own day has labels on both sides of it: the instant, not the day, decides.
    day = labels[labels["label_ts"].dt.normalize() == pd.Timestamp(cutoff).normalize()]
    assert (day["label_ts"] < pd.Timestamp(cutoff)).any() and (
        day["label_ts"] >= pd.Timestamp(cutoff)
    ).any()
    record = manifest.read(settings)
    assert (record["start"], record["end"]) == ("2026-01-02T06:00:00", "2026-01-04T18:00:00")
