"""The gate's reference derived from the data: a table unlike the card transactions (yearly
rows, integer codes with gaps, a 45 % outcome, no entity, no amount) passes a gate configured by
its contract alone; the file is written once, read after, editable, and params win over it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.config import Settings, parse_settings
from pipelines.core import reference
from pipelines.core.dataset import conform
from pipelines.core.layout import Layout
from pipelines.core.span import Span
from pipelines.io import gate_reference, manifest, storage
from pipelines.serving.schema import record_model
from pipelines.stages import validate

CONTRACT = {
    "id": "person",
    "timestamp": "interviewed",
    "entity": None,
    "target": "employed",
    "label_timestamp": None,
    "numeric": ["age", "hours per week"],
    "amount": None,
    "categorical": ["SCHL", "SEX"],
    "novelty": [],
}
START, YEARS = dt.date(2012, 1, 1), 6


def survey(rows_per_year: int = 400, seed: int = 0) -> pd.DataFrame:
    """Yearly interviews: integer codes (SCHL with 5 % gaps), a true/false outcome near 45 %."""
    rng = np.random.default_rng(seed)
    n = rows_per_year * YEARS
    years = np.repeat(np.arange(START.year, START.year + YEARS), rows_per_year)
    schl = pd.array(rng.integers(1, 25, n), dtype="Int64")
    schl[rng.random(n) < 0.05] = pd.NA
    table = pd.DataFrame(
        {
            "person": np.arange(n),
            "interviewed": pd.to_datetime([f"{y}-03-01" for y in years])
            + pd.to_timedelta(rng.integers(0, 200, n), unit="D"),
            "age": rng.integers(18, 90, n).astype(float),
            "hours per week": rng.integers(0, 60, n).astype(float),
            "SCHL": schl,
            "SEX": rng.integers(1, 3, n),
            "employed": rng.random(n) < 0.45,
        }
    )
    return conform(
        table, parse_settings({"contract": CONTRACT, "evaluate": {"slice_by": []}}).contract
    )


def settings_for(tmp_path: Path, **validate_params: object) -> Settings:
    end = dt.date(START.year + YEARS, 1, 1)
    return parse_settings(
        {
            "contract": CONTRACT,
            "paths": {
                "raw": str(tmp_path / "raw"),
                "validation": str(tmp_path / "validation"),
                "gate_reference": str(tmp_path / "gate_reference.yaml"),
            },
            "ingest": {"start": START.isoformat(), "end": end.isoformat()},
            "evaluate": {"slice_by": []},
            **({"validate": validate_params} if validate_params else {}),
        }
    )


def gate(settings: Settings, table: pd.DataFrame) -> int:
    manifest.write(settings, {"start": settings.ingest.start, "end": settings.ingest.end})
    storage.write_parquet(table, Layout(settings).raw_table)
    return validate.main(settings)


def test_the_reference_of_a_yearly_table_with_codes_and_gaps() -> None:
    table = survey()
    contract = parse_settings({"contract": CONTRACT, "evaluate": {"slice_by": []}}).contract
    day = Span.parse("1 day")
    derived = reference.derive(table, contract, day)
    assert derived["categories"]["SEX"] == ["1", "2"] and len(derived["categories"]["SCHL"]) == 24
    low, high = derived["label_rate"]
    assert low < table["employed"].mean() < high and low > 0.1 and high < 0.85
    assert derived["min_rows_per_period"] == 0  # yearly interviews leave days without any
    assert reference.derive(table, contract, Span.parse("1 year"))["min_rows_per_period"] == 1
    assert set(derived["null_shares"]) == {"SCHL"} and 0.1 < derived["null_shares"]["SCHL"] < 0.13
    assert derived["min_rows"] == len(table) // 10
    daily = table.assign(
        interviewed=pd.Timestamp("2020-01-01")
        + pd.to_timedelta(np.arange(len(table)) % 30, unit="D")
    )
    assert (
        reference.derive(daily, contract, day)["min_rows_per_period"] == 1
    )  # an empty day = a broken feed


def test_a_gate_configured_by_the_contract_alone_derives_saves_and_then_reads_its_reference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(tmp_path)
    table = survey()
    assert gate(settings, table) == 0, capsys.readouterr().err
    assert "derived the gate's reference" in capsys.readouterr().err
    path = Path(settings.paths.gate_reference)
    saved = yaml.safe_load(path.read_text())
    assert saved["contract"] == gate_reference.fingerprint(settings.contract)

    # Read, not derived again: a later snapshot whose outcome rate broke is judged by it.
    broken = table.assign(employed=pd.array([1] * len(table), dtype="Int8"))
    assert gate(settings, broken) == validate.ex.DATA_REJECTED
    assert "derived" not in capsys.readouterr().err

    # A person's edit counts; a key in params wins over the file.
    saved["label_rate"] = [0.95, 1.0]
    path.write_text(yaml.safe_dump(saved))
    assert gate(settings, broken) == 0
    assert gate(settings_for(tmp_path, label_rate=[0.3, 0.6]), broken) == validate.ex.DATA_REJECTED

    # Another contract's reference is not used: derived again for the new one.
    renamed = settings.model_copy(
        update={"contract": settings.contract.model_copy(update={"categorical": ("SEX",)})}
    )
    assert gate(renamed, table.drop(columns="SCHL")) == 0
    assert "derived the gate's reference" in capsys.readouterr().err


def test_the_service_accepts_what_the_derived_reference_accepts(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    gate_reference.load_or_derive(settings, survey())
    served = gate_reference.completed(settings)
    assert served.validate_.null_share("SCHL") > 0 and served.validate_.null_share("SEX") == 0
    record = {"person": 7, "interviewed": "2018-05-01T00:00:00", "age": 40.0}
    record |= {"hours per week": 38.0, "SCHL": None, "SEX": 2}
    assert record_model(served).model_validate(record).SCHL is None
    with pytest.raises(ValueError, match="SCHL"):
        record_model(settings).model_validate(record)  # without the reference: no gaps allowed
