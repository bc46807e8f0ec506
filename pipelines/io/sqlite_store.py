"""`OnlineStore` in a local SQLite file: the embedded default, shared by the threads and
processes of one host (for replicas on several hosts, Redis: io/redis_store.py).

Tables: `cards` (entity → its encoded bounded history), `ids` (recently appended ids, for
idempotent appends), `meta` (layout, event count, seed time). An append is one short write
transaction that reads and rewrites only its batch's cards, so its cost does not depend on how
long a card's history is, and no maintenance pass ever locks the store.

`path` is a symlink to the current *generation* file, a WAL-mode database next to it. `seed`
builds a complete new generation, then atomically repoints the symlink; a connection opened
before the swap keeps reading its own file until its next call notices the new target. Renaming
a new database over a live WAL database is not safe (the old `-wal`/`-shm` files would be paired
with the new file); SQLite resolves the symlink, so each generation has its own sidecar files.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.core.features import FeatureSpec, append_to
from pipelines.core.history import History, from_bytes, to_bytes
from pipelines.io.feature_store import (
    ID_RETENTION_MINUTES,
    StoreUnavailable,
    checked_text,
    fresh_rows,
    group_by_entity,
    layout,
    layout_mismatch,
    seed_content,
)

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE cards (entity TEXT PRIMARY KEY, state BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE ids (id TEXT PRIMARY KEY, added INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX ids_added ON ids (added);
"""
# Expired ids deleted per append at most: bounded work on the hot path.
_EXPIRE_PER_APPEND = 1000

# A connection inherited across fork() must be neither used nor closed by the child (SQLite's
# rule); keeping a reference stops the garbage collector from closing it.
_INHERITED: list[sqlite3.Connection] = []


