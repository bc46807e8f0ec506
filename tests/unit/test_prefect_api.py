"""Calls to Prefect's REST API ride out a busy server's transient answers and name the rest,
against a real HTTP server on 127.0.0.1 that answers from a script."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest

from pipelines.io import prefect_api


class Scripted(http.server.BaseHTTPRequestHandler):
    answers: list[int] = []
    seen: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
        Scripted.seen.append(self.path)
        status = Scripted.answers.pop(0)
        self.send_response(status)
        self.send_header("Retry-After", "0.01")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"id": "run-1"}' if status < 300 else b'{"detail": "busy"}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Scripted.seen.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}/api"
    server.shutdown()
    server.server_close()


def test_a_busy_server_is_retried_until_it_answers(api: str) -> None:
    Scripted.answers = [503, 429, 502, 201]
    resp = prefect_api.call(api, "POST", "/deployments/d/create_flow_run", json={})
    assert resp.json() == {"id": "run-1"}
    assert Scripted.seen == ["/api/deployments/d/create_flow_run"] * 4


def test_other_errors_raise_at_once_naming_the_status(api: str) -> None:
    Scripted.answers = [404]
    with pytest.raises(httpx.HTTPStatusError, match="404"):
        prefect_api.call(api, "POST", "/deployments/missing/create_flow_run", json={})
    assert len(Scripted.seen) == 1


def test_a_server_busy_for_good_raises_after_the_last_attempt(api: str) -> None:
    Scripted.answers = [503] * prefect_api.ATTEMPTS
    with pytest.raises(httpx.HTTPStatusError, match="503"):
        prefect_api.call(api, "POST", "/flow_runs/filter", json={})
    assert len(Scripted.seen) == prefect_api.ATTEMPTS
