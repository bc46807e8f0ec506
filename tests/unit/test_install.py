"""Every tool the project runs comes from its own install, found without the caller's PATH."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pipelines import runtime

ROOT = Path(__file__).resolve().parents[2]
# What a fresh machine has on PATH: system directories only (no ~/.local, no virtualenv).
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# Executables the project starts as subprocesses (the CLI, the flows, the demo, the tests).
TOOLS = ("dvc", "bentoml", "prefect", "uv", "actionlint")


def isolated(home: Path, **extra: str) -> dict[str, str]:
    """A fresh machine's environment: empty HOME, system PATH, telemetry off."""
    return {
        "HOME": str(home),
        "PATH": SYSTEM_PATH,
        "LANG": "C.UTF-8",
        **runtime.TELEMETRY_OFF,
        **extra,
    }


@pytest.mark.parametrize("name", TOOLS)
def test_each_tool_is_installed_by_the_lock_file(name: str) -> None:
    path = Path(runtime.tool(name))
    assert path.parent == runtime.bin_dir()
    assert path.is_file()


def test_a_missing_tool_is_named_with_the_fix() -> None:
    with pytest.raises(
        FileNotFoundError, match=r"no-such-tool is not installed in .*: run `make install`"
    ):
        runtime.tool("no-such-tool")


def test_the_makefile_bootstraps_the_uv_the_lock_file_pins() -> None:
    makefile = re.search(r"^UV_VERSION := (\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert makefile is not None
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"uv=={makefile.group(1)}" in deps


def test_bootstrap_puts_the_project_tools_first_whatever_the_callers_path(tmp_path: Path) -> None:
    code = (
        "from pipelines.runtime import bootstrap; import shutil; bootstrap(); "
        "print(*(shutil.which(t) for t in ('dvc', 'bentoml', 'prefect', 'python')), sep='\\n')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=isolated(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [str(runtime.bin_dir() / t) for t in ("dvc", "bentoml", "prefect", "python")]


@pytest.mark.slow
def test_a_bento_builds_on_a_machine_with_nothing_but_the_project_install(tmp_path: Path) -> None:
    # BentoML's build needs uv: with neither uv on PATH nor the package installed it tries
    # `pip install uv` into the virtualenv, which has no pip ("Failed to install uv"). An empty
    # PATH: whatever this machine has installed by hand cannot help.
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    code = f"from pathlib import Path; from pipelines.io.registry import build_bento; print(build_bento(Path({str(ROOT)!r})))"
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=isolated(tmp_path, PATH=str(empty), BENTOML_HOME=str(tmp_path / "bentoml")),
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().startswith("fraud_service:")
    assert list((tmp_path / "bentoml" / "bentos" / "fraud_service").iterdir())


def test_the_bento_pins_the_lock_files_versions() -> None:
    """The bento installs without network access to a resolver: its pins must be the lock's."""
    import yaml

    locked = {
        p["name"]: p["version"]
        for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]
        if "version" in p
    }
    pins = yaml.safe_load((ROOT / "bentofile.yaml").read_text())["python"]["packages"]
    wrong = {}
    for pin in pins:
        name, _, version = pin.partition("==")
        if locked.get(name.lower().replace("_", "-")) != version:
            wrong[name] = (version, locked.get(name))
    assert not wrong, f"bentofile.yaml pin -> (pinned, locked): {wrong}"


def test_the_serving_peers_predict_with_the_projects_lightgbm_and_numpy() -> None:
    """bench/serving.py's peers (their own lock: MLServer needs an older FastAPI) serve the
    service's booster: the same LightGBM and NumPy, so they load it and compute the same."""

    def locked(lock: Path) -> dict[str, str]:
        return {
            p["name"]: p["version"]
            for p in tomllib.loads(lock.read_text())["package"]
            if "version" in p
        }

    ours, peers = locked(ROOT / "uv.lock"), locked(ROOT / "bench" / "peers" / "uv.lock")
    assert {n: peers.get(n) for n in ("lightgbm", "numpy")} == {
        n: ours[n] for n in ("lightgbm", "numpy")
    }
    assert "mlserver" in peers and "mlserver" not in ours
