"""The bridge's queue loops: take what has arrived as one batch, and wait longer after each
failure of a write that must not be dropped.

Every writer of the bridge (device store, batch runner, outbox publisher, read receipts, board
refresher) works the same way: wait for one item, take whatever else is already queued (up to
a cap), handle them together. :func:`next_batch` is that step; :class:`RetryDelay` is the
doubling wait (50 ms up to 5 s) between retries of a batch the database refused.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

T = TypeVar("T")


async def next_batch(queue: asyncio.Queue[T], limit: int | None = None) -> list[T]:
    """Wait for one item, then take every item already queued, up to ``limit`` in all."""
    batch = [await queue.get()]
    while not queue.empty() and (limit is None or len(batch) < limit):
        batch.append(queue.get_nowait())
    return batch


def push_front(queue: asyncio.Queue[T], items: list[T]) -> None:
    """Put ``items`` back at the head of ``queue``, in their order (a retry keeps its place;
    asyncio.Queue has no push-front, so the queue is rebuilt)."""
    rest = []
    while not queue.empty():
        rest.append(queue.get_nowait())
    for item in [*items, *rest]:
        queue.put_nowait(item)


class RetryDelay:
    """How long to wait before the next retry: doubling from ``first`` up to ``cap``."""

    def __init__(self, first: float = 0.05, cap: float = 5.0) -> None:
        self.first = first
        self.cap = cap
        self.current = first

    def failed(self) -> float:
        """The wait before retrying after a failure (the next one waits twice as long)."""
        delay = self.current
        self.current = min(delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.current = self.first
