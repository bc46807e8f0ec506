"""The layering the README draws holds in the imports (import-linter's contracts in pyproject.toml)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pipelines import runtime

ROOT = Path(__file__).resolve().parents[2]


def test_imports_follow_the_architecture() -> None:
    res = subprocess.run(
        [runtime.tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def test_a_broken_rule_is_caught(tmp_path: Path) -> None:
    """The check can fail: a copy of the package whose core imports Prefect breaks a contract."""
    for name in ("pipelines", "flows"):
        subprocess.run(["cp", "-r", str(ROOT / name), str(tmp_path / name)], check=True)
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    gate = tmp_path / "pipelines/core/gate.py"
    gate.write_text(gate.read_text() + "\nimport prefect  # noqa\n")
    res = subprocess.run(
        [runtime.tool("lint-imports"), "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": str(runtime.bin_dir()), "PYTHONPATH": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert res.returncode != 0
    assert "core is pure" in res.stdout and "BROKEN" in res.stdout
