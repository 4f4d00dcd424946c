"""BatchRunner: takes the actors' jobs, commits them in batches, and survives bad ones.

Whatever the actors have handed over (up to ``commit_batch_max`` jobs) is committed as one
batch by the committer, under the bridge's write gate. A batch that fails is retried with
backoff, in arrival order; after :data:`RETRIES_BEFORE_SPLIT` failures in a row, batches
shrink to one job so a poison job is found, and a single job that keeps failing is dropped
(nothing of it was committed; its requester hears nothing and may retry with the same
request id). After a commit the outbox rows go to the publisher, the board rows to the board
refresher, and each job's future gets its reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bridge.models import Stored
from bridge.queues import RetryDelay, next_batch, push_front
from bridge.reservations.actors import Job, Outcome
from bridge.reservations.board_rows import BoardRows
from plaza.messages import Reply

log = logging.getLogger(__name__)

#: after this many failures in a row, batches shrink to one job, to find a poison job
RETRIES_BEFORE_SPLIT = 3

#: what a committed batch came to: outcomes in batch order, the outbox rows to publish, and
#: the board rows of every machine it changed
Committed = tuple[list[Outcome], list[Stored], dict[str, BoardRows]]


class BatchRunner:
    def __init__(
        self,
        commit: Callable[[list[Job]], Awaitable[Committed]],
        *,
        gate: asyncio.Lock,
        batch_max: int,
        publish: Callable[[list[Stored]], None],
        on_boards: Callable[[dict[str, BoardRows]], None],
    ) -> None:
        self._commit = commit
        self._gate = gate
        self._batch_max = batch_max
        self._publish = publish
        self._on_boards = on_boards
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self.batches = 0
        self.decided = 0
        self.dropped = 0
        #: batches that failed (and were retried): a database in trouble
        self.failed_batches = 0

    async def submit(self, job: Job) -> Reply | None:
        self._queue.put_nowait(job)
        return await job.future

    async def run(self) -> None:
        retry, failures = RetryDelay(), 0
        while True:
            limit = 1 if failures >= RETRIES_BEFORE_SPLIT else self._batch_max
            batch = await next_batch(self._queue, limit)
            try:
                async with self._gate:  # the bridge's writers take turns (SQLite: no busy-wait)
                    outcomes, rows, boards = await self._commit(batch)
            except Exception:
                failures += 1
                self.failed_batches += 1
                if len(batch) == 1 and failures > RETRIES_BEFORE_SPLIT + 2:
                    # One job keeps failing on its own: drop it so it cannot stall every
                    # machine. Nothing of it was committed; its requester hears nothing and
                    # may retry.
                    log.exception(
                        "dropping a %s job for %s that keeps failing",
                        batch[0].what(),
                        batch[0].device_id,
                        extra={"request_id": batch[0].request_id},
                    )
                    self.dropped += 1
                    batch[0].future.set_result(None)
                    failures = RETRIES_BEFORE_SPLIT
                    continue
                delay = retry.failed()
                log.exception(
                    "reservation batch of %d failed (%d in a row); retrying in %.2fs",
                    len(batch),
                    failures,
                    delay,
                )
                push_front(self._queue, batch)  # the retry keeps its place in arrival order
                await asyncio.sleep(delay)
                continue
            retry.reset()
            failures = 0
            self.batches += 1
            self.decided += len(batch)
            self._publish(rows)
            if boards:
                self._on_boards(boards)
            if log.isEnabledFor(logging.DEBUG):
                for job, outcome in zip(batch, outcomes, strict=True):
                    log.debug(
                        "%s on %s decided: %s",
                        job.what(),
                        job.device_id,
                        _result(outcome.reply),
                        extra={"request_id": job.request_id},
                    )
            for job, outcome in zip(batch, outcomes, strict=True):
                if not job.future.done():
                    job.future.set_result(outcome.reply)


def _result(reply: Reply | None) -> str:
    """A reply as a log line says it: ``ok``, the error code, or ``no reply``."""
    if reply is None:
        return "no reply"
    if reply.ok:
        return "ok"
    return reply.error.code if reply.error else "error"
