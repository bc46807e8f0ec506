"""The buffered prediction log on a local URL: when it flushes, what survives a broken sink."""

from __future__ import annotations

import fnmatch
import logging
import re
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.io.prediction_log import PART_GLOB, PredictionLog, read_log
from tests.conftest import by_id, eventually

T0 = pd.Timestamp("2026-03-01 22:00")


def records(n: int, first: int = 0, start: pd.Timestamp = T0, minutes: int = 1) -> pd.DataFrame:
    """Scored records, `minutes` apart (so a long run crosses midnight)."""
    ids = np.arange(first, first + n)
    return pd.DataFrame(
        {
            "transaction_id": pd.Series([f"t{i:08d}" for i in ids], dtype="str"),
            "ts": (start + pd.to_timedelta(ids * minutes, unit="min")).astype("datetime64[us]"),
            "probability": ids / (ids.max(initial=0) + 1.0),
            "decision": ids % 7 == 0,
            "model_version": pd.Series(["m:1"] * n, dtype="str"),
        }
    )


def parts(root: Path) -> list[Path]:
    return sorted(root.glob(PART_GLOB))


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def test_flushes_when_the_buffer_reaches_flush_rows(tmp_path: Path, spool: Path) -> None:
    url = str(tmp_path / "log")
    plog = PredictionLog(url, flush_rows=100, flush_seconds=3600, spool_dir=spool)
    for i in range(5):
        plog.append(records(50, first=50 * i))
    eventually(lambda: plog.stats().rows_flushed >= 200 and plog.stats().rows_buffered < 100)
    assert len(read_log(url)) == plog.stats().rows_flushed
    plog.close()
    assert len(read_log(url)) == 250


def test_flushes_when_the_oldest_row_is_flush_seconds_old(tmp_path: Path, spool: Path) -> None:
    url = str(tmp_path / "log")
    plog = PredictionLog(url, flush_rows=1_000_000, flush_seconds=1.0, spool_dir=spool)
    plog.append(records(10))
    assert plog.stats().rows_flushed == 0
    eventually(lambda: plog.stats().rows_flushed == 10)
    assert len(read_log(url)) == 10
    plog.close()


def test_close_flushes_everything_exactly(tmp_path: Path, spool: Path) -> None:
    url = str(tmp_path / "log")
    plog = PredictionLog(url, flush_rows=1_000_000, flush_seconds=3600, spool_dir=spool)
    expected = records(300)
    for start in range(0, 300, 30):
        plog.append(expected.iloc[start : start + 30])
    caller_frame = expected.iloc[:30]
    caller_frame.loc[:, "probability"] = -1.0  # the caller reusing its frame does not edit the log
    assert read_log(url).empty
    plog.close()
    pd.testing.assert_frame_equal(by_id(read_log(url)), expected, check_exact=True)
    stats = plog.stats()
    assert (stats.rows_appended, stats.rows_flushed, stats.rows_buffered, stats.rows_spooled) == (
        300,
        300,
        0,
        0,
    )
    with pytest.raises(RuntimeError, match="closed"):
        plog.append(expected)


def test_files_are_new_per_flush_and_partitioned_by_day(tmp_path: Path, spool: Path) -> None:
    url = str(tmp_path / "log")
    plog = PredictionLog(url, flush_rows=1_000_000, flush_seconds=3600, spool_dir=spool)
    plog.append(records(180, minutes=1))  # 22:00 to 00:59: two days
    plog.flush()
    plog.append(records(60, first=180, minutes=1))
    plog.close()
    names = [p.relative_to(tmp_path / "log").as_posix() for p in parts(tmp_path / "log")]
    pattern = r"date=2026-03-0[12]/part-\d{8}T\d{12}Z-\d+-[0-9a-f]{32}\.parquet"
    assert len(names) == 3 and all(re.fullmatch(pattern, n) for n in names), names
    first_day = read_log(url, end=pd.Timestamp("2026-03-02").date())
    second_day = read_log(url, start=pd.Timestamp("2026-03-02").date())
    assert len(first_day) == 120 and (first_day["ts"] < "2026-03-02").all()
    assert len(second_day) == 120 and (second_day["ts"] >= "2026-03-02").all()


