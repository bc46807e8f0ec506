"""ASGI middleware that answers `POST /score` without BentoML's per-request stack.

Profiled under load (one core, single-record requests), BentoML spends ~190 µs of CPU per
request between this middleware's position and the endpoint: its context middleware, Starlette
routing and exception handling, the IO descriptor's request parsing, per-response schema and
header work with dependency injection. That is more than scoring a record costs in a batch
(~20-40 µs), and it caps one worker near 3,000 req/s before any scoring.

This middleware sits where the service's own middlewares sit: after BentoML's traffic-timeout,
tracing and request-metrics middlewares, so those still see every request. It reads the body
(at most `serving.max_body_bytes`: 413 beyond) and hands it to the service's handler, which
answers everything: 200, 400 naming the field, 503 when the queue is full. An error while scoring
becomes a generic 500 (logged with its traceback). Without a handler (before the service runs)
BentoML's endpoint answers, and with `serving.batching: bentoml` it answers the bodies the
handler passes on (it refuses the bad ones itself).
"""

from __future__ import annotations

import logging
from typing import Any

from pipelines.serving.edge import SCORE_PATH, Answer, Hooks, error

log = logging.getLogger("fraud.service")


class FastPath:
    """Routes `POST /score` through `hooks.score` once the service instance has set it."""

    def __init__(self, app: Any, hooks: Hooks, server_header: str = "") -> None:
        self.app = app
        self.hooks = hooks
        self.server = ((b"server", server_header.encode()),) if server_header else ()

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
        limit = self.hooks.max_body_bytes
        body = await _read_body(receive, limit)
        if body is None:  # the client left
            return
        answer: Answer | None
        if len(body) > limit:
            answer = error(
                413, f"the body has more than serving.max_body_bytes={limit:,} bytes", "too_large"
            )
        else:
            try:
                answer = await handler(body)
            except Exception:
                log.exception("scoring failed")
                answer = error(
                    500, "An unexpected error has occurred, please check the server log.", "error"
                )
            if answer is None:  # the handler passes it on: BentoML reads the body read here
                return await self.app(scope, _replay(body, receive), send)
        await self.hooks.send(
            send, Answer(answer.status, answer.body, (*answer.headers, *self.server), answer.cause)
        )


def _replay(body: bytes, receive: Any) -> Any:
    """An ASGI `receive` that gives `body` as the whole request, then what `receive` gives (a
    disconnect)."""
    sent = False

    async def replayed() -> dict:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def _read_body(receive: Any, limit: int) -> bytes | None:
    """The request body, or its first `limit + 1` bytes once it is longer; None if the client left."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > limit or not message.get("more_body"):
            return b"".join(chunks)
