"""Shared test plumbing: telemetry off, the project's venv tools on PATH, a tiny repo copy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

TELEMETRY_OFF = {
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "BENTOML_DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
}
os.environ.update(TELEMETRY_OFF)
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

# Small enough for seconds, large enough that the model has something to learn.
SMALL_PARAMS = {
    "simulate": {"cards": 400, "days": 35, "tx_per_day": 1200, "start": "2026-01-01"},
    "ingest": {"start": "2026-01-01", "end": "2026-02-05"},
    "split": {"test": "10 days"},
    "train": {"lightgbm": {"n_estimators": 60}},
}


@pytest.fixture(autouse=True)
def _environment_restored() -> Iterator[None]:
    """Every test leaves the process environment as it found it: the CLI run in-process
    (`runtime.bootstrap`) sets PIPELINES_PARAMS, which would send a later test's subprocesses
    (`python -m pipelines simulate` in its own repo) to this checkout's params and data."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def deep_update(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = (
            deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def run(
    cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    res = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if check and res.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
        )
    return res


def by_id(df: pd.DataFrame, column: str = "transaction_id") -> pd.DataFrame:
    return df.sort_values(column, ignore_index=True)


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def write_params(path: Path, params: dict) -> None:
    """DVC's templating rejects YAML dates: write every date as a quoted string."""
    path.write_text(yaml.safe_dump(json.loads(json.dumps(params, default=str)), sort_keys=False))


def make_repo(dest: Path, params: dict) -> Path:
    """A throwaway clone of the project's pipeline files, with its own git and DVC."""
    for name in ("pipelines", "flows", "monitoring", "dvc.yaml", ".dvcignore", "bentofile.yaml"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / name)
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    write_params(dest / "params.yaml", deep_update(base, params))
    run(["git", "init", "-q"], dest)
    run(["dvc", "init", "-q"], dest)
    run(["dvc", "config", "core.analytics", "false"], dest)
    return dest


def train_for_serving(
    repo: Path, reason: str = "test setup", simulate: list[str] | None = None
) -> Path:
    """What a service needs in a repo copy: the source simulated (with `simulate`'s flags), the
    pipeline run, the model promoted and the online store seeded from the training snapshot."""
    for cmd in (
        ["python", "-m", "pipelines", "simulate", *(simulate or [])],
        ["dvc", "repro"],
        ["python", "-m", "pipelines", "promote", "latest", "--reason", reason],
        ["python", "-m", "pipelines", "materialize"],
    ):
        run(cmd, repo)
    return repo


@pytest.fixture
def small_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", SMALL_PARAMS)
