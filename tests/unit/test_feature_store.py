"""The SQLite online store: lossless, the same features as offline, safe under concurrency."""

from __future__ import annotations

import multiprocessing
import threading
from multiprocessing.synchronize import Barrier
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.config import Contract
from pipelines.core.features import (
    FeatureSpec,
    build_features,
    event_columns,
    features_for,
    online_features,
    to_ms,
)
from pipelines.io import feature_store
from pipelines.io.feature_store import SQLiteStore

SPEC = FeatureSpec(Contract(), (1, 24, 168))
COLUMNS = SPEC.history_columns
T0 = pd.Timestamp("2026-01-01")


def events(n: int, seed: int, cards: int = 8, prefix: str = "t", hours: int = 240) -> pd.DataFrame:
    """Offline-shaped transactions (pandas `str` columns, microsecond dtype, ms values)."""
    rng = np.random.default_rng(seed)
    # Whole seconds give same-millisecond ties, which must not see each other.
    offsets = np.sort(rng.integers(0, hours * 3600, n)) * 1000 + rng.choice([0, 123], n)
    return pd.DataFrame(
        {
            "transaction_id": pd.Series([f"{prefix}{seed}-{i:06d}" for i in range(n)], dtype="str"),
            "ts": (T0 + pd.to_timedelta(offsets, unit="ms")).astype("datetime64[us]"),
            "card_id": pd.Series(rng.choice([f"c{i:04d}" for i in range(cards)], n), dtype="str"),
            "amount": rng.gamma(2.0, 30.0, n) + rng.random(n) * 1e-7,  # full float64 precision
            "merchant_category": pd.Series(
                rng.choice(["grocery", "fuel", "travel"], n), dtype="str"
            ),
            "merchant_country": pd.Series(rng.choice(["US", "GB", "FR", "DE"], n), dtype="str"),
            "channel": pd.Series(rng.choice(["pos", "online"], n), dtype="str"),
        }
    )


def by_id(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("transaction_id", ignore_index=True)


@pytest.fixture
def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "store.sqlite", SPEC)
    yield s
    s.close()


def test_round_trip_preserves_values_and_dtypes(store: SQLiteStore) -> None:
    df = events(500, seed=1)
    store.append(df)
    got = store.history(df["card_id"].unique())
    assert list(got.columns) == COLUMNS
    assert got.dtypes.equals(df[COLUMNS].dtypes)
    assert got["ts"].is_monotonic_increasing
    pd.testing.assert_frame_equal(by_id(got), by_id(df[COLUMNS]), check_exact=True)


def test_history_holds_exactly_the_requested_entities(store: SQLiteStore) -> None:
    df = events(300, seed=2)
    store.seed(df)
    wanted = ["c0001", "c0005"]
    expected = df.loc[df["card_id"].isin(wanted), COLUMNS]
    pd.testing.assert_frame_equal(by_id(store.history(wanted)), by_id(expected), check_exact=True)


def test_unknown_entity_gives_an_empty_frame_with_the_columns(store: SQLiteStore) -> None:
    df = events(50, seed=3)
    store.append(df)
    for entities in (["nobody"], []):
        got = store.history(entities)
        assert got.empty
        assert list(got.columns) == COLUMNS
        assert got.dtypes.equals(df[COLUMNS].dtypes)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_online_features_equal_offline_features(store: SQLiteStore, seed: int) -> None:
    """The service's loop (history → features_for → append) reproduces the offline features."""
    df = events(900, seed, cards=12, hours=96)
    offline = build_features(df, SPEC)
    cut = 400
    store.seed(df.iloc[:cut])
    for start in range(cut, len(df), 32):
        batch = df.iloc[start : start + 32]
        online = features_for(batch, store.history(batch["card_id"].unique()), SPEC)
        pd.testing.assert_frame_equal(
            online, offline.loc[batch.index], check_exact=False, rtol=1e-9, atol=1e-9
        )
        store.append(batch)
    assert store.count() == len(df)


