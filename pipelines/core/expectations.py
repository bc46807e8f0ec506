"""The data gate's suite, derived from the dataset contract and the `validate` params.

Pure: no Great Expectations import and no I/O, so the suite can be read, diffed and unit-tested
without GX. Each `Check` names a GX expectation class and its kwargs; `stages/validate.py` turns
them into GX objects, runs them and hands back one `Outcome` per check.

Blocking checks stop the pipeline; warnings are reported (summary.json, Data Docs, stderr) and
let it continue. New category values are the one expected kind of drift here: a few unseen
values are a warning (new merchants appear every week, the model treats them as unknown), but
when too large a share of a column is unseen the data no longer looks like what the model
learned from, so the same expectation with `mostly=min_known_share` blocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from pipelines.config import Contract, Validate
from pipelines.core.span import Span, at

# Exit code of a gate that blocked the data: retrying cannot help, the same data fails the same
# way (orchestrators read it; EX_DATAERR from sysexits.h).
DATA_REJECTED = 65

# The two batches the suite runs on: the raw table itself, and one row per day of the ingest
# window (rows per day cannot be expressed on the raw table: an empty day has no rows to test).
TABLE = "transactions"
PERIODS = "rows_per_period"
PERIOD, ROWS = "period", "rows"

# dtype names ExpectColumnValuesToBeInTypeList accepts for pandas. Nullable pandas dtypes must be
# named by their class ("Int8Dtype"): the aliases ("Int8", "Float64") silently match nothing.
# "int"/"float" also let object columns pass when every value is a Python number.
NUMERIC_TYPES = (
    "int",
    "float",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float32",
    "float64",
    "Int8Dtype",
    "Int16Dtype",
    "Int32Dtype",
    "Int64Dtype",
    "UInt8Dtype",
    "UInt16Dtype",
    "UInt32Dtype",
    "UInt64Dtype",
    "Float32Dtype",
    "Float64Dtype",
)
# ExpectColumnValuesToBeOfType compares the dtype's scalar type, so "str" matches pandas 3's
# default `str`, `string` and `string[pyarrow]`, and checks each value of an object column;
# "datetime64" matches naive datetimes of any unit and rejects tz-aware ones (contract: naive UTC).
STRING_TYPE = "str"
DATETIME_TYPE = "datetime64"


@dataclass(frozen=True)
class Check:
    """One expectation: `type` is a class name in `great_expectations.expectations`."""

    key: str
    type: str
    kwargs: Mapping[str, Any]
    column: str | None
    blocking: bool
    description: str
    batch: str = TABLE


@dataclass(frozen=True)
class Outcome:
    """What one check found, in plain JSON-able values."""

    check: Check
    success: bool
    expectation: str  # GX's snake_case name, as shown in Data Docs
    observed: Any = None
    unexpected_count: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        c = self.check
        return {
            "key": c.key,
            "expectation": self.expectation,
            "column": c.column,
            "batch": c.batch,
            "blocking": c.blocking,
            "success": self.success,
            "observed": self.observed,
            "unexpected_count": self.unexpected_count,
            "details": dict(self.details),
            "error": self.error,
            "description": c.description,
        }


def build_suite(
    contract: Contract,
    params: Validate,
    start: pd.Timestamp,
    end: pd.Timestamp,
    known: Mapping[str, Iterable[str]] | None = None,
) -> list[Check]:
    """Every check of the gate, in reading order (structure first, then values, then volume).

    `known` are the known values per categorical column (e.g. those of the training reference);
    default: `params.categories`. `end` is exclusive, like `ingest.end`.
    """
    values = {c: sorted(set(v)) for c, v in (params.categories if known is None else known).items()}
    return [
        *_structure(contract),
        *_types(contract),
        *_not_null(contract, params),
        *_values(contract, params, start, end),
        *(
            check
            for col in contract.categorical
            if col in values
            for check in _categories(col, values[col], params)
        ),
        *_label(contract, params),
        *_volume(contract, params, start, end),
    ]


def _expected_columns(contract: Contract) -> list[str]:
    return [
        *contract.columns,
        contract.target,
        *([contract.label_timestamp] if contract.label_timestamp else []),
    ]


def _structure(contract: Contract) -> list[Check]:
    cols = _expected_columns(contract)
    exists = [
        Check(
            f"exists.{c}", "ExpectColumnToExist", {"column": c}, c, True, f"column {c!r} is present"
        )
        for c in cols
    ]
    # A warning: a missing column already blocks above; what this adds is the list of
    # unexpected columns, which is how a renamed column shows its new name.
    column_set = Check(
        "columns.exact",
        "ExpectTableColumnsToMatchSet",
        {"column_set": cols, "exact_match": True},
        None,
        False,
        "the table has exactly the contract's columns",
    )
    return [*exists, column_set]


def _types(contract: Contract) -> list[Check]:
    strings = [contract.id, *([contract.entity] if contract.entity else []), *contract.categorical]
    numeric = [*contract.numeric, contract.target]
    return [
        *(
            Check(
                f"type.{c}",
                "ExpectColumnValuesToBeOfType",
                {"column": c, "type_": STRING_TYPE},
                c,
                True,
                f"{c!r} holds strings",
            )
            for c in strings
        ),
        *(
            Check(
                f"type.{c}",
                "ExpectColumnValuesToBeInTypeList",
                {"column": c, "type_list": list(NUMERIC_TYPES)},
                c,
                True,
                f"{c!r} is numeric",
            )
            for c in numeric
        ),
        *(
            Check(
                f"type.{c}",
                "ExpectColumnValuesToBeOfType",
                {"column": c, "type_": DATETIME_TYPE},
                c,
                True,
                f"{c!r} is a naive (UTC) datetime",
            )
            for c in (contract.timestamp, contract.label_timestamp)
            if c
        ),
    ]


def _not_null(contract: Contract, params: Validate) -> list[Check]:
    # The label columns are exempt: a transaction whose label has not arrived is legitimately empty.
    def check(c: str, share: float) -> Check:
        return Check(
            f"not_null.{c}",
            "ExpectColumnValuesToNotBeNull",
            {"column": c, "mostly": 1.0 - share},
            c,
            True,
            f"{c!r} has at most {share:.1%} nulls" if share else f"{c!r} has no nulls",
        )

    return [check(c, params.null_share(c)) for c in contract.columns]


def _values(
    contract: Contract, params: Validate, start: pd.Timestamp, end: pd.Timestamp
) -> list[Check]:
    ts = contract.timestamp
    checks = [
        Check(
            f"unique.{contract.id}",
            "ExpectColumnValuesToBeUnique",
            {"column": contract.id},
            contract.id,
            True,
            f"{contract.id!r} identifies one transaction",
        ),
        # The window as min and max rather than ExpectColumnValuesToBeBetween: GX 1.24 compares
        # datetime bounds vectorised only for ns-resolution columns and falls back to a per-row
        # Python loop otherwise (~2.5 s on 500k ms-resolution rows); min/max cost ~0.05 s.
        # ISO strings keep the kwargs JSON-able for the suite and the docs.
        Check(
            f"window_start.{ts}",
            "ExpectColumnMinToBeBetween",
            {"column": ts, "min_value": _iso(start)},
            ts,
            True,
            f"no {ts!r} before the ingest window starts ({at(start)})",
        ),
        Check(
            f"window_end.{ts}",
            "ExpectColumnMaxToBeBetween",
            {"column": ts, "max_value": _iso(end), "strict_max": True},
            ts,
            True,
            f"no {ts!r} at or after the ingest window ends ({at(end)}, exclusive)",
        ),
    ]
    if contract.amount:
        lo, hi = params.amount_range
        checks.append(
            Check(
                f"range.{contract.amount}",
                "ExpectColumnValuesToBeBetween",
                {"column": contract.amount, "min_value": lo, "max_value": hi},
                contract.amount,
                True,
                f"{contract.amount!r} lies in [{lo:g}, {hi:g}]",
            )
        )
    return checks


def _categories(column: str, values: Sequence[str], params: Validate) -> list[Check]:
    share = params.min_known_share
    return [
        Check(
            f"known.{column}",
            "ExpectColumnValuesToBeInSet",
            {"column": column, "value_set": list(values)},
            column,
            False,
            f"{column!r} has only known values (new ones are listed, not blocked)",
        ),
        Check(
            f"known_share.{column}",
            "ExpectColumnValuesToBeInSet",
            {"column": column, "value_set": list(values), "mostly": share},
            column,
            True,
            f"at least {share:.0%} of {column!r} are known values",
        ),
    ]


def _label(contract: Contract, params: Validate) -> list[Check]:
    y, lts, ts = contract.target, contract.label_timestamp, contract.timestamp
    lo, hi = params.label_rate
    checks = [
        Check(
            f"binary.{y}",
            "ExpectColumnValuesToBeInSet",
            {"column": y, "value_set": [0, 1]},
            y,
            True,
            f"{y!r} is 0, 1 or not yet known",
        ),
        # The mean skips missing labels, so this is the positive rate among labelled rows; with
        # no labelled row at all it has no value and fails, which is right: nothing to train on.
        Check(
            f"label_rate.{y}",
            "ExpectColumnMeanToBeBetween",
            {"column": y, "min_value": lo, "max_value": hi},
            y,
            True,
            f"the label rate of labelled rows is in [{lo:g}, {hi:g}]",
        ),
    ]
    if lts is None:
        return checks
    return [
        *checks,
        # A label known before its transaction happened would leak the future into training.
        Check(
            f"label_after_event.{lts}",
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {
                "column_A": lts,
                "column_B": ts,
                "or_equal": True,
                "ignore_row_if": "either_value_is_missing",
            },
            lts,
            True,
            f"{lts!r} is not earlier than {ts!r}",
        ),
    ]


def _volume(
    contract: Contract, params: Validate, start: pd.Timestamp, end: pd.Timestamp
) -> list[Check]:
    return [
        Check(
            "row_count",
            "ExpectTableRowCountToBeBetween",
            {"min_value": params.min_rows, "max_value": params.max_rows},
            None,
            True,
            f"between {params.min_rows:,} and {params.max_rows:,} rows",
        ),
        Check(
            f"rows_per_period.{contract.timestamp}",
            "ExpectColumnValuesToBeBetween",
            {"column": ROWS, "min_value": params.min_rows_per_period},
            contract.timestamp,
            True,
            f"every {params.period} from {at(start)} to {at(end)} has at least "
            f"{params.min_rows_per_period} row(s) by {contract.timestamp!r}",
            batch=PERIODS,
        ),
    ]


def _iso(t: pd.Timestamp) -> str:
    return pd.Timestamp(t).isoformat()


def rows_per_period(
    df: pd.DataFrame, timestamp: str, start: pd.Timestamp, end: pd.Timestamp, period: Span
) -> pd.DataFrame:
    """Rows in each `period` from `start` until `end` (`period.grid`), zero for a period without
    rows; columns PERIOD (its start, ISO) and ROWS.

    Rows whose timestamp is missing, unparseable or outside the window count for no period (the
    type, not-null and window checks report those); tz-aware timestamps count in UTC.
    """
    grid = period.grid(start, end)
    rows = np.zeros(len(grid), dtype="int64")
    if timestamp in df.columns and len(grid):
        ts = pd.to_datetime(df[timestamp], errors="coerce", utc=True).dt.tz_localize(None)
        ts = ts[(ts >= start) & (ts < end)].to_numpy(dtype="datetime64[ns]")
        which = np.searchsorted(grid.to_numpy(dtype="datetime64[ns]"), ts, side="right") - 1
        rows = np.bincount(which, minlength=len(grid)).astype("int64")
    return pd.DataFrame({PERIOD: [at(t) for t in grid], ROWS: rows})


def added_periods(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The `rows_per_period` table of a whole table from those of its parts (same window)."""
    return tables[0].assign(**{ROWS: np.sum([t[ROWS].to_numpy() for t in tables], axis=0)})


