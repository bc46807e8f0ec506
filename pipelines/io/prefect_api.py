"""Prefect's REST API over HTTP, for the callers that talk to a running server without Prefect's
client (the demo and the tests watch runs from outside the flows)."""

from __future__ import annotations

import time
from typing import Any

import httpx

# What Prefect's own client retries: a busy server's SQLite answers 503 (and 429/502 in front of
# it) for a moment under load (seen: create_flow_run during a full test run and a fresh demo).
TRANSIENT = (429, 502, 503)
ATTEMPTS = 6


def call(api_url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """`method` on `api_url + path` (e.g. `http://127.0.0.1:4200/api`, `/flow_runs/filter`),
    retried ATTEMPTS times on TRANSIENT statuses (the server's `Retry-After`, else 0.5 s doubling:
    at most ~16 s in all). Raises httpx.HTTPStatusError naming the status and URL for anything
    else, and httpx.HTTPError when the server cannot be reached."""
    for attempt in range(ATTEMPTS):
        resp = httpx.request(method, f"{api_url}{path}", timeout=10, **kwargs)
        if resp.status_code not in TRANSIENT or attempt == ATTEMPTS - 1:
            break
        time.sleep(float(resp.headers.get("retry-after", 0)) or 2**attempt * 0.5)
    resp.raise_for_status()
    return resp
