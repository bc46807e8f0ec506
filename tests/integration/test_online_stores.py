"""Every online store (SQLite, and Redis on a real server) keeps the same bounded histories: the
service's loop over a store gives the offline features; appends are atomic and idempotent; a
card's state stays bounded whatever its history; a seed replaces the content at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.config import Contract
from pipelines.core.features import (
    FeatureSpec,
    build_features,
    event_columns,
    histories_of,
    online_features,
)
from pipelines.core.history import LATE_SLACK, History, max_buckets
from pipelines.io.feature_store import OnlineStore, open_store
from pipelines.io.sqlite_store import SQLiteStore
from tests.integration.conftest import RedisServer

pytestmark = pytest.mark.integration

SPEC = FeatureSpec(Contract(), (1, 24, 168))
T0 = pd.Timestamp("2026-01-01")


def events(
    n: int, seed: int, cards: int = 8, prefix: str = "t", hours: int = 240, start: pd.Timestamp = T0
) -> pd.DataFrame:
    """Offline-shaped transactions in time order; whole seconds give same-minute neighbours."""
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.integers(0, hours * 3600, n)) * 1000 + rng.choice([0, 123], n)
    return pd.DataFrame(
        {
            "transaction_id": pd.Series([f"{prefix}{seed}-{i:06d}" for i in range(n)], dtype="str"),
            "ts": (start + pd.to_timedelta(offsets, unit="ms")).astype("datetime64[us]"),
            "card_id": pd.Series(rng.choice([f"c{i:04d}" for i in range(cards)], n), dtype="str"),
            "amount": rng.gamma(2.0, 30.0, n) + rng.random(n) * 1e-7,
            "merchant_category": pd.Series(
                rng.choice(["grocery", "fuel", "travel"], n), dtype="str"
            ),
            "merchant_country": pd.Series(rng.choice(["US", "GB", "FR", "DE"], n), dtype="str"),
            "channel": pd.Series(rng.choice(["pos", "online"], n), dtype="str"),
        }
    )


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite")
    return f"{redis_server.url}?prefix=test-{request.node.name}"


@pytest.fixture
def store(url: str) -> Iterator[OnlineStore]:
    s = open_store(url, SPEC, timeout_seconds=10)  # semantics here; the service tests time out
    yield s
    s.close()


def columns_of(batch: pd.DataFrame) -> dict[str, np.ndarray]:
    cols = event_columns(batch, SPEC)
    cols["transaction_id"] = batch["transaction_id"].to_numpy(dtype=object)
    return cols


def serve_loop(
    store: OnlineStore, df: pd.DataFrame, start: int = 0, size: int = 32
) -> tuple[pd.DataFrame, np.ndarray]:
    """The service's hot path (histories → online_features → append) over `df[start:]` in
    batches: the online features (indexed like `df`) and the late mask."""
    out, late = [], []
    for lo in range(start, len(df), size):
        batch = df.iloc[lo : lo + size]
        cols = columns_of(batch)
        features, is_late = online_features(
            cols, store.histories(batch["card_id"].unique().tolist()), SPEC
        )
        out.append(pd.DataFrame(features, index=batch.index))
        late.append(is_late)
        store.append(cols)
    return pd.concat(out), np.concatenate(late)


def same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b.set_axis(a.index), check_exact=False, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_services_loop_gives_the_offline_features(store: OnlineStore, seed: int) -> None:
    df = events(1500, seed, cards=10, hours=24 * 40)  # ~40 days: most minutes folded
    offline = build_features(df, SPEC)
    store.seed(df.iloc[:900])
    online, late = serve_loop(store, df, 900)
    assert not late.any()
    same(online, offline.iloc[900:])
    assert store.count() == len(df)


def test_a_retried_batch_changes_nothing(store: OnlineStore) -> None:
    df = events(300, seed=4)
    assert store.append(columns_of(df)) == 300
    before = store.histories([f"c{i:04d}" for i in range(8)])
    assert store.append(columns_of(df)) == 0
    assert store.append(columns_of(pd.concat([df.iloc[200:], df.iloc[200:]]))) == 0
    after = store.histories([f"c{i:04d}" for i in range(8)])
    assert_histories_equal(after, before)
    assert store.count() == 300


def test_a_card_with_100k_events_keeps_a_bounded_state_and_exact_features(
    store: OnlineStore,
) -> None:
    """100,000 events over ~2 years (one every ~10 min), then a burst: the state holds at most a
    bucket per minute of the longest window, and the next events get the offline features."""
    rng = np.random.default_rng(3)
    n = 100_000
    ts = T0 + pd.to_timedelta(np.cumsum(rng.integers(60, 1200, n)), unit="s")
    old = pd.DataFrame(
        {
            "transaction_id": [f"h{i}" for i in range(n)],
            "ts": ts.astype("datetime64[us]"),
            "card_id": "big",
            "amount": rng.gamma(2.0, 30.0, n),
            "merchant_category": rng.choice(["grocery", "fuel"], n),
            "merchant_country": rng.choice(["US", "GB"], n),
            "channel": "pos",
        }
    )
    burst = events(400, 5, cards=1, hours=2, start=ts.max().ceil("h")).assign(card_id="big")
    for lo in range(0, n, 20_000):
        store.append(columns_of(old.iloc[lo : lo + 20_000]))
    state = store.histories(["big"])["big"]
    assert len(state.minute) <= max_buckets(SPEC.windows) and state.events == n
    online, late = serve_loop(store, burst, 0, size=50)
    assert not late.any()
    offline = build_features(pd.concat([old, burst], ignore_index=True), SPEC).iloc[n:]
    same(online, offline)


def test_late_events_within_the_slack_are_exact_and_older_ones_are_flagged(
    store: OnlineStore,
) -> None:
    df = events(1200, 7, cards=3, hours=24 * 20)
    store.seed(df.iloc[:1000])
    newest = df.iloc[:1000]["ts"].max()
    slightly = (
        df.iloc[:1000]
        .sample(5, random_state=0)
        .assign(
            ts=newest - pd.Timedelta(minutes=LATE_SLACK - 5),
            transaction_id=lambda d: "s" + d["transaction_id"],
        )
    )
    weeks = df.iloc[:50].assign(transaction_id=lambda d: "w" + d["transaction_id"])  # weeks behind
    online, late = serve_loop(store, slightly, 0)
    assert not late.any()
    arrived = pd.concat([df.iloc[:1000], slightly], ignore_index=True)
    same(online, build_features(arrived, SPEC).iloc[1000:])
    online, late = serve_loop(store, weeks, 0)
    per_card = {
        c: h.minute[-1] for c, h in store.histories(weeks["card_id"].unique().tolist()).items()
    }
    assert late.all() and online[SPEC.history_names].isna().all().all()
    # They count in every later event's features, exactly once (a retry changes nothing).
    serve_loop(store, weeks.iloc[:10], 0)
    rest = df.iloc[1000:]
    online, late = serve_loop(store, rest, 0)
    assert not late.any() and per_card
    same(
        online,
        build_features(pd.concat([arrived, weeks, rest], ignore_index=True), SPEC).iloc[
            -len(rest) :
        ],
    )


def test_concurrent_appenders_lose_nothing_and_count_nothing_twice(store: OnlineStore) -> None:
    """Two writers (threads here; replicas in production) append to the same cards at once, each
    batch repeating one id the other also writes."""
    errors: list[BaseException] = []
    go = threading.Barrier(2)

    def writer(w: int) -> None:
        try:
            go.wait(timeout=30)
            for i in range(60):
                batch = pd.concat(
                    [
                        events(6, seed=1000 * w + i, cards=2, prefix=f"w{w}-"),
                        events(1, seed=i, cards=2, prefix="shared-"),
                    ],
                    ignore_index=True,
                )
                store.append(columns_of(batch))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(w,)) for w in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert store.count() == 2 * 60 * 6 + 60
    total = sum(h.events for h in store.histories(["c0000", "c0001"]).values())
    assert total == store.count()


def test_an_append_after_another_replica_wrote_the_same_cards_folds_on_theirs(
    store: OnlineStore, url: str
) -> None:
    """Replica A reads a batch's cards; replica B appends to them; A's append must not write
    back what it read (B's events would be lost): features afterwards are the offline ones."""
    df = events(400, seed=8, cards=4)
    other = open_store(url, SPEC, timeout_seconds=10)
    try:
        store.seed(df.iloc[:100])
        mine, theirs = df.iloc[300:400], df.iloc[100:300]
        store.histories(mine["card_id"].unique().tolist())
        assert other.append(columns_of(theirs)) == len(theirs)
        assert store.append(columns_of(mine)) == len(mine)
        cards = sorted(df["card_id"].unique())
        offline = histories_of(df, SPEC)
        assert_histories_equal(store.histories(cards), {c: offline[c] for c in cards})
        assert other.count() == len(df)
    finally:
        other.close()


def test_a_store_built_for_other_windows_is_refused_until_seeded_again(url: str) -> None:
    df = events(200, seed=9, cards=3)
    other = FeatureSpec(Contract(), (1, 24))
    old = open_store(url, other, timeout_seconds=10)
    old.seed(df)
    old.close()
    store = open_store(url, SPEC, timeout_seconds=10)
    try:
        with pytest.raises(ValueError, match="seed it again"):
            store.histories(["c0000"])
        store.seed(df)  # what materialize --force does
        cards = sorted(df["card_id"].unique())
        offline = histories_of(df, SPEC)
        assert_histories_equal(store.histories(cards), {c: offline[c] for c in cards})
    finally:
        store.close()


def test_a_seed_replaces_everything_at_once(store: OnlineStore) -> None:
    old, new = events(2000, seed=8, prefix="old"), events(1000, seed=9, prefix="new", cards=4)
    store.seed(old)
    assert store.count() == 2000 and store.seeded()
    store.seed(new)
    got = store.histories([f"c{i:04d}" for i in range(8)])
    assert set(got) == set(new["card_id"])
    assert_histories_equal(got, histories_of(new, SPEC))
    assert store.count() == 1000


def test_a_missing_entity_is_refused_by_name(store: OnlineStore) -> None:
    df = events(10, seed=6)
    df.loc[3, "card_id"] = None
    with pytest.raises(ValueError, match="card_id"):
        store.append(columns_of(df))


def assert_histories_equal(a: dict[str, History], b: dict[str, History]) -> None:
    assert set(a) == set(b)
    for key in a:
        x, y = a[key], b[key]
        for name in ("minute", "count", "last_ms"):
            np.testing.assert_array_equal(
                getattr(x, name), getattr(y, name), err_msg=f"{key}.{name}"
            )
        for name in ("amount", "square"):
            np.testing.assert_allclose(
                getattr(x, name), getattr(y, name), rtol=1e-12, err_msg=f"{key}.{name}"
            )
        assert (x.folded_n, x.folded_last_ms, x.seen) == (y.folded_n, y.folded_last_ms, y.seen), key
        assert x.folded_sum == pytest.approx(y.folded_sum, rel=1e-12)


def test_the_factory_picks_the_store_by_url(tmp_path: Path) -> None:
    assert isinstance(open_store(str(tmp_path / "a.sqlite"), SPEC), SQLiteStore)
    assert isinstance(open_store(f"sqlite://{tmp_path / 'b.sqlite'}", SPEC), SQLiteStore)
    with pytest.raises(ValueError, match="unknown scheme 'ftp'"):
        open_store("ftp://x/y", SPEC)
