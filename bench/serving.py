"""Serving throughput and latency: single-record requests at concurrency 1, 16 and 64, with wrk.

    python bench/serving.py [--duration 10] [--concurrency 1 16 64] [--workers 1 2] [--variants ...]
    python bench/serving.py --suite store [--duration 10]

`--suite store` measures the online store instead, in one run: the per-record cost of the hot
path (read the card's history, compute its features, append) for cards with 10, 1,000 and
100,000 events and a burst card, on SQLite and Redis; the latency of a long run at c=16 on a
growing SQLite store, in 5 s slices; and Redis at c=64 with 1 and 2 workers against one SQLite
worker.

Builds a small trained repo (simulate, `dvc repro`, promote), then measures in one run:

- `adaptive`: the full service (edge validation, feature-store enrichment, prediction log,
  metrics) with the service's own adaptive batcher (serving.batching=adaptive, the default);
- `off`: the same service, one model call per request (serving.batching=off);
- `bentoml`: the same service with BentoML's batching dispatcher (serving.batching=bentoml);
- `bare`: a bare ASGI app (uvicorn) that parses and validates the same JSON with the same
  pydantic model and returns a constant: the ceiling of Python HTTP on this machine;
- the peers, each serving the service's own booster (the repo's chosen LightGBM model) on
  precomputed feature rows of the repo's test span (so they do less work: no enrichment, log or
  business logic), all given the same Open Inference Protocol (V2) bodies:
  `mlserver` (Seldon MLServer 1.7.1 with its LightGBM runtime, defaults), `mlserver-batching`
  (the same with adaptive batching: `max_batch_size` 64, `max_batch_time` 5 ms) and `fastapi`
  (FastAPI calling `predict` per request, bench/peers/fastapi_app.py). They run from their own
  locked environment (`make bench-peers`: MLServer needs a FastAPI older than Prefect's).

The server is pinned to core 0 and wrk (Debian's, unpacked by `make install`) to core 1 when
there are 2+ cores; with several workers (`--workers 1 2` measures the service both ways, the
peers and the ceiling at one) nothing is pinned. Besides latency and throughput, each row reports
the server's CPU time per request (all its processes): on a machine shared with other work, that
is the figure that does not move with the neighbours; and wrk's, which several workers share the
cores with.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
PEERS_ENV = ROOT / ".venv-peers"
PEERS = ("mlserver", "mlserver-batching", "fastapi")
SERVICE_VARIANTS = ("adaptive", "off", "bentoml")
MLSERVER_BATCH = {"max_batch_size": 64, "max_batch_time": 0.005}
ONLINE = Path("data/online")  # the online store's directory in the repo (params' serving paths)
sys.path.insert(0, str(ROOT))
from pipelines import runtime  # noqa: E402

ENV = {
    **os.environ,
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "BENTOML_DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
}
PARAMS = {
    "simulate": {"cards": 2000, "days": 24, "tx_per_day": 4000, "start": "2026-01-01"},
    "ingest": {"start": "2026-01-01", "end": "2026-01-21"},
    "split": {"test": "6 days"},
    "train": {"validation": "4 days"},
}
# wrk's summary, one line for `measure` to parse.
DONE = r"""
done = function(summary, latency, requests)
  io.write(string.format("RESULT %f %f %f %f %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""
LUA = (
    r"""
local counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"records":[{"transaction_id":"b-%s-%d","ts":"2026-01-22T10:%02d:00","card_id":"c%06d","amount":%d.5,"merchant_category":"grocery","merchant_country":"US","channel":"pos"}]}', RUN, counter, counter % 60, counter % 2000, counter % 300)
  return wrk.format("POST", "/score", {["Content-Type"]="application/json"}, body)
end
"""
    + DONE
)
# The peers' requests: one precomputed feature row per request, cycling through BODIES.
PEER_LUA = (
    r"""
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "/v2/models/fraud/infer", {["Content-Type"]="application/json"},
    BODIES[counter % #BODIES + 1])
end
"""
    + DONE
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PIN = True


def pin(core: int) -> list[str]:
    return (
        ["taskset", "-c", str(core)]
        if PIN and (os.cpu_count() or 1) > 1 and shutil.which("taskset")
        else []
    )


def build_repo(dest: Path) -> Path:
    from tests.conftest import make_repo, train_for_serving

    return train_for_serving(make_repo(dest, PARAMS))


def wait_ready(url: str, proc: subprocess.Popen, path: str = "/readyz") -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode})")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"{url} not ready")


def start(
    variant: str, repo: Path, workers: int, store: str | None = None
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if variant == "bare":
        cmd = [*pin(0), sys.executable, __file__, "--bare", str(port)]
        env = {**ENV, "PIPELINES_PARAMS": str(repo / "params.yaml")}
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_ready(url, proc, "/")
        return proc, url
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["serving"].update(batching=variant, workers=workers)
    if store:
        params["serving"]["feature_store"] = store
    variant_params = repo / f"params-{variant}-{workers}-{free_port()}.yaml"
    variant_params.write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**ENV, "BENTOML_HOME": str(repo / ".bentoml"), "PIPELINES_PARAMS": str(variant_params)}
    cmd = [
        *pin(0),
        "bentoml",
        "serve",
        "pipelines.serving.service:FraudService",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_ready(url, proc)
    for i in range(20):  # warm-up, sequential: lets BentoML's dispatcher calibrate
        httpx.post(
            url + "/score",
            json={
                "records": [
                    {
                        "transaction_id": f"warm-{variant}-{i}",
                        "ts": "2026-01-22T09:00:00",
                        "card_id": "c000001",
                        "amount": 1.0,
                        "merchant_category": "grocery",
                        "merchant_country": "US",
                        "channel": "pos",
                    }
                ]
            },
            timeout=30,
        )
    return proc, url


def restore(snapshot: Path, online: Path) -> None:
    """Put the online store's directory back as it was in `snapshot`."""
    shutil.rmtree(online)
    shutil.copytree(snapshot, online, symlinks=True)


def peer_inputs(repo: Path, dest: Path, rows: int = 2000) -> Path:
    """What the peers serve and are sent, in `dest`: the repo's chosen model as LightGBM's text
    file (model.txt), and `bodies.lua`, a Lua table of V2 request bodies with one feature row each,
    the service's own encoding of the repo's test span (NaN as null). Raises SystemExit when the
    chosen family is not LightGBM (the peers' runtime)."""
    import numpy as np
    import pandas as pd

    from pipelines.config import load_settings
    from pipelines.core.layout import Layout
    from pipelines.io import model_files

    with contextlib.chdir(repo):  # the params' paths are relative to the repo
        settings = load_settings()
        family, model = model_files.chosen(settings)
        test = pd.read_parquet(Layout(settings).test_table).head(rows)
    if family != "lightgbm":
        raise SystemExit(f"the peers serve LightGBM boosters; the repo chose {family}")
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "model.txt").write_text(model.estimator.booster.model_to_string())
    matrix = model.matrix(test)
    bodies = []
    for row in matrix.tolist():
        data = [None if np.isnan(v) else v for v in row]
        tensor = {"name": "predict", "shape": [1, len(data)], "datatype": "FP64", "data": data}
        bodies.append(json.dumps({"inputs": [tensor]}, separators=(",", ":")))
    (dest / "bodies.lua").write_text(
        "BODIES = {\n" + ",\n".join(f"[==[{b}]==]" for b in bodies) + "\n}\n"
    )
    return dest


def start_peer(variant: str, inputs: Path) -> tuple[subprocess.Popen, str]:
    """One peer (`PEERS`) on a free port, pinned like the service, serving `inputs`' model."""
    if not (PEERS_ENV / "bin" / "mlserver").exists():
        raise SystemExit(f"the peers' environment {PEERS_ENV} is missing: make bench-peers")
    port = free_port()
    env = {k: v for k, v in ENV.items() if k != "VIRTUAL_ENV"}
    if variant == "fastapi":
        cmd = [
            str(PEERS_ENV / "bin" / "python"),
            str(ROOT / "bench" / "peers" / "fastapi_app.py"),
            "--model",
            str(inputs / "model.txt"),
            "--port",
            str(port),
        ]
    else:
        home = inputs / variant
        home.mkdir()
        server = {
            "host": "127.0.0.1",
            "http_port": port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "debug": False,  # no access line per request, as the service
            "environments_dir": str(home / "envs"),
            "metrics_dir": str(home / "metrics"),
        }
        model = {
            "name": "fraud",
            "implementation": "mlserver_lightgbm.LightGBMModel",
            "parameters": {"uri": str(inputs / "model.txt")},
            **(MLSERVER_BATCH if variant == "mlserver-batching" else {}),
        }
        (home / "settings.json").write_text(json.dumps(server))
        (home / "model-settings.json").write_text(json.dumps(model))
        cmd = [str(PEERS_ENV / "bin" / "mlserver"), "start", str(home)]
    proc = subprocess.Popen(
        [*pin(0), *cmd],
        cwd=inputs,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, "/v2/health/ready")
    body = (inputs / "bodies.lua").read_text().split("[==[", 2)[1].split("]==]", 1)[0]
    for _ in range(20):
        response = httpx.post(
            url + "/v2/models/fraud/infer",
            content=body,
            headers={"content-type": "application/json"},
            timeout=30,
        )
        response.raise_for_status()
    return proc, url


def batch_stats(url: str) -> tuple[float, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    total = sum(
        float(v) for v in re.findall(r"^fraud_batch_size_sum(?:\{[^}]*\})? (\S+)", text, re.M)
    )
    count = sum(
        float(v) for v in re.findall(r"^fraud_batch_size_count(?:\{[^}]*\})? (\S+)", text, re.M)
    )
    return total, count


def store_stats(url: str) -> tuple[float, float]:
    """Online-store calls so far, and those above 50 ms (the service's store histogram)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    calls = sum(
        float(v)
        for v in re.findall(r"^fraud_online_store_seconds_count(?:\{[^}]*\})? (\S+)", text, re.M)
    )
    fast = sum(
        float(v)
        for v in re.findall(
            r'^fraud_online_store_seconds_bucket\{[^}]*le="0\.05"[^}]*\} (\S+)', text, re.M
        )
    )
    return calls, calls - fast


def cpu_seconds(root: int) -> float:
    """CPU time (user + system) used so far by `root` and its live descendants (BentoML's
    workers): the server's cost per request, which other load on the machine does not inflate
    the way it inflates latency and lowers throughput."""
    stats = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(stat.parent.name)] = (
            int(fields[1]),
            int(fields[11]) + int(fields[12]),
        )  # ppid, ticks
    tree, total = {root}, 0
    for _ in range(4):  # arbiter -> workers (-> their helpers)
        tree |= {pid for pid, (ppid, _) in stats.items() if ppid in tree}
    total = sum(stats[pid][1] for pid in tree if pid in stats)
    return total / os.sysconf("SC_CLK_TCK")


def measure(
    url: str, concurrency: int, duration: int, script: Path, variant: str, server: int
) -> dict:
    ours = variant in SERVICE_VARIANTS  # the service's own metrics
    before = batch_stats(url) if ours else (0.0, 0.0)
    store_before = store_stats(url) if ours else (0.0, 0.0)
    cpu_before = cpu_seconds(server)
    cmd = [
        *pin(1),
        runtime.os_tool("wrk"),
        "-t1",
        f"-c{concurrency}",
        f"-d{duration}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        cmd, capture_output=True, text=True, env={**runtime.os_tool_env(), **ENV}, check=True
    ).stdout
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu_seconds(server) - cpu_before
    client = (client_after.ru_utime + client_after.ru_stime) - (
        client_before.ru_utime + client_before.ru_stime
    )
    rps, p50, p99, top, non2xx, errors = re.search(  # type: ignore[union-attr]
        r"RESULT (\S+) (\S+) (\S+) (\S+) (\d+) (\d+)", out
    ).groups()
    after = batch_stats(url) if ours else (0.0, 0.0)
    store_after = store_stats(url) if ours else (0.0, 0.0)
    batches = after[1] - before[1]
    requests = float(rps) * duration
    return {
        "rps": float(rps),
        "p50": float(p50),
        "p99": float(p99),
        "max": float(top),
        "non2xx": int(non2xx) + int(errors),
        "batch": (after[0] - before[0]) / batches if batches else float("nan"),
        "cpu_us": cpu / requests * 1e6 if requests else float("nan"),
        "wrk_us": client / requests * 1e6 if requests else float("nan"),
        "store_calls": store_after[0] - store_before[0],
        "store_slow": store_after[1] - store_before[1],
    }


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


def bare_app(port: int) -> None:
    """The ceiling: parse + validate the same request model, answer a constant."""
    import uvicorn

    from pipelines.config import load_settings
    from pipelines.serving.schema import record_model

    settings = load_settings()
    Transaction = record_model(settings)
    from pydantic import BaseModel

    class Input(BaseModel):
        records: list[Transaction]  # type: ignore[valid-type]

    body_out = json.dumps(
        [
            {
                "transaction_id": "x",
                "probability": 0.01,
                "decision": "approve",
                "model_version": "constant",
                "unknown_categories": [],
            }
        ]
    ).encode()

    async def app(scope: dict, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        if scope["method"] == "POST":
            Input.model_validate_json(body)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body_out})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def card_cost(url: str, rounds: int = 7, per_round: int = 60) -> list[dict]:
    """In process, the hot path for one record (read the card's history, compute its features,
    append it) on cards of 10, 1,000 and 100,000 events (one every ~10 min) and a burst card
    (100,000 events in 7 days): microseconds per record (the median of `rounds` rounds that
    visit every card in turn, so a warm-up or a noisy neighbour does not favour one card) and
    the buckets the card holds."""
    import numpy as np
    import pandas as pd

    from pipelines.config import Contract
    from pipelines.core.features import FeatureSpec, event_columns, online_features
    from pipelines.io.feature_store import open_store

    spec = FeatureSpec(Contract(), (1, 24, 168))
    store = open_store(url, spec, timeout_seconds=30)
    cards: dict[str, tuple[str, int]] = {}
    for events, gap, name in [
        (10, 600, "10"),
        (1_000, 600, "1,000"),
        (100_000, 600, "100,000"),
        (100_000, 6, "100,000 burst"),
    ]:
        rng = np.random.default_rng(0)
        ts = pd.Timestamp("2024-01-01") + pd.to_timedelta(
            np.cumsum(rng.integers(1, 2 * gap, events)), unit="s"
        )
        card = f"card-{name}"
        df = pd.DataFrame(
            {
                "transaction_id": [f"{card}-{i}" for i in range(events)],
                "ts": ts.astype("datetime64[us]"),
                "card_id": card,
                "amount": rng.gamma(2, 30, events),
                "merchant_category": "grocery",
                "merchant_country": rng.choice(["US", "GB", "FR"], events),
                "channel": "pos",
            }
        )
        for lo in range(0, events, 10_000):
            part = df.iloc[lo : lo + 10_000]
            cols = event_columns(part, spec)
            cols["transaction_id"] = part["transaction_id"].to_numpy(object)
            store.append(cols)
        cards[name] = (card, int(ts.max().value // 1_000_000))

    def record(card: str, ms: int, i: int) -> dict[str, np.ndarray]:
        return {
            "ts": np.array([ms]),
            "card_id": np.array([card], object),
            "amount": np.array([50.0]),
            "merchant_category": np.array(["grocery"], object),
            "merchant_country": np.array(["US"], object),
            "channel": np.array(["pos"], object),
            "transaction_id": np.array([f"{card}-probe-{i}"], object),
        }

    times: dict[str, list[float]] = {name: [] for name in cards}
    sent = 0
    for round_ in range(rounds + 1):  # round 0 warms up
        for name, (card, newest) in cards.items():
            records = [
                record(card, newest + 7_000 * (sent + i), sent + i) for i in range(per_round)
            ]
            sent += per_round
            began = time.perf_counter()
            for rec in records:
                online_features(rec, store.histories([card]), spec)
                store.append(rec)
            if round_:
                times[name].append((time.perf_counter() - began) / per_round)
    rows = [
        {
            "card": name,
            "us": float(np.median(times[name])) * 1e6,
            "buckets": len(store.histories([card])[card].minute),
        }
        for name, (card, _) in cards.items()
    ]
    store.close()
    return rows


def store_suite(args: argparse.Namespace, work: Path) -> None:
    """The online store's benchmarks (see the module docstring), printed as tables."""
    from pipelines.config import load_settings
    from pipelines.core.features import FeatureSpec
    from pipelines.io.feature_store import open_store
    from tests.integration.conftest import RedisServer

    redis = RedisServer(free_port(), work / "redis", fsync="everysec")
    redis.start()
    assert redis.proc is not None
    redis_pid = redis.proc.pid
    try:
        print("per-record cost by card size ...", flush=True)
        cost = {
            "SQLite": card_cost(str(work / "cost.sqlite")),
            "Redis": card_cost(f"{redis.url}?prefix=cost"),
        }
        print("building a trained repo ...", flush=True)
        repo = build_repo(work / "repo")
        settings = load_settings(repo / "params.yaml")
        spec = FeatureSpec.from_settings(settings)
        raw = pd_read(repo / settings.paths.raw / "transactions.parquet", spec.history_columns)
        store = open_store(f"{redis.url}?prefix=serving", spec, timeout_seconds=30)
        store.seed(raw)
        store.close()

        print("long run on SQLite, c=16, in 5 s slices ...", flush=True)
        script = work / "long.lua"
        script.write_text(f'RUN = "long-{time.time_ns()}"\n' + LUA)
        proc, url = start("adaptive", repo, 1)
        try:
            slices = [
                measure(url, 16, 5, script, "adaptive", proc.pid)
                for _ in range(max(1, args.long_seconds // 5))
            ]
        finally:
            stop(proc)

        print("Redis against SQLite at c=64 ...", flush=True)
        http: dict[str, dict] = {}
        for label, workers, target in [
            ("SQLite, 1 worker", 1, None),
            ("Redis, 1 worker", 1, f"{redis.url}?prefix=serving"),
            ("Redis, 2 workers", 2, f"{redis.url}?prefix=serving"),
        ]:
            global PIN
            PIN = workers == 1
            script = work / f"{workers}-{label[:5]}.lua"
            script.write_text(f'RUN = "{label[:5]}-{workers}-{time.time_ns()}"\n' + LUA)
            proc, url = start("adaptive", repo, workers, target)
            try:
                redis_before = cpu_seconds(redis_pid)
                http[label] = measure(url, 64, args.duration, script, "adaptive", proc.pid)
                served = http[label]["rps"] * args.duration
                http[label]["redis_us"] = (cpu_seconds(redis_pid) - redis_before) / served * 1e6
            finally:
                stop(proc)
            r = http[label]
            print(f"  {label:<17} {r['rps']:8.0f} req/s  p99 {r['p99']:7.1f} ms", flush=True)
    finally:
        redis.stop()

    print(
        "\nHot path per record (read history, features, append), in process, ~1 event per 7 s, "
        "median of 7 rounds over every card:\n"
    )
    print("| card events | SQLite µs | vs 10 | buckets | Redis µs | vs 10 | buckets |")
    print("|---|---|---|---|---|---|---|")
    for a, b in zip(cost["SQLite"], cost["Redis"], strict=True):
        print(
            f"| {a['card']} | {a['us']:,.0f} | {a['us'] / cost['SQLite'][0]['us']:.2f}x | "
            f"{a['buckets']} | {b['us']:,.0f} | {b['us'] / cost['Redis'][0]['us']:.2f}x | "
            f"{b['buckets']} |"
        )
    worst = max(r["p99"] for r in slices)
    print(
        f"\nLong run, SQLite store growing by every request, c=16, {len(slices)} slices of 5 s: "
        f"p99 per slice {min(r['p99'] for r in slices):.1f}-{worst:.1f} ms, "
        f"longest request {max(r['max'] for r in slices):.1f} ms, "
        f"non-2xx {sum(r['non2xx'] for r in slices)}; store calls above 50 ms: "
        f"{sum(r['store_slow'] for r in slices):,.0f} of {sum(r['store_calls'] for r in slices):,.0f}\n"
    )
    print(
        "| store, workers (c=64) | req/s | p50 ms | p99 ms | non-2xx | mean batch | "
        "server CPU µs/req | Redis CPU µs/req | vs SQLite 1 worker |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    base = http["SQLite, 1 worker"]["rps"]
    for label, r in http.items():
        print(
            f"| {label} | {r['rps']:,.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['non2xx']:,} | "
            f"{r['batch']:.1f} | {r['cpu_us']:,.0f} | {r['redis_us']:,.0f} | "
            f"{r['rps'] / base:.2f}x |"
        )


def pd_read(path: Path, columns: list[str]):  # noqa: ANN201
    import pandas as pd

    return pd.read_parquet(path, columns=columns)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--workers", type=int, nargs="+", default=[1])
    p.add_argument(
        "--variants",
        nargs="+",
        default=["bare", *SERVICE_VARIANTS, *PEERS],
        choices=["bare", *SERVICE_VARIANTS, *PEERS],
    )
    p.add_argument("--suite", choices=["batching", "store"], default="batching")
    p.add_argument("--long-seconds", type=int, default=60, help="--suite store: the long run")
    p.add_argument("--bare", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    global PIN
    if args.bare:
        return bare_app(args.bare)
    runtime.os_tool("wrk")  # FileNotFoundError naming the fix (make install) before any work
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    if args.suite == "store":
        try:
            return store_suite(args, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    try:
        print("building a trained repo ...", flush=True)
        repo = build_repo(work / "repo")
        variants = list(dict.fromkeys(args.variants))
        wanted = set(variants) & set(PEERS) if 1 in args.workers else set()  # peers: 1 worker
        peers = peer_inputs(repo, work / "peers") if wanted else None
        # Every service starts on the store as seeded: each run appends ~40k events, and a
        # store grown by the runs before would make the later rows pay for the earlier ones.
        pristine = work / "online-seeded"
        shutil.copytree(repo / ONLINE, pristine, symlinks=True)
        results: dict[tuple[str, int, int], dict] = {}
        for workers in args.workers:
            PIN = workers == 1  # several workers need every core; then nothing is pinned
            for variant in variants:
                if workers > 1 and variant not in SERVICE_VARIANTS:
                    continue  # the ceiling and the peers run one process, pinned
                script = work / f"{variant}.lua"
                if variant in PEERS:
                    assert peers is not None
                    script.write_text((peers / "bodies.lua").read_text() + PEER_LUA)
                    proc, url = start_peer(variant, peers)
                else:
                    script.write_text(f'RUN = "{variant}-{time.time_ns()}"\n' + LUA)
                    restore(pristine, repo / ONLINE)
                    proc, url = start(variant, repo, workers)
                try:
                    for c in args.concurrency:
                        results[variant, workers, c] = r = measure(
                            url, c, args.duration, script, variant, proc.pid
                        )
                        print(
                            f"  {variant:<17} workers={workers} c={c:<3} {r['rps']:8.0f} req/s  "
                            f"p50 {r['p50']:6.1f} ms  p99 {r['p99']:7.1f} ms  non-2xx {r['non2xx']}  "
                            f"server CPU/req {r['cpu_us']:.0f} µs  wrk CPU/req {r['wrk_us']:.0f} µs",
                            flush=True,
                        )
                finally:
                    stop(proc)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\nSingle-record requests, wrk {args.duration} s per cell; one worker: server on core 0 "
        "and wrk on core 1; several workers: nothing pinned (they share the cores with wrk)\n"
    )
    print(
        "| variant | workers | concurrency | req/s | p50 ms | p99 ms | non-2xx | mean batch "
        "| server CPU µs/req | wrk CPU µs/req | vs ceiling | vs off | vs MLServer batching "
        "| vs 1 worker |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def ratio(r: dict, other: tuple[str, int, int], suffix: str = "x") -> str:
        base = results.get(other, {}).get("rps")
        return f"{r['rps'] / base:.2f}{suffix}" if base else "-"

    for (variant, workers, c), r in results.items():
        batch = f"{r['batch']:.1f}" if variant in SERVICE_VARIANTS else "-"
        scaling = ratio(r, (variant, 1, c)) if workers > 1 else "-"
        print(
            f"| {variant} | {workers} | {c} | {r['rps']:,.0f} | {r['p50']:.1f} | {r['p99']:.1f} | "
            f"{r['non2xx']:,} | {batch} | {r['cpu_us']:,.0f} | {r['wrk_us']:,.0f} | "
            f"{ratio(r, ('bare', 1, c), '')} | {ratio(r, ('off', workers, c))} | "
            f"{ratio(r, ('mlserver-batching', 1, c))} | {scaling} |"
        )
    if peers is not None:
        print(
            f"\nPeers: the same LightGBM booster on precomputed features; MLServer batching "
            f"{MLSERVER_BATCH}."
        )


if __name__ == "__main__":
    main()
