"""The service's failure mode for the online store (serving/online_history.py), on a real SQLite
store made unavailable by another connection holding its write lock past the busy timeout."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.config import Contract
from pipelines.core.features import FeatureSpec, event_columns
from pipelines.io.feature_store import StoreUnavailable
from pipelines.io.sqlite_store import SQLiteStore
from pipelines.serving.online_history import OnlineHistory

SPEC = FeatureSpec(Contract(), (1, 24, 168))


def batch(n: int, prefix: str, start: str = "2026-01-01") -> dict[str, np.ndarray]:
    df = pd.DataFrame(
        {
            "transaction_id": [f"{prefix}{i}" for i in range(n)],
            "ts": pd.date_range(start, periods=n, freq="min"),
            "card_id": [f"c{i % 3}" for i in range(n)],
            "amount": np.arange(n, dtype=float),
            "merchant_category": "grocery",
            "merchant_country": "US",
            "channel": "pos",
        }
    )
    cols = event_columns(df, SPEC)
    cols["transaction_id"] = df["transaction_id"].to_numpy(dtype=object)
    return cols


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[bool, int, int]] = []

    def __call__(self, up: bool, pending: int, dropped: int) -> None:
        self.calls.append((up, pending, dropped))


def wait_until(check, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def lock(path: Path) -> sqlite3.Connection:
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    return blocker


def test_an_outage_degrades_then_replays_every_event_once(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite", SPEC, busy_timeout_ms=30)
    seen = Recorder()
    history = OnlineHistory(store, max_pending=1000, retry_seconds=0.05, on_change=seen)
    history.write(batch(6, "a"))
    assert history.read(["c0"]) is not None and store.count() == 6

    blocker = lock(store.path)
    history.write(batch(6, "b", "2026-01-02"))  # fails: the store is down from here
    assert not history.up and history.pending == 6
    assert history.read(["c0"]) is None  # no request waits on a down store
    history.write(batch(6, "c", "2026-01-03"))
    history.write(batch(6, "b", "2026-01-02"))  # a client's retry while down
    assert history.pending == 18 and seen.calls[-1] == (False, 18, 0)

    blocker.execute("ROLLBACK")
    blocker.close()
    wait_until(lambda: history.up)
    assert history.pending == 0 and seen.calls[-1] == (True, 0, 0)
    assert store.count() == 18  # the retried batch counted once
    assert sum(h.events for h in store.histories(["c0", "c1", "c2"]).values()) == 18
    history.close()


def test_a_long_outage_keeps_memory_bounded_and_counts_what_it_drops(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite", SPEC, busy_timeout_ms=30)
    seen = Recorder()
    history = OnlineHistory(store, max_pending=20, retry_seconds=0.05, on_change=seen)
    blocker = lock(store.path)
    for i in range(10):
        history.write(batch(5, f"b{i}-", f"2026-01-{i + 1:02d}"))
        # The bound holds at every moment, also while a replay attempt holds the buffer's
        # head (its append waits 30 ms on the lock, every 50 ms): writes land during one.
        assert history.pending <= 20 and history.dropped == 5 * (i + 1) - history.pending
        time.sleep(0.02)
    blocker.execute("ROLLBACK")
    blocker.close()
    wait_until(lambda: history.up)
    assert store.count() == 50 - history.dropped and seen.calls[-1][2] == history.dropped
    history.close()


def test_an_unseeded_or_foreign_store_is_unusable(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite", SPEC, busy_timeout_ms=30)
    history = OnlineHistory(store, max_pending=10, retry_seconds=0.05)
    assert "never seeded" in (history.unusable() or "")
    other = OnlineHistory(
        SQLiteStore(store.path, FeatureSpec(Contract(), (1, 24))), 10, 0.05
    )  # built for other windows
    assert "seed it again" in (other.unusable() or "")
    other.close()
    store.seed(pd.DataFrame(columns=SPEC.history_columns))
    assert history.unusable() is None
    history.close()
    assert history.unusable() is None  # remembered: a closed store is not asked again


def test_a_store_reseeded_for_another_layout_takes_the_replica_out_not_down(
    tmp_path: Path,
) -> None:
    """A newer deploy re-seeds the shared store for other windows while this replica serves:
    requests keep their answers (no history) instead of failing, readiness says why, and the
    replica comes back by itself once the store is seeded for it again."""
    path = tmp_path / "s.sqlite"
    store = SQLiteStore(path, SPEC, busy_timeout_ms=30)
    store.seed(pd.DataFrame(columns=SPEC.history_columns))
    history = OnlineHistory(store, max_pending=100, retry_seconds=0.05)
    history.write(batch(3, "a"))
    assert history.unusable() is None and history.read(["c0"]) is not None

    newer = FeatureSpec(Contract(), (1, 24))
    SQLiteStore(path, newer).seed(pd.DataFrame(columns=newer.history_columns))
    assert history.read(["c0"]) is None  # no exception reaches the request
    history.write(batch(3, "b", "2026-01-02"))  # kept for when the store fits again
    assert "seed it again" in (history.unusable() or "")

    SQLiteStore(path, SPEC).seed(pd.DataFrame(columns=SPEC.history_columns))
    wait_until(lambda: history.up)
    assert history.unusable() is None and history.pending == 0
    assert store.count() == 3  # the kept events, replayed into the store built for this spec
    history.close()


class Unreachable(SQLiteStore):
    """A store whose server cannot be reached, counting how often it is asked."""

    asked = 0

    def seeded(self) -> bool:
        Unreachable.asked += 1
        raise StoreUnavailable("connection refused")

    def histories(self, entities):  # noqa: ANN001, ANN201
        raise StoreUnavailable("connection refused")


def test_readiness_does_not_wait_on_a_store_that_does_not_answer(tmp_path: Path) -> None:
    history = OnlineHistory(Unreachable(tmp_path / "s.sqlite", SPEC), 10, retry_seconds=60)
    for _ in range(100):  # one readiness check per request
        assert history.unusable() is None  # scoring without history beats refusing
    assert Unreachable.asked == 1 and not history.up
    history.close()
