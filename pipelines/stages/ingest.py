"""ingest: the source partitions of the params window → one raw snapshot DVC versions.

Transactions of every day in [start, end) are joined with the labels that had arrived by the
cutoff; a transaction whose label has not arrived keeps a missing target (it still counts as
history for its card). The reading is schema-agnostic on purpose: a corrupt partition must
reach the validate stage intact so the gate can name what is wrong with it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sys

import pandas as pd

from pipelines.config import Settings
from pipelines.io import storage


def window_days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days)]


def join_labels(tx: pd.DataFrame, labels: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    c = settings.contract
    if c.id not in tx.columns:
        raise ValueError(f"transactions lack the id column {c.id!r} named in contract.id")
    columns = [c.id, c.target, *([c.label_timestamp] if c.label_timestamp else [])]
    if labels.empty:
        labels = pd.DataFrame({c.id: pd.Series(dtype="string"), c.target: pd.Series(dtype="Int8"),
                               c.label_timestamp or "": pd.Series(dtype="datetime64[ms]")})
    labels = labels[columns].drop_duplicates(c.id, keep="last")
    out = tx.merge(labels, on=c.id, how="left", validate="many_to_one")
    out[c.target] = out[c.target].astype("Int8")
    return out


def _uniform_types(df: pd.DataFrame) -> pd.DataFrame:
    """Partitions that disagree on a column's type concatenate to a mixed object column, which
    Parquet cannot store. Keep it as text so validate can report the column's type as wrong."""
    mixed = [c for c in df.columns if df[c].dtype == object and df[c].dropna().map(type).nunique() > 1]
    return df.astype({c: "string" for c in mixed}) if mixed else df


def read_partitioned(settings: Settings) -> tuple[pd.DataFrame, dict]:
    """The simulator's layout: transactions/ and a late labels/ feed, both day partitions."""
    src, win = settings.paths.source, settings.ingest
    tx_parts = storage.list_partitions(storage.join(src, "transactions"))
    days = window_days(win.start, win.end)
    frames = [storage.read_parquet(tx_parts[d]) for d in days if d in tx_parts]
    if not frames:
        raise FileNotFoundError(f"no transaction partitions in {src}/transactions for {win.start}..{win.end} (end exclusive)")
    missing = [d.isoformat() for d in days if d not in tx_parts]
    if missing:
        print(f"ingest: {len(missing)} day(s) have no partition: {', '.join(missing[:5])}"
              f"{' ...' if len(missing) > 5 else ''}", file=sys.stderr)
    with_columns = [f for f in frames if len(f.columns)]
    tx = _uniform_types(pd.concat(with_columns, ignore_index=True)) if with_columns else frames[0]

    label_parts = storage.list_partitions(storage.join(src, "labels"))
    cutoff = win.label_cutoff
    labels = [storage.read_parquet(u) for d, u in label_parts.items() if cutoff is None or d < cutoff]
    raw = join_labels(tx, pd.concat(labels, ignore_index=True) if labels else pd.DataFrame(), settings)
    return raw, {"partitions": len(frames), "missing_days": missing}


def read_single_table(settings: Settings) -> tuple[pd.DataFrame, dict]:
    """A team's own table (one Parquet or CSV file) with the target already in it."""
    c, win = settings.contract, settings.ingest
    table = storage.read_table(settings.paths.source)
    if c.timestamp not in table.columns:
        raise ValueError(f"{settings.paths.source} has no column {c.timestamp!r} (contract.timestamp)")
    ts = pd.to_datetime(table[c.timestamp], errors="coerce")
    in_window = (ts >= pd.Timestamp(win.start)) & (ts < pd.Timestamp(win.end))
    raw = table[in_window.to_numpy()].reset_index(drop=True)
    raw[c.timestamp] = ts[in_window].to_numpy()
    if c.label_timestamp and c.label_timestamp in raw.columns:
        raw[c.label_timestamp] = pd.to_datetime(raw[c.label_timestamp], errors="coerce")
        if win.label_cutoff is not None:  # labels not yet known at the cutoff are unknown
            late = raw[c.label_timestamp] >= pd.Timestamp(win.label_cutoff)
            raw[c.target] = raw[c.target].astype("Float64").mask(late.to_numpy())
    if raw.empty:
        raise ValueError(f"{settings.paths.source} has no rows with {c.timestamp!r} in {win.start}..{win.end} (end exclusive)")
    return _uniform_types(raw), {"partitions": 1, "missing_days": []}


def content_hash(df: pd.DataFrame) -> str:
    """Identifies the data in lineage: same rows, same columns → same hash."""
    try:
        rows = pd.util.hash_pandas_object(df, index=False)
    except TypeError:  # unhashable values in a corrupt column: hash their text
        rows = pd.util.hash_pandas_object(df.astype(str), index=False)
    head = "\x1f".join(f"{c}:{t}" for c, t in df.dtypes.astype(str).items()).encode()
    return hashlib.sha256(head + rows.to_numpy().tobytes()).hexdigest()


def is_single_table(url: str) -> bool:
    return url.endswith((".parquet", ".csv"))


def run(settings: Settings) -> pd.DataFrame:
    src, win = settings.paths.source, settings.ingest
    raw, read = (read_single_table if is_single_table(src) else read_partitioned)(settings)
    frames, missing = read["partitions"], read["missing_days"]

    out = settings.paths.raw
    storage.write_parquet(raw, storage.join(out, "transactions.parquet"))
    target = settings.contract.target
    labelled = raw[target].notna() if target in raw.columns else pd.Series(False, index=raw.index)
    storage.write_json(storage.join(out, "manifest.json"), {
        "source": src, "start": win.start, "end": win.end, "label_cutoff": win.label_cutoff,
        "partitions": frames, "missing_days": missing, "rows": len(raw),
        "labelled_rows": int(labelled.sum()),
        "sha256": content_hash(raw),
    })
    print(f"ingest: {len(raw):,} transactions from {frames} partition(s) ({int(labelled.sum()):,} labelled) → {out}")
    return raw