def test_concurrent_appends_from_threads_lose_nothing(tmp_path: Path, spool: Path) -> None:
    url = str(tmp_path / "log")
    plog = PredictionLog(url, flush_rows=500, flush_seconds=0.05, spool_dir=spool)

    def work(worker: int) -> None:
        for i in range(100):
            plog.append(records(7, first=(worker * 100 + i) * 7))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    plog.close()
    got = read_log(url)
    assert len(got) == 8 * 100 * 7 and got["transaction_id"].is_unique
    assert plog.stats().rows_flushed == plog.stats().rows_appended == len(got)


def test_readers_never_see_partial_files(tmp_path: Path, spool: Path) -> None:
    url = str(tmp_path / "log")
    # storage.write_bytes' temporary names must fall outside the reader's glob.
    assert not fnmatch.fnmatch("date=2026-03-01/part-x.parquet.tmp-0123abcd", PART_GLOB)
    stray = tmp_path / "log" / "date=2026-03-01" / "part-x.parquet.tmp-0123abcd"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"half a parquet file")

    plog = PredictionLog(url, flush_rows=40, flush_seconds=0.01, spool_dir=spool)
    done = threading.Event()

    def writer() -> None:
        for i in range(150):
            plog.append(records(10, first=10 * i))
            time.sleep(0.001)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    sizes = []
    while not done.is_set():
        got = read_log(url)  # raises on a partial file
        assert got.empty or len(got) % 10 == 0 and got["transaction_id"].is_unique
        sizes.append(len(got))
    thread.join()
    plog.close()
    assert any(0 < n < 1500 for n in sizes)  # some reads ran while flushes were landing
    assert len(read_log(url)) == 1500


