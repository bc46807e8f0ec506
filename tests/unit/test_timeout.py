"""The request timeout: BentoML's contract (504 past the timeout, nothing cut once the response
has started) without a live timer per answered request."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from bentoml._internal.server.base_app import BaseAppFactory
from bentoml._internal.server.http import traffic

from pipelines.serving.timeout import RequestTimeout, install

BENTOML_TIMEOUT = RequestTimeout.__bases__[0]  # BentoML's own class, whatever install did


def live_timers(loop: asyncio.AbstractEventLoop) -> int:
    return sum(not h.cancelled() for h in loop._scheduled)  # type: ignore[attr-defined]


async def answer(scope: Any, receive: Any, send: Any, delay: float = 0.0) -> None:
    await asyncio.sleep(delay)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await asyncio.sleep(delay)
    await send({"type": "http.response.body", "body": b"ok"})


async def call(middleware: Any) -> list[dict]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    await middleware({"type": "http", "path": "/score", "method": "POST"}, receive, send)
    return sent


def never_answers() -> tuple[Any, list[bool]]:
    """An app that waits forever, and the list it appends to when it is cancelled."""
    cancelled: list[bool] = []

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    return slow, cancelled


def requests_then_timers(cls: type, n: int) -> int:
    async def main() -> int:
        middleware = cls(answer, timeout=10)
        for _ in range(n):
            assert (await call(middleware))[-1]["body"] == b"ok"
        return live_timers(asyncio.get_running_loop())

    return asyncio.run(main())


def test_bentomls_timeout_leaves_a_timer_per_answered_request() -> None:
    """Why RequestTimeout exists: if this fails, BentoML fixed it and ours can go."""
    assert requests_then_timers(BENTOML_TIMEOUT, 200) == 200


def test_answered_requests_leave_no_timer() -> None:
    assert requests_then_timers(RequestTimeout, 200) == 0


def test_a_request_slower_than_the_timeout_gets_504_and_is_cancelled() -> None:
    slow, cancelled = never_answers()

    async def main() -> list[dict]:
        sent = await call(RequestTimeout(slow, timeout=0.05))
        await asyncio.sleep(0)  # the 504 does not wait for the app to unwind; let it
        assert live_timers(asyncio.get_running_loop()) == 0
        return sent

    sent = asyncio.run(main())
    assert sent[0]["status"] == 504
    body = json.loads(sent[1]["body"])
    assert body == {"error": "Not able to process the request in 0.05 seconds"}
    assert cancelled == [True]


def test_an_app_answering_after_the_timeout_sends_nothing_more() -> None:
    async def stubborn(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(30)
        finally:  # ignores the cancellation and answers anyway
            await answer(scope, receive, send)

    async def main() -> list[dict]:
        sent = await call(RequestTimeout(stubborn, timeout=0.05))
        for _ in range(3):
            await asyncio.sleep(0)
        return sent

    sent = asyncio.run(main())
    assert [m.get("status") for m in sent] == [504, None]  # the 504's start and body only


def test_a_cancelled_request_cancels_the_app() -> None:
    slow, cancelled = never_answers()

    async def main() -> None:
        request = asyncio.ensure_future(call(RequestTimeout(slow, timeout=30)))
        await asyncio.sleep(0.01)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        await asyncio.sleep(0)

    asyncio.run(main())
    assert cancelled == [True]


def test_a_started_response_is_not_cut_by_the_timeout() -> None:
    async def main() -> list[dict]:
        return await call(RequestTimeout(lambda s, r, w: answer(s, r, w, delay=0.06), timeout=0.1))

    sent = asyncio.run(main())
    assert [m.get("status") for m in sent] == [200, None]
    assert sent[-1]["body"] == b"ok"


def test_an_app_error_reaches_the_server_at_once() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(RuntimeError, match="boom"):
            await call(RequestTimeout(broken, timeout=30))
        assert loop.time() - began < 30  # not held until the timeout, as BentoML's does

    asyncio.run(main())


def test_install_makes_bentoml_build_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(traffic, "TimeoutMiddleware", BENTOML_TIMEOUT)

    class App(BaseAppFactory):
        name = "probe"

        @property
        def on_startup(self) -> list:
            return []

        @property
        def on_shutdown(self) -> list:
            return []

    install()
    built = [m.cls for m in App(timeout=5).middlewares]
    assert RequestTimeout in built
    assert BENTOML_TIMEOUT not in built


def test_the_504_is_sent_before_a_slow_app_has_unwound() -> None:
    order: list[str] = []

    async def slow_to_unwind(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.sleep(0.2)  # e.g. closing a connection on cancellation
            order.append("unwound")

    async def send(message: dict) -> None:
        order.append(str(message.get("status", "body")))

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def main() -> None:
        await RequestTimeout(slow_to_unwind, timeout=0.05)({"type": "http"}, receive, send)

    asyncio.run(main())
    assert order == ["504", "body", "unwound"]


def test_a_request_the_server_cancelled_is_neither_answered_nor_cancelled_again() -> None:
    """The client left (the server cancels the request) and the app's cleanup outlasts the
    timeout: no 504 to nobody, and the cleanup is not cut short by a second cancellation."""
    order: list[str] = []

    async def slow_cleanup(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)  # longer than what is left of the timeout
            order.append("cleaned up")
            raise

    async def send(message: dict) -> None:
        order.append(str(message.get("status", "body")))

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def main() -> None:
        middleware = RequestTimeout(slow_cleanup, timeout=0.05)
        request = asyncio.ensure_future(middleware({"type": "http"}, receive, send))
        await asyncio.sleep(0.01)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request

    asyncio.run(main())
    assert order == ["cleaned up"]


def test_an_app_failing_on_the_timeouts_cancellation_still_leaves_one_504(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def converts(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    async def main() -> tuple[list[dict], int]:
        sent = await call(RequestTimeout(converts, timeout=0.05))
        task = asyncio.current_task()
        assert task is not None
        return sent, task.cancelling()

    sent, cancelling = asyncio.run(main())
    assert [m.get("status") for m in sent] == [504, None]
    assert cancelling == 0  # the request's task is not left marked as cancelled
    assert "the app failed after its request timed out" in caplog.text
