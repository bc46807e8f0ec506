"""The batch-scoring job's check of a table (`jobs.predict.validate`): every row as the service
checks a request, the problems named by row and field, timestamps read as a table holds them."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.config import Settings
from pipelines.jobs.predict import SHOWN_PROBLEMS, validate

SETTINGS = Settings()


def table(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "ts": pd.date_range("2026-03-01 10:00", periods=n, freq="min"),
            "card_id": "c1",
            "amount": 12.5,
            "merchant_category": "grocery",
            "merchant_country": "US",
            "channel": "pos",
            "is_fraud": 0,  # beyond the contract: ignored
        }
    )


def test_a_valid_table_passes_with_timestamps_as_values_or_as_text() -> None:
    validate(table(), SETTINGS, "t.parquet")
    as_text = table().assign(ts=lambda d: d["ts"].astype(str))  # a CSV's "2026-03-01 10:00:00"
    validate(as_text, SETTINGS, "t.csv")
    with_offset = table().assign(ts=lambda d: d["ts"].dt.tz_localize("Europe/Paris").astype(str))
    validate(with_offset, SETTINGS, "t.csv")


def test_each_problem_is_named_by_row_and_field() -> None:
    bad = table().astype({"ts": object})
    bad.loc[1, "amount"] = -3.0
    bad.loc[2, "ts"] = "yesterday"
    bad.loc[4, "channel"] = None
    with pytest.raises(ValueError) as err:
        validate(bad, SETTINGS, "t.csv")
    message = str(err.value)
    assert message.startswith("t.csv: 3 invalid value(s), nothing scored")
    assert "row 1 amount" in message and "row 2 ts" in message and "row 4 channel" in message


def test_a_table_bad_on_every_row_names_the_first_few_and_counts_the_rest() -> None:
    with pytest.raises(ValueError, match=rf"; and {50 - SHOWN_PROBLEMS} more$"):
        validate(table(50).assign(amount=-1.0), SETTINGS, "t.parquet")


def test_a_missing_column_is_named() -> None:
    with pytest.raises(ValueError, match=r"t.parquet lacks columns \['channel'\]"):
        validate(table().drop(columns=["channel"]), SETTINGS, "t.parquet")
