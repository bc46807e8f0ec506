"""What only the SQLite store has to get right: files (generations swapped under live readers,
removed completely), threads and processes of one host sharing the file, refusing what is not
its own. The semantics every store shares are in tests/integration/test_online_stores.py."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from multiprocessing.synchronize import Barrier
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.config import Contract
from pipelines.core.features import FeatureSpec, event_columns
from pipelines.io import sqlite_store
from pipelines.io.feature_store import StoreUnavailable
from pipelines.io.sqlite_store import SQLiteStore

SPEC = FeatureSpec(Contract(), (1, 24, 168))
T0 = pd.Timestamp("2026-01-01")


def events(n: int, seed: int, cards: int = 8, prefix: str = "t") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.integers(0, 240 * 3600, n)) * 1000
    return pd.DataFrame(
        {
            "transaction_id": [f"{prefix}{seed}-{i:06d}" for i in range(n)],
            "ts": (T0 + pd.to_timedelta(offsets, unit="ms")).astype("datetime64[us]"),
            "card_id": rng.choice([f"c{i:04d}" for i in range(cards)], n),
            "amount": rng.gamma(2.0, 30.0, n),
            "merchant_category": rng.choice(["grocery", "fuel", "travel"], n),
            "merchant_country": rng.choice(["US", "GB", "FR", "DE"], n),
            "channel": rng.choice(["pos", "online"], n),
        }
    )


def columns_of(batch: pd.DataFrame) -> dict[str, np.ndarray]:
    cols = event_columns(batch, SPEC)
    cols["transaction_id"] = batch["transaction_id"].to_numpy(dtype=object)
    return cols


CARDS = [f"c{i:04d}" for i in range(8)]


@pytest.fixture
def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "store.sqlite", SPEC)
    yield s
    s.close()


def test_a_store_built_for_other_windows_is_refused(store: SQLiteStore) -> None:
    store.append(columns_of(events(10, seed=7)))
    other = FeatureSpec(Contract(), (1, 24))
    with pytest.raises(ValueError, match="seed it again"):
        SQLiteStore(store.path, other).count()


def test_seed_swaps_generations_under_live_readers(tmp_path: Path, store: SQLiteStore) -> None:
    old, new = events(3000, seed=8), events(2000, seed=9, cards=4)
    store.seed(old)
    other_worker = SQLiteStore(store.path, SPEC)  # holds its own open connection across seeds
    assert other_worker.count() == len(old)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                total = sum(h.events for h in store.histories(CARDS).values())
                assert total in (len(old), len(new))  # one content or the other, never a mix
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(3):
        store.seed(old)
        store.seed(new)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert other_worker.count() == len(new)
    other_worker.append(columns_of(events(5, seed=10, prefix="late")))
    assert store.count() == len(new) + 5
    other_worker.close()
    # Superseded generations are deleted: one database file (plus its WAL sidecars) remains.
    assert len([p for p in tmp_path.iterdir() if p.name.endswith(".gen")]) == 1


def test_threads_share_a_store(store: SQLiteStore) -> None:
    batches = [events(20, seed=100 + i, cards=4) for i in range(40)]
    errors: list[BaseException] = []

    def work(part: list[pd.DataFrame]) -> None:
        try:
            for b in part:
                store.histories(b["card_id"].unique().tolist())
                store.append(columns_of(b))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work, args=(batches[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert store.count() == 40 * 20


def test_an_append_decodes_only_the_cards_changed_since_its_threads_read(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The append re-reads its cards inside the write transaction; a card whose bytes are those
    this thread just read is not decoded again, one another writer changed meanwhile is."""
    first = events(64, seed=21)
    store.append(columns_of(first))
    other = SQLiteStore(store.path, SPEC)
    decoded: list[bytes] = []
    decode = sqlite_store.from_bytes
    monkeypatch.setattr(sqlite_store, "from_bytes", lambda b: decoded.append(b) or decode(b))
    try:
        assert len(store.histories(CARDS)) == len(CARDS)
        assert len(decoded) == len(CARDS)
        later = events(len(CARDS), seed=22, prefix="later-")
        later["ts"] = first["ts"].max() + pd.to_timedelta(range(1, len(CARDS) + 1), unit="min")
        later["card_id"] = CARDS
        theirs = later.iloc[:1].assign(transaction_id="theirs")
        other.append(columns_of(theirs))  # another writer: the first card changes
        decoded.clear()
        assert store.append(columns_of(later)) == len(CARDS)
        assert len(decoded) == 1  # the changed card, and only it
        decoded.clear()
        store.append(columns_of(events(3, seed=23, prefix="again-")))  # no read before it
        assert len(decoded) == len(set(events(3, seed=23)["card_id"]))
    finally:
        other.close()
    assert sum(h.events for h in store.histories(CARDS).values()) == 64 + 1 + len(CARDS) + 3


def _append_from_worker(store: SQLiteStore | str, worker: int, batches: int, go: Barrier) -> None:
    s = store if isinstance(store, SQLiteStore) else SQLiteStore(store, SPEC)
    go.wait(timeout=60)  # start together, so the appends really contend
    for i in range(batches):
        # Each batch repeats one id the other worker also writes: idempotency under contention.
        batch = events(8, seed=1000 * worker + i, prefix=f"w{worker}-")
        shared = events(1, seed=i, prefix="shared-")
        s.append(columns_of(pd.concat([batch, shared], ignore_index=True)))


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_processes_appending_concurrently_lose_nothing(
    store: SQLiteStore, start_method: str
) -> None:
    store.append(columns_of(events(10, seed=11)))  # a parent's connection, inherited under fork
    ctx = multiprocessing.get_context(start_method)
    target = store if start_method == "fork" else str(store.path)
    go = ctx.Barrier(3)
    procs = [ctx.Process(target=_append_from_worker, args=(target, w, 150, go)) for w in (1, 2)]
    for p in procs:
        p.start()
    go.wait(timeout=60)
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert store.count() == 10 + 2 * 150 * 8 + 150
    assert sum(h.events for h in store.histories(CARDS).values()) == store.count()


def test_a_writer_held_past_the_busy_timeout_is_unavailable_not_an_error(tmp_path: Path) -> None:
    """Another process holding the write lock longer than busy_timeout_ms: the append says the
    store is unavailable (the service then degrades), and nothing is half-written."""
    store = SQLiteStore(tmp_path / "store.sqlite", SPEC, busy_timeout_ms=50)
    store.append(columns_of(events(10, seed=1)))
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            store.append(columns_of(events(10, seed=2, prefix="blocked")))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.count() == 10
    assert store.append(columns_of(events(10, seed=2, prefix="blocked"))) == 10
    store.close()


def test_a_path_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain.sqlite"
    plain.write_bytes(b"")
    with pytest.raises(ValueError, match="not a feature store"):
        SQLiteStore(plain, SPEC)


def test_remove_deletes_the_store_and_every_generation(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.sqlite", SPEC)
    store.seed(events(200, seed=3))
    store.seed(events(100, seed=4))  # a second generation
    store.append(columns_of(events(10, seed=5, prefix="late")))  # WAL sidecars in use
    store.close()
    (tmp_path / "unrelated.sqlite").write_text("kept")
    sqlite_store.remove(tmp_path / "store.sqlite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unrelated.sqlite"]
    assert SQLiteStore(tmp_path / "store.sqlite", SPEC).count() == 0  # a fresh, empty store
