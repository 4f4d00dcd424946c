"""Committer: decides a batch of reservation jobs in one transaction (group commit).

Two paths, one set of rules (:func:`plaza.rules.decide`) and one renderer
(:class:`~bridge.reservations.effects.ReservationEffects`):

- the *batched* path loads every fact the batch can need into a
  :class:`~bridge.reservations.slotbook.SlotBook`, decides the jobs in arrival order against
  it (each decision updates it) and writes everything with a few multi-row statements; the
  whole batch runs in one worker thread on a synchronous driver (pysqlite; psycopg for
  PostgreSQL).
- the *careful* path decides one job at a time, each in its own SAVEPOINT with a SlotBook of
  its own: for reminders, check-in by code on the machine, and constraint races (another
  bridge won: the batch is redone here so only the loser is refused).

Both read the current and next slot of every machine the batch changed in the same
transaction, so boards show exactly what was committed.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError
from sqlmodel import or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bridge.context import BridgeContext
from bridge.models import Stored
from bridge.notifier import Note
from bridge.reservations.actors import VENUE_QUEUE, Job, Outcome
from bridge.reservations.batch_runner import Committed
from bridge.reservations.board_rows import board_ask, board_slots, by_device
from bridge.reservations.effects import ReservationEffects
from bridge.reservations.floor_clock import FLOOR_TIMERS, FloorClock
from bridge.reservations.slotbook import SlotBook
from bridge.reservations.slots import policy_from, public, slot_of
from bridge.reservations.waitlist_rows import line_messages
from bridge.sql import batch_sql
from bridge.writes import Writes
from plaza import rules
from plaza.db import make_sync_engine
from plaza.tables import Device, Reservation, is_active

log = logging.getLogger(__name__)
#: a job this bridge may no longer decide (its machine changed owner): no effect, no reply
HANDED_OVER = Outcome(None)


class Committer:
    """Decides batches of jobs (see the module docstring); :meth:`commit` is the
    :class:`~bridge.reservations.batch_runner.BatchRunner`'s ``commit``."""

    def __init__(self, ctx: BridgeContext) -> None:
        self.engine = ctx.engine
        self._ownership = ctx.ownership
        self._outbox = ctx.outbox
        self._sessions = ctx.sessions
        self._sync_engine = make_sync_engine(ctx.settings.db_url)
        self.settings = ctx.settings
        self.topics = ctx.topics
        self.policy = policy_from(ctx.settings)
        self.effects = ReservationEffects(
            ctx.topics, self.policy, pre_slot_lock=timedelta(seconds=ctx.settings.pre_slot_lock)
        )
        self.floor = FloorClock(ctx.settings, ctx.topics, self.effects)
        #: batches redone on the careful path after a constraint refused them
        self.careful_batches = 0

    def close(self) -> None:
        """Close the worker thread's connections (at shutdown)."""
        if self._sync_engine is not None:
            self._sync_engine.dispose()

    async def commit(self, batch: list[Job]) -> Committed:
        now = datetime.now(UTC)
        if all(_batchable(j) for j in batch):
            try:
                if self._sync_engine is not None:  # the whole batch in one worker thread
                    return await asyncio.to_thread(self._batch_in_thread, batch, now)
                async with self.engine.begin() as conn:
                    return await conn.run_sync(self._batch, batch, now)
            except IntegrityError as exc:
                # Another bridge won a race (PostgreSQL constraint): redo this batch one
                # command at a time, each in its own savepoint, so only the loser is refused.
                log.info("batch of %d hit a constraint (%s); one by one", len(batch), exc.orig)
                self.careful_batches += 1
        outcomes, rows = [], []
        async with self._sessions() as session:
            conn = await session.connection()
            fenced = await conn.run_sync(self._fence, batch)
            for job in batch:
                if job.device_id in fenced:
                    outcomes.append(HANDED_OVER)
                    continue
                outcome, out = await self._one(session, job, now)
                outcomes.append(outcome)
                rows += out
            conn = await session.connection()
            rows += await conn.run_sync(self._lines, outcomes, now)
            boards = await conn.run_sync(board_slots, _touched(batch, outcomes), now)
            await session.commit()
        return outcomes, rows, boards

    # -- the batched path -------------------------------------------------------------------------
    def _batch_in_thread(self, batch: list[Job], now: datetime) -> Committed:
        assert self._sync_engine is not None
        with self._sync_engine.begin() as conn:
            return self._batch(conn, batch, now, commit=True)

    def _batch(
        self, conn: Connection, batch: list[Job], now: datetime, commit: bool = False
    ) -> Committed:
        writes = Writes()
        fenced = self._fence(conn, batch)
        book = SlotBook.load(batch_sql(conn), batch, self.policy, now)
        outcomes = [
            HANDED_OVER if job.device_id in fenced else decide_job(book, self.effects, writes, job)
            for job in batch
        ]
        # the boards of the machines this batch changed, as this transaction leaves them
        touched = _touched(batch, outcomes)
        # (the caller commits right after: the COMMIT may go with the writes, unless the
        # waitlist lines the batch changed are still to be read and queued after them)
        lines = any(o.lines for o in outcomes)
        rows, board = writes.flush_batch(
            conn, self._outbox.max_packet, board_ask(touched, now), commit=commit and not lines
        )
        if lines:
            rows += self._lines(conn, outcomes, now)
        return outcomes, rows, by_device(touched, board)

    def _fence(self, conn: Connection, batch: list[Job]) -> set[str]:
        """Machines of the batch this bridge no longer owns (several bridges: their jobs are
        left to the new owner, which replays their requests); the first statement of the
        transaction, see bridge/partitions.py."""
        # venue jobs (several machines, any owner's) are the leader's alone: see venue_intake
        owned = [j.device_id for j in batch if not j.clock and j.device_id != VENUE_QUEUE]
        return self._ownership.fence(conn, owned, [j.device_id for j in batch if j.clock])

    def _lines(self, conn: Connection, outcomes: list[Outcome], now: datetime) -> list[Stored]:
        """The waitlist state of every player in a line the batch changed (retained), as
        this transaction leaves it, into the outbox."""
        kinds = {k for o in outcomes for k in o.lines}
        if not kinds:
            return []
        players = {p for o in outcomes for p in o.waiters}
        messages = line_messages(conn, self.topics, kinds, players, now)
        return batch_sql(conn).insert_outbox(messages, now, self._outbox.max_packet)

    # -- the careful path -------------------------------------------------------------------------
    async def _one(
        self, session: AsyncSession, job: Job, now: datetime
    ) -> tuple[Outcome, list[Stored]]:
        writes = Writes()
        if job.timer == "remind":
            outcome = await self._remind(session, job, now, writes)
            return outcome, await writes.flush(session, self._outbox.max_packet)
        if job.timer in FLOOR_TIMERS:
            outcome = await self.floor.render(session, job, now, writes)
            return outcome, await writes.flush(session, self._outbox.max_packet)
        cmd = job.command
        assert cmd is not None
        conn = await session.connection()
        try:
            async with session.begin_nested():
                book = await conn.run_sync(
                    lambda c: SlotBook.load(batch_sql(c), [job], self.policy, now)
                )
                outcome = decide_job(book, self.effects, writes, job)
                rows = await writes.flush(session, self._outbox.max_packet)
        except IntegrityError as exc:
            log.info(
                "SQL refused %s on %s: %s",
                cmd.op.value,
                job.device_id,
                exc.orig,
                extra={"request_id": job.request_id},
            )
            conflict = await self._holding_overlap(session, job, cmd)
            refusal = rules.Refusal(rules.Code.CONFLICT, "the slot was taken meanwhile", conflict)
            writes = Writes()
            outcome = self.effects.refused(writes, job, cmd, refusal, now)
            async with session.begin_nested():
                rows = await writes.flush(session, self._outbox.max_packet)
        return outcome, rows

    async def _holding_overlap(
        self, session: AsyncSession, job: Job, cmd: rules.Command
    ) -> rules.Slot | None:
        if not (cmd.starts_at and cmd.ends_at):
            return None
        row = (
            await session.exec(
                select(Reservation).where(
                    or_(
                        Reservation.device_id == job.device_id, Reservation.player == cmd.actor.user
                    ),
                    is_active(Reservation.status, rules.HOLDING),
                    Reservation.starts_at < cmd.ends_at,
                    Reservation.ends_at > cmd.starts_at,
                )
            )
        ).first()
        return slot_of(row) if row else None

    async def _remind(
        self, session: AsyncSession, job: Job, now: datetime, writes: Writes
    ) -> Outcome:
        assert job.reservation_id is not None
        row = await session.get(Reservation, job.reservation_id)
        due = rules.REMINDER.statuses
        if row is None or row.reminded_at is not None or row.status not in due:
            return Outcome(None)  # already reminded (or no longer due): nothing twice
        writes.changed.append({"id": row.id, "reminded_at": now})
        device = await session.get(Device, row.device_id)
        minutes = max(0, round((row.starts_at - now).total_seconds() / 60))
        writes.notes.append(
            Note(
                user=row.player,
                topic=self.topics.notifications(row.player),
                type=rules.REMINDER.notice,
                priority=rules.REMINDER.priority,
                params={
                    "name": device.name if device else row.device_id,
                    "minutes": minutes,
                    "code": row.code,
                },
                reservation=public(slot_of(row), private=True),
            )
        )
        return Outcome(None)


