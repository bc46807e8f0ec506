"""What every flow shares: the settings, and a repository root to run DVC in."""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.config import PARAMS_ENV, Settings, load_settings


def repo_root() -> Path:
    """The repository the flows act on: where params.yaml is ($PIPELINES_PARAMS or the cwd)."""
    return Path(os.environ.get(PARAMS_ENV, "params.yaml")).resolve().parent


def settings() -> Settings:
    root = repo_root()
    s = load_settings(root / "params.yaml")
    os.environ.setdefault("BENTOML_HOME", str(root / s.paths.bentoml_home))
    return s
