"""ingest: the source window of the params → one raw snapshot DVC versions.

The window is resolved here, once (`core.dataset.resolve_window`): pinned dates, or rolling (a
null end is the day after the newest data, so a new day in the source moves it: that is how a
retraining trains on the newest data without editing params). The manifest records the resolved
window and the stages after this one read it from there. Transactions of every day in
[start, end) are joined with the labels that had arrived by the cutoff (`core.dataset.join_labels`). The reading is schema-agnostic on purpose: a corrupt
partition must reach the validate stage intact so the gate can name what is wrong with it.
The source's layouts are `io.source`'s.
"""

from __future__ import annotations

import datetime as dt
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
from pipelines.io import manifest, source, storage

Window = tuple[dt.date, dt.date]


def read_partitioned(settings: Settings) -> tuple[pd.DataFrame, Window, dict[str, Any]]:
    """The partitioned layout: the window's transaction days and the labels feed up to the cutoff.

    Raises FileNotFoundError naming the source when no day of the window has a partition.
    """
    src, win = settings.paths.source, settings.ingest
    tx_parts = source.transaction_partitions(src)
    start, end = resolve_window(win, list(tx_parts))
    days = window_days(start, end)
    c = settings.contract
    frames = [conform(storage.read_parquet(tx_parts[d]), c) for d in days if d in tx_parts]
    if not frames:
        raise FileNotFoundError(
            f"no transaction partitions in {src}/{source.TRANSACTIONS} for "
            f"{start}..{end} (end exclusive)"
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

    cutoff = win.label_cutoff
    labels = [
        conform(storage.read_parquet(u), c)
        for d, u in source.label_partitions(src).items()
        if cutoff is None or d < cutoff
    ]
    raw = join_labels(
        tx, pd.concat(labels, ignore_index=True) if labels else pd.DataFrame(), settings.contract
    )
    return raw, (start, end), {"partitions": len(frames), "missing_days": missing}


def read_single_table(settings: Settings) -> tuple[pd.DataFrame, Window, dict[str, Any]]:
    """A team's own table (one Parquet or CSV file) with the target already in it.

    Raises ValueError naming the file when the timestamp column is missing or no row is in the window.
    """
    c, win = settings.contract, settings.ingest
    text = [name for name in (c.id, c.entity, *c.categorical) if name]
    table = storage.read_table(settings.paths.source, text, win.csv_decimal)
    if c.timestamp not in table.columns:
        raise ValueError(
            f"{settings.paths.source} has no column {c.timestamp!r} (contract.timestamp); "
            f"its columns are {list(table.columns)}"
        )
    table = conform(table, c)
    ts = table[c.timestamp]
    start, end = resolve_window(win, set(ts.dropna().dt.date))
    in_window = (ts >= pd.Timestamp(start)) & (ts < pd.Timestamp(end))
    raw = table[in_window.to_numpy()].reset_index(drop=True)
    raw[c.timestamp] = ts[in_window].to_numpy()
    # Labels not yet known at the cutoff are unknown.
    if c.label_timestamp and c.label_timestamp in raw.columns and win.label_cutoff is not None:
        late = raw[c.label_timestamp] >= pd.Timestamp(win.label_cutoff)
        raw[c.target] = raw[c.target].astype("Float64").mask(late.to_numpy())
    if raw.empty:
        raise ValueError(
            f"{settings.paths.source} has no rows with {c.timestamp!r} in {start}..{end} (end exclusive)"
        )
    return uniform_types(raw), (start, end), {"partitions": 1, "missing_days": []}


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
            "start": start,
            "end": end,
            "label_cutoff": win.label_cutoff,
            "requested": {"start": win.start, "end": win.end, "window_days": win.window_days},
            "partitions": frames,
            "missing_days": missing,
            "rows": len(raw),
            "labelled_rows": int(labelled.sum()),
            "sha256": content_hash(raw),
        },
    )
    print(
        f"ingest: {len(raw):,} transactions of {start}..{end} (end exclusive) from {frames} partition(s) "
        f"({int(labelled.sum()):,} labelled) → {settings.paths.raw}"
    )
    return raw
