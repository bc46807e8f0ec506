"""The adaptive batcher: merges concurrent requests, keeps order, isolates failures, bounds its queue;
and the /score fast path in front of it: answers what its handler answers, hands everything else
to BentoML's endpoint with the body intact."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from pipelines.serving import fastpath
from pipelines.serving.batching import AdaptiveBatcher, Overloaded


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


def test_concurrent_requests_share_batches_and_each_gets_its_own_results() -> None:
    calls: list[int] = []
    gate = threading.Event()

    def double(items: list[int]) -> list[int]:
        gate.wait(1.0)  # the first batch blocks until everyone has queued
        calls.append(len(items))
        return [2 * x for x in items]

    async def main() -> list[list[int]]:
        b = AdaptiveBatcher(double, max_batch_size=8, max_queue=100)
        tasks = [asyncio.create_task(b.submit([0, 100]))]
        await asyncio.sleep(0.02)  # the first batch is running (and blocked)
        tasks += [asyncio.create_task(b.submit([i, i + 100])) for i in range(1, 10)]
        await asyncio.sleep(0.02)
        gate.set()
        return await asyncio.gather(*tasks)

    results = run(main())
    assert results == [[2 * i, 2 * (i + 100)] for i in range(10)]
    assert calls[0] == 2  # an idle batcher starts at once with what it has
    assert calls[1:] == [8, 8, 2]  # what queued meanwhile, merged up to max_batch_size


def test_a_failing_record_fails_only_its_own_request() -> None:
    def picky(items: list[int]) -> list[int]:
        if -1 in items:
            raise ValueError("bad record -1")
        return items

    async def main() -> list[object]:
        b = AdaptiveBatcher(picky, max_batch_size=64, max_queue=100)
        return await asyncio.gather(*(b.submit([i]) for i in (1, -1, 3)), return_exceptions=True)

    ok1, bad, ok3 = run(main())
    assert ok1 == [1] and ok3 == [3]
    assert isinstance(bad, ValueError) and "-1" in str(bad)


def test_a_full_queue_refuses_instead_of_growing() -> None:
    gate = threading.Event()

    def slow(items: list[int]) -> list[int]:
        gate.wait(2.0)
        return items

    async def main() -> None:
        b = AdaptiveBatcher(slow, max_batch_size=2, max_queue=4)
        first = asyncio.create_task(b.submit([0, 0]))  # runs
        await asyncio.sleep(0.02)
        queued = [asyncio.create_task(b.submit([1, 1])), asyncio.create_task(b.submit([2, 2]))]
        await asyncio.sleep(0.02)
        with pytest.raises(Overloaded):
            await b.submit([3])
        gate.set()
        assert await first == [0, 0]
        assert [await q for q in queued] == [[1, 1], [2, 2]]

    run(main())


@pytest.mark.parametrize(("settle", "expected"), [(0, [1, 5]), (4, [6])])
def test_requests_a_few_loop_iterations_behind_join_the_batch(settle: int, expected: list[int]) -> None:
    calls: list[int] = []

    def record(items: list[int]) -> list[int]:
        calls.append(len(items))
        return items

    async def main() -> list[list[int]]:
        b = AdaptiveBatcher(record, max_batch_size=64, max_queue=100, settle=settle)

        async def client(i: int) -> list[int]:
            for _ in range(2):  # still being parsed, passing middlewares
                await asyncio.sleep(0)
            return await b.submit([i])

        first = asyncio.create_task(b.submit([0]))
        return await asyncio.gather(first, *(client(i) for i in range(1, 6)))

    assert run(main()) == [[i] for i in range(6)]
    assert calls == expected


def call(app: fastpath.FastPath, method: str, path: str, chunks: list[bytes]) -> list[dict]:
    """One request through an ASGI app, its body in `chunks`; returns the messages sent."""
    incoming = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    run(app({"type": "http", "method": method, "path": path}, receive, send))
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


@pytest.fixture
def handled() -> Iterator[Endpoint]:
    async def handler(body: bytes) -> bytes | None:
        if body == b"boom":
            raise RuntimeError("scoring failed")
        return b'{"ok":' + body + b"}" if body.isdigit() else None

    fastpath.serve("/score", handler)
    yield Endpoint()
    fastpath.stop("/score")


def test_fast_path_answers_what_its_handler_answers(handled: Endpoint) -> None:
    sent = call(fastpath.FastPath(handled, server_header="S"), "POST", "/score", [b"4", b"2"])
    assert sent[0]["status"] == 200
    assert dict(sent[0]["headers"]) == {b"content-type": b"application/json", b"server": b"S", b"content-length": b"9"}
    assert sent[1]["body"] == b'{"ok":42}'
    assert handled.bodies == []


def test_fast_path_hands_the_rest_to_the_endpoint_with_the_body_intact(handled: Endpoint) -> None:
    app = fastpath.FastPath(handled)
    sent = call(app, "POST", "/score", [b'{"records": ', b"[]}"])  # the handler declines
    assert sent[0]["status"] == 400 and sent[1]["body"] == b"from bentoml"
    call(app, "GET", "/score", [b""])
    call(app, "POST", "/other", [b"7"])
    assert handled.bodies == [b'{"records": []}', b"", b"7"]


def test_fast_path_turns_a_scoring_error_into_a_500(handled: Endpoint) -> None:
    sent = call(fastpath.FastPath(handled), "POST", "/score", [b"boom"])
    assert sent[0]["status"] == 500 and b"unexpected error" in sent[1]["body"]
    assert handled.bodies == []
