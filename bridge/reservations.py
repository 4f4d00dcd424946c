"""Reservation commands: router -> per-device actors -> group committer -> outbox.

Theory of operation
-------------------
- The router (:meth:`ReservationDesk.submit`) only enqueues: every command goes to the actor of
  its machine, one asyncio queue and one worker per machine, created on demand and reaped
  after ``actor_idle_seconds`` without work. An actor hands its commands to the committer one
  at a time and in arrival order, so commands for one machine are applied one after another.
- The committer (:mod:`bridge.committer`) takes whatever the actors have handed it (up to
  ``commit_batch_max``) and decides them in one transaction (group commit), in arrival order.
  Machines therefore proceed in parallel. Every decision is made by
  :func:`plaza.rules.decide` on facts read inside the transaction; SQL backs it (PostgreSQL
  exclusion constraints; SQLite BEGIN IMMEDIATE).
- Replies, events, notifications and machine commands are written to the outbox in the same
  transaction, then published in commit order by :class:`bridge.outbox.OutboxPublisher`.
- Idempotency: each request's key (``user:request_id``) is stored with its reply in the command
  log, in the same transaction. A repeated key is answered with the stored reply, unchanged.
  aiomqtt acknowledges a QoS 1 message when it is queued, not when it is handled, so a
  bridge killed in between has acknowledged a command it never applied: the requester's
  retry with the same request id (on timeout) recovers it. See docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from bridge.batch_sql import batch_sql
from plaza import rules
from plaza.messages import (
    AlertSeverity,
    NotificationType,
    Reply,
    ReservationEventType,
    ReservationPublic,
    Slot,
)
from plaza.settings import Settings

if TYPE_CHECKING:
    from bridge.committer import Committer

log = logging.getLogger(__name__)

TimerOp = Literal["remind"]


def to_dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def policy_from(settings: Settings) -> rules.Policy:
    opens, closes = settings.opening_hours.split("-")
    h1, m1 = (int(x) for x in opens.split(":"))
    h2, m2 = (int(x) for x in closes.split(":"))
    return rules.Policy(
        max_minutes=settings.max_slot_minutes,
        min_minutes=settings.min_slot_minutes,
        max_active_per_player=settings.max_active_per_player,
        opens=dtime(h1 % 24, m1),
        closes=dtime(h2 % 24, m2),
        tz=ZoneInfo(settings.venue_timezone),  # type: ignore[arg-type]
        check_in_early=timedelta(seconds=settings.check_in_early),
        max_days_ahead=settings.max_days_ahead,
    )


def slot_of(row: Any) -> rules.Slot:
    """A reservation row (ORM object or Core row) as the rules see it."""
    return rules.Slot(
        row.id,
        row.device_id,
        row.player,
        row.starts_at,
        row.ends_at,
        rules.Status(row.status),
        row.code,
    )


def public(slot: rules.Slot, *, private: bool) -> ReservationPublic:
    return ReservationPublic(
        id=slot.id,
        device_id=slot.device_id,
        starts_at=slot.starts_at.timestamp(),
        ends_at=slot.ends_at.timestamp(),
        status=slot.status.value,
        code=slot.code if private else None,
        user=slot.user if private else None,
    )


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
    future: asyncio.Future[Reply | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a job came to: the reply (if it has a requester) and whether a reservation
    changed (so the machine's board is refreshed)."""

    reply: Reply | None
    touched: bool = False
    #: other machines whose reservations changed too (a replaced reservation's)
    also: frozenset[str] = frozenset()


EVENT_FOR: dict[rules.Status, ReservationEventType] = {
    rules.Status.PENDING: "reservation_created",
    rules.Status.APPROVED: "reservation_approved",
    rules.Status.REJECTED: "reservation_rejected",
    rules.Status.CANCELLED: "reservation_cancelled",
    rules.Status.CHECKED_IN: "reservation_checked_in",
    rules.Status.COMPLETED: "reservation_completed",
    rules.Status.NO_SHOW: "reservation_no_show",
}

# (notification type, priority) per new status; texts are in plaza.i18n
NOTICE_FOR: dict[rules.Status, tuple[NotificationType, AlertSeverity]] = {
    rules.Status.PENDING: ("reservation_created", AlertSeverity.LOW),
    rules.Status.APPROVED: ("reservation_approved", AlertSeverity.HIGH),
    rules.Status.REJECTED: ("reservation_rejected", AlertSeverity.HIGH),
    rules.Status.CANCELLED: ("reservation_cancelled", AlertSeverity.MEDIUM),
    rules.Status.NO_SHOW: ("no_show_released", AlertSeverity.HIGH),
    rules.Status.CHECKED_IN: ("reservation_checked_in", AlertSeverity.LOW),
    rules.Status.COMPLETED: ("reservation_completed", AlertSeverity.LOW),
}


class ActorPool:
    """One queue and one worker per machine; workers are reaped when idle."""

    def __init__(self, committer: Committer, idle_seconds: float) -> None:
        self.committer = committer
        self.idle_seconds = idle_seconds
        self.queues: dict[str, asyncio.Queue[Job]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self.spawned = 0

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
            try:
                await self.committer.submit(job)
            except Exception:  # never let one command kill the machine's actor
                log.exception("command for %s failed", device_id)


#: a board entry's "next slot" looks this far ahead
BOARD_HORIZON = timedelta(hours=24)

#: a machine's current and next reservation slot, as its board entry shows them
BoardSlots = tuple[Slot | None, Slot | None]
#: a machine's live reservation rows up to the board's horizon; the current and next slot are
#: picked from them when the board is shown (time may have crossed a boundary meanwhile)
BoardRows = list[Any]


def board_slots(
    conn: Connection, devices: Collection[str], moment: datetime
) -> dict[str, BoardRows]:
    """The live reservation rows of each of ``devices`` from ``moment`` to the horizon, read on
    a synchronous connection: the committer's own transaction (so the board shows exactly
    what it committed) or a reader's."""
    if not devices:
        return {}
    rows = batch_sql(conn).board_rows(devices, moment, moment + BOARD_HORIZON)
    by_device: dict[str, list[Any]] = {d: [] for d in devices}
    for row in rows:
        by_device[row.device_id].append(row)
    return by_device


def current_and_next(rows: list[Any], now: datetime) -> BoardSlots:
    """Of one machine's active reservation rows: the one under way at ``now`` and the next."""
    current = nxt = None
    for row in sorted(rows, key=lambda r: r.starts_at):
        if row.starts_at <= now < row.ends_at and current is None:
            current = row
        elif row.starts_at > now and nxt is None:
            nxt = row

    def wire(row: Any) -> Slot | None:
        if row is None:
            return None
        return Slot(
            reservation_id=row.id,
            starts_at=row.starts_at.timestamp(),
            ends_at=row.ends_at.timestamp(),
            status=row.status,
        )

    return wire(current), wire(nxt)
