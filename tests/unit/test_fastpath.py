"""The ASGI middlewares in front of BentoML's endpoint: the /score fast path answers what its
handler answers (a refusal counted by cause) and leaves everything else to BentoML with the body
intact; the edge refuses non-JSON declarations and oversize bodies and, while the service is not
ready, answers with the reasons."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from pipelines.serving.edge import Answer, Edge, Hooks, error
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


async def handler(body: bytes) -> Answer:
    if body == b"boom":
        raise RuntimeError("scoring failed")
    if not body.isdigit():
        return error(400, "not a number", "bad_input")
    return Answer(200, b'{"ok":' + body + b"}")


@pytest.fixture
def handled() -> Endpoint:
    return Endpoint()


def hooks(**kw: Any) -> tuple[Hooks, list[str]]:
    """Hooks with `handler`, counting refusals by cause."""
    causes: list[str] = []
    return Hooks(score=handler, refused=causes.append, **kw), causes


def test_fast_path_answers_what_its_handler_answers(handled: Endpoint) -> None:
    h, causes = hooks()
    sent = call(FastPath(handled, h, server_header="S"), "POST", "/score", [b"4", b"2"])
    assert sent[0]["status"] == 200
    assert dict(sent[0]["headers"]) == {
        b"content-type": b"application/json",
        b"server": b"S",
        b"content-length": b"9",
    }
    assert sent[1]["body"] == b'{"ok":42}'
    refused = call(FastPath(handled, h), "POST", "/score", [b"x"])
    assert refused[0]["status"] == 400 and json.loads(refused[1]["body"]) == {
        "error": "not a number"
    }
    assert handled.bodies == [] and causes == ["bad_input"]


def test_fast_path_leaves_other_requests_to_the_endpoint_with_the_body_intact(
    handled: Endpoint,
) -> None:
    app = FastPath(handled, hooks()[0])
    call(app, "GET", "/score", [b""])
    call(app, "POST", "/other", [b"7"])
    call(
        FastPath(handled, Hooks()), "POST", "/score", [b'{"records": ', b"[]}"]
    )  # no handler (yet)
    assert handled.bodies == [b"", b"7", b'{"records": []}']


def test_fast_path_turns_a_scoring_error_into_a_500(handled: Endpoint) -> None:
    h, causes = hooks()
    sent = call(FastPath(handled, h), "POST", "/score", [b"boom"])
    assert sent[0]["status"] == 500 and b"unexpected error" in sent[1]["body"]
    assert handled.bodies == [] and causes == ["error"]


def test_fast_path_stops_reading_a_body_past_the_limit(handled: Endpoint) -> None:
    h, causes = hooks(max_body_bytes=10)
    sent = call(FastPath(handled, h), "POST", "/score", [b"12345", b"67890", b"1", b"never read"])
    assert sent[0]["status"] == 413 and b"max_body_bytes=10" in sent[1]["body"]
    assert causes == ["too_large"]


def test_the_edge_refuses_a_non_json_declaration_with_415(handled: Endpoint) -> None:
    h, causes = hooks()
    sent = call(
        Edge(handled, h),
        "POST",
        "/score",
        [b"x"],
        headers=[(b"content-type", b"multipart/form-data")],
    )
    assert sent[0]["status"] == 415
    assert json.loads(sent[1]["body"]) == {
        "error": "content-type must be application/json, not 'multipart/form-data'"
    }
    assert handled.bodies == [] and causes == ["media_type"]


def test_the_edge_refuses_a_declared_oversize_body_before_reading_it(handled: Endpoint) -> None:
    h, causes = hooks(max_body_bytes=100)
    sent = call(
        Edge(handled, h), "POST", "/score", [b"x" * 10], headers=[(b"content-length", b"101")]
    )
    assert sent[0]["status"] == 413 and causes == ["too_large"] and handled.bodies == []


def test_a_service_that_is_not_ready_says_why_at_readyz_and_at_score(handled: Endpoint) -> None:
    reasons = ["no champion: promote a model first"]
    causes: list[str] = []
    edge = Edge(handled, Hooks(not_ready=lambda: reasons, refused=causes.append))
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
    assert handled.bodies == [] and causes == ["not_ready"]
    reasons.clear()  # ready: BentoML answers both
    call(edge, "GET", "/readyz", [b""])
    call(edge, "POST", "/score", [b"{}"])
    assert handled.bodies == [b"", b"{}"]