class SQLiteStore:
    """See the module docstring. One connection per thread (and per process: a forked child
    opens its own). Readers never wait for writers (WAL); writers queue on SQLite's lock for at
    most `busy_timeout_ms`, then StoreUnavailable. Commits use `synchronous=NORMAL`: an
    application crash loses nothing, a power loss can lose the last commits. Run one `seed` at a
    time; appends committed before a seed's swap are replaced with everything else, appends after
    it land in the new content.

    Raises ValueError when `path` exists and is not a store, or holds a store built for
    another spec (on first use).
    """

    def __init__(
        self, path: str | os.PathLike[str], spec: FeatureSpec, busy_timeout_ms: int = 5000
    ):
        self.path = Path(path).absolute()
        self.spec = spec
        self.busy_timeout_ms = busy_timeout_ms
        self._layout = layout(spec)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        self._closed = False
        if self.path.exists() and not self.path.is_symlink():
            raise ValueError(
                f"{self.path} is not a feature store (expected a symlink to a generation file)"
            )
        if not self.path.is_symlink():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            generation = self._build({}, [], seeded=False, events=0)
            try:
                os.symlink(generation, self.path)  # fails if another process created it first
            except FileExistsError:
                _remove_generation(self.path.parent / generation)

    # --- the interface -----------------------------------------------------------------------

    def histories(self, entities: Sequence[str]) -> dict[str, History]:
        try:
            con, _ = self._connection()
            read = _states_in(con, list(entities))
        except sqlite3.OperationalError as err:
            raise StoreUnavailable(f"feature store {self.path}: {err}") from err
        # Kept for this thread's next append, which re-reads the same cards inside its write
        # transaction: a card whose bytes have not changed since is not decoded again.
        self._local.read = read
        return {entity: history for entity, (_, history) in read.items()}

    def append(self, columns: Mapping[str, np.ndarray]) -> int:
        c = self.spec.contract
        ids = checked_text(columns, c.id)
        entities = checked_text(columns, self.spec.entity)
        if not ids:
            return 0
        try:
            while True:
                con, generation = self._connection()
                con.execute("BEGIN IMMEDIATE")
                try:
                    # Holding the write lock: if a seed swapped generations meanwhile, write to
                    # the new one (a seed takes this lock on the old generation while it swaps).
                    if os.readlink(self.path) != generation:
                        con.execute("ROLLBACK")
                        continue
                    added = self._append(con, columns, ids, entities)
                    con.execute("COMMIT")
                    return added
                except BaseException:
                    if con.in_transaction:
                        con.execute("ROLLBACK")
                    raise
        except sqlite3.OperationalError as err:
            raise StoreUnavailable(f"feature store {self.path}: {err}") from err

    def _append(
        self,
        con: sqlite3.Connection,
        columns: Mapping[str, np.ndarray],
        ids: list[str],
        entities: list[str],
    ) -> int:
        c = self.spec.contract
        known = {
            r[0]
            for r in con.execute(
                "SELECT id FROM ids WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(ids),),
            )
        }
        fresh = fresh_rows(ids, [i in known for i in ids])
        if not fresh.any():
            return 0
        batch = {k: np.asarray(v)[fresh] for k, v in columns.items()}
        kept = [e for e, f in zip(entities, fresh.tolist(), strict=True) if f]
        now = int(time.time())
        con.executemany(
            "INSERT INTO ids VALUES (?, ?)", ((i, now) for i in np.asarray(batch[c.id]).tolist())
        )
        groups = group_by_entity({k: batch[k] for k in self.spec.history_columns}, kept)
        read = _states_in(con, list(groups), getattr(self._local, "read", None))
        self._local.read = None
        stored = {entity: history for entity, (_, history) in read.items()}
        con.executemany(
            "INSERT INTO cards VALUES (?, ?) "
            "ON CONFLICT (entity) DO UPDATE SET state = excluded.state",
            [
                (e, to_bytes(append_to(stored.get(e, History()), rows, self.spec)))
                for e, rows in groups.items()
            ],
        )
        # Ids appended longer ago than the retention (wall clock, like Redis' expiry).
        con.execute(
            "DELETE FROM ids WHERE id IN (SELECT id FROM ids WHERE added < ? LIMIT ?)",
            (now - ID_RETENTION_MINUTES * 60, _EXPIRE_PER_APPEND),
        )
        added = int(fresh.sum())
        con.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'events'", (added,)
        )
        return added

    def seed(self, events: pd.DataFrame) -> None:
        histories, ids, n = seed_content(events, self.spec)
        generation = self._build(histories, ids, seeded=True, events=n)
        # A connection of its own, without the layout check: a seed replaces a store built for
        # any layout (that is how one built for other windows is repaired).
        con = self._connect()
        old = os.readlink(self.path)
        link = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex}.link")
        con.execute("BEGIN IMMEDIATE")  # no append is mid-transaction on the old generation
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
            con.close()
        self._drop_thread_connection()
        _remove_generation(self.path.parent / old)

    def seeded(self) -> bool:
        try:
            con, _ = self._connection()
            marked = con.execute("SELECT 1 FROM meta WHERE key = 'seeded_at'").fetchone()
        except sqlite3.OperationalError as err:
            raise StoreUnavailable(f"feature store {self.path}: {err}") from err
        return marked is not None or self.count() > 0

    def count(self) -> int:
        try:
            con, _ = self._connection()
            row = con.execute("SELECT value FROM meta WHERE key = 'events'").fetchone()
        except sqlite3.OperationalError as err:
            raise StoreUnavailable(f"feature store {self.path}: {err}") from err
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for con in self._connections:
                con.close()
            self._connections.clear()

    # --- files and connections ---------------------------------------------------------------

    def _build(
        self,
        histories: Mapping[str, History],
        ids: list[str],
        seeded: bool,
        events: int,
    ) -> str:
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
            con.execute("INSERT INTO meta VALUES ('events', ?)", (str(events),))
            if seeded:
                con.execute("INSERT INTO meta VALUES ('seeded_at', datetime('now'))")
            con.executemany(
                "INSERT INTO cards VALUES (?, ?)",
                ((e, to_bytes(h)) for e, h in sorted(histories.items())),
            )
            now = int(time.time())
            con.executemany("INSERT OR IGNORE INTO ids VALUES (?, ?)", ((i, now) for i in ids))
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
        while True:
            before = os.readlink(self.path)
            try:
                con = self._connect()
                break
            except sqlite3.OperationalError:
                # SQLite resolves the symlink, then opens the file: a seed that swapped and
                # deleted that generation in between leaves nothing to open. Retry on the new one.
                if os.readlink(self.path) == before:
                    raise
        row = con.execute("SELECT value FROM meta WHERE key = 'layout'").fetchone()
        found = row[0] if row else None
        if found != self._layout:
            con.close()
            raise layout_mismatch(str(self.path), found, self.spec)
        with self._lock:
            self._connections.append(con)
        return con

    def _connect(self) -> sqlite3.Connection:
        # mode=rw: never create an empty database if a generation vanished under us.
        con = sqlite3.connect(
            f"{self.path.as_uri()}?mode=rw",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            con.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("SELECT 1 FROM meta LIMIT 1")  # the file is actually read here
        except BaseException:
            con.close()
            raise
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


def remove(path: str | os.PathLike[str]) -> None:
    """Delete a SQLite store: its symlink and every generation file (with its WAL sidecars)."""
    path = Path(path)
    for generation in path.parent.glob(f"{path.name}.*.gen"):
        _remove_generation(generation)
    path.unlink(missing_ok=True)


def _states_in(
    con: sqlite3.Connection,
    entities: list[str],
    decoded: Mapping[str, tuple[bytes, History]] | None = None,
) -> dict[str, tuple[bytes, History]]:
    """The stored entities among `entities`, each with its encoded state and that decoded; a
    state equal to the one in `decoded` reuses its History."""
    rows = con.execute(
        "SELECT entity, state FROM cards WHERE entity IN (SELECT value FROM json_each(?))",
        (json.dumps(entities),),
    ).fetchall()
    known = decoded or {}
    out = {}
    for entity, state in rows:
        before = known.get(entity)
        out[entity] = (
            before if before is not None and before[0] == state else (state, from_bytes(state))
        )
    return out


def _remove_generation(file: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{file}{suffix}").unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
