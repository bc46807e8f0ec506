"""The GitHub workflows pass actionlint, and CI runs exactly the README's test command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github/workflows").glob("*.yml"))


def test_workflows_pass_actionlint() -> None:
    actionlint = Path(sys.executable).parent / "actionlint"
    res = subprocess.run(
        [str(actionlint), "-no-color", *map(str, WORKFLOWS)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(WORKFLOWS) >= 2


def test_ci_runs_the_readme_test_command() -> None:
    ci = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    steps = [s.get("run", "") for job in ci["jobs"].values() for s in job["steps"]]
    assert "make test" in steps
    assert "make test" in (ROOT / ".ci/run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()


def test_retrain_deploy_steps_are_make_targets_that_exist() -> None:
    wf = yaml.safe_load((ROOT / ".github/workflows/retrain-deploy.yml").read_text())
    makefile = (ROOT / "Makefile").read_text()
    runs = [s["run"] for job in wf["jobs"].values() for s in job["steps"] if "run" in s]
    targets = {
        line.split()[1]
        for run in runs
        for line in run.splitlines()
        if line.strip().startswith("make ")
    }
    assert targets >= {"install", "pull", "train", "gate", "bento", "push", "rollout"}
    for target in targets:
        assert f"\n{target}:" in makefile, target
    assert wf["concurrency"]["group"] and wf["concurrency"]["cancel-in-progress"] is False
