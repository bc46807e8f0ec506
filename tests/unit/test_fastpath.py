"""The ASGI middlewares in front of BentoML's endpoint: the /score fast path answers what its
handler answers and hands everything else to BentoML with the body intact; the edge refuses
non-JSON declarations and, while the service is not ready, answers with the reasons."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from pipelines.serving.edge import Edge, Hooks
from pipelines.serving.fastpath import FastPath


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


def call(
    app: Any,
    method: str,
    path: str,
    chunks: list[bytes],
    headers: list[tuple[bytes, bytes]] | None = None,
) -> list[dict]:
    """One request through an ASGI app, its body in `chunks`; returns the messages sent."""
    incoming = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    run(
        app(
            {"type": "http", "method": method, "path": path, "headers": headers or []},
            receive,
            send,
        )
    )
    return sent


class Endpoint:
    """Stands in for BentoML's app: records the body it could read."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: dict, receive, send) -> None:  # noqa: ANN001
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b"from bentoml"})


async def handler(body: bytes) -> bytes | None:
    if body == b"boom":
        raise RuntimeError("scoring failed")
    return b'{"ok":' + body + b"}" if body.isdigit() else None


@pytest.fixture
def handled() -> Endpoint:
    return Endpoint()


HOOKS = Hooks(score=handler)


def test_fast_path_answers_what_its_handler_answers(handled: Endpoint) -> None:
    sent = call(FastPath(handled, HOOKS, server_header="S"), "POST", "/score", [b"4", b"2"])
    assert sent[0]["status"] == 200
    assert dict(sent[0]["headers"]) == {
        b"content-type": b"application/json",
        b"server": b"S",
        b"content-length": b"9",
    }
    assert sent[1]["body"] == b'{"ok":42}'
    assert handled.bodies == []


def test_fast_path_hands_the_rest_to_the_endpoint_with_the_body_intact(handled: Endpoint) -> None:
    app = FastPath(handled, HOOKS)
    sent = call(app, "POST", "/score", [b'{"records": ', b"[]}"])  # the handler declines
    assert sent[0]["status"] == 400 and sent[1]["body"] == b"from bentoml"
    call(app, "GET", "/score", [b""])
    call(app, "POST", "/other", [b"7"])
    assert handled.bodies == [b'{"records": []}', b"", b"7"]


def test_fast_path_turns_a_scoring_error_into_a_500(handled: Endpoint) -> None:
    sent = call(FastPath(handled, HOOKS), "POST", "/score", [b"boom"])
    assert sent[0]["status"] == 500 and b"unexpected error" in sent[1]["body"]
    assert handled.bodies == []


def test_fast_path_leaves_everything_to_the_endpoint_before_the_service_plugs_in(
    handled: Endpoint,
) -> None:
    sent = call(FastPath(handled, Hooks()), "POST", "/score", [b"42"])
    assert sent[0]["status"] == 400 and handled.bodies == [b"42"]


def test_the_edge_refuses_a_non_json_declaration_with_415(handled: Endpoint) -> None:
    sent = call(
        Edge(handled, Hooks()),
        "POST",
        "/score",
        [b"x"],
        headers=[(b"content-type", b"multipart/form-data")],
    )
    assert sent[0]["status"] == 415
    assert json.loads(sent[1]["body"]) == {
        "error": "content-type must be application/json, not 'multipart/form-data'"
    }
    assert handled.bodies == []


def test_a_service_that_is_not_ready_says_why_at_readyz_and_at_score(handled: Endpoint) -> None:
    reasons = ["no champion: promote a model first"]
    edge = Edge(handled, Hooks(not_ready=lambda: reasons))
    ready = call(edge, "GET", "/readyz", [b""])
    assert ready[0]["status"] == 503 and json.loads(ready[1]["body"]) == {
        "ready": False,
        "reasons": reasons,
    }
    scored = call(edge, "POST", "/score", [b"{}"], headers=[(b"content-type", b"application/json")])
    assert scored[0]["status"] == 503 and (b"retry-after", b"5") in scored[0]["headers"]
    assert json.loads(scored[1]["body"]) == {
        "error": "the service is not ready: no champion: promote a model first"
    }
    assert handled.bodies == []
    reasons.clear()  # ready: BentoML answers both
    call(edge, "GET", "/readyz", [b""])
    call(edge, "POST", "/score", [b"{}"])
    assert handled.bodies == [b"", b"{}"]
