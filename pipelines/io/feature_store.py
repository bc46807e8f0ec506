"""The online feature store: each entity's past events, for `core.features.features_for`.

The service reads the history of a batch's entities, scores, then appends the batch. The
interface (`OnlineStore`) is about events and entities only, so a Redis implementation can
replace `SQLiteStore` without touching the service.

`SQLiteStore` layout. `path` is a symlink to the current *generation* file, a WAL-mode SQLite
database next to it. `seed` builds a complete new generation, then atomically repoints the
symlink: a reader never sees a half-seeded store, and a connection opened before the swap keeps
reading its own (old) file until its next call notices the new target and reopens. Renaming a
new database over a live WAL database is not safe (the old `-wal`/`-shm` files would be paired
with the new file); SQLite resolves the symlink, so each generation has its own sidecar files.

One row per event, clustered by (entity, ts, id) so an entity's history is one range scan, and
a unique index on id makes `append` idempotent. An event's numbers are packed in one BLOB and
its strings in one TEXT, and `history` fetches a single aggregated row: building one Python
tuple per event costs ~1 µs per event, which would dominate a ~10k-event read. ts is stored as
int64 milliseconds (the feature definition's resolution; finer digits are dropped), the amount
as its float64 bits, strings as they are (they must not be null or contain the separator).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.features import FeatureSpec, to_ms

# Strings are concatenated with this separator; no real id, entity or category contains it.
_SEP = "\x1f"
# pandas 3 reads and builds timestamps at microsecond resolution: match the offline frames.
_TS_DTYPE = "datetime64[us]"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (
    entity TEXT NOT NULL,
    ts INTEGER NOT NULL,
    id TEXT NOT NULL,
    nums BLOB NOT NULL,
    strs TEXT NOT NULL,
    PRIMARY KEY (entity, ts, id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX events_id ON events (id);
"""
_INSERT = "INSERT INTO events VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
# Both aggregates visit the same rows in the same order, so the packed columns stay aligned.
_HISTORY = """
SELECT group_concat(strs, ''), CAST(group_concat(nums, '') AS BLOB)
FROM events WHERE entity IN (SELECT value FROM json_each(?))
"""

# A connection inherited across fork() must be neither used nor closed by the child (SQLite's
# rule); keeping a reference stops the garbage collector from closing it.
_INHERITED: list[sqlite3.Connection] = []


class OnlineStore(Protocol):
    """Per-entity event history for online feature computation."""

    def history(self, entities: Sequence[str]) -> pd.DataFrame:
        """All stored events of `entities`: `spec.history_columns`, offline dtypes, ts order."""
        ...

    def append(self, events: pd.DataFrame) -> None:
        """Add events; an id already stored is skipped, so re-appending is harmless."""
        ...

    def seed(self, events: pd.DataFrame) -> None:
        """Replace the whole content at once: readers see the old or the new, never a mix."""
        ...

    def count(self) -> int: ...

    def close(self) -> None: ...


