"""ASGI middleware for what is decided before BentoML parses a request, and the hooks through
which the service instance tells the middlewares what it can do.

- Media type: BentoML turns a body it cannot parse under a non-JSON content type (e.g. multipart
  without a boundary) into a 500; the scoring API only speaks JSON, so any other declared media
  type is a client error and gets a 415 that says so.
- Size: a body declared larger than `serving.max_body_bytes` is refused (413) before a byte of it
  is read (a body without a declared length is cut at the same bound by the fast path), so one
  huge request cannot hold memory and the event loop while small ones wait.
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


@dataclass(frozen=True)
class Answer:
    """A response the middlewares send themselves: status, JSON body, extra headers, and for a
    refusal its cause (the `cause` label of the refusals counter)."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    cause: str | None = None


def error(status: int, message: str, cause: str, retry_after: int | None = None) -> Answer:
    """An error answer in the shape the OpenAPI document declares: `{"error": message}`."""
    headers = ((b"retry-after", str(retry_after).encode()),) if retry_after is not None else ()
    return Answer(status, json.dumps({"error": message}).encode(), headers, cause)


@dataclass
class Hooks:
    """What the service instance plugs into its middlewares once it runs (None before and after):
    `score`, the fast path's handler (request body → its answer, or None: BentoML answers it);
    `not_ready`, the reasons the service must not score yet (empty: ready); `openapi`, the API
    document; `refused`, counts the refusals the middlewares send. `max_body_bytes` bounds a
    request body before it is read (`serving.max_body_bytes`)."""

    score: Callable[[bytes], Awaitable[Answer | None]] | None = None
    not_ready: Callable[[], list[str]] | None = None
    openapi: Callable[[], dict[str, Any]] | None = None
    refused: Callable[[str], None] | None = None  # told the cause of every refusal sent
    max_body_bytes: int = 1 << 20

    async def send(self, send: Any, answer: Answer) -> None:
        """Send `answer` and tell `refused` the cause of a refusal."""
        if self.refused is not None and answer.cause is not None:
            self.refused(answer.cause)
        await send_answer(send, answer)


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
    send: Any, status: int, payload: object, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """Answer `status` with `payload` as JSON."""
    await send_answer(send, Answer(status, json.dumps(payload).encode(), headers))


async def send_answer(send: Any, answer: Answer) -> None:
    """Send `answer` (JSON) as the whole response."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(answer.body)).encode()),
        *answer.headers,
    ]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


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
            headers = dict(scope.get("headers") or ())
            media = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
            if media not in ALLOWED:
                return await self.hooks.send(
                    send,
                    error(
                        415,
                        f"content-type must be application/json, not {media.decode(errors='replace')!r}",
                        "media_type",
                    ),
                )
            length = headers.get(b"content-length", b"0")
            if length.isdigit() and int(length) > self.hooks.max_body_bytes:
                return await self.hooks.send(
                    send,
                    error(
                        413,
                        f"the body has {int(length):,} bytes, more than "
                        f"serving.max_body_bytes={self.hooks.max_body_bytes:,}",
                        "too_large",
                    ),
                )
            if reasons := self._not_ready():
                return await self.hooks.send(
                    send,
                    error(503, "the service is not ready: " + "; ".join(reasons), "not_ready", 5),
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
