"""ASGI middleware for what is decided before BentoML parses a request, and the hooks through
which the service instance tells the middlewares what it can do.

- Media type: BentoML turns a body it cannot parse under a non-JSON content type (e.g. multipart
  without a boundary) into a 500; the scoring API only speaks JSON, so any other declared media
  type is a client error and gets a 415 that says so.
- The API page (`/`) and its document (`/docs.json`): the project's, without BentoML's tracker.
- Readiness: while the service is not ready (no champion loaded, online store never seeded),
  `GET /readyz` answers 503 with the reasons and `POST /score` answers 503 naming what is
  missing, instead of BentoML's generic "not ready" and "unexpected error" answers.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

ALLOWED = {b"application/json", b""}
SCORE_PATH = "/score"
# The API page: Swagger UI from BentoML's own local static files, over /docs.json. BentoML's page
# embeds Google Tag Manager (a tracker, and a request to the network from every browser that
# opens it); this one loads nothing from outside the service.
INDEX = b"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8"><title>Card-fraud scoring API</title>
<link rel="stylesheet" type="text/css" href="./static_content/swagger-ui.css" />
<link rel="stylesheet" type="text/css" href="./static_content/index.css" />
</head>
<body>
<div id="swagger-ui"></div>
<script src="./static_content/swagger-ui-bundle.js" charset="UTF-8"></script>
<script src="./static_content/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
<script>
window.onload = () => { window.ui = SwaggerUIBundle({url: "./docs.json", dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout",
  validatorUrl: null}); };  // null: no call to the public validator service
</script>
</body>
</html>
"""


@dataclass
class Hooks:
    """What the service instance plugs into its middlewares once it runs (None before and after):
    `score`, the fast path's handler (request body → response body, or None to let BentoML's
    endpoint answer); `not_ready`, the reasons the service must not score yet (empty: ready)."""

    score: Callable[[bytes], Awaitable[bytes | None]] | None = None
    not_ready: Callable[[], list[str]] | None = None
    openapi: Callable[[], dict[str, Any]] | None = None


async def send_html(send: Any, body: bytes) -> None:
    """Answer 200 with an HTML page."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Any, status: int, payload: object, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer with `payload` as JSON."""
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Edge:
    """The first middleware: media type, readiness and the API page (see the module docstring)."""

    def __init__(self, app: Any, hooks: Hooks, paths: tuple[str, ...] = (SCORE_PATH,)) -> None:
        self.app = app
        self.hooks = hooks
        self.paths = paths

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope.get("method"), scope.get("path")
        if method == "POST" and path in self.paths:
            declared = dict(scope.get("headers") or ()).get(b"content-type", b"")
            media = declared.split(b";", 1)[0].strip().lower()
            if media not in ALLOWED:
                return await send_json(
                    send,
                    415,
                    {
                        "error": f"content-type must be application/json, not {media.decode(errors='replace')!r}"
                    },
                )
            if reasons := self._not_ready():
                return await send_json(
                    send,
                    503,
                    {"error": "the service is not ready: " + "; ".join(reasons)},
                    [(b"retry-after", b"5")],
                )
        elif method == "GET" and path == "/readyz" and (reasons := self._not_ready()):
            return await send_json(send, 503, {"ready": False, "reasons": reasons})
        elif method == "GET" and path == "/docs.json" and self.hooks.openapi is not None:
            return await send_json(send, 200, self.hooks.openapi())
        elif method == "GET" and path == "/":
            return await send_html(send, INDEX)
        await self.app(scope, receive, send)

    def _not_ready(self) -> list[str]:
        check = self.hooks.not_ready
        return check() if check is not None else []
