"""ASGI middleware that answers a well-formed `POST /score` without BentoML's per-request stack.

Profiled under load (one core, single-record requests), BentoML spends ~190 µs of CPU per
request between this middleware's position and the endpoint: its context middleware, Starlette
routing and exception handling, the IO descriptor's request parsing, per-response schema and
header work with dependency injection. That is more than scoring a record costs in a batch
(~20-40 µs), and it caps one worker near 3,000 req/s before any scoring.

This middleware sits where the service's own middlewares sit: after BentoML's traffic-timeout,
tracing and request-metrics middlewares, so those still see every request. It parses the body
with the endpoint's own BentoML input model (the same validation, field by field) and hands the
records to the service's handler. Anything but a successful answer goes to BentoML's endpoint
with the body replayed, unchanged: invalid input (BentoML's 400 and error format) or a full queue
(BentoML's 503). A service that is not ready never gets here (edge.py answers first). Nothing has been scored or stored at that point, so
nothing happens twice. An error while scoring becomes BentoML's generic 500.
"""

from __future__ import annotations

import logging
from typing import Any

from pipelines.serving.edge import SCORE_PATH, Hooks

log = logging.getLogger("fraud.service")

_ERROR = b'{"error":"An unexpected error has occurred, please check the server log."}'


class FastPath:
    """Routes `POST /score` through `hooks.score` once the service instance has set it."""

    def __init__(self, app: Any, hooks: Hooks, server_header: str = "") -> None:
        self.app = app
        self.hooks = hooks
        self.headers = [(b"content-type", b"application/json")]
        if server_header:
            self.headers.append((b"server", server_header.encode()))

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        handler = (
            self.hooks.score
            if (
                scope["type"] == "http"
                and scope.get("method") == "POST"
                and scope.get("path") == SCORE_PATH
            )
            else None
        )
        if handler is None:
            return await self.app(scope, receive, send)
        body = await _read_body(receive)
        if body is None:  # the client left
            return
        try:
            answer = await handler(body)
        except Exception:
            log.exception("scoring failed")
            return await self._send(send, 500, _ERROR)
        if answer is None:
            return await self.app(scope, _replay(body, receive), send)
        await self._send(send, 200, answer)

    async def _send(self, send: Any, status: int, body: bytes) -> None:
        headers = [*self.headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Any) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    """A `receive` that yields the already-read body once, then defers to the real one."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> dict:
        return pending.pop() if pending else await receive()

    return replayed
