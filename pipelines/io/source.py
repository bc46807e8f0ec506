"""The upstream source's layouts, read and written in one place.

Two layouts, told apart by the URL (`is_single_table`):

- **partitioned** (the simulator's, and any upstream that lands day files): under the URL,
  `transactions/date=YYYY-MM-DD/part-0.parquet` by transaction day and a late-arriving labels
  feed `labels/date=YYYY-MM-DD/part-0.parquet` by the day each label arrived;
- **single table**: one Parquet or CSV file (`.parquet`/`.csv`) with the target in it.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from pipelines.config import Contract
from pipelines.core.dataset import conform
from pipelines.core.layout import join
from pipelines.io import storage

TRANSACTIONS = "transactions"
LABELS = "labels"


def is_single_table(url: str) -> bool:
    """True for a one-file source (`.parquet` or `.csv`), False for the partitioned layout."""
    return url.endswith((".parquet", ".csv"))


def transaction_partitions(source: str) -> dict[dt.date, str]:
    """Day → URL of each transaction partition present, in day order."""
    return storage.list_partitions(join(source, TRANSACTIONS))


def label_partitions(source: str) -> dict[dt.date, str]:
    """Arrival day → URL of each labels partition present, in day order."""
    return storage.list_partitions(join(source, LABELS))


def read_labels(
    source: str, contract: Contract, ids: Sequence[str], first_day: dt.date, now: dt.datetime
) -> pd.DataFrame:
    """The labels that had arrived by `now` for the transactions `ids` (columns: id, target and
    the label time if the contract has one; one row per id, the latest label winning).

    Labels are partitioned by arrival day and never arrive before their transaction, so only the
    partitions from `first_day` (the oldest transaction's day) to `now`'s day are read.
    """
    c = contract
    keep = [c.id, c.target, *([c.label_timestamp] if c.label_timestamp else [])]
    if is_single_table(source):
        return _table_labels(source, c, keep, ids, now)
    files = [url for day, url in label_partitions(source).items() if first_day <= day <= now.date()]
    if not files:
        return pd.DataFrame(
            {name: pd.Series(dtype="string" if name == c.id else "float64") for name in keep}
        )
    arrived = (
        ds.field(c.label_timestamp) <= pa.scalar(now, pa.timestamp("us"))
        if c.label_timestamp
        else None
    )
    wanted = pa.array(list(ids))
    # A batch at a time, keeping the wanted ids' labels only: the feed over the span can be far
    # larger than the ids asked for (a drift check's sample of a busy window). Arrow's hash
    # lookup; pandas' isin on Arrow-backed strings walks the values in Python.
    batches = [
        batch.filter(pc.is_in(batch[c.id], value_set=wanted))
        for batch in storage.scan_parquet_batches(join(source, LABELS), files, keep, arrived)
    ]
    labels = (
        pa.Table.from_batches(batches).to_pandas()
        if batches
        else storage.scan_parquet(join(source, LABELS), files, keep, arrived).to_pandas()
    )
    if c.label_timestamp:  # a corrected label arrives later: the latest one wins
        labels = labels.sort_values(c.label_timestamp, kind="stable")
    return labels.drop_duplicates(c.id, keep="last")


def _table_labels(
    source: str, contract: Contract, keep: list[str], ids: Sequence[str], now: dt.datetime
) -> pd.DataFrame:
    """`read_labels` for a single table: the target is a column of the table itself, known at
    its label time if the contract has one (else as soon as the row is there)."""
    c = contract
    table = storage.read_table(source, [c.id])
    missing = [name for name in keep if name not in table.columns]
    if missing:
        raise ValueError(f"{source} has no column {missing[0]!r} (named in the contract)")
    labels = conform(table[keep], c)
    labels = labels[labels[c.id].isin(set(ids)) & labels[c.target].notna()]
    if c.label_timestamp:
        labels = labels[labels[c.label_timestamp] <= pd.Timestamp(now)]
        labels = labels.sort_values(c.label_timestamp, kind="stable")
    labels = labels.astype({c.target: "float64"})
    return labels.drop_duplicates(c.id, keep="last").reset_index(drop=True)


def split_by_day(
    df: pd.DataFrame, ts_col: str, days: Sequence[dt.date] | None = None
) -> dict[dt.date, pd.DataFrame]:
    """One frame per day of `ts_col` (every day of `days` if given, empty where nothing happened).

    A column with no value at all on a day is left out of that day's frame: it is how a
    schema change that starts on a day (a renamed or dropped column) lives in one frame.
    """
    day_of = df[ts_col].dt.normalize()
    wanted = sorted(set(days) if days is not None else set(day_of.dt.date.unique()))
    groups = {k.date(): idx for k, idx in df.groupby(day_of, sort=True).indices.items()}
    out: dict[dt.date, pd.DataFrame] = {}
    for day in wanted:
        part = df.iloc[groups.get(day, [])].reset_index(drop=True)
        if len(part):
            part = part[[c for c in part.columns if part[c].notna().any()]]
        out[day] = part
    return out


def write_partitioned(
    url: str,
    transactions: pd.DataFrame,
    labels: pd.DataFrame,
    contract: Contract,
    days: Sequence[dt.date] | None = None,
) -> None:
    """Write `transactions/` by transaction day and `labels/` by the day each label arrives.

    Each day's partition replaces what was there (re-running never doubles rows). `days`: the
    transaction days to write, also those with no rows (an empty file with the schema); default:
    the days that have rows. Needs `contract.label_timestamp` (the labels' arrival time).
    """
    if contract.label_timestamp is None:
        raise ValueError(
            "the partitioned layout needs contract.label_timestamp (when each label arrived)"
        )
    parts = {
        TRANSACTIONS: split_by_day(transactions, contract.timestamp, days),
        LABELS: split_by_day(labels, contract.label_timestamp),
    }
    for name, by_day in parts.items():
        base = join(url, name)
        stale = set(storage.list_partitions(base)) - set(by_day)
        every = max(1, len(by_day) // 10)
        for i, (day, frame) in enumerate(by_day.items(), 1):
            storage.write_partition(frame, base, day)
            if i % every == 0 or i == len(by_day):
                print(
                    f"source: {name} {i}/{len(by_day)} days written (through {day})",
                    file=sys.stderr,
                )
        if stale:
            print(
                f"source: warning: {len(stale)} older {name} partitions outside this run remain "
                f"under {base} ({min(stale)} .. {max(stale)})",
                file=sys.stderr,
            )
