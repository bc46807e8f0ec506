"""What every flow shares: the settings, through the one bootstrap every entry point uses."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.config import Settings
from pipelines.runtime import bootstrap, params_file

# Prefect's temporary server has started in ~11 s on an idle 2-core machine and missed its 20 s
# default under a test suite's load; a slow start is not a failure of the flow.
EPHEMERAL_STARTUP_SECONDS = 300


def settings() -> Settings:
    """The params file's settings, locations absolute (see `pipelines.runtime.bootstrap`)."""
    return bootstrap()


def repo_root() -> Path:
    """The repository the flows act on: the params file's directory ($PIPELINES_PARAMS or ./params.yaml)."""
    return params_file().parent


def run_from_command_line(flow: Callable[..., Any], **parameters: Any) -> Any:
    """Run `flow` in this process (`python -m flows.<name>`).

    Without `PREFECT_API_URL`, Prefect starts a temporary server and by default gives it 20 s to
    come up, which a loaded machine (a CI runner) misses. Unless the environment sets
    `PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`, it gets `EPHEMERAL_STARTUP_SECONDS`.
    """
    from prefect.settings import (
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    if os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"):
        return flow(**parameters)
    with temporary_settings(
        updates={PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: EPHEMERAL_STARTUP_SECONDS}
    ):
        return flow(**parameters)
