"""The data gate: valid data passes; each kind of corruption blocks and names its column.

Every case runs the real stage (Great Expectations, Data Docs, summary.json) on a small raw
table written to a temporary directory. GX is imported once per session; a run costs ~0.5 s.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.config import Settings, Validate, parse_settings
from pipelines.core import expectations as ex
from pipelines.core import reference
from pipelines.core.layout import Layout
from pipelines.core.span import Span
from pipelines.io import manifest, storage
from pipelines.stages import validate

START, DAYS, ROWS = dt.date(2026, 1, 1), 10, 2000
CATEGORIES = {
    "merchant_category": ["grocery", "fuel", "travel", "electronics"],
    "merchant_country": ["US", "GB", "DE"],
    "channel": ["pos", "online", "contactless"],
}


def make_raw(rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    """A valid raw table as ingest writes it: every day of the window has rows, ~2 % fraud,
    ~20 % of labels not yet arrived."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(START, periods=rows, freq=pd.Timedelta(days=DAYS) / rows).astype(
        "datetime64[ms]"
    )
    labelled = rng.random(rows) < 0.8
    df = pd.DataFrame(
        {
            "transaction_id": [f"tx{i:07d}" for i in range(rows)],
            "ts": ts,
            "card_id": [f"card{i:04d}" for i in rng.integers(0, 300, rows)],
            "amount": rng.gamma(2.0, 40.0, rows).round(2),
            **{col: rng.choice(values, rows) for col, values in CATEGORIES.items()},
            "is_fraud": pd.Series(rng.random(rows) < 0.02, dtype="Int8").where(labelled),
        }
    )
    df["label_ts"] = (df["ts"] + pd.Timedelta(days=3)).where(labelled)
    return df


# The code's defaults, written as params would: these tests judge the gate's rules on them,
# not on a reference derived from the (corrupted) data (tests/data/test_gate_reference.py).
PINNED = {k: v for k, v in Validate().model_dump().items() if k in reference.FIELDS}


def settings_for(tmp_path: Path, **validate_params: object) -> Settings:
    return parse_settings(
        {
            "paths": {
                "raw": str(tmp_path / "raw"),
                "validation": str(tmp_path / "validation"),
                "gate_reference": str(tmp_path / "gate_reference.yaml"),
            },
            "ingest": {
                "start": START.isoformat(),
                "end": (START + dt.timedelta(days=DAYS)).isoformat(),
            },
            "validate": {
                **PINNED,
                "min_rows": 1000,
                "categories": CATEGORIES,
                **validate_params,
            },
        }
    )


def write_snapshot(settings: Settings, df: pd.DataFrame | None = None) -> None:
    """What ingest leaves for validate: the manifest with the window (and the table, if given)."""
    manifest.write(settings, {"start": settings.ingest.start, "end": settings.ingest.end})
    if df is not None:
        storage.write_parquet(df, Layout(settings).raw_table)


@pytest.fixture
def gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, dict]]:
    """Write `df` as the raw snapshot, run the stage's main; (exit code, stderr, summary.json)."""

    def run(df: pd.DataFrame, **validate_params: object) -> tuple[int, str, dict]:
        settings = settings_for(tmp_path, **validate_params)
        write_snapshot(settings, df)
        code = validate.main(settings)
        summary = json.loads((tmp_path / "validation" / "summary.json").read_text())
        return code, capsys.readouterr().err, summary

    return run


def failed(
    summary: dict, expectation: str, column: str | None, blocking: bool = True
) -> list[dict]:
    return [
        r
        for r in summary["results"]
        if not r["success"]
        and r["expectation"] == expectation
        and r["column"] == column
        and r["blocking"] is blocking
    ]


