"""ingest: the source window of the params → one raw snapshot DVC versions.

The window is resolved here, once (`core.dataset.resolve_window`): pinned instants, or rolling (a
null end is the start of the window's unit after the newest data, so new data in the source moves
it: that is how a retraining trains on the newest data without editing params). The manifest
records the resolved window and the stages after this one read it from there. Transactions in
[start, end) are joined with the labels that had arrived by the cutoff, the last label of an id
winning (`core.dataset.latest_labels`, `merge_labels`). The reading is schema-agnostic on purpose:
a corrupt partition must reach the validate stage intact so the gate can name what is wrong with
it. The source's layouts are `io.source`'s.

The partitioned layout runs on the `compute` engine: with Dask each day file is a partition read
on a worker, the labels are shuffled by id to find each id's latest, and the snapshot is written
as a Parquet dataset in the source's order, the same rows and content hash as pandas gives.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import pandas as pd

from pipelines.config import Contract, Settings
from pipelines.core.dataset import (
    SOURCE_ORDER,
    conform,
    latest_labels,
    merge_labels,
    no_labels,
    resolve_window,
    uniform_types,
    window_days,
)
from pipelines.core.layout import Layout
from pipelines.core.span import at
from pipelines.io import compute, manifest, source, storage
from pipelines.io.compute import Engine, Local

Window = tuple[pd.Timestamp, pd.Timestamp]


def read_partitioned(
    settings: Settings, engine: Engine | None = None
) -> tuple[Any, Window, dict[str, Any]]:
    """The partitioned layout: the transactions of the window (from the days it touches) and the
    labels feed up to the cutoff, read and joined on `engine` (a pandas frame in order, or a dask
    frame in the same order, never whole in one process). The newest partition counts as a whole
    day of data.

    Raises FileNotFoundError naming the source when no day of the window has a partition.
    """
    engine = engine or Local()
    src, win, c = settings.paths.source, settings.ingest, settings.contract
    tx_parts = source.transaction_partitions(src)
    oldest, newest = (
        (
            pd.Timestamp(min(tx_parts)),
            pd.Timestamp(max(tx_parts)) + pd.Timedelta("1D") - pd.Timedelta(1, "ns"),
        )
        if tx_parts
        else (None, None)
    )
    start, end = resolve_window(win, oldest, newest)
    days = window_days(start, end)
    urls = [tx_parts[d] for d in days if d in tx_parts]
    if not urls:
        raise FileNotFoundError(
            f"no transaction partitions in {src}/{source.TRANSACTIONS} for "
            f"{at(start)}..{at(end)} (end exclusive)"
        )
    missing = [d.isoformat() for d in days if d not in tx_parts]
    if missing:
        print(
            f"ingest: {len(missing)} day(s) have no partition: {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}",
            file=sys.stderr,
        )
    tx = engine.read_parts(urls, _window_rows, c, start, end)

    cutoff = None if win.label_cutoff is None else pd.Timestamp(win.label_cutoff)
    label_urls = [
        u
        for d, u in source.label_partitions(src).items()
        if cutoff is None or pd.Timestamp(d) < cutoff
    ]
    latest = (
        engine.per_entity(
            engine.read_parts(label_urls, _arrived, c, cutoff), latest_labels, c.id, c
        )
        if label_urls
        else no_labels(c)
    )
    joined = merge_labels(tx, latest, c)
    # The snapshot keeps the source's order (day, then row) on every engine: a cluster's join
    # scatters rows, and the content hash and a reader's expectations depend on the order.
    raw = engine.sort(joined, [SOURCE_ORDER], like=tx[SOURCE_ORDER]).drop(columns=SOURCE_ORDER)
    return raw, (start, end), {"partitions": len(urls), "missing_days": missing}


def _window_rows(
    part: pd.DataFrame, contract: Contract, start: pd.Timestamp, end: pd.Timestamp
) -> pd.DataFrame:
    return _within(conform(part, contract), contract.timestamp, start, end)


def _arrived(part: pd.DataFrame, contract: Contract, cutoff: pd.Timestamp | None) -> pd.DataFrame:
    """A labels partition's labels that had arrived by `cutoff` (a partition is a whole day of
    arrivals: a cutoff within a day keeps its earlier ones)."""
    part = conform(part, contract)
    if cutoff is None or contract.label_timestamp not in part.columns:
        return part
    when = _instants(part[contract.label_timestamp])
    return part[((when < cutoff) | when.isna()).to_numpy()]


def read_single_table(settings: Settings) -> tuple[pd.DataFrame, Window, dict[str, Any]]:
    """A team's own table (one Parquet or CSV file) with the target already in it.

    Raises ValueError naming the file when the timestamp column is missing or no row is in the window.
    """
    c, win = settings.contract, settings.ingest
    table = storage.read_table(settings.paths.source, c.text_columns, win.csv_decimal)
    if c.timestamp not in table.columns:
        raise ValueError(
            f"{settings.paths.source} has no column {c.timestamp!r} (contract.timestamp); "
            f"its columns are {list(table.columns)}"
        )
    table = conform(table, c)
    ts = table[c.timestamp].dropna()
    start, end = resolve_window(win, ts.min() if len(ts) else None, ts.max() if len(ts) else None)
    raw = _within(table, c.timestamp, start, end)
    # Labels not yet known at the cutoff are unknown.
    if c.label_timestamp and c.label_timestamp in raw.columns and win.label_cutoff is not None:
        late = raw[c.label_timestamp] >= pd.Timestamp(win.label_cutoff)
        raw[c.target] = raw[c.target].astype("Float64").mask(late.to_numpy())
    if raw.empty:
        raise ValueError(
            f"{settings.paths.source} has no rows with {c.timestamp!r} in {at(start)}..{at(end)} "
            "(end exclusive)"
        )
    return uniform_types(raw), (start, end), {"partitions": 1, "missing_days": []}


def _within(
    table: pd.DataFrame, timestamp: str, start: pd.Timestamp, end: pd.Timestamp
) -> pd.DataFrame:
    """The rows of `table` whose `timestamp` is in [start, end); a table without the column (a
    corrupt partition) is kept whole for the gate to name."""
    if timestamp not in table.columns:
        return table
    ts = _instants(table[timestamp])
    inside = ((ts >= start) & (ts < end)) | ts.isna()
    return table[inside.to_numpy()].reset_index(drop=True)


def _instants(values: pd.Series) -> pd.Series:
    """`values` as timestamps, a value that is none as missing. `conform` has made a present
    timestamp column datetime64 already; parsing it again costs ~13 ms a day file."""
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values
    return pd.to_datetime(values, errors="coerce")


def run(settings: Settings) -> None:
    """Write the snapshot (on the `compute` engine for the partitioned layout; a single table is
    read whole, in this process) and its manifest (source, resolved window, rows, labelled
    rows, hash)."""
    src, win, layout = settings.paths.source, settings.ingest, Layout(settings)
    single = source.is_single_table(src)
    target = settings.contract.target
    with contextlib.nullcontext(Local()) if single else compute.engine(settings) as engine:
        raw, (start, end), read = (
            read_single_table(settings) if single else read_partitioned(settings, engine)
        )
        rows = engine.write_parquet({layout.raw_table: raw})[layout.raw_table]
        written = engine.written(layout.raw_table, raw)
        (labelled,) = (
            engine.values(written[target].notnull().sum()) if target in written.columns else (0,)
        )
        sha = engine.content_hash(written)
    frames, missing = read["partitions"], read["missing_days"]
    manifest.write(
        settings,
        {
            "source": settings.portable(src),
            "start": at(start),
            "end": at(end),
            "label_cutoff": win.label_cutoff and at(pd.Timestamp(win.label_cutoff)),
            "requested": {
                "start": win.start and at(pd.Timestamp(win.start)),
                "end": win.end and at(pd.Timestamp(win.end)),
                "window": str(win.window),
            },
            "partitions": frames,
            "missing_days": missing,
            "rows": rows,
            "labelled_rows": int(labelled),
            "sha256": sha,
        },
    )
    print(
        f"ingest: {rows:,} transactions of {at(start)}..{at(end)} (end exclusive) from "
        f"{frames} partition(s) ({int(labelled):,} labelled, {engine.tag}) → {settings.paths.raw}"
    )
