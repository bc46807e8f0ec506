"""BentoML's per-request instruments at a lower cost, with the same series and spans.

Profiled in the worker at concurrency 64 (cProfile on the event loop's thread), BentoML's
request-metrics middleware (1.4.40, `bentoml._internal.server.http.instruments`) looked its
Prometheus children up by keyword labels four times per request: each lookup sorts the label
names twice and converts every value to text, about a tenth of the loop's CPU. OpenTelemetry's
ASGI middleware, for a path excluded from tracing, still decoded the Host header and built the
full URL to match the exclusion patterns against it (about 5 %).

- `RequestMetrics` updates exactly BentoML's series (`bentoml_service_request_total`,
  `_request_duration_seconds`, `_request_in_progress`, `_last_request_timestamp_seconds`) with
  the same labels and values, keeping each labelled child of the service's own routes once
  found. Any other path (a client can send any) is looked up as BentoML does, so a scanner
  cannot grow the cache; websockets and `/metrics` go to BentoML's own code.
- `Tracing` passes the `untraced` paths straight on; anything else goes to OpenTelemetry's
  middleware (an excluded path among them is still matched by its own patterns).

`install` makes BentoML build these in place of its own (it looks both classes up when it
builds a worker's app, so call it before serving).
"""

from __future__ import annotations

import timeit
from collections.abc import MutableMapping
from typing import Any, ClassVar

from bentoml._internal.context import server_context
from bentoml._internal.server.http import instruments
from opentelemetry.instrumentation import asgi

Scope = MutableMapping[str, Any]


class RequestMetrics(instruments.RunnerTrafficMetricsMiddleware):
    """BentoML's request-metrics middleware with its labelled children kept (module docstring)."""

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            return await super().__call__(scope, receive, send)
        if not self._is_setup:
            self._setup()
        endpoint = scope["path"]
        if not endpoint.startswith(self._skip):
            self._last_request.set_to_current_time()
        start = timeit.default_timer()
        status = 0

        async def measured_send(message: Any) -> None:
            nonlocal status
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
            elif kind == "http.response.body" and not message.get("more_body"):
                total, duration = self._series(endpoint, status)
                total.inc()
                duration.observe(max(timeit.default_timer() - start, 0))
            await send(message)

        in_progress = self._in_progress.get(endpoint) or self.metrics_request_in_progress.labels(
            endpoint=endpoint, **self._labels
        )
        in_progress.inc()
        try:
            await self.app(scope, receive, measured_send)
        finally:
            in_progress.dec()

    def _setup(self, *args: Any, **kwargs: Any) -> None:
        """BentoML's series, and the children this middleware keeps of them (BentoML sets up on
        the first request, whichever of the two paths above takes it)."""
        super()._setup(*args, **kwargs)
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._routes = frozenset(server_context.service_routes)
        self._skip = tuple(self.skip_paths)
        self._labels = {
            "service_name": server_context.bento_name,
            "service_version": server_context.bento_version,
            "runner_name": server_context.service_name,
        }
        self._last_request = self.metrics_last_request_timestamp.labels(**self._labels)
        self._in_progress = {
            route: self.metrics_request_in_progress.labels(endpoint=route, **self._labels)
            for route in self._routes
        }

    def _series(self, endpoint: str, status: int) -> tuple[Any, Any]:
        """The request counter's and duration histogram's children for a response."""
        key = (endpoint, status)
        found = self._children.get(key)
        if found is None:
            labels = dict(self._labels, endpoint=endpoint, http_response_code=status)
            found = (
                self.metrics_request_total.labels(**labels),
                self.metrics_request_duration.labels(**labels),
            )
            if endpoint in self._routes:
                self._children[key] = found
        return found


class Tracing(asgi.OpenTelemetryMiddleware):
    """OpenTelemetry's ASGI middleware that passes the `untraced` paths straight on."""

    untraced: ClassVar[frozenset[str]] = frozenset()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope.get("path") in self.untraced:
            return await self.app(scope, receive, send)
        return await super().__call__(scope, receive, send)


def install(untraced: tuple[str, ...] = ()) -> None:
    """Make BentoML build `RequestMetrics` and `Tracing` (with `untraced`, paths BentoML's
    tracing configuration excludes) for its apps."""
    Tracing.untraced = frozenset(untraced)
    instruments.RunnerTrafficMetricsMiddleware = RequestMetrics  # type: ignore[misc]
    asgi.OpenTelemetryMiddleware = Tracing  # type: ignore[misc]
