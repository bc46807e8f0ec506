"""The prediction log against a real S3 endpoint (moto server) that goes down and comes back."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import numpy as np
import pandas as pd
import pytest

from pipelines.io.prediction_log import PART_GLOB, PredictionLog, read_log
from tests.conftest import by_id, eventually

if TYPE_CHECKING:
    from tests.integration.conftest import MotoServer

pytestmark = pytest.mark.integration

BUCKET = "ml-logs"
URL = f"s3://{BUCKET}/predictions"


def records(n: int, first: int) -> pd.DataFrame:
    ids = np.arange(first, first + n)
    return pd.DataFrame(
        {
            "transaction_id": pd.Series([f"t{i:08d}" for i in ids], dtype="str"),
            # Minutes from 23:00 on: the later batches cross midnight into a second partition.
            "ts": (pd.Timestamp("2026-03-01 23:00") + pd.to_timedelta(ids, unit="min")).astype(
                "datetime64[us]"
            ),
            "probability": (ids % 100) / 100.0,
            "model_version": pd.Series(["m:3"] * n, dtype="str"),
        }
    )


@pytest.fixture
def s3(s3: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    # botocore retries a refused connection for ~10 s by default; one attempt keeps the test short.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3.create_bucket(BUCKET)
    return s3


def test_the_log_spools_through_an_s3_outage_and_delivers_after(
    s3: MotoServer, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    plog = PredictionLog(URL, flush_rows=1_000_000, flush_seconds=0.3, spool_dir=spool)
    try:
        before = records(40, first=0)
        plog.append(before)
        eventually(lambda: plog.stats().rows_flushed == 40)  # the background thread flushed it
        pd.testing.assert_frame_equal(by_id(read_log(URL)), before, check_exact=True)

        s3.stop()
        during = records(80, first=40)  # 23:40 to 01:00: two partitions
        plog.append(during.iloc[:50])
        plog.flush()  # the caller never sees the outage
        plog.append(during.iloc[50:])
        eventually(lambda: plog.stats().rows_spooled == 80)  # the background thread spooled it
        stats = plog.stats()
        assert stats.rows_flushed == 40 and stats.flush_failures >= 2
        spooled = {p.relative_to(spool).as_posix() for p in spool.glob(PART_GLOB)}
        assert len(spooled) >= 3

        s3.start()  # same port, but moto lost everything it held: `before` is gone with it
        s3.create_bucket(BUCKET)
        after = records(30, first=120)
        plog.append(after)
    finally:
        plog.close()

    # What a restarted in-memory server can show: the whole spool arrived, under the same names,
    # exactly once, plus the records logged after the restart.
    got = read_log(URL)
    pd.testing.assert_frame_equal(by_id(got), by_id(pd.concat([during, after])), check_exact=True)
    fs = boto3.client("s3", endpoint_url=s3.url)
    keys = {o["Key"] for o in fs.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert {f"predictions/{name}" for name in spooled} <= keys
    assert not list(spool.glob(PART_GLOB))
    stats = plog.stats()
    assert (stats.rows_appended, stats.rows_flushed, stats.rows_spooled) == (150, 150, 0)

    first_day = read_log(URL, end=pd.Timestamp("2026-03-02").date())
    assert (first_day["ts"] < "2026-03-02").all() and len(first_day) == 20  # 23:40 to 23:59