def test_valid_data_passes(gate, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err, summary = gate(make_raw())
    assert (code, summary["success"], summary["failed_blocking"], summary["warnings"]) == (
        0,
        True,
        0,
        0,
    ), err
    assert summary["rows"] == ROWS and summary["evaluated"] == len(summary["results"]) > 30
    assert (tmp_path / "validation" / "docs" / "index.html").is_file()


def _nulls(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[df.index[:12], "amount"] = np.nan
    return df


def _out_of_range(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[df.index[:3], "amount"] = [-5.0, 1e9, -0.01]
    return df


def _amount_as_strings(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(amount=df["amount"].astype(str))


def _empty_day(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["ts"].dt.date != START + dt.timedelta(days=4)]


def _duplicate_ids(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[df.index[10:15], "transaction_id"] = df.loc[df.index[0], "transaction_id"]
    return df


def _label_rate(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[df["is_fraud"].notna(), "is_fraud"] = 1
    return df


def _outside_window(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[df.index[-5:], "ts"] = pd.Timestamp(START + dt.timedelta(days=DAYS))
    return df


def _label_before_event(df: pd.DataFrame) -> pd.DataFrame:
    labelled = df.index[df["label_ts"].notna()][:4]
    df.loc[labelled, "label_ts"] = df.loc[labelled, "ts"] - pd.Timedelta(hours=1)
    return df


CORRUPTIONS = {
    "nulls": (_nulls, "expect_column_values_to_not_be_null", "amount"),
    "out_of_range": (_out_of_range, "expect_column_values_to_be_between", "amount"),
    "wrong_type": (_amount_as_strings, "expect_column_values_to_be_in_type_list", "amount"),
    "renamed_column": (
        lambda df: df.rename(columns={"amount": "amount_usd"}),
        "expect_column_to_exist",
        "amount",
    ),
    "missing_column": (
        lambda df: df.drop(columns="merchant_country"),
        "expect_column_to_exist",
        "merchant_country",
    ),
    "duplicate_ids": (_duplicate_ids, "expect_column_values_to_be_unique", "transaction_id"),
    "empty_day": (_empty_day, "expect_column_values_to_be_between", "ts"),
    "too_few_rows": (lambda df: df.iloc[::4], "expect_table_row_count_to_be_between", None),
    "zero_rows": (lambda df: df.iloc[:0], "expect_table_row_count_to_be_between", None),
    "label_rate": (_label_rate, "expect_column_mean_to_be_between", "is_fraud"),
    "outside_window": (_outside_window, "expect_column_max_to_be_between", "ts"),
    "label_before_event": (
        _label_before_event,
        "expect_column_pair_values_a_to_be_greater_than_b",
        "label_ts",
    ),
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corruption_blocks_and_names_the_column(gate, tmp_path: Path, kind: str) -> None:
    corrupt, expectation, column = CORRUPTIONS[kind]
    code, err, summary = gate(corrupt(make_raw()))
    where = f"column {column!r}" if column else "the table"
    assert code == ex.DATA_REJECTED and not summary["success"]
    assert f"validate: FAILED {expectation} on {where}" in err, err
    assert failed(summary, expectation, column), summary["results"][:5]
    # failures come first, and the report a person opens exists after a failure too
    assert not summary["results"][0]["success"]
    assert str(tmp_path / "validation" / "docs" / "index.html") in err
    assert (tmp_path / "validation" / "docs" / "index.html").is_file()


def test_a_type_failure_says_what_was_expected(gate) -> None:
    _, err, _ = gate(_amount_as_strings(make_raw()))
    assert "on column 'amount' (observed 'str', expected a number" in err, err


def test_a_column_with_gaps_passes_up_to_its_own_null_share(gate) -> None:
    df = make_raw()
    df["channel"] = df["channel"].astype("string")
    df.loc[df.index[::10], "channel"] = pd.NA  # 10 %
    code, err, summary = gate(df, null_shares={"channel": 0.15})
    assert code == 0, err
    code, err, summary = gate(df, null_shares={"channel": 0.05})
    assert code == ex.DATA_REJECTED and failed(
        summary, "expect_column_values_to_not_be_null", "channel"
    ), err


def test_renamed_column_shows_its_new_name(gate) -> None:
    code, err, summary = gate(make_raw().rename(columns={"amount": "amount_usd"}))
    assert code == ex.DATA_REJECTED
    [columns] = failed(summary, "expect_table_columns_to_match_set", None, blocking=False)
    assert columns["details"]["mismatched"] == {"missing": ["amount"], "unexpected": ["amount_usd"]}
    assert "not evaluated: column 'amount' is missing" in err  # not GX's "list index out of range"


def test_empty_day_is_named(gate) -> None:
    _, _, summary = gate(_empty_day(make_raw()))
    [day] = failed(summary, "expect_column_values_to_be_between", "ts")
    assert day["details"]["periods"] == [(START + dt.timedelta(days=4)).isoformat()]


@pytest.mark.parametrize(("share", "blocks"), [(0.01, False), (0.2, True)])
def test_unknown_category_warns_at_small_share_and_blocks_at_large(
    gate, share: float, blocks: bool
) -> None:
    df = make_raw()
    df.loc[df.index[: int(share * len(df))], "channel"] = "teleport"
    code, err, summary = gate(df)
    assert code == (ex.DATA_REJECTED if blocks else 0) and summary["success"] is not blocks
    [warning] = failed(summary, "expect_column_values_to_be_in_set", "channel", blocking=False)
    assert warning["details"]["unexpected_values"] == [
        {"value": "teleport", "count": int(share * len(df))}
    ]
    assert "validate: WARNING expect_column_values_to_be_in_set on column 'channel'" in err
    assert bool(failed(summary, "expect_column_values_to_be_in_set", "channel")) is blocks
    assert (
        "validate: FAILED expect_column_values_to_be_in_set on column 'channel'" in err
    ) is blocks


def test_docs_replace_the_previous_report(gate, tmp_path: Path) -> None:
    gate(make_raw())
    gate(_nulls(make_raw()))
    docs = tmp_path / "validation" / "docs"
    pages = list((docs / "validations").rglob("*.html"))
    assert len(pages) == 2  # this run's two batches only, nothing left from the previous run
    assert sorted(p.name for p in docs.parent.iterdir()) == [
        "docs",
        "summary.json",
    ]  # no temp dirs left


@pytest.mark.parametrize("content", [None, b"not parquet at all"])
def test_unreadable_raw_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None
) -> None:
    settings = settings_for(tmp_path)
    write_snapshot(settings)
    url = Layout(settings).raw_table
    if content is not None:
        storage.write_bytes(url, content)
    assert validate.main(settings) == 1
    err = capsys.readouterr().err
    assert err.startswith("validate: error:") and url in err
    summary = json.loads((tmp_path / "validation" / "summary.json").read_text())
    assert summary["success"] is False and url in summary["error"]


def test_rows_per_period_counts_every_period_of_the_window() -> None:
    df = pd.DataFrame(
        {
            "ts": pd.to_datetime(
                [
                    "2026-01-01 05:00",
                    "2026-01-01 23:59",
                    "2026-01-03 00:00",
                    "2026-02-01 00:00",
                    None,
                ]
            )
        }
    )
    start, day = pd.Timestamp(START), Span.parse("1 day")
    daily = ex.rows_per_period(df, "ts", start, start + pd.Timedelta(days=4), day)
    assert daily.to_dict("list") == {
        "period": ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"],
        "rows": [2, 0, 1, 0],
    }
    assert ex.rows_per_period(
        df.drop(columns="ts"), "ts", start, start + pd.Timedelta(days=2), day
    )["rows"].tolist() == [0, 0]
    # Periods of any span; one cut short by the window's end still counts.
    hours = ex.rows_per_period(
        df, "ts", start, start + pd.Timedelta(hours=30), Span.parse("12 hours")
    )
    assert hours.to_dict("list") == {
        "period": ["2026-01-01", "2026-01-01T12:00:00", "2026-01-02"],
        "rows": [1, 1, 0],
    }


def test_suite_covers_every_contract_column() -> None:
    s = settings_for(Path("/unused"))
    checks = ex.build_suite(s.contract, s.validate_, s.ingest.start, s.ingest.end)
    assert len({c.key for c in checks}) == len(checks)
    for column in s.contract.columns:
        kinds = {c.type for c in checks if c.column == column}
        assert {"ExpectColumnToExist", "ExpectColumnValuesToNotBeNull"} <= kinds, column
        assert kinds & {"ExpectColumnValuesToBeOfType", "ExpectColumnValuesToBeInTypeList"}, column
    blocking = {c.key: c.blocking for c in checks}
    assert blocking["known.channel"] is False and blocking["known_share.channel"] is True
    # without known categories there is nothing to compare against, so no category checks
    bare = ex.build_suite(s.contract, s.validate_, s.ingest.start, s.ingest.end, known={})
    assert not [c for c in bare if c.key.startswith("known")]


def _spread_duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """The same id at both ends of the table: in different parts of any row-order split."""
    df.loc[df.index[[1, 700, -1]], "transaction_id"] = df.loc[df.index[0], "transaction_id"]
    return df


def _new_channel_everywhere(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[df.index[::40], "channel"] = "teleport"
    df.loc[df.index[5::90], "channel"] = "drone"
    return _nulls(df)


PARTED = {
    "valid": lambda df: df,
    **{kind: corrupt for kind, (corrupt, _, _) in CORRUPTIONS.items()},
    "spread_duplicates": _spread_duplicates,
    "new_channel_everywhere": _new_channel_everywhere,
}


@pytest.mark.parametrize("kind", PARTED)
def test_results_combined_from_parts_are_gx_on_the_whole_table(kind: str) -> None:
    """A cluster validates part by part: the combined outcome of every check equals GX's on
    the whole table, whatever the split (an empty part, a one-row part, uneven parts), the
    uniqueness check on parts split by id as the Dask engine splits them."""
    s = settings_for(Path("/unused"))
    df = PARTED[kind](make_raw()).reset_index(drop=True)
    checks = [
        c
        for c in ex.build_suite(s.contract, s.validate_, s.ingest.start, s.ingest.end)
        if c.batch == ex.TABLE
    ]
    keyed = [c for c in checks if c.type == "ExpectColumnValuesToBeUnique"]
    per_row = [c for c in checks if c not in keyed]

    def outcomes(results: dict, runs: list) -> dict:
        found = {
            c.key: ex.added_counts(v)
            for c in checks
            if (v := [r.outside[c.key] for r in runs if c.key in r.outside])
        }
        return {
            c.key: validate._outcome(c, results[c.key], found.get(c.key)).to_json() for c in checks
        }

    whole = validate._run_part(df, checks, None)
    expected = outcomes({r.expectation_config.meta["key"]: r for r in whole.suite.results}, [whole])

    rows = [df.iloc[:0], df.iloc[:1], df.iloc[1:300], df.iloc[300:1500], df.iloc[1500:]]
    runs = [validate._run_part(part, per_row, None) for part in rows]
    results = validate._combined(per_row, runs)
    if "transaction_id" in df.columns:
        bucket = pd.util.hash_pandas_object(df["transaction_id"], index=False) % 3
        by_id = [df.loc[bucket == b, ["transaction_id"]] for b in range(3)]
        results |= validate._combined(keyed, [validate._run_part(p, keyed, None) for p in by_id])
    else:
        results |= validate._combined(keyed, [validate._run_part(p, keyed, None) for p in rows])
    got = outcomes(results, runs)
    assert sum(r.rows for r in runs) == len(df)
    assert close_enough(got, expected), kind


def close_enough(got: dict, expected: dict) -> bool:
    """Equal, floats to 1e-9 relative (a mean added part by part rounds differently)."""

    def same(g: object, e: object) -> bool:
        if isinstance(e, float) and isinstance(g, float):
            return g == pytest.approx(e, rel=1e-9)
        if isinstance(e, dict) and isinstance(g, dict):
            return g.keys() == e.keys() and all(same(g[k], e[k]) for k in e)
        if isinstance(e, list) and isinstance(g, list):
            return len(g) == len(e) and all(same(a, b) for a, b in zip(g, e, strict=True))
        return g == e

    for key in expected:
        assert same(got[key], expected[key]), (got[key], expected[key])
    return True