def outside_values(values: pd.Series, allowed: Iterable[Any]) -> pd.Series:
    """How often each value outside `allowed` occurs (index: the value, most frequent first;
    nulls are not values)."""
    return values[values.notna() & ~values.isin(list(allowed))].value_counts()


def added_counts(counts: Sequence[pd.Series]) -> pd.Series:
    """`outside_values` of a whole table from those of its parts (most frequent first)."""
    if len(counts) == 1:
        return counts[0]
    return (
        pd.concat(counts)
        .groupby(level=0, sort=False)
        .sum()
        .sort_values(ascending=False, kind="stable")
    )


def unexpected_value_counts(counts: pd.Series, limit: int = 20) -> list[dict[str, Any]]:
    """The `limit` most frequent values of `outside_values` with their exact counts."""
    return [{"value": v, "count": int(n)} for v, n in counts.head(limit).items()]


def gate_passed(outcomes: Iterable[Outcome]) -> bool:
    """True when every blocking check succeeded (warnings do not block)."""
    return all(o.success or not o.check.blocking for o in outcomes)


def ordered(outcomes: Iterable[Outcome]) -> list[Outcome]:
    """Blocking failures, then warnings, then passes; suite order within each (stable sort)."""
    return sorted(outcomes, key=lambda o: 2 if o.success else 0 if o.check.blocking else 1)


