"""The rollout check: does the running service serve the new champion?

The rollout itself is the service's champion watch (serving/service.py): promotion is one atomic
pointer swap that the running workers pick up. `await_rollout` waits until the service reports
the new version in its metrics, then smoke-checks one scoring request.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pandas as pd

from pipelines.config import Settings
from pipelines.serving.metrics import served_version
from pipelines.serving.schema import example_record


def await_rollout(settings: Settings, tag: str) -> dict[str, Any]:
    """Wait (at most `deploy.rollout_timeout_seconds`) until the service at `deploy.service_url`
    serves `tag`, then score one smoke record with it.

    Raises TimeoutError naming what the service serves instead, RuntimeError if the smoke request
    fails or is answered by another version.
    """
    if not settings.deploy.service_url:
        raise ValueError("deploy.service_url is null: there is no service to roll out to")
    url = settings.deploy.service_url.rstrip("/")
    deadline = time.monotonic() + settings.deploy.rollout_timeout_seconds
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = served_version(httpx.get(f"{url}/metrics", timeout=5).text, settings.project)
        except httpx.HTTPError as err:
            seen = f"unreachable ({type(err).__name__})"
        if seen == tag:
            break
        time.sleep(0.5)
    else:
        raise TimeoutError(
            f"{url} still serves {seen} {settings.deploy.rollout_timeout_seconds:.0f} s after "
            f"promoting {tag}"
        )
    resp = httpx.post(f"{url}/score", json={"records": [smoke_record(settings)]}, timeout=10)
    if resp.status_code != 200 or resp.json()[0]["model_version"] != tag:
        raise RuntimeError(
            f"smoke check against {url} failed: {resp.status_code} {resp.text[:300]}"
        )
    return {
        "service": url,
        "model_version": tag,
        "smoke_probability": resp.json()[0]["probability"],
    }


def smoke_record(settings: Settings) -> dict[str, Any]:
    """The OpenAPI example record with a fresh id and the current time (id and entity start with 'smoke-')."""
    record = example_record(settings, pd.Timestamp.now(tz="UTC").tz_localize(None).to_pydatetime())
    record[settings.contract.id] = f"smoke-{uuid.uuid4().hex}"
    return record
