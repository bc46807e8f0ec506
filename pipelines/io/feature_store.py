"""The online feature store: each entity's past events, for `core.features.online_features`.

The service reads the history of a batch's entities, scores, then appends the batch. The
interface (`OnlineStore`) is about events and entities only; `SQLiteStore` is the one
implementation, constructed by name where a store is needed.

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

Bounded reads: `events` keeps every event (the source of truth), and a `summary` row per entity
folds its events older than the longest feature window before its latest one (count, latest
time, running sums in time order, novelty values seen; see `core.features.Folded`). The serving
read (`history_arrays` with `since`) fetches the summary plus the events from its cutoff on,
so a card's read no longer grows with its age; an entity whose new events reach back past its
cutoff (late events) gets its full history instead. `seed` and `compact` (re)build summaries;
an appended event older than its entity's cutoff is added to the summary in the same
transaction, so a summary always covers exactly the events before its cutoff. Between
compactions the unfolded part grows with the appends.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.features import Coded, FeatureSpec, Folded, Past, to_ms

# Strings are concatenated with this separator; no real id, entity or category contains it.
_SEP = "\x1f"
# pandas 3 reads and builds timestamps at microsecond resolution: match the offline frames.
_TS_DTYPE = "datetime64[us]"

# Per entity, its events before `cutoff`, summarised (`core.features.Folded`): n, the latest ts,
# the running sums (float64 sum and sum of squares) and, per novelty column, the values seen.
_SUMMARY_TABLE = """
CREATE TABLE IF NOT EXISTS summary (
    entity TEXT PRIMARY KEY,
    cutoff INTEGER NOT NULL,
    n INTEGER NOT NULL,
    last INTEGER NOT NULL,
    sums BLOB NOT NULL,
    seen TEXT NOT NULL
) WITHOUT ROWID;
"""
_SCHEMA = (
    _SUMMARY_TABLE
    + """
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
)
_INSERT = "INSERT INTO events VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
# Both aggregates visit the same rows in the same order, so the packed columns stay aligned.
_HISTORY = """
SELECT group_concat(strs, ''), CAST(group_concat(nums, '') AS BLOB)
FROM events WHERE entity IN (SELECT value FROM json_each(?))
"""
# The same, from a per-entity time on: `[[entity, from_ms], ...]`, one range scan each.
_HISTORY_FROM = """
SELECT group_concat(e.strs, ''), CAST(group_concat(e.nums, '') AS BLOB)
FROM json_each(?) AS j JOIN events AS e ON e.entity = j.value ->> 0 AND e.ts >= j.value ->> 1
"""
_SUMMARIES = "SELECT entity, cutoff, n, last, sums, seen FROM summary WHERE entity IN (SELECT value FROM json_each(?))"
_MIN_MS = -(2**63)

# A connection inherited across fork() must be neither used nor closed by the child (SQLite's
# rule); keeping a reference stops the garbage collector from closing it.
_INHERITED: list[sqlite3.Connection] = []