def explain_missing_columns(outcomes: Iterable[Outcome]) -> list[Outcome]:
    """Checks on an absent column fail with GX internals ("list index out of range"): say why instead."""
    outcomes = list(outcomes)
    missing = {
        o.check.column for o in outcomes if o.check.type == "ExpectColumnToExist" and not o.success
    }
    return [
        replace(o, error=f"column {o.check.column!r} is missing")
        if not o.success
        and o.check.column in missing
        and o.check.batch == TABLE
        and o.check.type != "ExpectColumnToExist"
        else o
        for o in outcomes
    ]


def failure_line(outcome: Outcome) -> str:
    """`FAILED expect_… on column 'amount' (12 unexpected)`: one line a person can act on."""
    level = "FAILED" if outcome.check.blocking else "WARNING"
    where = f"column {outcome.check.column!r}" if outcome.check.column else "the table"
    return f"{level} {outcome.expectation} on {where} ({_evidence(outcome)})"


def _evidence(o: Outcome) -> str:
    if o.error:  # GX raised, so the expectation has no result
        return f"not evaluated: {o.error}"
    if o.check.type == "ExpectColumnToExist":
        return "column is missing"
    if o.check.batch == PERIODS:
        short = o.details.get("periods", [])
        shown = ", ".join(short[:5]) + (" ..." if len(short) > 5 else "")
        return (
            f"{len(short)} period(s) with fewer than {o.check.kwargs['min_value']} row(s): {shown}"
        )
    if o.unexpected_count is not None:
        pct = o.details.get("unexpected_percent")
        counted = ", ".join(
            f"{v['value']!r} ×{v['count']}" for v in o.details.get("unexpected_values", [])
        )
        examples = ", ".join(repr(v) for v in o.details.get("examples", []))
        return (
            f"{o.unexpected_count} unexpected"
            + (f" ({pct:.2f}%)" if pct is not None else "")
            + (f": {counted}" if counted else f", e.g. {examples}" if examples else "")
        )
    mismatched = o.details.get("mismatched")
    if mismatched:
        return "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in sorted(mismatched.items()))
    if o.observed is None:
        return "no value: the column has no non-null values"
    return f"observed {o.observed!r}" + _expected(o.check.kwargs)


def _expected(kwargs: Mapping[str, Any]) -> str:
    """What the check wanted, after what it observed: a type or a range."""
    if kwargs.get("type_list"):
        return ", expected a number (an integer or float dtype)"
    if kwargs.get("type_") == STRING_TYPE:
        return ", expected text"
    if kwargs.get("type_") == DATETIME_TYPE:
        return ", expected naive UTC timestamps"
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    if lo is None and hi is None:
        return ""
    if lo is None:
        return f", expected {'<' if kwargs.get('strict_max') else '≤'} {hi}"
    if hi is None:
        return f", expected {'>' if kwargs.get('strict_min') else '≥'} {lo}"
    return f", expected [{lo}, {hi}]"