def test_an_unreachable_sink_spools_then_redelivers(
    tmp_path: Path, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the log's directory should be")
    url = str(blocker / "log")
    plog = PredictionLog(url, flush_rows=1_000_000, flush_seconds=3600, spool_dir=spool)

    plog.append(records(40))
    with caplog.at_level(logging.WARNING):
        plog.flush()  # must not raise
    assert url in caplog.text
    plog.append(records(40, first=100))  # 23:40 to 00:19
    plog.flush()
    time.sleep(0.05)
    stats = plog.stats()
    assert stats.rows_spooled == 80 and stats.rows_flushed == 0 and stats.flush_failures >= 2
    assert stats.lag_seconds >= 0.05
    spooled = {p.relative_to(spool).as_posix() for p in parts(spool)}
    assert len(spooled) == 3  # 40 rows, then 40 rows crossing midnight

    blocker.unlink()  # the sink comes back
    plog.append(records(40, first=200))
    plog.close()
    expected = pd.concat(
        [records(40), records(40, first=100), records(40, first=200)], ignore_index=True
    )
    pd.testing.assert_frame_equal(by_id(read_log(url)), expected, check_exact=True)
    delivered = {p.relative_to(Path(url)).as_posix() for p in parts(Path(url))}
    assert spooled < delivered and not parts(spool)  # same names at the sink, spool emptied
    stats = plog.stats()
    assert (stats.rows_flushed, stats.rows_spooled) == (120, 0) and stats.lag_seconds < 1


def test_a_spool_left_by_a_dead_process_is_delivered_by_the_next(
    tmp_path: Path, spool: Path
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    url = str(blocker / "log")
    first = PredictionLog(url, flush_rows=1_000_000, flush_seconds=3600, spool_dir=spool)
    first.append(records(25))
    first.close()  # its last flush could only spool
    assert len(parts(spool)) == 1

    blocker.unlink()
    second = PredictionLog(url, flush_rows=1_000_000, flush_seconds=0.1, spool_dir=spool)
    eventually(lambda: second.stats().rows_flushed == 25)  # an idle tick delivers the spool
    second.close()
    pd.testing.assert_frame_equal(by_id(read_log(url)), records(25), check_exact=True)
    assert not parts(spool)


def test_append_needs_the_timestamp_column(tmp_path: Path, spool: Path) -> None:
    plog = PredictionLog(str(tmp_path / "log"), timestamp_column="scored_at", spool_dir=spool)
    with pytest.raises(ValueError, match="scored_at"):
        plog.append(records(3))
    plog.close()


def test_column_batches_and_frames_mixed_are_logged_in_full(tmp_path: Path, spool: Path) -> None:
    url = str(tmp_path / "log")
    plog = PredictionLog(url, flush_rows=1_000_000, flush_seconds=3600, spool_dir=spool)
    expected = records(90)
    for start in range(0, 90, 15):
        part = expected.iloc[start : start + 15]
        # The service's path: plain arrays per batch; other callers hand frames.
        plog.append({c: part[c].to_numpy() for c in part.columns} if start % 30 else part)
    with pytest.raises(ValueError, match="has nulls"):
        plog.append(
            {
                "ts": np.array(["NaT"], dtype="datetime64[us]"),
                "transaction_id": np.array(["x"], dtype=object),
            }
        )
    plog.close()
    pd.testing.assert_frame_equal(by_id(read_log(url)), expected, check_exact=True)
    assert plog.stats().rows_appended == 90


def logged(root: Path, frame: pd.DataFrame, chunk: int) -> str:
    """`frame` logged to a new log under `root`, appended and flushed `chunk` rows at a time."""
    log = PredictionLog(
        str(root),
        timestamp_column="ts",
        flush_rows=chunk,
        flush_seconds=3600,
        spool_dir=root.parent / f"{root.name}-spool",
    )
    for start in range(0, len(frame), chunk):
        log.append(frame.iloc[start : start + chunk])
        log.flush()
    log.close()
    return str(root)


def test_a_window_past_read_rows_is_the_same_uniform_sample_however_the_log_is_split(
    tmp_path: Path,
) -> None:
    import datetime as dt

    from pipelines.core.drift import lowest_keys, sample_keys
    from pipelines.io.prediction_log import read_window, read_window_sample

    frame = records(6000, minutes=2).assign(scored_at=lambda f: f["ts"] + pd.Timedelta(seconds=2))
    start, end = dt.datetime(2026, 3, 2), dt.datetime(2026, 3, 9)
    columns = ["transaction_id", "ts", "probability"]
    few, many = (logged(tmp_path / name, frame, n) for name, n in (("few", 6000), ("many", 250)))
    assert len(parts(Path(few))) < len(parts(Path(many)))
    whole = read_window(few, start, end, columns)
    assert 3000 < len(whole) < 6000  # the window holds part of the log

    # Up to read_rows, the window itself, as read_window reads it.
    everything, total = read_window_sample(
        few, start, end, columns, len(whole), "transaction_id", 0
    )
    assert total == len(whole)
    pd.testing.assert_frame_equal(everything, whole)

    # Past it, the same 1,000 rows from either split: the lowest keys of the whole window.
    samples = [
        read_window_sample(u, start, end, columns, 1000, "transaction_id", 0) for u in (few, many)
    ]
    assert [t for _, t in samples] == [len(whole)] * 2
    (first, _), (second, _) = samples
    assert len(first) == 1000
    pd.testing.assert_frame_equal(first, second)
    keyed = whole.assign(k=sample_keys(whole["transaction_id"], 0))
    expected = lowest_keys(keyed, "k", 1000).drop(columns="k").reset_index(drop=True)
    pd.testing.assert_frame_equal(first, expected)
    assert first["ts"].is_monotonic_increasing  # the log's order
    # Uniform over the window: each half of it holds about half the sample.
    early = (first["ts"] < whole["ts"].iloc[len(whole) // 2]).mean()
    assert 0.4 < early < 0.6
    # Another seed, another sample.
    other, _ = read_window_sample(few, start, end, columns, 1000, "transaction_id", 1)
    assert set(other["transaction_id"]) != set(first["transaction_id"])