def serve_loop(store: SQLiteStore, df: pd.DataFrame, start: int, size: int = 32) -> pd.DataFrame:
    """The service's hot path (summarised history → online_features → append_columns) over
    `df[start:]` in batches; returns the online features, indexed like `df`."""
    out = []
    for lo in range(start, len(df), size):
        batch = df.iloc[lo : lo + size]
        columns = event_columns(batch, SPEC)
        columns["transaction_id"] = batch["transaction_id"].to_numpy(dtype=object)
        first = batch.groupby("card_id")["ts"].min()
        past, folded = store.history_arrays(first.index.tolist(), to_ms(first).tolist())
        out.append(pd.DataFrame(online_features(columns, past, SPEC, folded), index=batch.index))
        store.append_columns(columns)
    return pd.concat(out)


@pytest.mark.parametrize("seed", [0, 1])
def test_summarised_history_gives_the_offline_features(store: SQLiteStore, seed: int) -> None:
    """Long histories (~60 days per card, windows up to 7 days): the store folds most events
    into summaries, and the features must not notice."""
    df = events(3000, seed, cards=6, hours=24 * 60)
    offline = build_features(df, SPEC)
    cut = 2000
    store.seed(df.iloc[:cut])
    assert folded_events(store) > cut // 2  # the bound is in use
    online = serve_loop(store, df, cut)
    pd.testing.assert_frame_equal(
        online, offline.iloc[cut:], check_exact=False, rtol=1e-9, atol=1e-9
    )


def test_late_events_fall_back_to_the_full_history_and_join_the_summary(store: SQLiteStore) -> None:
    """Events older than a cutoff: their own features need folded events (full read), and
    they must count in later events' summaries exactly once (re-appending is harmless)."""
    df = events(2000, 7, cards=4, hours=24 * 40)
    late = df.iloc[100:400:3]  # weeks before the cutoffs
    rest = df.drop(late.index)
    store.seed(rest.iloc[:1200])
    before = folded_events(store)
    arrived = pd.concat([rest.iloc[:1200], late], ignore_index=True)
    online_late = serve_loop(store, late, 0, size=25)
    serve_loop(store, late.iloc[:20], 0)  # sent again: stored and folded once
    assert folded_events(store) == before + len(late)
    # The late events' own features, computed when they arrived, saw only earlier events.
    offline_late = build_features(arrived, SPEC).iloc[1200:]
    pd.testing.assert_frame_equal(
        online_late,
        offline_late.set_axis(online_late.index),
        check_exact=False,
        rtol=1e-9,
        atol=1e-9,
    )
    online = serve_loop(store, rest, 1200, size=25)
    offline = build_features(pd.concat([arrived, rest.iloc[1200:]], ignore_index=True), SPEC).iloc[
        len(arrived) :
    ]
    pd.testing.assert_frame_equal(
        online, offline.set_axis(online.index), check_exact=False, rtol=1e-9, atol=1e-9
    )


def test_a_seed_with_repeated_ids_summarises_each_event_once(store: SQLiteStore) -> None:
    df = events(1200, 10, cards=3, hours=24 * 40)
    store.seed(pd.concat([df.iloc[:1000], df.iloc[:300]]))
    new = events(100, 11, cards=3, hours=24).assign(ts=lambda d: d["ts"] + pd.Timedelta(days=40))
    online = serve_loop(store, new, 0)
    offline = build_features(pd.concat([df.iloc[:1000], new], ignore_index=True), SPEC).iloc[1000:]
    pd.testing.assert_frame_equal(
        online, offline.set_axis(online.index), check_exact=False, rtol=1e-9, atol=1e-9
    )


def test_compact_recomputes_the_summaries(store: SQLiteStore) -> None:
    df = events(1500, 8, cards=5, hours=24 * 50)
    store.append(df)  # appends alone never fold
    assert folded_events(store) == 0
    store.compact()
    assert folded_events(store) > 500
    df2 = events(300, 9, cards=5, hours=24 * 50).assign(
        ts=lambda d: d["ts"] + pd.Timedelta(days=50)
    )
    online = serve_loop(store, df2, 0)
    offline = build_features(pd.concat([df, df2], ignore_index=True), SPEC).iloc[len(df) :]
    pd.testing.assert_frame_equal(
        online, offline.set_axis(online.index), check_exact=False, rtol=1e-9, atol=1e-9
    )


