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
    if labels.empty:
        labels = pd.DataFrame({c.id: pd.Series(dtype="string"), c.target: pd.Series(dtype="Int8"),
                               c.label_timestamp: pd.Series(dtype="datetime64[ms]")})
    labels = labels[[c.id, c.target, c.label_timestamp]].drop_duplicates(c.id, keep="last")
    out = tx.merge(labels, on=c.id, how="left", validate="many_to_one")
    out[c.target] = out[c.target].astype("Int8")
    return out


def _uniform_types(df: pd.DataFrame) -> pd.DataFrame:
    """Partitions that disagree on a column's type concatenate to a mixed object column, which
    Parquet cannot store. Keep it as text so validate can report the column's type as wrong."""
    mixed = [c for c in df.columns if df[c].dtype == object and df[c].dropna().map(type).nunique() > 1]
    return df.astype({c: "string" for c in mixed}) if mixed else df


def run(settings: Settings) -> pd.DataFrame:
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
    tx = _uniform_types(pd.concat([f for f in frames if len(f.columns)], ignore_index=True)
                        if any(len(f.columns) for f in frames) else frames[0])

    label_parts = storage.list_partitions(storage.join(src, "labels"))
    cutoff = win.label_cutoff
    labels = [storage.read_parquet(u) for d, u in label_parts.items() if cutoff is None or d < cutoff]
    raw = join_labels(tx, pd.concat(labels, ignore_index=True) if labels else pd.DataFrame(), settings)

    out = settings.paths.raw
    storage.write_parquet(raw, storage.join(out, "transactions.parquet"))
    labelled = raw[settings.contract.target].notna()
    storage.write_json(storage.join(out, "manifest.json"), {
        "source": src, "start": win.start, "end": win.end, "label_cutoff": cutoff,
        "partitions": len(frames), "missing_days": missing, "rows": len(raw),
        "labelled_rows": int(labelled.sum()),
        "sha256": hashlib.sha256(pd.util.hash_pandas_object(raw.astype(str), index=False).to_numpy().tobytes()).hexdigest(),
    })
    print(f"ingest: {len(raw):,} transactions from {len(frames)} partitions ({int(labelled.sum()):,} labelled) → {out}")
    return raw
