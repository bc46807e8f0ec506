"""How the raw dataset is assembled from a source: pure rules, no I/O.

Transactions are joined with the labels that have arrived (a transaction whose label has not
arrived keeps a missing target: it still counts as history for its entity); partitions that
disagree on a column's type are kept as text so that the data gate, not a Parquet writer, names
the column; and a content hash identifies the snapshot in lineage.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from pipelines.config import Contract, Ingest
from pipelines.core.span import Span


def resolve_window(
    ingest: Ingest, oldest: pd.Timestamp | None, newest: pd.Timestamp | None
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The ingest window [start, end) for a source whose data spans [oldest, newest].

    A null `end` is the start of the `ingest.window` unit after the newest data (the window rolls
    with the data: a yearly window ends on the 1st of January after it, an hourly one at the next
    hour); a null `start` is `ingest.window` before the end, but not before the start of the
    oldest data's unit (empty periods would fail the gate's volume check). Raises ValueError when
    a bound is null and the source has no data, or when the window is empty.
    """
    if (ingest.start is None or ingest.end is None) and (oldest is None or newest is None):
        raise ValueError(
            "the source has no data to place a rolling window (ingest.start/end null) on"
        )
    span = ingest.window
    end = pd.Timestamp(ingest.end) if ingest.end else span.boundary_after(newest)
    start = (
        pd.Timestamp(ingest.start) if ingest.start else max(span.before(end), span.floor(oldest))
    )
    if end <= start:
        raise ValueError(
            f"ingest window {start}..{end} is empty (the newest data is before ingest.start?)"
        )
    return start, end


