"""Prefect flows against a real `prefect server start`; flows run in their own processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import load_settings
from pipelines.core.features import FeatureSpec
from pipelines.core.model import fit
from pipelines.io import registry, storage
from tests.conftest import SMALL_PARAMS, eventually, make_repo, run
from tests.integration.conftest import PrefectServer, start_service
from tests.integration.test_service import record

pytestmark = pytest.mark.integration


def flow_env(server: PrefectServer, repo: Path) -> dict[str, str]:
    return {
        **os.environ,
        **server.env,
        "PIPELINES_PARAMS": str(repo / "params.yaml"),
        "BENTOML_HOME": str(repo / ".bentoml"),
    }


def api(server: PrefectServer, path: str, body: dict) -> list[dict]:
    return server.call("POST", path, json=body).json()


def latest_flow_run(server: PrefectServer, flow_name: str) -> dict:
    runs = api(
        server,
        "/flow_runs/filter",
        {"flows": {"name": {"any_": [flow_name]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": 1},
    )
    assert runs, f"no {flow_name} flow run on the server"
    return runs[0]


def task_runs(server: PrefectServer, flow_run_id: str) -> dict[str, dict]:
    runs = api(server, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
    return {r["name"]: r for r in runs}


def test_a_transient_stage_failure_is_retried_and_the_flow_completes(
    prefect_server: PrefectServer, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo", SMALL_PARAMS)
    # The source appears only after the first ingest attempt failed (an upstream still writing).
    run(["python", "-m", "pipelines", "simulate", "--out", str(tmp_path / "staging")], repo)
    code = "from flows.training import training; training()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=repo,
        env=flow_env(prefect_server, repo),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen, moved = [], False
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if not moved and "Retry 1/2" in line:
            shutil.move(tmp_path / "staging", repo / "data/source")
            moved = True
    assert proc.wait(timeout=600) == 0, "".join(seen[-40:])
    assert moved, "ingest never failed, so nothing was retried:\n" + "".join(seen[-40:])
    flow_run = latest_flow_run(prefect_server, "training")
    assert flow_run["state_type"] == "COMPLETED"
    tasks = task_runs(prefect_server, flow_run["id"])
    assert tasks["dvc repro -s ingest"]["run_count"] == 2
    assert all(
        tasks[f"dvc repro -s {s}"]["state_type"] == "COMPLETED"
        for s in ("ingest", "validate", "featurize", "train", "evaluate", "package")
    )
    artifacts = api(
        prefect_server,
        "/artifacts/filter",
        {"artifacts": {"key": {"any_": ["evaluation-metrics"]}}},
    )
    assert artifacts and "roc_auc" in str(artifacts[0]["data"])


def test_a_permanent_failure_fails_the_flow_with_the_stage_message(
    prefect_server: PrefectServer, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo", SMALL_PARAMS)
    run(
        [
            "python",
            "-m",
            "pipelines",
            "simulate",
            "--scenario",
            "corrupt_nulls",
            "--scenario-start",
            "2026-01-10",
        ],
        repo,
    )
    res = subprocess.run(
        [sys.executable, "-c", "from flows.training import training; training()"],
        cwd=repo,
        env=flow_env(prefect_server, repo),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "stage 'validate' failed (exit 65)" in out and "amount" in out
    flow_run = latest_flow_run(prefect_server, "training")
    assert flow_run["state_type"] == "FAILED"
    tasks = task_runs(prefect_server, flow_run["id"])
    assert tasks["dvc repro -s validate"]["run_count"] == 1  # the gate said no: not retried
    assert "dvc repro -s featurize" not in tasks


def test_the_gate_refuses_a_worse_challenger_and_the_champion_keeps_serving(
    prefect_server: PrefectServer, served_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENTOML_HOME", str(served_repo / ".bentoml"))
    s = load_settings(served_repo / "params.yaml")
    champion = registry.champion_tag()
    assert champion is not None
    train = storage.read_parquet(str(served_repo / s.paths.features / "train.parquet"))
    spec = FeatureSpec.from_settings(s)
    shuffled = np.random.default_rng(0).permutation(train[s.contract.target].to_numpy(dtype=int))
    worse = registry.save(
        fit("lightgbm", train, shuffled, spec, s.train.lightgbm, 1), {"purpose": "gate test"}
    )

    service = start_service(served_repo)
    try:
        res = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from flows.deploy import deploy; print(deploy(challenger={worse!r}))",
            ],
            cwd=served_repo,
            env=flow_env(prefect_server, served_repo),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert registry.champion_tag() == champion
        refusal = [
            h for h in registry.history() if h.get("event") == "refused" and h.get("tag") == worse
        ]
        assert refusal, registry.history()[-3:]
        assert (
            "below the floor" in refusal[-1]["reason"] or "does not beat" in refusal[-1]["reason"]
        )
        time.sleep(2 * s.serving.reload_seconds)
        resp = service.score([record(11)])
        assert resp.status_code == 200 and resp.json()[0]["model_version"] == champion
    finally:
        service.stop()
    assert latest_flow_run(prefect_server, "deploy")["state_type"] == "COMPLETED"
    assert worse in registry.versions()  # refused, yet kept in the store for the record


class Receiver:
    """A webhook endpoint on 127.0.0.1 that keeps every body it is sent."""

    def __init__(self) -> None:
        import http.server
        import threading

        bodies = self.bodies = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                bodies.append(self.rfile.read(int(self.headers["content-length"])).decode())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_a_failed_run_and_a_refused_challenger_notify_through_the_block(
    prefect_server: PrefectServer, served_repo: Path
) -> None:
    receiver = Receiver()
    env = flow_env(prefect_server, served_repo)
    s = load_settings(served_repo / "params.yaml")
    try:
        setup = (
            "from prefect.blocks.notifications import CustomWebhookNotificationBlock as W; "
            f"W(name='hook', url={receiver.url!r}, json_data={{'subject': '{{{{subject}}}}', 'body': '{{{{body}}}}'}})"
            ".save('test-hook', overwrite=True); "
            "from flows.notify import ensure; print(ensure('custom-webhook/test-hook'))"
        )
        assert (
            "notify on a failed flow run"
            in run([sys.executable, "-c", setup], served_repo, env=env).stdout
        )

        failed = subprocess.run(
            [
                sys.executable,
                "-m",
                "flows.deploy",
                "--challenger",
                "fraud-model:missing",
                "--no-rollout",
            ],
            cwd=served_repo,
            env=env,
            capture_output=True,
            text=True,
        )
        assert failed.returncode != 0
        eventually(
            lambda: any(
                "ended Failed" in b and "not in the model store" in b for b in receiver.bodies
            ),
            60,
        )

        shuffle = (
            "import numpy as np; from pipelines.config import load_settings; "
            "from pipelines.core.features import FeatureSpec; from pipelines.core.model import fit; "
            "from pipelines.io import registry, storage; "
            f"s = load_settings({str(served_repo / 'params.yaml')!r}); "
            f"t = storage.read_parquet({str(served_repo / s.paths.features / 'train.parquet')!r}); "
            "y = np.random.default_rng(1).permutation(t[s.contract.target].to_numpy(dtype=int)); "
            "print(registry.save(fit('lightgbm', t, y, FeatureSpec.from_settings(s), s.train.lightgbm, 2), {}))"
        )
        worse = run([sys.executable, "-c", shuffle], served_repo, env=env).stdout.strip()
        run(
            [sys.executable, "-m", "flows.deploy", "--challenger", worse, "--no-rollout"],
            served_repo,
            env=env,
        )
        eventually(lambda: any(f"The gate refused {worse}" in b for b in receiver.bodies), 60)
        assert (
            len([b for b in receiver.bodies if "ended Failed" in b]) == 1
        )  # a refusal is no failure
    finally:
        receiver.close()
        run(
            [
                sys.executable,
                "-c",
                "from prefect.automations import Automation; "
                "[Automation.read(name=n).delete() for n in ('pipelines: notify on a failed flow run', "
                "'pipelines: notify on a refused challenger')]",
            ],
            served_repo,
            env=env,
        )
