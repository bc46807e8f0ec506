"""The main job, from nothing: `python -m flows.demo` (what `make demo` runs).

1. simulate 120 days: 90 of history, then 30 in which the fraud mechanism changes (concept shift);
2. `dvc repro` on the first 90 days, and the deploy flow gates and promotes the first model;
3. start the Prefect server, the flow runner (`flows.serve`) and the BentoML service;
4. replay the drifted days through the service in time order (compressed time; their labels
   arrive through the labels feed);
5. run the drift check now (it is also on a cron schedule): it fails, and the Prefect server
   starts the retraining flow, which retrains on the newest window, gates and rolls out;
6. print before/after metrics on the drifted period, the versions, the reports and the UI URL.

Every server binds 127.0.0.1 and is stopped at the end (Ctrl-C included).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from flows.common import repo_root, settings
from pipelines import simulate
from pipelines.config import Settings, Simulate
from pipelines.core import metrics
from pipelines.core.features import FeatureSpec, build_features
from pipelines.io import feature_store, registry
from pipelines.runtime import tool
from pipelines.stages.ingest import join_labels

PREFECT_PORT = int(os.environ.get("DEMO_PREFECT_PORT", "4200"))
REPLAY = int(os.environ.get("DEMO_REPLAY_RECORDS", "6000"))


def say(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def sh(*cmd: str, env: dict | None = None) -> None:
    subprocess.run(cmd, cwd=repo_root(), check=True, env={**os.environ, **(env or {})})


def free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def wait(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if value := check():
                return value
        time.sleep(1)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextlib.contextmanager
def background(name: str, cmd: list[str], env: dict) -> Iterator[subprocess.Popen]:
    log = repo_root() / "logs" / f"{name}.log"
    log.parent.mkdir(exist_ok=True)
    proc = subprocess.Popen(cmd, cwd=repo_root(), env={**os.environ, **env}, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    print(f"    {name}: pid {proc.pid}, log {log.relative_to(repo_root())}")
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def quality_on_drifted_period(tags: list[str], world: Simulate, since: pd.Timestamp) -> list[dict]:
    """Each model on the same labelled drifted days from `since` (features from the full
    history, built once)."""
    s = settings()
    tx, labels = simulate.generate(world)
    raw = join_labels(tx, labels, s)
    feats = build_features(raw, FeatureSpec.from_settings(s))
    drifted = (raw[s.contract.timestamp] >= max(since, pd.Timestamp(world.scenario_start))).to_numpy()
    y = raw[s.contract.target].to_numpy(dtype=float)[drifted]
    known = ~np.isnan(y)
    X, labelled = feats[drifted][known], y[known].astype(int)
    return [metrics.summary(labelled, registry.load(tag).predict_proba(X), s.evaluate.alert_rate) for tag in tags]


def finished(runs: Callable[[str], list[dict]], run_id: str) -> dict | None:
    return next((r for r in runs("drift-check") if r["id"] == run_id and r["state_type"] in ("FAILED", "COMPLETED")),
                None)


def fresh_start(root: Path, s: Settings) -> None:
    """The demo starts from nothing: runtime state of an earlier run (orchestration history,
    champion pointer, drift state, prediction log, online store) is removed. Model versions stay
    in the store; the registry history keeps its records."""
    gone = [root / ".prefect", root / s.drift.reports, root / s.serving.prediction_log,
            root / s.serving.spool_dir, root / s.paths.bentoml_home / "registry" / "champion.json"]
    for path in gone:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    feature_store.remove(root / s.serving.feature_store)
    registry.record_decision({"event": "demo-reset", "reason": "make demo starts from nothing"})


def main() -> None:
    # Retraining moves the ingest window in params.yaml, as it should in production; the demo
    # puts the file back so that it can run again from the same start.
    params = repo_root() / "params.yaml"
    original = params.read_text()
    try:
        loop()
    finally:
        if params.read_text() != original:
            params.write_text(original)
            print("    params.yaml restored (the retraining had moved ingest.start/end)")


def loop() -> None:
    start = time.monotonic()
    root = repo_root()
    s = settings()
    prefect_env = {"PREFECT_API_URL": f"http://127.0.0.1:{PREFECT_PORT}/api", "PREFECT_HOME": str(root / ".prefect"),
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_RUNNER_POLL_FREQUENCY": "2",
                   "PIPELINES_PARAMS": str(root / "params.yaml")}
    for port in (PREFECT_PORT, s.serving.port):
        if not free(port):
            raise SystemExit(f"port {port} on 127.0.0.1 is in use: stop what runs there first")

    # The world: the params' simulation, with the fraud mechanism changing when the window ends.
    world = s.simulate.model_copy(update={"scenario": "concept_shift", "scenario_start": s.ingest.end})
    say(f"simulate: history until {s.ingest.end}, then concept shift (source: {s.paths.source})")
    sh(sys.executable, "-m", "pipelines", "simulate", "--scenario", "concept_shift",
       "--scenario-start", s.ingest.end.isoformat())
    fresh_start(root, s)

    say("dvc repro: train on the history window")
    sh(tool("dvc"), "repro")
    # The online store starts from the training snapshot (live state afterwards: not a stage).
    sh(sys.executable, "-m", "pipelines", "materialize")

    with background("prefect-server", [tool("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(PREFECT_PORT)],
                    prefect_env):
        wait("the Prefect server", lambda: httpx.get(f"{prefect_env['PREFECT_API_URL']}/health", timeout=2).status_code == 200, 120)

        say("deploy flow: gate the first model (floor only) and promote it")
        os.environ.update(prefect_env)
        from flows.deploy import deploy

        first = deploy(rollout_to_service=False)
        print(f"    {first['decision']['reason']}")
        first_tag = registry.champion_tag()

        with background("service", [sys.executable, "-m", "pipelines", "serve"], prefect_env), \
             background("flows", [sys.executable, "-m", "flows.serve"], prefect_env):
            url = s.deploy.service_url
            wait("the service", lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, 120)
            api = prefect_env["PREFECT_API_URL"]
            wait("the deployments", lambda: len(httpx.post(f"{api}/deployments/filter", json={}).json()) >= 4, 120)

            say(f"replay {REPLAY:,} drifted transactions through the service (compressed time)")
            drift_started = time.monotonic()
            tx, _ = simulate.generate(world)
            drifted = tx[tx[s.contract.timestamp] >= pd.Timestamp(world.scenario_start)].sort_values(s.contract.timestamp)
            drifted = drifted.head(REPLAY).copy()
            drifted[s.contract.timestamp] = drifted[s.contract.timestamp].dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
            records = json.loads(drifted.to_json(orient="records"))
            with httpx.Client(base_url=url, timeout=30) as client:
                for i in range(0, len(records), 200):
                    client.post("/score", json={"records": records[i:i + 200]}).raise_for_status()
            time.sleep(2 * s.serving.log_flush_seconds)

            def runs(flow: str) -> list[dict]:
                return httpx.post(f"{api}/flow_runs/filter", json={"flows": {"name": {"any_": [flow]}},
                                                                   "sort": "EXPECTED_START_TIME_DESC"}).json()

            say(f"drift checks, now (they also run on the schedule drift.cron); an alarm needs "
                f"{s.drift.persistence} consecutive drifted checks")
            deployment = next(d for d in httpx.post(f"{api}/deployments/filter", json={}).json() if d["name"] == "drift-check")
            for _ in range(s.drift.persistence):
                created = httpx.post(f"{api}/deployments/{deployment['id']}/create_flow_run", json={}).json()
                check = wait("the drift check", functools.partial(finished, runs, created["id"]), 300)
                print(f"    drift-check {check['state_type']}: {check['state']['message']}")
                if check["state_type"] == "FAILED":
                    break
            say("the Prefect server starts retraining (trigger: drift-check Failed)")
            done = wait("retraining", lambda: next((r for r in runs("retraining")
                                                   if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")), None), 900)
            print(f"    retraining {done['state_type']}")
            new_tag = registry.champion_tag()
            served = wait("the service to serve the new champion", lambda: (v := httpx.post(
                f"{url}/score", json={"records": records[-1:]}).json()[0]["model_version"]) == new_tag and v, 60)
            to_new_champion = time.monotonic() - drift_started
            retrained = settings()  # the moved window, before main() restores params.yaml

    say("summary")
    # Only days the retrained model did not train on (its own test split), for both models.
    since = pd.Timestamp(retrained.ingest.end) - pd.Timedelta(days=retrained.split.test_days)
    if first_tag is None or new_tag is None:
        raise RuntimeError("the registry has no champion: see logs/flows.log")
    before, after = quality_on_drifted_period([first_tag, new_tag], world, since)
    print(f"    on the drifted days neither model trained on ({world.scenario} from {world.scenario_start}; "
          f"scored from {since.date()}):")
    for key in ("roc_auc", "average_precision", "recall_at_alert_rate"):
        print(f"      {key:<22} before {before[key]:.4f}   after {after[key]:.4f}")
    print(f"    champion before: {first_tag}\n    champion after:  {new_tag} (the service answers with {served})")
    reports = sorted((root / s.drift.reports).glob("*/report.html"))
    print(f"    drift reports:   {', '.join(str(p.relative_to(root)) for p in reports) or 'none'}")
    print(f"    registry history: {root / s.paths.bentoml_home / 'registry/history.jsonl'}")
    print(f"    Prefect UI:      http://127.0.0.1:{PREFECT_PORT} (run `make orchestrate` to bring it back up)")
    print(f"    drifted traffic to new champion serving: {to_new_champion:.0f} s; the whole demo: "
          f"{time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
