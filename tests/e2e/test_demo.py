"""`make demo` (python -m pipelines demo) works on a workspace of its own: run twice in a clone
whose source, champion, logs and reports exist, it leaves all of them byte-identical and the git
status clean, and it still shows the whole loop each time."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, make_repo, run
from tests.e2e.test_loop import LOOP_PARAMS

pytestmark = pytest.mark.e2e
# The loop's small world; the demo lands `ingest.window` of history first, then the drifted rest.
DEMO_PARAMS = {**LOOP_PARAMS, "ingest": {"start": None, "end": None, "window": "28 days"}}


def fingerprint(root: Path, *parts: str) -> dict[str, str]:
    """SHA-256 of every file under the given parts of `root`."""
    files = [
        p
        for part in parts
        for p in ([root / part] if (root / part).is_file() else sorted((root / part).rglob("*")))
        if p.is_file()
    ]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_the_demo_never_touches_the_project_it_runs_in(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", DEMO_PARAMS)
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    # The user's own state: a source with data, a champion and its history, a prediction log, reports.
    run(["python", "-m", "pipelines", "simulate", "--days", "5", "--scenario", "none"], repo)
    registry = repo / ".bentoml" / "registry"
    registry.mkdir(parents=True)
    (registry / "champion.json").write_text(
        json.dumps({"tag": "fraud-model:users-own", "since": "2026-01-01"})
    )
    (registry / "history.jsonl").write_text('{"at": "2026-01-01", "event": "promoted"}\n')
    for name, content in (
        ("data/predictions/date=2026-01-01/part-x.parquet", b"PAR1 user log"),
        ("reports/drift/state.json", b'{"consecutive": 1}'),
        ("logs/service.log", b"user log\n"),
    ):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(content)
    run(["git", "add", "-A"], repo)
    run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "the user's project"],
        repo,
    )
    before = fingerprint(repo, "data", ".bentoml", "reports", "logs", "params.yaml", "dvc.yaml")
    assert len([k for k in before if k.startswith("data/source/")]) >= 10

    for attempt in (1, 2):
        out = run(
            ["python", "-m", "pipelines", "demo"], repo, env={"DEMO_REPLAY_RECORDS": "3000"}
        ).stdout
        assert "champion after:" in out and "your project was not touched" in out, out[-3000:]
        old, new = (
            line.split(":", 1)[1].split()[0]
            for line in out.splitlines()
            if line.strip().startswith(("champion before:", "champion after:"))
        )
        assert old != new, f"run {attempt}: no new champion\n{out[-3000:]}"
        assert (
            fingerprint(repo, "data", ".bentoml", "reports", "logs", "params.yaml", "dvc.yaml")
            == before
        )
        assert run(["git", "status", "--porcelain"], repo).stdout == ""
