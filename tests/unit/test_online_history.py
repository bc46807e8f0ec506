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
    assert history.pending <= 20 and history.dropped == 50 - history.pending
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