def window_days(start: pd.Timestamp, end: pd.Timestamp) -> list[dt.date]:
    """Every day that [start, end) touches (the daily partitions that hold its rows)."""
    first, last = start.date(), (end - pd.Timedelta(1, "ns")).date()
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def join_labels(tx: pd.DataFrame, labels: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """`tx` (rows × contract columns) with the target (and label time) of its id, left-joined.

    The last label of an id wins (a corrected label arrives later). The target becomes `Int8`
    (0/1, missing while unknown). Raises ValueError when `tx` lacks the id column.
    """
    if labels.empty:
        labels = no_labels(contract)
    return merge_labels(tx, latest_labels(labels, contract), contract)


# A column the reader adds to every row: (part number << 32) + row number, the row's place in the
# source, so that a "last" or an order survives a shuffle (`latest_labels`, ingest's sort).
SOURCE_ORDER = "__source_order__"


def no_labels(contract: Contract) -> pd.DataFrame:
    """The empty labels feed: columns id, target and the label time if the contract has one."""
    c = contract
    columns = {c.id: pd.Series(dtype="string"), c.target: pd.Series(dtype="Int8")}
    if c.label_timestamp:
        columns[c.label_timestamp] = pd.Series(dtype="datetime64[ms]")
    return pd.DataFrame(columns)


def latest_labels(labels: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """One row per id of `labels` (which hold every label of their ids): the last to arrive, by
    `SOURCE_ORDER` when the column is there, else by row order; columns id, target, label time."""
    c = contract
    columns = [c.id, c.target, *([c.label_timestamp] if c.label_timestamp else [])]
    if not len(labels.columns):  # every labels file of the window was an empty day
        return no_labels(c)
    if SOURCE_ORDER in labels.columns and not labels[SOURCE_ORDER].is_monotonic_increasing:
        labels = labels.sort_values(SOURCE_ORDER, kind="stable")
    return labels[columns].drop_duplicates(c.id, keep="last")


def merge_labels(tx: Any, latest: Any, contract: Contract) -> Any:
    """`join_labels` on labels already one per id (`latest_labels`); `tx` is a pandas or a dask
    frame, `latest` either (a left join keeps pandas' row order, not Dask's).

    Raises ValueError when `tx` lacks the id column."""
    c = contract
    if c.id not in tx.columns:
        raise ValueError(f"transactions lack the id column {c.id!r} named in contract.id")
    out = tx.merge(latest, on=c.id, how="left")
    return out.assign(**{c.target: out[c.target].astype("Int8")})


def uniform_types(df: pd.DataFrame) -> pd.DataFrame:
    """Partitions that disagree on a column's type concatenate to a mixed object column, which
    Parquet cannot store: keep such a column as text, so validate reports its type as wrong."""
    mixed = [
        c for c in df.columns if df[c].dtype == object and df[c].dropna().map(type).nunique() > 1
    ]
    return df.astype({c: "string" for c in mixed}) if mixed else df


def stacked_schema(schemas: list[pd.DataFrame]) -> pd.DataFrame:
    """The one schema of a table stacked from partitions with these (empty) schemas, known
    before any row is read: a partition with no column (an empty day) adds nothing; a column
    takes the dtype pandas' concatenation gives, and is text where the partitions' dtypes
    disagree into a mixed object column (Parquet cannot store one, and text in a numeric column
    is what the data gate names). Every engine casts each partition to it."""
    with_columns = [f for f in schemas if len(f.columns)] or schemas[:1]
    out = pd.concat(with_columns, ignore_index=True)
    mixed = [
        c
        for c in out.columns
        if out[c].dtype == object and len({str(f[c].dtype) for f in with_columns if c in f}) > 1
    ]
    return out.astype({c: "string" for c in mixed}) if mixed else out


def naive_utc(values: pd.Series, name: str) -> pd.Series:
    """A timestamp column as naive UTC datetimes (the project's form): tz-aware values are
    converted (not reinterpreted), ISO 8601 text with `Z` or offsets is parsed, naive text is UTC.

    Raises ValueError naming the column and an example when a present value is not a timestamp.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values
    parsed = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    if not len(values):  # pandas types empty text as seconds, present text as (at least) µs
        parsed = parsed.astype("datetime64[us, UTC]")
    bad = parsed.isna() & values.notna()
    if bad.any():
        raise ValueError(
            f"column {name!r} holds {int(bad.sum()):,} values that are not timestamps, "
            f"e.g. {values[bad].iloc[0]!r} (ISO 8601 expected, naive = UTC)"
        )
    return parsed.dt.tz_localize(None)


def as_text(values: pd.Series) -> pd.Series:
    """A category or id column as text, whatever scalar type stores it: pandas `category`,
    object, string, integer codes (21 → "21"), or integral floats from a column with gaps
    (21.0 → "21"); missing stays missing. The same values in any of these forms become equal."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(object)
    if pd.api.types.is_float_dtype(values.dtype):
        integral = values.dropna()
        if (integral == integral.round()).all():
            values = values.astype("Int64")
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("string").str.lower()
    return values.astype("string")


def as_label(values: pd.Series) -> pd.Series:
    """A target stored as booleans (True/False, with gaps while unknown) as 0/1 `Int8`; any
    other type as it is (the gate judges it)."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("Int8")
    if values.dtype == object:
        present = values.dropna()
        if len(present) and present.map(type).isin([bool, np.bool_]).all():
            return values.astype("boolean").astype("Int8")
    return values


def conform(table: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """`table` with the contract's columns in one form each, however the source stored them:
    timestamps naive UTC (`naive_utc`), ids, entity and categories as text (`as_text`), a
    boolean target as 0/1 (`as_label`). Numeric columns are left as they are: text in a numeric
    column is a fault the data gate names."""
    out = table.copy()
    if contract.target in out.columns:
        out[contract.target] = as_label(out[contract.target])
    for name in (contract.timestamp, contract.label_timestamp):
        if name and name in out.columns:
            out[name] = naive_utc(out[name], name)
    for name in contract.text_columns:
        if name in out.columns:
            out[name] = as_text(out[name])
    return out


def content_hash(df: pd.DataFrame) -> str:
    """SHA-256 (hex) of the rows, the column names and their dtypes: same data, same hash."""
    return chained_hash(df.dtypes, [row_hashes(df)])


def row_hashes(df: pd.DataFrame) -> bytes:
    """pandas' 64-bit hash of each row (`hash_pandas_object`, index excluded), as bytes: a part's
    share of `content_hash`."""
    try:
        rows = pd.util.hash_pandas_object(df, index=False)
    except TypeError:  # unhashable values in a corrupt column: hash their text
        rows = pd.util.hash_pandas_object(df.astype(str), index=False)
    return rows.to_numpy().tobytes()


def chained_hash(dtypes: pd.Series, parts: Iterable[bytes]) -> str:
    """`content_hash` of a table given its dtypes and its parts' `row_hashes` in row order: a
    table split in parts hashes as the whole."""
    digest = hashlib.sha256("\x1f".join(f"{c}:{t}" for c, t in dtypes.astype(str).items()).encode())
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def validation_split(
    data: Any,
    timestamp: str,
    validation: Span,
    values: Callable[..., tuple[Any, ...]] = lambda *results: results,
) -> tuple[Any, Any, pd.Timestamp]:
    """The training table's rows before and from the start of its last `validation` span, and
    that start: what train chooses candidates on and tune searches on (never the test period,
    which is not in this table). `data` is a pandas frame, or a dask frame with `values` the
    engine's (`io.compute.Engine.values`: reductions as plain values).

    Raises ValueError naming `train.validation` when either side is empty."""
    ts = data[timestamp]
    (newest,) = values(ts.max())
    cut = validation.before(newest)
    before, after = ts < cut, ts >= cut
    fit_rows, validation_rows = values(before.sum(), after.sum())
    if not fit_rows or not validation_rows:
        raise ValueError(
            f"train.validation ({validation}) before the newest training row leaves "
            f"{fit_rows} rows to fit and {validation_rows} to validate: shorten or lengthen it"
        )
    return data[before], data[after], cut
