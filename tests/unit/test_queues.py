"""bridge.queues: a batch is what has arrived, a retry keeps its place, waits double."""

from __future__ import annotations

import asyncio

import pytest

from bridge.queues import RetryDelay, next_batch, push_front

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_batch_is_everything_queued_up_to_the_limit_in_order() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(5):
        queue.put_nowait(i)
    assert await next_batch(queue, 3) == [0, 1, 2]
    assert await next_batch(queue) == [3, 4]


async def test_a_batch_waits_for_its_first_item_only() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    waiting = asyncio.get_running_loop().create_task(next_batch(queue, 10))
    await asyncio.sleep(0)
    assert not waiting.done()
    queue.put_nowait("a")
    async with asyncio.timeout(5):
        assert await waiting == ["a"]


async def test_items_pushed_back_come_first_in_their_own_order() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for item in ("c", "d"):
        queue.put_nowait(item)
    push_front(queue, ["a", "b"])
    assert await next_batch(queue) == ["a", "b", "c", "d"]


def test_retry_waits_double_up_to_the_cap_and_start_over_after_a_success() -> None:
    retry = RetryDelay(first=0.05, cap=0.3)
    assert [retry.failed() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    retry.reset()
    assert retry.failed() == 0.05
