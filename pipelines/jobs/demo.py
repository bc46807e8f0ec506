"""The main job, from nothing (`make demo`, `python -m pipelines demo`), in a workspace of its own.

1. copy the project's pipeline (dvc.yaml, params.yaml, bentofile.yaml, the code) into `.demo/`
   with every location inside it; the upstream lands 90 days of history there (a world of 120
   days in which the fraud mechanism changes after day 90: concept shift);
2. `dvc repro` (rolling window: the 90 days there are), and the deploy flow gates and promotes
   the first model;
3. start the Prefect server, the flow runner (`flows.serve`) and the BentoML service;
4. replay the next days through the service in time order (compressed time), and the upstream
   lands them with their labels;
5. run the drift check now (it is also on a cron schedule): it confirms drift, and the Prefect
   server starts the retraining flow on that event; `dvc repro` sees the new days and trains on
   the newest 90, the gate compares, the service swaps to the new champion;
6. print before/after metrics on the drifted period, the versions, the reports and the UI URL.

The demo never touches the checkout it runs from: its source, DVC cache, model store, champion,
prediction log, feature store, Prefect database and the retraining's params edits all live in
the workspace (git-ignored), which each run starts afresh. Every server binds 127.0.0.1 on a free
port and is stopped at the end (Ctrl-C included).
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
import yaml

from pipelines.config import Settings, Simulate
from pipelines.core import metrics
from pipelines.core.dataset import join_labels
from pipelines.core.features import FeatureSpec, build_features
from pipelines.io import manifest, prefect_api, registry
from pipelines.runtime import bootstrap, tool
from pipelines.sources import simulator

WORKSPACE = ".demo"
# What the workspace copies from the checkout: the pipeline definition and the code it runs.
PROJECT_FILES = ("dvc.yaml", "params.yaml", "bentofile.yaml", ".dvcignore", "pipelines", "flows")
REPLAY = int(os.environ.get("DEMO_REPLAY_RECORDS", "6000"))


def say(msg: str) -> None:
    """A step's headline on stdout."""
    print(f"\n==> {msg}", flush=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """Poll `check` every second until it returns something truthy; TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if value := check():
                return value
        time.sleep(1)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def workspace(root: Path, prefect_port: int, service_port: int) -> Path:
    """A fresh copy of the project's pipeline under `root/.demo`, every location inside it: its
    own source, caches, stores and logs. Returns its directory."""
    ws = root / WORKSPACE
    shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir()
    for name in PROJECT_FILES:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, ws / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, ws / name)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    defaults = Settings()  # the locations as the project ships them, all relative
    params["paths"] = defaults.paths.model_dump()
    params["serving"].update(
        port=service_port,
        feature_store=defaults.serving.feature_store,
        prediction_log=defaults.serving.prediction_log,
        spool_dir=defaults.serving.spool_dir,
    )
    params["deploy"]["service_url"] = f"http://127.0.0.1:{service_port}"
    params["drift"]["reports"] = defaults.drift.reports
    # DVC's templating wants plain strings, not YAML dates.
    (ws / "params.yaml").write_text(
        yaml.safe_dump(json.loads(json.dumps(params, default=str)), sort_keys=False)
    )
    for cmd in (
        ["git", "init", "-q"],
        [tool("dvc"), "init", "-q"],
        [tool("dvc"), "config", "core.analytics", "false"],
    ):
        subprocess.run(cmd, cwd=ws, check=True, capture_output=True)
    (ws / "logs").mkdir()
    return ws


@contextlib.contextmanager
def background(
    ws: Path, name: str, cmd: list[str], env: dict[str, str]
) -> Iterator[subprocess.Popen]:
    """Run `cmd` in the workspace with its output in logs/<name>.log; SIGTERM (then SIGKILL) at exit."""
    log = ws / "logs" / f"{name}.log"
    proc = subprocess.Popen(
        cmd,
        cwd=ws,
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    print(f"    {name}: pid {proc.pid}, log {log}")
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def quality_on_drifted_period(
    s: Settings, tags: list[str], world: Simulate, since: pd.Timestamp
) -> list[dict]:
    """Each model on the same labelled drifted days from `since` (features from the full
    history, built once)."""
    tx, labels = simulator.generate(world)
    raw = join_labels(tx, labels, s.contract)
    feats = build_features(raw, FeatureSpec.from_settings(s))
    drifted = (
        raw[s.contract.timestamp] >= max(since, pd.Timestamp(world.scenario_start))
    ).to_numpy()
    y = raw[s.contract.target].to_numpy(dtype=float)[drifted]
    known = ~np.isnan(y)
    X, labelled = feats[drifted][known], y[known].astype(int)
    return [
        metrics.summary(labelled, registry.load(tag).predict_proba(X), s.evaluate.alert_rate)
        for tag in tags
    ]


def main(project: Settings) -> None:
    """Run the whole loop in a fresh workspace under the project's root (see the module docstring)."""
    start = time.monotonic()
    prefect_port, service_port = free_port(), free_port()
    ws = workspace(project.root, prefect_port, service_port)
    os.environ["BENTOML_HOME"] = str(
        ws / ".bentoml"
    )  # the demo's own model store, not the project's
    s = bootstrap(ws / "params.yaml")
    api = f"http://127.0.0.1:{prefect_port}/api"
    env = {
        "PREFECT_API_URL": api,
        "PREFECT_HOME": str(ws / ".prefect"),
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "PIPELINES_PARAMS": str(ws / "params.yaml"),
        "BENTOML_HOME": str(ws / ".bentoml"),
    }

    def sh(*cmd: str) -> None:
        subprocess.run(cmd, cwd=ws, check=True, env={**os.environ, **env})

    # The world: the params' simulation, the fraud mechanism changing after `ingest.window` of history.
    shift = (pd.Timestamp(s.simulate.start) + s.ingest.window.offset).date()
    world = s.simulate.model_copy(update={"scenario": "concept_shift", "scenario_start": shift})
    scenario = ["--scenario", "concept_shift", "--scenario-start", shift.isoformat()]
    say(
        f"workspace {ws}: the upstream lands the history until {shift} (the fraud mechanism changes then)"
    )
    sh(sys.executable, "-m", "pipelines", "simulate", *scenario, "--until", shift.isoformat())

    say("dvc repro: train on the history window")
    sh(tool("dvc"), "repro")
    # The online store starts from the training snapshot (live state afterwards: not a stage).
    sh(sys.executable, "-m", "pipelines", "materialize")

    with background(
        ws,
        "prefect-server",
        [tool("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
        env,
    ):
        wait(
            "the Prefect server",
            lambda: httpx.get(f"{api}/health", timeout=2).status_code == 200,
            180,
        )

        say("deploy flow: gate the first model (floor only) and promote it")
        sh(sys.executable, "-m", "flows.deploy", "--no-rollout")
        first_tag = registry.champion_tag()

        with (
            background(ws, "service", [sys.executable, "-m", "pipelines", "serve"], env),
            background(ws, "flows", [sys.executable, "-m", "flows.serve"], env),
        ):
            url = f"http://127.0.0.1:{service_port}"
            wait(
                "the service", lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, 120
            )
            wait(
                "the deployments",
                lambda: (
                    len(prefect_api.call(api, "POST", "/deployments/filter", json={}).json()) >= 4
                ),
                120,
            )

            say(f"replay {REPLAY:,} drifted transactions through the service (compressed time)")
            drift_started = time.monotonic()
            tx, _ = simulator.generate(world)
            drifted = tx[
                tx[s.contract.timestamp] >= pd.Timestamp(world.scenario_start)
            ].sort_values(s.contract.timestamp)
            drifted = drifted.head(REPLAY).copy()
            drifted[s.contract.timestamp] = drifted[s.contract.timestamp].dt.strftime(
                "%Y-%m-%dT%H:%M:%S.%f"
            )
            records = json.loads(drifted.to_json(orient="records"))
            with httpx.Client(base_url=url, timeout=30) as client:
                for i in range(0, len(records), 200):
                    client.post("/score", json={"records": records[i : i + 200]}).raise_for_status()
            say("the upstream lands the new days and the labels that have arrived")
            sh(sys.executable, "-m", "pipelines", "simulate", *scenario)
            time.sleep(2 * s.serving.log_flush_seconds)

            def runs(flow: str) -> list[dict]:
                return prefect_api.call(
                    api,
                    "POST",
                    "/flow_runs/filter",
                    json={"flows": {"name": {"any_": [flow]}}, "sort": "EXPECTED_START_TIME_DESC"},
                ).json()

            def finished(run_id: str) -> dict | None:
                return next(
                    (
                        r
                        for r in runs("drift-check")
                        if r["id"] == run_id and r["state"]["type"] in ("FAILED", "COMPLETED")
                    ),
                    None,
                )

            say(
                f"drift checks, now (they also run on the schedule drift.cron); an alarm needs "
                f"{s.drift.persistence} consecutive drifted checks"
            )
            deployment = next(
                d
                for d in prefect_api.call(api, "POST", "/deployments/filter", json={}).json()
                if d["name"] == "drift-check"
            )
            for _ in range(s.drift.persistence):
                created = prefect_api.call(
                    api, "POST", f"/deployments/{deployment['id']}/create_flow_run", json={}
                ).json()
                check = wait("the drift check", functools.partial(finished, created["id"]), 300)
                print(f"    drift-check {check['state']['name']}: {check['state']['message']}")
                if check["state"]["type"] == "FAILED":
                    break
            say("the Prefect server starts retraining (trigger: drift confirmed)")
            done = wait(
                "retraining",
                lambda: next(
                    (
                        r
                        for r in runs("retraining")
                        if r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED")
                    ),
                    None,
                ),
                900,
            )
            print(f"    retraining {done['state']['name']}")
            new_tag = registry.champion_tag()
            served = wait(
                "the service to serve the new champion",
                lambda: (
                    (
                        v := httpx.post(f"{url}/score", json={"records": records[-1:]}).json()[0][
                            "model_version"
                        ]
                    )
                    == new_tag
                    and v
                ),
                60,
            )
            to_new_champion = time.monotonic() - drift_started
            retrained_end = pd.Timestamp(manifest.read(s)["end"])  # the retraining's window

    say("summary")
    # Only days the retrained model did not train on (its own test split), for both models.
    since = s.split.test.before(retrained_end)
    if first_tag is None or new_tag is None:
        raise RuntimeError(f"the registry has no champion: see {ws / 'logs' / 'flows.log'}")
    before, after = quality_on_drifted_period(s, [first_tag, new_tag], world, since)
    print(
        f"    on the drifted days neither model trained on ({world.scenario} from {world.scenario_start}; "
        f"scored from {since.date()}):"
    )
    for key in ("roc_auc", "average_precision", "recall_at_alert_rate"):
        print(f"      {key:<22} before {before[key]:.4f}   after {after[key]:.4f}")
    print(
        f"    champion before: {first_tag}\n    champion after:  {new_tag} (the service answers with {served})"
    )
    reports = sorted(Path(s.drift.reports).glob("*/report.html"))
    print(f"    drift reports:   {', '.join(map(str, reports)) or 'none'}")
    print(f"    registry history: {registry.registry_dir() / 'history.jsonl'}")
    print(
        f"    workspace:       {ws} (logs/, reports/, the model store; your project was not touched)"
    )
    print(
        f"    drifted traffic to new champion serving: {to_new_champion:.0f} s; the whole demo: "
        f"{time.monotonic() - start:.0f} s"
    )
