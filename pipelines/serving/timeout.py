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
from collections.abc import MutableMapping
from typing import Any

from bentoml._internal.server.http import traffic
from starlette.responses import JSONResponse

Scope = MutableMapping[str, Any]


class RequestTimeout(traffic.TimeoutMiddleware):
    """An ASGI middleware: the wrapped app must start its response within `timeout` seconds,
    else it is cancelled and the client gets 504 `{"error": "Not able to process the request in
    <timeout> seconds"}` (BentoML's body). Streaming after the first message is not bounded."""

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        started = loop.create_future()

        async def send_first(message: Any) -> None:
            if started.cancelled():  # timed out: the client has its 504, the rest goes nowhere
                return
            if not started.done():
                started.set_result(None)
            await send(message)

        app = asyncio.ensure_future(self.app(scope, receive, send_first))
        try:  # asyncio.wait cancels its own timer when it returns, whichever way
            await asyncio.wait(
                {started, app}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:  # the server gave up on the request: so does the app
            _abandon(app)
            raise
        if started.done() or app.done():
            await app
            return
        started.cancel()
        _abandon(app)  # answered now, as BentoML does, not after the app has unwound
        body = {"error": f"Not able to process the request in {self.timeout} seconds"}
        await JSONResponse(body, status_code=504)(scope, receive, send)


def _abandon(task: asyncio.Future[Any]) -> None:
    """Cancel `task` and retrieve its outcome when it ends (else asyncio logs "exception was
    never retrieved" for an app that fails while unwinding)."""
    task.cancel()
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


def install() -> None:
    """Make BentoML use `RequestTimeout` for `traffic.timeout` (it looks the class up in
    `traffic` each time it builds an app's middleware, so call this before serving)."""
    traffic.TimeoutMiddleware = RequestTimeout  # type: ignore[misc]