class OnlineStore(Protocol):
    """Per-entity event history for online feature computation."""

    def history(self, entities: Sequence[str]) -> pd.DataFrame:
        """All stored events of `entities`: `spec.history_columns`, offline dtypes, ts order."""
        ...

    def history_arrays(
        self, entities: Sequence[str], since: Sequence[int] | None = None
    ) -> tuple[Past, Folded | None]:
        """`history` in `core.features.history_arrays`' layout, without a pandas frame. With
        `since` (per entity, the earliest event time, in ms, that features will be computed
        for): the events that are needed plus the summary of the rest, for
        `core.features.online_features`."""
        ...

    def append(self, events: pd.DataFrame) -> None:
        """Add events; an id already stored is skipped, so re-appending is harmless."""
        ...

    def append_columns(self, columns: Mapping[str, Sequence | np.ndarray]) -> None:
        """`append` from plain columns (`spec.history_columns`, the timestamp as int64 ms)."""
        ...

    def compact(self) -> None:
        """Fold old events into per-entity summaries (history_arrays then reads less)."""
        ...

    def seed(self, events: pd.DataFrame) -> None:
        """Replace the whole content at once: readers see the old or the new, never a mix."""
        ...

    def seeded(self) -> bool:
        """Whether the store was seeded (the service is not ready on a store that never was)."""
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

    def __init__(
        self, path: str | os.PathLike[str], spec: FeatureSpec, busy_timeout_ms: int = 5000
    ):
        c = spec.contract
        if c.entity is None:
            raise ValueError("the online store needs contract.entity (history features are off)")
        self.path = Path(path).absolute()
        self.busy_timeout_ms = busy_timeout_ms
        self._columns = spec.history_columns
        self._id, self._ts, self._entity, self._amount = c.id, c.timestamp, c.entity, c.amount
        self._strings = [n for n in self._columns if n not in (c.timestamp, c.amount)]
        self._novelty = list(c.novelty)
        # Features look back at most this far: events older than that before an entity's
        # latest one only count through its summary.
        self._horizon = max(spec.windows_hours, default=0) * 3_600_000
        self._nums = np.dtype([("ts", "<i8")] + ([("amount", "<f8")] if c.amount else []))
        self._layout = json.dumps({"strings": self._strings, "nums": self._nums.names})

        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        self._closed = False

        if self.path.exists() and not self.path.is_symlink():
            raise ValueError(
                f"{self.path} is not a feature store (expected a symlink to a generation)"
            )
        if not self.path.is_symlink():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            generation = self._build([])
            try:
                os.symlink(generation, self.path)  # fails if another process created it first
            except FileExistsError:
                _remove_generation(self.path.parent / generation)

    # --- the interface -------------------------------------------------------------------------

    def history(self, entities: Sequence[str]) -> pd.DataFrame:
        return self._decode(*self._fetch(entities))

    def history_arrays(
        self, entities: Sequence[str], since: Sequence[int] | None = None
    ) -> tuple[Past, Folded | None]:
        if since is None:
            return self._arrays(*self._fetch(entities)), None
        con, _ = self._connection()
        # Two snapshots, summaries first, agree: events are only ever added, and a summary
        # covers exactly its entity's events before its cutoff, so the events from that cutoff
        # on in any later snapshot complete it (late events are as if they came later).
        summaries = {r[0]: r for r in con.execute(_SUMMARIES, (json.dumps(list(entities)),))}
        # A summary serves an entity only if every window of its new events starts after the
        # cutoff; otherwise (late events) its full history is read.
        usable = [
            summaries[e]
            for e, t in zip(entities, since, strict=True)
            if e in summaries and t - self._horizon >= summaries[e][1]
        ]
        cut = {r[0]: r[1] for r in usable}
        bounds = json.dumps([[e, cut.get(e, _MIN_MS)] for e in entities])
        strs, nums = con.execute(_HISTORY_FROM, (bounds,)).fetchone()
        return self._arrays(strs or "", nums or b""), self._folded(usable)

    def _folded(self, rows: list[tuple]) -> Folded | None:
        if not rows:
            return None
        sums = np.frombuffer(b"".join(r[4] for r in rows), dtype=np.float64).reshape(-1, 2)
        seen = [json.loads(r[5]) for r in rows]
        return Folded(
            entities=[r[0] for r in rows],
            n=np.array([r[2] for r in rows], dtype=np.float64),
            sum=sums[:, 0].copy(),
            sq=sums[:, 1].copy(),
            last=np.array([r[3] for r in rows], dtype=np.int64),
            seen={c: [frozenset(s[j]) for s in seen] for j, c in enumerate(self._novelty)},
        )

    def _arrays(self, strs: str, nums: bytes) -> Past:
        rec, order, split = self._unpack(strs, nums)
        k = len(self._strings)
        out: dict[str, np.ndarray | Coded] = {"ts": rec["ts"][order]}
        # Strings stay in Arrow and come out as codes: no Python object per stored value.
        for name, key in [(self._entity, "entity"), *((c, f"novelty:{c}") for c in self._novelty)]:
            coded = pc.dictionary_encode(
                split.take(pa.array(order * k + self._strings.index(name)))
            )
            out[key] = Coded(
                coded.indices.to_numpy(zero_copy_only=False).astype(np.float64),
                coded.dictionary.to_pylist(),
            )
        if self._amount:
            out["amount"] = rec["amount"][order]
        return out

    def append(self, events: pd.DataFrame) -> None:
        self._insert(self._encode(events))

    def append_columns(self, columns: Mapping[str, Sequence | np.ndarray]) -> None:
        self._insert(self._encode_columns(columns))

    def _insert(self, rows: list[tuple[str, int, str, bytes, str]]) -> None:
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
                self._insert_rows(con, rows)
                con.execute("COMMIT")
                return
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise

    def _insert_rows(
        self, con: sqlite3.Connection, rows: list[tuple[str, int, str, bytes, str]]
    ) -> None:
        """Insert (in a write transaction); an event older than its entity's cutoff is added to
        the summary too, so the summary keeps covering exactly the events before the cutoff."""
        cutoffs = dict(
            con.execute(
                "SELECT entity, cutoff FROM summary WHERE entity IN (SELECT value FROM json_each(?))",
                (json.dumps(list({r[0]: None for r in rows})),),
            ).fetchall()
        )
        if not cutoffs:
            con.executemany(_INSERT, rows)
            return
        late = [r for r in rows if r[1] < cutoffs.get(r[0], _MIN_MS)]
        con.executemany(_INSERT, [r for r in rows if r[1] >= cutoffs.get(r[0], _MIN_MS)])
        for row in late:
            if con.execute(_INSERT, row).rowcount == 1:  # a stored id is not counted twice
                self._fold_late(con, row)

    def _fold_late(self, con: sqlite3.Connection, row: tuple[str, int, str, bytes, str]) -> None:
        entity, ts, _, blob, strs = row
        n, last, sums, seen = con.execute(
            "SELECT n, last, sums, seen FROM summary WHERE entity = ?", (entity,)
        ).fetchone()
        s, q = np.frombuffer(sums, dtype=np.float64)
        amount = float(np.frombuffer(blob, dtype=self._nums)["amount"][0]) if self._amount else 0.0
        values = strs.split(_SEP)
        seen_sets = json.loads(seen)
        for j, col in enumerate(self._novelty):
            value = values[self._strings.index(col)]
            if value not in seen_sets[j]:
                seen_sets[j].append(value)
        con.execute(
            "UPDATE summary SET n = ?, last = ?, sums = ?, seen = ? WHERE entity = ?",
            (
                n + 1,
                max(last, ts),
                np.array([s + amount, q + amount * amount]).tobytes(),
                json.dumps(seen_sets),
                entity,
            ),
        )

    def compact(self) -> None:
        """Recompute every entity's summary: its events older than the longest feature window
        before its latest event. Reads everything under the write lock: run it off-peak (seed
        runs it on the new content)."""
        con, _ = self._connection()
        con.execute("BEGIN IMMEDIATE")
        try:
            rows = con.execute(
                "SELECT entity, ts, id, nums, strs FROM events ORDER BY entity, ts, id"
            ).fetchall()
            con.execute("DELETE FROM summary")
            con.executemany("INSERT INTO summary VALUES (?, ?, ?, ?, ?, ?)", self._summaries(rows))
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    def _summaries(self, rows: list[tuple[str, int, str, bytes, str]]) -> list[tuple]:
        """Summary rows of events sorted by (entity, ts, id): per entity, the events before
        `latest - horizon`, with running sums added in time order as offline."""
        if not rows:
            return []
        rec = np.frombuffer(b"".join(r[3] for r in rows), dtype=self._nums)
        entity = [r[0] for r in rows]
        starts = [0, *[i for i in range(1, len(rows)) if entity[i] != entity[i - 1]], len(rows)]
        novelty = [self._strings.index(c) for c in self._novelty]
        out = []
        for lo, hi in zip(starts[:-1], starts[1:], strict=False):
            ts = rec["ts"][lo:hi]
            k = int(np.searchsorted(ts, ts[-1] - self._horizon, side="left"))
            if k == 0:
                continue
            amount = rec["amount"][lo : lo + k] if self._amount else np.zeros(k)
            sums = np.array([np.cumsum(amount)[-1], np.cumsum(amount * amount)[-1]])
            split = [rows[i][4].split(_SEP) for i in range(lo, lo + k)]
            seen = [sorted({v[j] for v in split}) for j in novelty]
            out.append(
                (
                    entity[lo],
                    int(ts[-1] - self._horizon),
                    k,
                    int(ts[k - 1]),
                    sums.tobytes(),
                    json.dumps(seen),
                )
            )
        return out

    def seed(self, events: pd.DataFrame) -> None:
        rows = sorted(self._encode(events))  # clustered-key order: the bulk build is sequential
        generation = self._build(rows, seeded=True)
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

    def seeded(self) -> bool:
        """Whether a seed filled this store (or it holds events): an empty, never seeded store
        would make every entity look new."""
        con, _ = self._connection()
        marked = con.execute("SELECT 1 FROM meta WHERE key = 'seeded_at'").fetchone()
        return (
            marked is not None or con.execute("SELECT 1 FROM events LIMIT 1").fetchone() is not None
        )

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
        columns: dict[str, Sequence | np.ndarray] = {c: _strings(events[c]) for c in self._strings}
        columns[self._ts] = to_ms(events[self._ts])
        if self._amount:
            amount = pd.to_numeric(events[self._amount], errors="raise")
            columns[self._amount] = amount.to_numpy(np.float64, na_value=np.nan)
        return self._encode_columns(columns)

    def _encode_columns(
        self, columns: Mapping[str, Sequence | np.ndarray]
    ) -> list[tuple[str, int, str, bytes, str]]:
        ms = np.asarray(columns[self._ts], dtype=np.int64)
        if (ms == np.iinfo(np.int64).min).any():
            raise ValueError(f"events column {self._ts!r} has nulls")
        nums = np.empty(len(ms), dtype=self._nums)
        nums["ts"] = ms
        if self._amount:
            nums["amount"] = columns[self._amount]
        packed, width = nums.tobytes(), nums.itemsize
        blobs = [packed[i * width : (i + 1) * width] for i in range(len(ms))]
        # Plain Python over a batch's few values is cheaper than pandas' per-call overhead.
        strings = {c: _checked(c, columns[c]) for c in self._strings}
        strs = [_SEP.join(v) + _SEP for v in zip(*strings.values(), strict=True)]
        return list(
            zip(strings[self._entity], ms.tolist(), strings[self._id], blobs, strs, strict=True)
        )

    def _fetch(self, entities: Sequence[str]) -> tuple[str, bytes]:
        con, _ = self._connection()
        strs, nums = con.execute(_HISTORY, (json.dumps([str(e) for e in entities]),)).fetchone()
        return strs or "", nums or b""

    def _unpack(self, strs: str, nums: bytes) -> tuple[np.ndarray, np.ndarray, pa.Array]:
        """The packed numbers, their time order, and every string value (split in Arrow: no
        Python object per value; every value ends with the separator)."""
        rec = np.frombuffer(nums, dtype=self._nums)
        order = np.argsort(rec["ts"], kind="stable")
        split = pc.list_flatten(pc.split_pattern(pa.array([strs], pa.large_string()), _SEP))
        return rec, order, split

    def _decode(self, strs: str, nums: bytes) -> pd.DataFrame:
        rec, order, flat = self._unpack(strs, nums)
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

    def _build(self, rows: list[tuple[str, int, str, bytes, str]], seeded: bool = False) -> str:
        """A complete generation file next to `path`; returns its name. `seeded`: it holds a
        seed's content (a store created empty is not seeded: the service is not ready on it)."""
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
            if seeded:
                con.execute("INSERT INTO meta VALUES ('seeded_at', datetime('now'))")
            con.executemany(_INSERT, rows)
            # Summarise what was stored: an id given twice is stored (and counted) once.
            con.executemany(
                "INSERT INTO summary VALUES (?, ?, ?, ?, ?, ?)",
                self._summaries(_first_per_id(rows)),
            )
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
        (layout,) = con.execute("SELECT value FROM meta WHERE key = 'layout'").fetchone()
        con.execute(_SUMMARY_TABLE)  # generations built before summaries existed: none yet
        if layout != self._layout:
            con.close()
            raise ValueError(
                f"feature store {self.path} holds {layout}, this spec needs {self._layout}; seed it again"
            )
        with self._lock:
            self._connections.append(con)
        return con

    def _connect(self) -> sqlite3.Connection:
        # mode=rw: never create an empty database if a generation vanished under us.
        con = sqlite3.connect(
            f"{self.path.as_uri()}?mode=rw", uri=True, isolation_level=None, check_same_thread=False
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


def _strings(column: pd.Series) -> list[str]:
    values = column.tolist()
    if not all(type(v) is str for v in values):
        if column.isna().any():
            raise ValueError(
                f"events column {column.name!r} has nulls; the online store needs values"
            )
        values = [str(v) for v in values]  # e.g. integer ids: the store keeps strings
    return values


def _checked(name: str, values: Sequence | np.ndarray) -> list[str]:
    values = list(values)
    if not all(type(v) is str for v in values):
        raise ValueError(
            f"events column {name!r} must hold strings (no nulls) for the online store"
        )
    if any(_SEP in v for v in values):
        raise ValueError(f"events column {name!r} contains the reserved character \\x1f")
    return values


def _first_per_id(
    rows: list[tuple[str, int, str, bytes, str]],
) -> list[tuple[str, int, str, bytes, str]]:
    """The rows `INSERT ... ON CONFLICT DO NOTHING` keeps, in order: the first of each id."""
    seen: set[str] = set()
    kept = []
    for row in rows:
        if row[2] not in seen:
            seen.add(row[2])
            kept.append(row)
    return kept


def remove(path: str | os.PathLike[str]) -> None:
    """Delete a store: its symlink and every generation file (with its WAL sidecars)."""
    path = Path(path)
    for generation in path.parent.glob(f"{path.name}.*.gen"):
        _remove_generation(generation)
    path.unlink(missing_ok=True)


def _remove_generation(file: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{file}{suffix}").unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
