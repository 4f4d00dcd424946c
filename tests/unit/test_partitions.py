"""Keyed routing's pure parts: the slot of a machine and the handover buffer's bounds."""

from __future__ import annotations

import asyncio

import pytest

from bridge.partitions import HandoverBuffer, Ownership, slot_of
from plaza.settings import Settings


def test_a_machines_slot_is_stable_and_spreads_machines_over_every_slot() -> None:
    assert slot_of("pc-001", 16) == slot_of("pc-001", 16)
    assert slot_of("pc-001", 16) == 5  # CRC-32: the same in every process and release
    assert {slot_of(f"pc-{i:03d}", 16) for i in range(200)} == set(range(16))


def test_the_handover_buffer_replays_one_slot_in_arrival_order_and_keeps_the_others() -> None:
    buffer = HandoverBuffer(window=10, limit=100)
    for i in range(6):
        buffer.keep(i % 2, i, now=float(i))
    assert buffer.take(1, now=6.0) == [1, 3, 5]
    assert buffer.take(1, now=6.0) == []
    assert buffer.take(0, now=6.0) == [0, 2, 4]


def test_the_handover_buffer_is_bounded_in_age_and_in_count() -> None:
    buffer = HandoverBuffer(window=5, limit=3)
    for i in range(5):
        buffer.keep(0, i, now=float(i))
    assert len(buffer) == 3
    assert buffer.expired == 2
    assert buffer.take(0, now=8.5) == [4]  # 2 and 3 are older than the window
    assert buffer.expired == 4


def test_keyed_routing_needs_postgresql_and_no_shared_group() -> None:
    with pytest.raises(ValueError, match="PLAZA_PARTITIONS"):
        Settings(partitions=4)
    with pytest.raises(ValueError, match="PLAZA_PARTITIONS"):
        Settings(partitions=4, database_url="postgresql+asyncpg://x/y", shared_group="g")
    assert Settings(partitions=4, database_url="postgresql+asyncpg://x/y").partitions == 4


@pytest.mark.anyio
async def test_work_run_while_leading_stops_with_leadership_and_with_the_bridge() -> None:
    ownership = Ownership(Settings(partitions=4, database_url="postgresql+asyncpg://x/y"))
    running = asyncio.Event()
    stopped = asyncio.Event()

    async def work() -> None:
        running.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    leader = asyncio.create_task(ownership.while_leading(work, "work"))
    ownership.not_leading.clear()
    ownership.leading.set()  # as a tick that took the clock's lock does
    await asyncio.wait_for(running.wait(), 1)
    ownership.leading.clear()
    ownership.not_leading.set()  # lost (the lock connection died)
    await asyncio.wait_for(stopped.wait(), 1)
    running.clear()
    stopped.clear()
    ownership.not_leading.clear()
    ownership.leading.set()
    await asyncio.wait_for(running.wait(), 1)
    leader.cancel()  # the bridge stops: its work must not outlive it
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert stopped.is_set()
