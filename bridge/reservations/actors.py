"""Job, Outcome and the ActorPool: one queue and one worker per machine.

Every command goes to the actor of its machine, created on demand and reaped after
``actor_idle_seconds`` without work. An actor hands its jobs on one at a time, in arrival
order (to the batch runner's ``submit``), so commands for one machine are applied one after
another while machines proceed in parallel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from plaza import rules
from plaza.logs import request_context
from plaza.messages import Reply

log = logging.getLogger(__name__)

#: the clock's own jobs: the reminder, and the venue floor's (bridge/reservations/floor_clock.py)
TimerOp = Literal["remind", "lock", "overrun", "ending"]
#: the actor of the venue-level commands (parties, the waitlist): a queue of its own, beside
#: the machines' (no machine id can be this: ``~`` is not allowed in one)
VENUE_QUEUE = "~venue"


@dataclass
class Job:
    """One command on its way through an actor and the committer."""

    device_id: str
    command: rules.Command | None
    request_key: str | None = None
    request_id: str | None = None
    reply_topic: str | None = None
    correlation: bytes | None = None
    timer: TimerOp | None = None
    reservation_id: str | None = None
    #: someone other than the command's actor made it (an admin booking for a player)
    initiated_by: str | None = None
    #: the clock's job (the leader's, for any machine; see bridge/partitions.py)
    clock: bool = False
    #: a ``lock`` job: the machine is in a walk-in session (the tracker's view at the tick)
    walk_in: bool = False
    future: asyncio.Future[Reply | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def what(self) -> str:
        """The job's op (or timer), for logs."""
        return self.timer or (self.command.op.value if self.command else "?")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a job came to: the reply (if it has a requester) and whether a reservation
    changed (so the machine's board is refreshed)."""

    reply: Reply | None
    touched: bool = False
    #: other machines whose reservations changed too (a replaced or moved reservation's, a
    #: party's)
    also: frozenset[str] = frozenset()
    #: waitlist lines (kinds) that changed, and the players whose entries did
    lines: frozenset[str] = frozenset()
    waiters: frozenset[str] = frozenset()


class ActorPool:
    """One queue and one worker per machine; workers are reaped when idle."""

    def __init__(
        self, submit: Callable[[Job], Awaitable[Reply | None]], *, idle_seconds: float
    ) -> None:
        self._submit = submit
        self.idle_seconds = idle_seconds
        self.queues: dict[str, asyncio.Queue[Job]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self.spawned = 0
        #: jobs per machine not yet decided (queued or in flight)
        self.pending: dict[str, int] = {}

    def bind(self, tg: asyncio.TaskGroup) -> None:
        self._tg = tg

    def submit(self, job: Job) -> None:
        queue = self.queues.get(job.device_id)
        if queue is None:
            assert self._tg is not None, "ActorPool.bind() first"
            queue = asyncio.Queue()
            self.queues[job.device_id] = queue
            self.spawned += 1
            self._tg.create_task(self._worker(job.device_id, queue), name=f"actor-{job.device_id}")
        queue.put_nowait(job)
        self.pending[job.device_id] = self.pending.get(job.device_id, 0) + 1

    def depth(self) -> int:
        return sum(q.qsize() for q in self.queues.values())

    async def _worker(self, device_id: str, queue: asyncio.Queue[Job]) -> None:
        while True:
            try:
                job = await asyncio.wait_for(queue.get(), self.idle_seconds)
            except TimeoutError:
                if queue.empty():  # no await between this check and the removal
                    del self.queues[device_id]
                    return
                continue
            with request_context(job.request_id):  # its log lines carry its request id
                try:
                    await self._submit(job)
                except Exception:  # never let one command kill the machine's actor
                    log.exception("command for %s failed", device_id)
                finally:
                    left = self.pending.get(device_id, 1) - 1
                    if left > 0:
                        self.pending[device_id] = left
                    else:
                        self.pending.pop(device_id, None)
