"""ASGI middleware for what must be refused before BentoML parses a request.

BentoML turns a body it cannot parse under a non-JSON content type (e.g. multipart without a
boundary) into a 500; the scoring API only speaks JSON, so any other declared media type is a
client error and gets a 415 that says so.
"""

from __future__ import annotations

import json
from typing import Any

ALLOWED = {b"application/json", b""}


class JsonOnly:
    def __init__(self, app: Any, paths: tuple[str, ...] = ("/score",)) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST" and scope.get("path") in self.paths:
            declared = dict(scope.get("headers") or ()).get(b"content-type", b"")
            media = declared.split(b";", 1)[0].strip().lower()
            if media not in ALLOWED:
                body = json.dumps({"error": f"content-type must be application/json, not {media.decode(errors='replace')!r}"}).encode()
                await send({"type": "http.response.start", "status": 415,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
