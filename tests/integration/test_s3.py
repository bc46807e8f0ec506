"""S3 everywhere, against a real S3 endpoint (moto server on 127.0.0.1).

- The CI retrain-deploy steps (`make pull/train/gate/push`, as .github/workflows/retrain-deploy.yml
  runs them) with the source, the DVC remote and the model store on S3: a fresh clone pulls and
  gets the outputs bit for bit, `dvc repro` has nothing to do, and its gate sees the champion.
- The service logging predictions to S3 through an outage of the sink.
- The training flow when the source's S3 is down: retries with backoff, then fails naming the URL.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import yaml

from pipelines.io import storage
from pipelines.io.prediction_log import PART_GLOB, read_log
from tests.conftest import ROOT, SMALL_PARAMS, deep_update, eventually, make_repo, run, write_params
from tests.integration.conftest import start_service
from tests.integration.test_flows import flow_env, latest_flow_run, task_runs

if TYPE_CHECKING:
    from tests.integration.conftest import MotoServer, PrefectServer

pytestmark = pytest.mark.integration

ON_S3 = {"paths": {"source": "s3://lake/source", "model_remote": "s3://lake/model-store"}}
DVC_BUCKET = "fraud-pipelines-dvc"  # the s3 remote's bucket in the committed .dvc/config
OUTPUTS = [
    "data/raw",
    "data/features",
    "models",
    "metrics",
    "plots",
    "reports/validation/summary.json",
    "reports/package.json",
]
STAGES = ["ingest", "validate", "featurize", "train", "evaluate", "package"]


def ci_checkout(repo: Path) -> Path:
    """What a CI runner has after checkout + `make install`: the project's Makefile, ignores
    and DVC config, and the installed environment and tools (this checkout's, linked)."""
    for name in ("Makefile", ".gitignore", ".dvc/config"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy2(ROOT / name, repo / name)
    for name in (".venv", ".tools"):
        (repo / name).symlink_to(ROOT / name)
    return repo


def make(repo: Path, *args: str) -> str:
    # `-o install`: the linked environment is this checkout's. Installing through the link would
    # point its editable install at the temporary copy (every later process, a Dask worker
    # too, would import that copy) and re-download the Debian servers during the tests.
    out = run(["make", "--no-print-directory", "-o", "install", *args], repo)
    return out.stdout + out.stderr


def installed() -> dict[str, float]:
    """When this checkout's environment and tools were last installed, and where the
    environment's editable install points."""
    stamps = {p: (ROOT / p).stat().st_mtime for p in (".venv/.synced", ".tools/debian/.unpacked")}
    finder = next((ROOT / ".venv").glob("lib/python*/site-packages/__editable__*finder.py"))
    return {**stamps, "points here": float(str(ROOT / "pipelines") in finder.read_text())}


def ran(output: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in output]


def champion(repo: Path) -> str:
    return json.loads((repo / ".bentoml/registry/champion.json").read_text())["tag"]


def bento_models(repo: Path, tag: str) -> list[str]:
    out = run(
        ["bentoml", "get", tag, "-o", "json"], repo, env={"BENTOML_HOME": str(repo / ".bentoml")}
    ).stdout
    info = json.loads(out)
    return [m["tag"] for m in info["models"]] + [
        m["tag"] for svc in info["services"] for m in svc["models"]
    ]


def test_ci_steps_on_s3_a_fresh_clone_pulls_bit_for_bit_and_its_gate_sees_the_champion(
    s3: MotoServer, tmp_path: Path
) -> None:
    before = installed()
    assert before["points here"]
    for bucket in ("lake", DVC_BUCKET):
        s3.create_bucket(bucket)
    first = ci_checkout(make_repo(tmp_path / "first", deep_update(SMALL_PARAMS, ON_S3)))
    run(["python", "-m", "pipelines", "simulate"], first)  # the upstream writes the source to S3

    # First CI run: nothing to pull yet; train from the S3 source, gate, push.
    assert "0 model version(s)" in make(first, "pull", "DVC_REMOTE=s3")
    assert ran(make(first, "train")) == STAGES  # the source already exists: nothing simulated
    make(first, "gate")
    first_champion = champion(first)
    # The gate published the champion (archive, then pointer) to the model store's remote: the
    # one record every replica follows. `make push` adds the rest (the bento).
    published = storage.read_json("s3://lake/model-store/registry/champion.json")
    assert published["tag"] == first_champion
    assert storage.exists(
        f"s3://lake/model-store/models/{first_champion.replace(':', '/')}.bentomodel"
    )
    pushed = make(first, "push", "DVC_REMOTE=s3")
    assert "0 model version(s), 1 bento(s)" in pushed and first_champion in pushed
    run(["git", "add", "-A"], first)
    run(
        ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost", "commit", "-qm", "dvc.lock"],
        first,
    )
    assert "data/raw" not in run(["git", "ls-files"], first).stdout  # the data went to S3, not git

    # Second CI run on a fresh runner: a clone with an empty DVC cache and model store.
    second = tmp_path / "second"
    run(["git", "clone", "-q", str(first), str(second)], tmp_path)
    ci_checkout(second)
    assert not (second / "data/raw").exists() and not (second / ".bentoml").exists()
    make(second, "pull", "DVC_REMOTE=s3")
    assert champion(second) == first_champion
    assert ran(make(second, "train")) == []
    assert "up to date" in run(["dvc", "status"], second).stdout
    for out in OUTPUTS:
        files = (
            sorted(p.relative_to(first) for p in (first / out).rglob("*") if p.is_file())
            if (first / out).is_dir()
            else [Path(out)]
        )
        assert files, out
        for f in files:
            assert (second / f).read_bytes() == (first / f).read_bytes(), f
    assert "is already the champion" in make(second, "gate")  # nothing new: no decision

    # A params change is retrained and gated against the champion pulled from S3.
    params = yaml.safe_load((second / "params.yaml").read_text())
    params["train"]["lightgbm"]["learning_rate"] = 0.2
    write_params(second / "params.yaml", params)
    assert ran(make(second, "train")) == ["train", "evaluate", "package"]
    make(second, "gate")
    challenger = json.loads((second / "reports/package.json").read_text())
    history = (second / ".bentoml/registry/history.jsonl").read_text().splitlines()
    decision = json.loads(history[-1])
    assert decision["tag"] == challenger["model_tag"] and decision["event"] in (
        "promoted",
        "refused",
    )
    assert decision["evidence"]["champion_tag"] == first_champion  # not gated as a "first model"
    if (
        decision["event"] == "refused"
    ):  # the bento a deploy ships must follow the champion either way
        run(
            ["python", "-m", "pipelines", "promote", challenger["model_tag"]],
            second,
            env={"BENTOML_HOME": str(second / ".bentoml")},
        )
    assert champion(second) == challenger["model_tag"] != first_champion
    make(second, "bento")
    release = json.loads((second / "reports/release.json").read_text())
    assert release["model_tag"] == champion(second)
    # The package stage built its bento before the gate, around the old champion: a deploy
    # must ship the bento built after it.
    assert bento_models(second, release["bento_tag"]) == [champion(second)]
    assert bento_models(second, challenger["bento_tag"]) == [first_champion]
    make(second, "push", "DVC_REMOTE=s3")
    remote = (
        storage.read_bytes("s3://lake/model-store/registry/history.jsonl").decode().splitlines()
    )
    assert remote[: len(history)] == history  # every record of both runs, in order
    assert json.loads(storage.read_bytes("s3://lake/model-store/registry/champion.json"))[
        "tag"
    ] == champion(second)
    assert installed() == before  # the CI steps ran on the installed environment, untouched


def test_the_service_logs_to_s3_and_loses_nothing_through_an_outage(
    served_repo: Path, s3: MotoServer, tmp_path: Path
) -> None:
    s3.create_bucket("logs")
    url = "s3://logs/predictions"
    params = yaml.safe_load((served_repo / "params.yaml").read_text())
    spool = tmp_path / "spool"
    # This params file lives outside the repo: its one relative location (the feature store,
    # shared with the other service tests) made absolute.
    store = str(served_repo / params["serving"]["feature_store"])
    write_params(
        tmp_path / "params.yaml",
        deep_update(
            params,
            {"serving": {"prediction_log": url, "spool_dir": str(spool), "feature_store": store}},
        ),
    )
    service = start_service(
        served_repo,
        env={"PIPELINES_PARAMS": str(tmp_path / "params.yaml"), "AWS_MAX_ATTEMPTS": "1"},
    )

    def score(first: int, n: int) -> list[str]:
        ids = []
        for i in range(first, first + n):
            rec = {
                "transaction_id": f"s3-{i}",
                "ts": f"2026-01-22T10:{i % 60:02d}:00",
                "card_id": f"s3-card-{i % 7}",
                "amount": 10.0 + i,
                "merchant_category": "grocery",
                "merchant_country": "US",
                "channel": "pos",
            }
            resp = service.score([rec])
            assert resp.status_code == 200, resp.text
            ids.append(rec["transaction_id"])
        return ids

    def logged() -> set[str]:
        df = read_log(url)
        return set(df["transaction_id"]) if len(df) else set()

    try:
        before = score(0, 20)
        eventually(lambda: set(before) <= logged(), timeout=30)

        s3.stop()
        during = score(20, 40)  # the sink is down: the service keeps answering
        eventually(lambda: len(list(spool.glob(PART_GLOB))) > 0, timeout=30)
        pending = httpx.get(f"{service.url}/metrics", timeout=5).text
        assert "fraud_prediction_log_pending_rows" in pending

        s3.start()  # moto comes back empty: what it held before is gone with it
        s3.create_bucket("logs")
        after = score(60, 10)
        eventually(lambda: set(during + after) <= logged(), timeout=60)
        eventually(lambda: not list(spool.glob(PART_GLOB)), timeout=30)
    finally:
        assert service.stop() == 0
    log = read_log(url)
    mine = log[log["transaction_id"].str.startswith("s3-")]
    assert sorted(mine["transaction_id"]) == sorted(during + after)  # each exactly once
    assert mine["probability"].between(0, 1).all()


def test_with_s3_down_the_training_flow_retries_with_backoff_then_fails_naming_the_url(
    s3: MotoServer, prefect_server: PrefectServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AWS_MAX_ATTEMPTS", "1"
    )  # fail fast per attempt; the flow's retries are the test
    s3.create_bucket("lake")
    repo = make_repo(tmp_path / "repo", deep_update(SMALL_PARAMS, ON_S3))
    run(["python", "-m", "pipelines", "simulate"], repo)
    s3.stop()

    started = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-c", "from flows.training import training; training()"],
        cwd=repo,
        env=flow_env(prefect_server, repo),
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.monotonic() - started
    assert res.returncode != 0
    flow_run = latest_flow_run(prefect_server, "training")
    assert flow_run["state_type"] == "FAILED"
    assert "s3://lake/source" in flow_run["state"]["message"], flow_run["state"]["message"]
    ingest = task_runs(prefect_server, flow_run["id"])["dvc repro -s ingest"]
    assert ingest["run_count"] == 3 and ingest["state_type"] == "FAILED"  # two retries
    assert elapsed > 2 + 10  # the retry delays (backoff) were waited out
    assert not (repo / "data/raw").exists()  # nothing partial left behind