def folded_events(store: SQLiteStore) -> int:
    con, _ = store._connection()
    return int(con.execute("SELECT coalesce(sum(n), 0) FROM summary").fetchone()[0])


def test_append_is_idempotent_on_the_id(store: SQLiteStore) -> None:
    df = events(200, seed=4)
    store.append(df)
    store.append(df)
    store.append(pd.concat([df.iloc[150:], events(30, seed=5), events(30, seed=5)]))
    assert store.count() == 230
    got = store.history([f"c{i:04d}" for i in range(8)])
    assert len(got) == 230 and got["transaction_id"].is_unique


def test_append_rejects_missing_values_naming_the_column(store: SQLiteStore) -> None:
    df = events(10, seed=6)
    df.loc[3, "card_id"] = None
    with pytest.raises(ValueError, match="card_id"):
        store.append(df)
    with pytest.raises(ValueError, match="merchant_country"):
        store.append(events(10, seed=6).drop(columns="merchant_country"))
    assert store.count() == 0


def test_a_store_built_for_other_columns_is_refused(tmp_path: Path, store: SQLiteStore) -> None:
    store.append(events(10, seed=7))
    other = FeatureSpec(Contract(novelty=("channel",)))
    with pytest.raises(ValueError, match="seed it again"):
        SQLiteStore(store.path, other).count()


def test_seed_replaces_the_content_atomically(tmp_path: Path, store: SQLiteStore) -> None:
    old, new = events(3000, seed=8, prefix="old"), events(2000, seed=9, prefix="new")
    store.seed(old)
    cards = sorted(set(old["card_id"]) | set(new["card_id"]))
    other_worker = SQLiteStore(store.path, SPEC)  # holds its own open connection across the seed
    assert other_worker.count() == len(old)

    seen: set[str] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                ids = store.history(cards)["transaction_id"]
                prefixes = set(ids.str.slice(0, 3))
                # All of one content or all of the other: never a mix, never a partial one.
                assert (
                    prefixes == {"old"}
                    and len(ids) == len(old)
                    or prefixes == {"new"}
                    and len(ids) == len(new)
                )
                seen.update(prefixes)
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
    assert seen == {"old", "new"}

    assert other_worker.count() == len(new)
    pd.testing.assert_frame_equal(
        by_id(other_worker.history(cards)), by_id(new[COLUMNS]), check_exact=True
    )
    other_worker.append(events(5, seed=10, prefix="late"))
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
                store.history(b["card_id"].unique())
                store.append(b)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work, args=(batches[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert store.count() == 40 * 20


def _append_from_worker(store: SQLiteStore | str, worker: int, batches: int, go: Barrier) -> None:
    s = store if isinstance(store, SQLiteStore) else SQLiteStore(store, SPEC)
    go.wait(timeout=60)  # start together, so the appends really contend
    for i in range(batches):
        # Each batch repeats one id the other worker also writes: idempotency under contention.
        batch = events(8, seed=1000 * worker + i, prefix=f"w{worker}-")
        shared = events(1, seed=i, prefix="shared-")
        s.append(pd.concat([batch, shared], ignore_index=True))


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_processes_appending_concurrently_lose_nothing(
    store: SQLiteStore, start_method: str
) -> None:
    store.append(events(10, seed=11))  # the parent holds a connection (inherited under fork)
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
    ids = store.history([f"c{i:04d}" for i in range(8)])["transaction_id"]
    assert ids.is_unique and len(ids) == store.count()


def test_a_path_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain.sqlite"
    plain.write_bytes(b"")
    with pytest.raises(ValueError, match="not a feature store"):
        SQLiteStore(plain, SPEC)


def test_remove_deletes_the_store_and_every_generation(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.sqlite", SPEC)
    store.seed(events(200, seed=3))
    store.seed(events(100, seed=4))  # a second generation
    store.append(events(10, seed=5, prefix="late"))  # WAL sidecars in use
    store.close()
    (tmp_path / "unrelated.sqlite").write_text("kept")
    feature_store.remove(tmp_path / "store.sqlite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unrelated.sqlite"]
    assert SQLiteStore(tmp_path / "store.sqlite", SPEC).count() == 0  # a fresh, empty store
