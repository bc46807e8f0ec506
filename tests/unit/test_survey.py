"""The second stand-in source: a table with the traits of real survey data, deterministically."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.__main__ import main as cli
from pipelines.config import parse_settings
from pipelines.sources import survey


def test_the_survey_has_the_traits_the_card_data_lacks() -> None:
    table = survey.generate(years=10, rows=500, seed=3)
    assert table.equals(survey.generate(years=10, rows=500, seed=3))
    contract = parse_settings({"contract": survey.CONTRACT, "evaluate": {"slice_by": []}}).contract
    assert set(table.columns) == {contract.id, contract.timestamp, contract.target}.union(
        contract.numeric, contract.categorical
    )
    assert all(pd.api.types.is_integer_dtype(table[c]) for c in ("SCHL", "SEX", "MAR", "COW"))
    assert table["employed"].dtype == bool and 0.35 < table["employed"].mean() < 0.6
    assert 0.05 < table["COW"].isna().mean() < 0.3 and table["hours per week"].isna().any()
    year = table["interviewed"].dt.year
    assert sorted(year.unique()) == list(range(survey.START_YEAR, survey.START_YEAR + 10))
    changed = year >= survey.START_YEAR + 7
    assert table.loc[changed, "AGEP"].mean() > table.loc[~changed, "AGEP"].mean() + 3


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_the_command_writes_a_table_ingest_reads(tmp_path, suffix: str) -> None:
    from pipelines.io import storage

    out = tmp_path / f"survey{suffix}"
    assert cli(["survey", "--out", str(out), "--years", "2", "--rows", "50"]) == 0
    read = storage.read_table(str(out), ["SCHL"])
    assert len(read) == 100 and "hours per week" in read.columns
    assert read["employed"].dtype == bool  # true/false survives both formats
