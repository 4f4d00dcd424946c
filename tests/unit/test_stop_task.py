"""stop_task: a service whose first cancellation is swallowed (as Python 3.11's
asyncio.wait_for inside aiomqtt can do) still stops."""

from __future__ import annotations

import asyncio

import pytest

from plaza.mqtt import stop_task

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_task_that_swallows_its_first_cancellation_is_still_stopped() -> None:
    swallowed = asyncio.Event()

    async def service() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.set()  # what the wait_for race does: the cancel is lost
        await asyncio.sleep(3600)

    task = asyncio.get_running_loop().create_task(service())
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await stop_task(task, every=0.01)
    assert swallowed.is_set()
    assert task.cancelled()


async def test_an_error_the_task_ends_with_while_stopping_is_raised() -> None:
    async def service() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    task = asyncio.get_running_loop().create_task(service())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await stop_task(task)