def decide_job(book: SlotBook, effects: ReservationEffects, writes: Writes, job: Job) -> Outcome:
    """One job of a batch, on the batch's facts: a repeated request key is answered with its
    logged reply (also one earlier in this batch); anything else is decided by the rules,
    rendered into ``writes`` and recorded in ``book`` for the jobs after it."""
    if job.request_key is not None and job.request_key in book.logged:
        reply = book.logged[job.request_key]
        writes.outbox += effects.reply_rows(job, reply)
        return Outcome(reply)
    cmd = job.command
    assert cmd is not None
    decision = rules.decide(book.context(job, cmd), cmd)
    book.record(cmd, decision)
    names = book.names()
    position = book.position(decision.entry)
    outcome = effects.apply(writes, job, cmd, decision, names, book.now, position=position)
    if job.request_key is not None and outcome.reply is not None:
        book.logged[job.request_key] = outcome.reply
    return outcome


def _touched(batch: list[Job], outcomes: list[Outcome]) -> set[str]:
    """Machines whose reservations the batch changed."""
    touched = {j.device_id for j, o in zip(batch, outcomes, strict=True) if o.touched}
    return (touched | {d for o in outcomes for d in o.also}) - {VENUE_QUEUE}


def _batchable(job: Job) -> bool:
    """Jobs the batched path decides; the rest take the careful path."""
    cmd = job.command
    return (
        cmd is not None
        and job.timer is None
        and (
            cmd.op in (rules.Op.RESERVE, rules.Op.OFFER)
            or cmd.op in rules.VENUE_OPS
            or cmd.reservation_id is not None
        )
    )
