"""The service on Redis, all real: replicas started separately (one of them with two workers)
share one redis-server, and a Redis that goes away under load neither fails requests nor loses
the events scored meanwhile."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipelines.config import load_settings
from pipelines.core.features import FeatureSpec, build_features
from pipelines.io import model_files
from pipelines.io.feature_store import open_store
from pipelines.serving import metrics
from pipelines.sources import simulator
from tests.integration.conftest import RedisServer, Service, free_port, start_service
from tests.integration.test_service import as_records, wait_for_log

pytestmark = pytest.mark.integration


def on_redis(repo: Path, url: str, workers: int = 1, **serving: object) -> Service:
    """A replica of the served repo's service whose online store is `url`."""
    overrides = {"serving": {"feature_store": url, "workers": workers, **serving}}
    return start_service(repo, env={"PIPELINES_OVERRIDES": json.dumps(overrides)})


def seeded(repo: Path, url: str) -> int:
    """Seed the Redis store at `url` from the repo's training snapshot, as materialize does."""
    s = load_settings(repo / "params.yaml")
    spec = FeatureSpec.from_settings(s)
    raw = pd.read_parquet(repo / s.paths.raw / "transactions.parquet")
    store = open_store(url, spec, timeout_seconds=30)
    store.seed(raw[spec.history_columns])
    store.close()
    return len(raw)


def series(service: Service, name: str) -> dict[tuple, float]:
    text = httpx.get(f"{service.url}/metrics", timeout=10).text
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


@pytest.fixture
def replicas(served_repo: Path, redis_server: RedisServer) -> Iterator[list[Service]]:
    url = f"{redis_server.url}?prefix=replicas"
    seeded(served_repo, url)
    services = [on_redis(served_repo, url, workers=2), on_redis(served_repo, url)]
    yield services
    for s in services:
        s.stop()


def test_replicas_sharing_redis_give_the_offline_features(
    replicas: list[Service], served_repo: Path
) -> None:
    """One card's events, request by request in time order, alternately through two replicas
    (the first with two workers): each sees what the other appended, exactly as offline."""
    s = load_settings(served_repo / "params.yaml")
    spec = FeatureSpec.from_settings(s)
    tx, _ = simulator.generate(s.simulate)
    future = tx[tx["ts"] >= pd.Timestamp(s.ingest.end)].sort_values("ts", kind="stable")
    busiest = future["card_id"].value_counts().index[:3]
    future = future[future["card_id"].isin(busiest)].head(120)
    answers = []
    for i, start in enumerate(range(0, len(future), 3)):
        resp = replicas[i % 2].score(as_records(future.iloc[start : start + 3]))
        assert resp.status_code == 200, resp.text
        answers += resp.json()
    assert {a["history"] for a in answers} == {"live"}

    raw = pd.read_parquet(served_repo / s.paths.raw / "transactions.parquet")
    events = pd.concat([raw[list(tx.columns)], future], ignore_index=True)
    offline = (
        build_features(events, spec).iloc[len(raw) :].set_index(future["transaction_id"].to_numpy())
    )
    _, model = model_files.chosen(s.located(served_repo))
    served = pd.DataFrame(answers).set_index("transaction_id").loc[offline.index]
    np.testing.assert_allclose(served["probability"], model.predict_proba(offline), atol=1e-6)
    logged = wait_for_log(
        str(served_repo / s.serving.prediction_log), set(future["transaction_id"])
    ).set_index("transaction_id")
    logged = logged[~logged.index.duplicated()].loc[offline.index]
    for col in spec.history_names:
        np.testing.assert_allclose(
            logged[col].to_numpy(float), offline[col].to_numpy(float), atol=1e-6, err_msg=col
        )


def test_redis_going_away_under_load_degrades_then_replays(
    served_repo: Path, tmp_path: Path
) -> None:
    """Requests keep flowing while Redis is stopped and restarted: every one answered 200 (those
    without the store flagged `history: unavailable`), and once Redis is back every scored event
    is in it exactly once."""
    redis = RedisServer(free_port(), tmp_path / "redis")
    redis.start()
    url = f"{redis.url}?prefix=outage"
    seeded(served_repo, url)
    service = on_redis(served_repo, url, store_retry_seconds=0.2)
    s = load_settings(served_repo / "params.yaml")
    spec = FeatureSpec.from_settings(s)
    store = open_store(url, spec, timeout_seconds=30)
    before = store.count()  # the seed and the service's warm-up requests
    tx, _ = simulator.generate(s.simulate)
    future = tx[tx["ts"] >= pd.Timestamp(s.ingest.end)].sort_values("ts", kind="stable")
    records = as_records(future)
    span = future["ts"].max() - future["ts"].min()
    statuses: list[int] = []
    history: list[str] = []
    sent: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def load(worker: int) -> None:
        with httpx.Client(timeout=30) as client:
            for i in itertools.count(worker, 4):  # until stopped; ids stay unique per round
                if stop.is_set():
                    return
                rec, later = records[i % len(records)], i // len(records)
                # Each round replays the days later than the last: ids unique, times in order.
                ts = pd.Timestamp(rec["ts"]) + later * (span + pd.Timedelta(hours=1))
                rec = {
                    **rec,
                    "transaction_id": f"{rec['transaction_id']}-{later}",
                    "ts": ts.isoformat(),
                }
                resp = client.post(f"{service.url}/score", json={"records": [rec]})
                with lock:
                    statuses.append(resp.status_code)
                    if resp.status_code == 200:
                        history.append(resp.json()[0]["history"])
                        sent.append(rec["transaction_id"])

    try:
        threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        time.sleep(2)
        redis.stop()
        time.sleep(3)
        redis.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with lock:
                back = history[-20:].count("live") == 20 and "unavailable" in history
            if back:
                break
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join()

        assert set(statuses) == {200}, {c: statuses.count(c) for c in set(statuses)}
        assert "unavailable" in history and history[-1] == "live"
        assert store.count() == before + len(set(sent))  # every event once: none lost, none twice
        counted = series(service, f"{metrics.HISTORY}_total")
        assert counted[(("status", "unavailable"),)] == history.count("unavailable")
        assert series(service, metrics.STORE_UP)[()] == 1
        assert series(service, f"{metrics.STORE_DROPPED}_total")[()] == 0
    finally:
        stop.set()
        store.close()
        service.stop()
        redis.stop()