class SQLiteStore:
    """`OnlineStore` in a local SQLite file, shared by threads and processes.

    One connection per thread (and per process: a forked child opens its own). Readers never
    wait for writers (WAL); writers queue on SQLite's lock up to `busy_timeout_ms`. Commits use
    `synchronous=NORMAL`: an application crash loses nothing, a power loss can lose the last
    commits. Run one `seed` at a time; appends committed before a seed's swap are replaced
    with everything else, appends after it land in the new content.
    """

    def __init__(self, path: str | os.PathLike[str], spec: FeatureSpec, busy_timeout_ms: int = 5000):
        c = spec.contract
        if c.entity is None:
            raise ValueError("the online store needs contract.entity (history features are off)")
        self.path = Path(path).absolute()
        self.busy_timeout_ms = busy_timeout_ms
        self._columns = spec.history_columns
        self._id, self._ts, self._entity, self._amount = c.id, c.timestamp, c.entity, c.amount
        self._strings = [n for n in self._columns if n not in (c.timestamp, c.amount)]
        self._nums = np.dtype([("ts", "<i8")] + ([("amount", "<f8")] if c.amount else []))
        self._layout = json.dumps({"strings": self._strings, "nums": self._nums.names})

        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        self._closed = False

        if self.path.exists() and not self.path.is_symlink():
            raise ValueError(f"{self.path} is not a feature store (expected a symlink to a generation)")
        if not self.path.is_symlink():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            generation = self._build([])
            try:
                os.symlink(generation, self.path)  # fails if another process created it first
            except FileExistsError:
                _remove_generation(self.path.parent / generation)

    # --- the interface -------------------------------------------------------------------------

    def history(self, entities: Sequence[str]) -> pd.DataFrame:
        con, _ = self._connection()
        strs, nums = con.execute(_HISTORY, (json.dumps([str(e) for e in entities]),)).fetchone()
        return self._decode(strs or "", nums or b"")

    def append(self, events: pd.DataFrame) -> None:
        rows = self._encode(events)
        if not rows:
            return
        while True:
            con, generation = self._connection()
            con.execute("BEGIN IMMEDIATE")
            try:
                # Holding the write lock: if a seed swapped generations meanwhile, write to the
                # new one (seed takes this lock on the old generation while it swaps).
                if os.readlink(self.path) != generation:
                    con.execute("ROLLBACK")
                    continue
                con.executemany(_INSERT, rows)
                con.execute("COMMIT")
                return
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise

    def seed(self, events: pd.DataFrame) -> None:
        rows = sorted(self._encode(events))  # clustered-key order: the bulk build is sequential
        generation = self._build(rows)
        con, old = self._connection()
        link = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex}.link")
        con.execute("BEGIN IMMEDIATE")
        try:
            os.symlink(generation, link)
            os.replace(link, self.path)
            _fsync_dir(self.path.parent)
        except BaseException:
            link.unlink(missing_ok=True)
            _remove_generation(self.path.parent / generation)
            raise
        finally:
            con.execute("ROLLBACK")
        self._drop_thread_connection()
        _remove_generation(self.path.parent / old)

    def count(self) -> int:
        con, _ = self._connection()
        return int(con.execute("SELECT count(*) FROM events").fetchone()[0])

    def close(self) -> None:
        """Close every thread's connection; call when no other thread is using the store."""
        with self._lock:
            self._closed = True
            for con in self._connections:
                con.close()
            self._connections.clear()

    # --- encoding ------------------------------------------------------------------------------

    def _encode(self, events: pd.DataFrame) -> list[tuple[str, int, str, bytes, str]]:
        missing = [c for c in self._columns if c not in events.columns]
        if missing:
            raise ValueError(f"events lack history columns {missing}")
        ms = to_ms(events[self._ts])
        if (ms == np.iinfo(np.int64).min).any():
            raise ValueError(f"events column {self._ts!r} has nulls")
        nums = np.empty(len(events), dtype=self._nums)
        nums["ts"] = ms
        if self._amount:
            amount = pd.to_numeric(events[self._amount], errors="raise")
            nums["amount"] = amount.to_numpy(np.float64, na_value=np.nan)
        packed, width = nums.tobytes(), nums.itemsize
        blobs = [packed[i * width:(i + 1) * width] for i in range(len(events))]

        # Plain Python over a batch's few values is cheaper than pandas' per-call overhead.
        strings = {c: _strings(events[c]) for c in self._strings}
        strs = [_SEP.join(v) + _SEP for v in zip(*strings.values(), strict=True)]
        return list(zip(strings[self._entity], ms.tolist(), strings[self._id], blobs, strs, strict=True))

    def _decode(self, strs: str, nums: bytes) -> pd.DataFrame:
        rec = np.frombuffer(nums, dtype=self._nums)
        order = np.argsort(rec["ts"], kind="stable")
        # Split in Arrow: no Python object per value. Every value ends with the separator.
        flat = pc.list_flatten(pc.split_pattern(pa.array([strs], pa.large_string()), _SEP))
        k = len(self._strings)
        cols: dict[str, object] = {
            name: pd.array(flat.take(pa.array(order * k + j)), dtype="str")
            for j, name in enumerate(self._strings)
        }
        cols[self._ts] = rec["ts"][order].astype("datetime64[ms]").astype(_TS_DTYPE)
        if self._amount:
            cols[self._amount] = rec["amount"][order]
        return pd.DataFrame({c: cols[c] for c in self._columns}, copy=False)

    # --- files and connections -----------------------------------------------------------------

    def _build(self, rows: list[tuple[str, int, str, bytes, str]]) -> str:
        """A complete generation file next to `path`; returns its name."""
        name = f"{self.path.name}.{uuid.uuid4().hex}.gen"
        file = self.path.parent / name
        con = sqlite3.connect(file, isolation_level=None)
        try:
            # No journal while building: nobody can see this file until the symlink points to it.
            con.execute("PRAGMA journal_mode=OFF")
            con.execute("PRAGMA synchronous=OFF")
            con.executescript(_SCHEMA)
            con.execute("BEGIN")
            con.execute("INSERT INTO meta VALUES ('layout', ?)", (self._layout,))
            con.executemany(_INSERT, rows)
            con.execute("COMMIT")
            con.execute("PRAGMA journal_mode=WAL")  # persistent in the file header
        except BaseException:
            con.close()
            _remove_generation(file)
            raise
        con.close()
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return name

    def _connection(self) -> tuple[sqlite3.Connection, str]:
        """This thread's connection and the generation it was opened for (reopened on a swap)."""
        if self._closed:
            raise RuntimeError(f"feature store {self.path} is closed")
        if os.getpid() != self._pid:
            with self._lock:
                _INHERITED.extend(self._connections)
                self._connections = []
                self._local = threading.local()
                self._pid = os.getpid()
        generation = os.readlink(self.path)
        local = self._local
        if getattr(local, "generation", None) != generation:
            self._drop_thread_connection()
            local.con = self._open()
            local.generation = generation
        return local.con, generation

    def _open(self) -> sqlite3.Connection:
        # mode=rw: never create an empty database if a generation vanished under us.
        con = sqlite3.connect(
            f"{self.path.as_uri()}?mode=rw", uri=True, isolation_level=None, check_same_thread=False
        )
        con.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        con.execute("PRAGMA synchronous=NORMAL")
        (layout,) = con.execute("SELECT value FROM meta WHERE key = 'layout'").fetchone()
        if layout != self._layout:
            con.close()
            raise ValueError(
                f"feature store {self.path} holds {layout}, this spec needs {self._layout}; seed it again"
            )
        with self._lock:
            self._connections.append(con)
        return con

    def _drop_thread_connection(self) -> None:
        con = getattr(self._local, "con", None)
        if con is None:
            return
        with self._lock:
            if con in self._connections:
                self._connections.remove(con)
        con.close()
        del self._local.con, self._local.generation


def _strings(column: pd.Series) -> list[str]:
    values = column.tolist()
    if not all(type(v) is str for v in values):
        if column.isna().any():
            raise ValueError(f"events column {column.name!r} has nulls; the online store needs values")
        values = [str(v) for v in values]  # e.g. integer ids: the store keeps strings
    if any(_SEP in v for v in values):
        raise ValueError(f"events column {column.name!r} contains the reserved character \\x1f")
    return values


def _remove_generation(file: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{file}{suffix}").unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
