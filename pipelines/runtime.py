"""How a process of this project starts: one params file, one root, the project's own tools.

Every entry point (the CLI, the Prefect flows, the BentoML service) calls `bootstrap` once; nothing
else reads the environment for these. It settles:

- **which params file**: an explicit path, else `$PIPELINES_PARAMS`, else `./params.yaml`. It is
  made absolute and exported, so every child process (DVC's stage commands, a flow run, a served
  bento) reads the same file; `$PIPELINES_OVERRIDES` (a JSON object) is merged over it, which is
  how a deployment changes a few keys.
- **one rule for relative locations**: they are relative to the params file's directory, the
  project root, as DVC resolves the paths in `dvc.yaml`. The settings returned hold them absolute
  (`Settings.located`), whatever the working directory; `Settings.portable` gives the written form
  back for what is recorded in versioned outputs.
- **BENTOML_HOME**: `paths.bentoml_home` unless the environment already sets it.
- **the project's tools**: the virtualenv's bin directory goes first on PATH, so `dvc`, `bentoml`,
  `prefect`, `uv` and the `python` in DVC's stage commands are the lock file's, never whatever the
  caller's PATH holds (`tool` names one for a subprocess).
- **telemetry off**, for every library, as defaults a caller cannot forget.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipelines.config import DEFAULT_PARAMS, OVERRIDES_ENV, PARAMS_ENV, Settings, load_settings
from pipelines.core.families import portable

TELEMETRY_OFF = {
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "BENTOML_DO_NOT_TRACK": "true",  # BentoML wants the string "true"
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
}


def params_file(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The params file this process uses, absolute: `explicit`, `$PIPELINES_PARAMS` or ./params.yaml."""
    return Path(explicit or os.environ.get(PARAMS_ENV) or DEFAULT_PARAMS).absolute()


def bootstrap(explicit: str | os.PathLike[str] | None = None) -> Settings:
    """Load the settings with their locations made absolute, and set up the process environment.

    Raises `ConfigError` (a ValueError) naming the problem when the params file is missing or invalid.
    """
    path = params_file(explicit)
    settings = load_settings(path, os.environ.get(OVERRIDES_ENV)).located(path.parent)
    os.environ[PARAMS_ENV] = str(path)
    os.environ.setdefault("BENTOML_HOME", settings.paths.bentoml_home)
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    tools_first_on_path()
    # A team's estimator package may be loaded from model files because params name it.
    portable.trust([settings.train.sklearn.package])
    return settings


def bin_dir() -> Path:
    """Where the project's install put its executables: beside this interpreter (the virtualenv)."""
    return Path(sys.executable).parent


def tools_first_on_path() -> None:
    """Put `bin_dir()` first on this process's PATH (children inherit it)."""
    first = str(bin_dir())
    rest = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != first]
    os.environ["PATH"] = os.pathsep.join([first, *rest])


def _debian() -> Path:
    return Path(sys.prefix).parent / ".tools" / "debian"


def os_tool(name: str) -> str:
    """The absolute path of `name` from the Debian packages the project unpacks (`make install`
    puts them under .tools/debian, beside the virtualenv); run it with `os_tool_env()`.

    Raises FileNotFoundError naming the tool and the fix when it is not there.
    """
    path = _debian() / "usr" / "bin" / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{name} is not unpacked at {path}: run `make install` "
            "(servers come from the Debian archive through the Makefile)"
        )
    return str(path)


def os_tool_env() -> dict[str, str]:
    """The environment an unpacked tool runs in: `os.environ` with the unpacked shared libraries
    (e.g. redis-server's libjemalloc) found first."""
    libs = [str(p) for p in (_debian() / "usr" / "lib").glob("*-linux-gnu") if p.is_dir()]
    rest = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join([*libs, *rest])}


def tool(name: str) -> str:
    """The absolute path of executable `name` from the project's install.

    Raises FileNotFoundError naming the tool and the fix when the install does not provide it.
    """
    path = bin_dir() / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{name} is not installed in {bin_dir()}: run `make install` "
            "(the project's tools come from its lock file, not from PATH)"
        )
    return str(path)
