"""The adaptive batcher: merges concurrent requests, keeps order, isolates failures, bounds its queue."""

from __future__ import annotations

import asyncio
import threading

import pytest

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
def test_requests_a_few_loop_iterations_behind_join_the_batch(
    settle: int, expected: list[int]
) -> None:
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
