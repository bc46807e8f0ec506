"""Serving throughput and latency: single-record requests at concurrency 1, 16 and 64, with wrk.

    python bench/serving.py [--duration 10] [--concurrency 1 16 64] [--workers 1]

Builds a small trained repo (simulate, `dvc repro`, promote), then measures in one run:

- `adaptive`: the full service (edge validation, feature-store enrichment, prediction log,
  metrics) with the service's own adaptive batcher (serving.batching=adaptive, the default);
- `off`: the same service, one model call per request (serving.batching=off);
- `bentoml`: the same service with BentoML's batching dispatcher (serving.batching=bentoml);
- `bare`: a bare ASGI app (uvicorn) that parses and validates the same JSON with the same
  pydantic model and returns a constant: the ceiling of Python HTTP on this machine.

The server is pinned to core 0 and wrk (Debian package `wrk`) to core 1 when there are 2+ cores
(with `--workers 2` nothing is pinned). Besides latency and throughput, each row reports the
server's CPU time per request (all its processes): on a machine shared with other work, that is
the figure that does not move with the neighbours.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
sys.path.insert(0, str(ROOT))
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
    "split": {"test_days": 6},
}
LUA = r"""
local counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"records":[{"transaction_id":"b-%s-%d","ts":"2026-01-22T10:%02d:00","card_id":"c%06d","amount":%d.5,"merchant_category":"grocery","merchant_country":"US","channel":"pos"}]}', RUN, counter, counter % 60, counter % 2000, counter % 300)
  return wrk.format("POST", "/score", {["Content-Type"]="application/json"}, body)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %f %f %f %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


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


def start(variant: str, repo: Path, workers: int) -> tuple[subprocess.Popen, str]:
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
    variant_params = repo / f"params-{variant}.yaml"
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


def batch_stats(url: str) -> tuple[float, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    total = sum(
        float(v) for v in re.findall(r"^fraud_batch_size_sum(?:\{[^}]*\})? (\S+)", text, re.M)
    )
    count = sum(
        float(v) for v in re.findall(r"^fraud_batch_size_count(?:\{[^}]*\})? (\S+)", text, re.M)
    )
    return total, count


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
    before = batch_stats(url) if variant != "bare" else (0.0, 0.0)
    cpu_before = cpu_seconds(server)
    cmd = [
        *pin(1),
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{duration}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=ENV, check=True).stdout
    cpu = cpu_seconds(server) - cpu_before
    rps, p50, p99, non2xx, errors = re.search(r"RESULT (\S+) (\S+) (\S+) (\d+) (\d+)", out).groups()  # type: ignore[union-attr]
    after = batch_stats(url) if variant != "bare" else (0.0, 0.0)
    batches = after[1] - before[1]
    requests = float(rps) * duration
    return {
        "rps": float(rps),
        "p50": float(p50),
        "p99": float(p99),
        "non2xx": int(non2xx) + int(errors),
        "batch": (after[0] - before[0]) / batches if batches else float("nan"),
        "cpu_us": cpu / requests * 1e6 if requests else float("nan"),
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


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--variants", nargs="+", default=["bare", "adaptive", "off", "bentoml"])
    p.add_argument("--bare", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    global PIN
    PIN = args.workers == 1  # several workers need every core; then nothing is pinned
    if args.bare:
        return bare_app(args.bare)
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    try:
        print("building a trained repo ...", flush=True)
        repo = build_repo(work / "repo")
        results: dict[tuple[str, int], dict] = {}
        for variant in args.variants:
            script = work / f"{variant}.lua"
            script.write_text(f'RUN = "{variant}-{time.time_ns()}"\n' + LUA)
            proc, url = start(variant, repo, args.workers)
            try:
                for c in args.concurrency:
                    results[variant, c] = r = measure(
                        url, c, args.duration, script, variant, proc.pid
                    )
                    print(
                        f"  {variant:<9} c={c:<3} {r['rps']:8.0f} req/s  p50 {r['p50']:6.1f} ms  "
                        f"p99 {r['p99']:7.1f} ms  non-2xx {r['non2xx']}  server CPU/req {r['cpu_us']:.0f} µs",
                        flush=True,
                    )
            finally:
                stop(proc)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    placement = "server on core 0 and wrk on core 1" if PIN else "server and wrk unpinned"
    print(
        f"\nSingle-record requests, wrk {args.duration} s per cell, server workers={args.workers}, {placement}\n"
    )
    print(
        "| variant | concurrency | req/s | p50 ms | p99 ms | non-2xx | mean batch | server CPU µs/req "
        "| vs ceiling | vs off |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (variant, c), r in results.items():
        ceiling = results.get(("bare", c), {}).get("rps")
        off = results.get(("off", c), {}).get("rps")
        batch = "-" if variant == "bare" else f"{r['batch']:.1f}"
        vs_ceiling = f"{r['rps'] / ceiling:.2f}" if ceiling else "-"
        vs_off = f"{r['rps'] / off:.2f}x" if off else "-"
        print(
            f"| {variant} | {c} | {r['rps']:,.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['non2xx']:,} | "
            f"{batch} | {r['cpu_us']:,.0f} | {vs_ceiling} | {vs_off} |"
        )


if __name__ == "__main__":
    main()
