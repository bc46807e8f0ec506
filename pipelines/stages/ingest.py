"""ingest: the source window of the params → one raw snapshot DVC versions.

The window is resolved here, once (`core.dataset.resolve_window`): pinned instants, or rolling (a
null end is the start of the window's unit after the newest data, so new data in the source moves
it: that is how a retraining trains on the newest data without editing params). The manifest
records the resolved window and the stages after this one read it from there. Transactions in
[start, end) are joined with the labels that had arrived by the cutoff
(`core.dataset.join_labels`). The reading is schema-agnostic on purpose: a corrupt partition must
reach the validate stage intact so the gate can name what is wrong with it.
The source's layouts are `io.source`'s.
"""

from __future__ import annotations

import sys
from typing import Any

import pandas as pd

from pipelines.config import Settings
from pipelines.core.dataset import (
    conform,
    content_hash,
    join_labels,
    resolve_window,
    uniform_types,
    window_days,
)
from pipelines.core.layout import Layout
from pipelines.core.span import at
from pipelines.io import manifest, source, storage

Window = tuple[pd.Timestamp, pd.Timestamp]


def read_partitioned(settings: Settings) -> tuple[pd.DataFrame, Window, dict[str, Any]]:
    """The partitioned layout: the transactions of the window (from the days it touches) and the
    labels feed up to the cutoff. The newest partition counts as a whole day of data.

    Raises FileNotFoundError naming the source when no day of the window has a partition.
    """
    src, win = settings.paths.source, settings.ingest
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
    c = settings.contract
    frames = [conform(storage.read_parquet(tx_parts[d]), c) for d in days if d in tx_parts]
    if not frames:
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
    with_columns = [f for f in frames if len(f.columns)]
    tx = uniform_types(pd.concat(with_columns, ignore_index=True)) if with_columns else frames[0]
    tx = _within(tx, c.timestamp, start, end)

    cutoff = win.label_cutoff
    labels = [
        conform(storage.read_parquet(u), c)
        for d, u in source.label_partitions(src).items()
        if cutoff is None or pd.Timestamp(d) < pd.Timestamp(cutoff)
    ]
    arrived = pd.concat(labels, ignore_index=True) if labels else pd.DataFrame()
    if cutoff is not None and c.label_timestamp in arrived.columns:
        # Label partitions are whole days of arrival: a cutoff within a day keeps its earlier ones.
        when = pd.to_datetime(arrived[c.label_timestamp], errors="coerce")
        arrived = arrived[((when < pd.Timestamp(cutoff)) | when.isna()).to_numpy()]
    raw = join_labels(tx, arrived, settings.contract)
    return raw, (start, end), {"partitions": len(frames), "missing_days": missing}


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
    ts = pd.to_datetime(table[timestamp], errors="coerce")
    inside = ((ts >= start) & (ts < end)) | ts.isna()
    return table[inside.to_numpy()].reset_index(drop=True)


def run(settings: Settings) -> pd.DataFrame:
    """Write the snapshot and its manifest (source, resolved window, rows, labelled rows, hash)."""
    src, win, layout = settings.paths.source, settings.ingest, Layout(settings)
    raw, (start, end), read = (
        read_single_table if source.is_single_table(src) else read_partitioned
    )(settings)
    frames, missing = read["partitions"], read["missing_days"]

    storage.write_parquet(raw, layout.raw_table)
    target = settings.contract.target
    labelled = raw[target].notna() if target in raw.columns else pd.Series(False, index=raw.index)
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
            "rows": len(raw),
            "labelled_rows": int(labelled.sum()),
            "sha256": content_hash(raw),
        },
    )
    print(
        f"ingest: {len(raw):,} transactions of {at(start)}..{at(end)} (end exclusive) from {frames} partition(s) "
        f"({int(labelled.sum()):,} labelled) → {settings.paths.raw}"
    )
    return raw
