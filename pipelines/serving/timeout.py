"""BentoML's request timeout without its timer leak.

BentoML (1.4.40, `bentoml._internal.server.http.traffic.TimeoutMiddleware`) arms one
`loop.call_later(timeout, ...)` per request and never cancels it: every answered request leaves a
timer, its future and their references alive for `traffic.timeout` seconds. At 4,000 requests/s
and a 10 s timeout that is ~40,000 timers and ~240,000 objects the cycle collector walks on every
full collection, which then runs every ~2 s and takes 110-140 ms: the service's whole p99 under
sustained load, growing over the first `timeout` seconds (measured with a `gc.callbacks` probe
under `bench/serving.py --suite store`; tests/unit/test_timeout.py shows the leak).

`RequestTimeout` keeps BentoML's contract (the time to the first response message is bounded;
past it the request is cancelled and answered 504 with BentoML's message) and cancels its timer
as soon as the response starts. `install` makes BentoML build it in place of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import Any

from bentoml._internal.server.http import traffic
from starlette.responses import JSONResponse

Scope = MutableMapping[str, Any]
log = logging.getLogger(__name__)


class RequestTimeout(traffic.TimeoutMiddleware):
    """An ASGI middleware: the wrapped app must start its response within `timeout` seconds,
    else it is cancelled and the client gets 504 `{"error": "Not able to process the request in
    <timeout> seconds"}` (BentoML's body). Streaming after the first message is not bounded."""

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        # The app runs in this request's own task under one timer, cancelled when the response
        # starts: a task and an `asyncio.wait` per request cost ~4 % of a loaded worker's CPU.
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None  # ASGI servers call apps from a task
        expired: asyncio.Task[None] | None = None

        async def send_first(message: Any) -> None:
            if expired is not None:  # timed out: the client has its 504, the rest goes nowhere
                return
            timer.cancel()
            await send(message)

        def expire() -> None:
            nonlocal expired
            if task.cancelling():  # the server gave up on the request: no answer, no 2nd cancel
                return
            # Answered now, as BentoML does, not after the app has unwound.
            body = {"error": f"Not able to process the request in {self.timeout} seconds"}
            expired = loop.create_task(JSONResponse(body, status_code=504)(scope, receive, send))
            task.cancel()

        timer = loop.call_later(self.timeout, expire)
        try:
            await self.app(scope, receive, send_first)
        except asyncio.CancelledError:
            # Ours (the timeout) is absorbed; the server's (the client left) goes on.
            if expired is None or task.uncancel() > 0:
                if expired is not None:
                    expired.add_done_callback(_retrieved)
                raise
        except Exception:
            if expired is None:
                raise
            # Cancelled by the timeout, the app failed instead of unwinding: the client has its
            # 504 already; the failure is the app's, logged, not the server's.
            log.warning("the app failed after its request timed out", exc_info=True)
        finally:
            timer.cancel()
        if expired is not None:
            if task.cancelling():  # the app did not end on our cancellation: take it back
                task.uncancel()
            await expired


def _retrieved(task: asyncio.Task[None]) -> None:
    """Retrieve the 504's outcome when nobody awaits it (asyncio would log it as never
    retrieved)."""
    if not task.cancelled():
        task.exception()


def install() -> None:
    """Make BentoML use `RequestTimeout` for `traffic.timeout` (it looks the class up in
    `traffic` each time it builds an app's middleware, so call this before serving)."""
    traffic.TimeoutMiddleware = RequestTimeout  # type: ignore[misc]
