"""Committer: decides reservation jobs in batches, one transaction per batch (group commit).

Two paths, one set of rules (:func:`plaza.rules.decide`) and one set of message builders:

- the *batched* path (:class:`BatchDecision`) reads every fact a batch can need with a handful
  of queries, decides the jobs in arrival order against that in-memory picture (which each
  decision updates), and writes everything with a few multi-row statements. Correct because
  within one bridge the committer is the only writer; across bridges, SQL constraints refuse
  what a stale picture let through, and the batch is redone on the careful path.
- the *careful* path decides one job at a time, each in its own SAVEPOINT, looking facts up as
  it goes: for reminders, check-in by code on the machine, and constraint races.

Writes go through :class:`Writes` as plain rows (Core multi-row INSERT / UPDATE): building a
SQLModel object costs more than the whole decision, and the ORM's flush more again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bridge.alerts import make_alert
from bridge.batch_sql import batch_sql, table_of
from bridge.notifier import Note, write_notes
from bridge.outbox import (
    OutboxPublisher,
    OutboxRow,
    outbox_message,
    reply_properties,
)
from bridge.reservations import (
    EVENT_FOR,
    NOTICE_FOR,
    BoardRows,
    Job,
    Outcome,
    board_slots,
    policy_from,
    public,
    slot_of,
)
from bridge.store import alert_row
from plaza import rules
from plaza.db import make_sync_engine, session_factory
from plaza.messages import (
    AdminAlert,
    AlertSeverity,
    CommandName,
    ConflictSlot,
    DeviceCommand,
    ErrorBody,
    Reply,
    ReservationEvent,
    Session,
)
from plaza.settings import Settings
from plaza.tables import Alert, CommandLog, Device, Reservation, is_active
from plaza.topics import Topics

log = logging.getLogger(__name__)


class DeviceFacts(Protocol):
    """What decisions need of a machine (a table row or a Core row)."""

    name: str
    maintenance: bool
    auto_approve: bool


@dataclass
class Writes:
    """Rows to write, in order; :meth:`flush` writes them and returns the outbox rows with
    their ids, in the order they were added."""

    new: list[dict[str, Any]] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    #: notifications: numbered, rendered and (unless low priority) queued at flush
    notes: list[Note] = field(default_factory=list)
    #: admin alerts to store (their outbox message is added by whoever raises them)
    alerts: list[AdminAlert] = field(default_factory=list)

    def flush_sync(self, conn: Connection) -> list[OutboxRow]:
        table, sql = table_of(Reservation), batch_sql(conn)
        for row in self.changed:  # first: a cancel frees its slot for a booking in this batch
            values = {k: v for k, v in row.items() if k != "id"}
            conn.execute(update(table).where(table.c.id == row["id"]).values(**values))
        sql.insert_reservations(self.new)
        sql.insert_logs(self.logs)
        if self.alerts:
            conn.execute(insert(table_of(Alert)), [alert_row(a) for a in self.alerts])
        return sql.insert_outbox(self.outbox + write_notes(conn, self.notes, datetime.now(UTC)))

    async def flush(self, session: AsyncSession) -> list[OutboxRow]:
        conn = await session.connection()
        return await conn.run_sync(self.flush_sync)


#: what a committed batch came to: outcomes in batch order, the outbox rows to publish, and
#: the current and next slot of every machine it changed
Committed = tuple[list[Outcome], list[OutboxRow], dict[str, BoardRows]]


class Committer:
    """Takes jobs from the actors and decides them in batches (see the module docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        topics: Topics,
        publisher: OutboxPublisher,
        on_boards: Callable[[dict[str, BoardRows]], None],
        write_gate: asyncio.Lock,
    ) -> None:
        self.engine = engine
        self._gate = write_gate
        self._sessions = session_factory(engine)
        self._sync_engine = make_sync_engine(settings.db_url)
        self.settings = settings
        self.topics = topics
        self.policy = policy_from(settings)
        self.publisher = publisher
        self._on_boards = on_boards
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self.batches = 0
        self.careful_batches = 0
        self.decided = 0
        self.dropped = 0
        #: batches that failed (and were retried): a database in trouble
        self.failed_batches = 0

    def close(self) -> None:
        """Close the worker thread's connections (at shutdown)."""
        if self._sync_engine is not None:
            self._sync_engine.dispose()

    async def submit(self, job: Job) -> Reply | None:
        self._queue.put_nowait(job)
        return await job.future

    async def run(self) -> None:
        delay, failures = 0.05, 0
        while True:
            batch = [await self._queue.get()]
            limit = 1 if failures >= RETRIES_BEFORE_SPLIT else self.settings.commit_batch_max
            while not self._queue.empty() and len(batch) < limit:
                batch.append(self._queue.get_nowait())
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
                        _what(batch[0]),
                        batch[0].device_id,
                    )
                    self.dropped += 1
                    batch[0].future.set_result(None)
                    failures = RETRIES_BEFORE_SPLIT
                    continue
                log.exception(
                    "reservation batch of %d failed (%d in a row); retrying in %.2fs",
                    len(batch),
                    failures,
                    delay,
                )
                for job in reversed(batch):  # keep arrival order for the retry
                    self._requeue_front(job)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay, failures = 0.05, 0
            self.batches += 1
            self.decided += len(batch)
            self.publisher.enqueue(rows)
            if boards:
                self._on_boards(boards)
            for job, outcome in zip(batch, outcomes, strict=True):
                if not job.future.done():
                    job.future.set_result(outcome.reply)

    def _requeue_front(self, job: Job) -> None:
        rest = []  # asyncio.Queue has no push-front: rebuild it with the job first
        while not self._queue.empty():
            rest.append(self._queue.get_nowait())
        self._queue.put_nowait(job)
        for item in rest:
            self._queue.put_nowait(item)

    async def _commit(self, batch: list[Job]) -> Committed:
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
            for job in batch:
                outcome, out = await self._one(session, job, now)
                outcomes.append(outcome)
                rows += out
            conn = await session.connection()
            boards = await conn.run_sync(board_slots, _touched(batch, outcomes), now)
            await session.commit()
        return outcomes, rows, boards

    def _batch_in_thread(self, batch: list[Job], now: datetime) -> Committed:
        assert self._sync_engine is not None
        with self._sync_engine.begin() as conn:
            return self._batch(conn, batch, now)

    def _batch(self, conn: Connection, batch: list[Job], now: datetime) -> Committed:
        writes = Writes()
        outcomes = BatchDecision(self, conn, now, writes).run(batch)
        rows = writes.flush_sync(conn)
        # the boards of the machines this batch changed, as this transaction leaves them
        return outcomes, rows, board_slots(conn, _touched(batch, outcomes), now)

    # -- the careful path -------------------------------------------------------------------------
    async def _one(
        self, session: AsyncSession, job: Job, now: datetime
    ) -> tuple[Outcome, list[OutboxRow]]:
        writes = Writes()
        if job.request_key is not None:
            logged = await session.get(CommandLog, job.request_key)
            if logged is not None:  # a retry or redelivery: answer again, change nothing
                reply = Reply.model_validate_json(logged.reply_json)
                writes.outbox += self.reply_rows(job, reply)
                return Outcome(reply), await writes.flush(session)
        if job.timer == "remind":
            outcome = await self._remind(session, job, now, writes)
            return outcome, await writes.flush(session)
        cmd = job.command
        assert cmd is not None
        try:
            async with session.begin_nested():
                ctx, device = await self._context(session, job, now)
                decision = rules.decide(ctx, cmd)
                outcome = self.apply(writes, job, cmd, decision, ctx.target, device, now)
                rows = await writes.flush(session)
        except IntegrityError as exc:
            log.info("SQL refused %s on %s: %s", cmd.op.value, job.device_id, exc.orig)
            conflict = await self._holding_overlap(session, job, cmd)
            refusal = rules.Refusal(rules.Code.CONFLICT, "the slot was taken meanwhile", conflict)
            writes = Writes()
            outcome = self.refused(writes, job, cmd, refusal, now)
            async with session.begin_nested():
                rows = await writes.flush(session)
        return outcome, rows

    async def _context(
        self, session: AsyncSession, job: Job, now: datetime
    ) -> tuple[rules.Context, Device | None]:
        cmd = job.command
        assert cmd is not None
        device = await session.get(Device, job.device_id)
        target: Reservation | None = None
        if cmd.reservation_id:
            target = await session.get(Reservation, cmd.reservation_id)
        elif cmd.op is rules.Op.CHECK_IN and cmd.code:
            target = await self._by_code(session, job.device_id, cmd.code, now)
        window = _window(cmd, target, now)
        device_rows = (
            await session.exec(
                select(Reservation).where(
                    Reservation.device_id == job.device_id,
                    is_active(Reservation.status),
                    Reservation.starts_at < window[1],
                    Reservation.ends_at > window[0],
                )
            )
        ).all()
        player_rows: list[Reservation] = []
        if cmd.op is rules.Op.RESERVE:
            player_rows = list(
                (
                    await session.exec(
                        select(Reservation).where(
                            Reservation.player == cmd.actor.user,
                            is_active(Reservation.status),
                            Reservation.ends_at > now,
                        )
                    )
                ).all()
            )
        replaced = await session.get(Reservation, cmd.replaces) if cmd.replaces else None
        ctx = self.context(
            now,
            device,
            tuple(slot_of(r) for r in device_rows),
            tuple(slot_of(r) for r in player_rows),
            slot_of(target) if target is not None else None,
            replaced=slot_of(replaced) if replaced is not None else None,
        )
        return ctx, device

    def context(
        self,
        now: datetime,
        device: DeviceFacts | None,
        device_slots: tuple[rules.Slot, ...],
        player_slots: tuple[rules.Slot, ...],
        target: rules.Slot | None,
        held: int | None = None,
        replaced: rules.Slot | None = None,
    ) -> rules.Context:
        return rules.Context(
            now=now,
            policy=self.policy,
            device_exists=device is not None,
            maintenance=bool(device and device.maintenance),
            auto_approve=bool(device and device.auto_approve),
            device_slots=device_slots,
            player_slots=player_slots,
            target=target,
            new_id=uuid.uuid4().hex[:16],
            new_code=f"{secrets.randbelow(10**6):06d}",
            player_active_count=held,
            replaced=replaced,
        )

    async def _by_code(
        self, session: AsyncSession, device_id: str, code: str, now: datetime
    ) -> Reservation | None:
        """The machine's approved reservation with this code, else its current approved one
        (so a wrong code is answered ``bad_code``, not ``not_found``)."""
        early = now + timedelta(seconds=self.settings.check_in_early)
        rows = (
            await session.exec(
                select(Reservation)
                .where(
                    Reservation.device_id == device_id,
                    Reservation.status == rules.Status.APPROVED.value,
                    Reservation.starts_at <= early,
                    Reservation.ends_at > now,
                )
                .order_by(col(Reservation.starts_at))
            )
        ).all()
        for row in rows:
            if row.code == code:
                return row
        return rows[0] if rows else None

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
        if row is None or row.reminded_at is not None or row.status not in ("approved", "pending"):
            return Outcome(None)  # already reminded (or no longer due): nothing twice
        writes.changed.append({"id": row.id, "reminded_at": now})
        device = await session.get(Device, row.device_id)
        minutes = max(0, round((row.starts_at - now).total_seconds() / 60))
        writes.notes.append(
            Note(
                user=row.player,
                topic=self.topics.notifications(row.player),
                type="reservation_reminder",
                priority=AlertSeverity.HIGH,
                params={
                    "name": device.name if device else row.device_id,
                    "minutes": minutes,
                    "code": row.code,
                },
                reservation=public(slot_of(row), private=True),
            )
        )
        return Outcome(None)

    # -- decisions to rows (both paths) -----------------------------------------------------------
    def apply(
        self,
        writes: Writes,
        job: Job,
        cmd: rules.Command,
        decision: rules.Decision,
        target: rules.Slot | None,
        device: DeviceFacts | None,
        now: datetime,
    ) -> Outcome:
        if decision.refusal is not None:
            return self.refused(writes, job, cmd, decision.refusal, now)
        after = decision.after
        assert after is not None
        if target is None:
            writes.new.append(
                {
                    "id": after.id,
                    "device_id": after.device_id,
                    "player": after.user,
                    "starts_at": after.starts_at,
                    "ends_at": after.ends_at,
                    "status": after.status.value,
                    "code": after.code,
                    "request_key": job.request_key or f"system:{after.id}",
                    "created_at": now,
                    "updated_at": now,
                    "reminded_at": None,
                }
            )
        else:
            writes.changed.append({"id": after.id, "status": after.status.value, "updated_at": now})
        released = decision.released
        if released is not None:  # first in the writes: updates run before inserts
            writes.changed.insert(
                0, {"id": released.id, "status": released.status.value, "updated_at": now}
            )
            self.announce(writes, released, now, released.device_id, notify=False)
        reply = Reply(request_id=job.request_id, ok=True, reservation=public(after, private=True))
        writes.outbox += self.reply_rows(job, reply)
        # The owner who asked already has the reply (on their own tree, so on every one of
        # their screens); a notification is for what others or the clock did to it.
        by_owner = (
            job.initiated_by is None
            and cmd.actor.role is rules.Role.PLAYER
            and cmd.actor.user == after.user
        )
        name = device.name if device else after.device_id
        self.announce(writes, after, now, name, notify=not by_owner)
        if after.status is rules.Status.CHECKED_IN:
            started = Session(
                id=after.id,
                started_at=now.timestamp(),
                ends_at=after.ends_at.timestamp(),
                reservation_code=after.code,
            )
            writes.outbox.append(
                self.device_cmd(after.device_id, CommandName.START_SESSION, now, session=started)
            )
        elif after.status is rules.Status.COMPLETED:
            writes.outbox.append(
                self.device_cmd(after.device_id, CommandName.END_SESSION, now, reason="slot ended")
            )
        self.log_reply(writes, job, cmd, reply)
        also = frozenset({released.device_id}) if released is not None else frozenset()
        return Outcome(reply, touched=True, also=also)

    def refused(
        self, writes: Writes, job: Job, cmd: rules.Command, refusal: rules.Refusal, now: datetime
    ) -> Outcome:
        conflict = None
        if refusal.conflict is not None:
            c = refusal.conflict
            conflict = ConflictSlot(
                reservation_id=c.id,
                starts_at=c.starts_at.timestamp(),
                ends_at=c.ends_at.timestamp(),
                status=c.status.value,
            )
        reply = Reply(
            request_id=job.request_id,
            ok=False,
            error=ErrorBody(code=refusal.code.value, message=refusal.message, conflict=conflict),
        )
        writes.outbox += self.reply_rows(job, reply)
        if cmd.op is rules.Op.CHECK_IN and cmd.actor.role is rules.Role.DEVICE:
            writes.outbox.append(
                self.device_cmd(
                    job.device_id,
                    CommandName.END_SESSION,
                    now,
                    reason=f"check-in refused: {refusal.message}",
                )
            )
        self.log_reply(writes, job, cmd, reply)
        return Outcome(reply)

    def message(self, topic: str, payload: bytes, props_json: str | None = None) -> dict[str, Any]:
        return outbox_message(topic, payload, props=props_json)

    def reply_rows(self, job: Job, reply: Reply) -> list[dict[str, Any]]:
        if job.reply_topic is None:
            return []
        return [self.message(job.reply_topic, reply.encode(), reply_properties(job.correlation))]

    def log_reply(self, writes: Writes, job: Job, cmd: rules.Command, reply: Reply) -> None:
        if job.request_key is None:
            return
        writes.logs.append(
            {
                "request_key": job.request_key,
                "device_id": job.device_id,
                "op": cmd.op.value,
                "ok": reply.ok,
                "reply_json": reply.model_dump_json(),
                "created_at": datetime.now(UTC),
            }
        )

    def announce(
        self,
        writes: Writes,
        after: rules.Slot,
        now: datetime,
        device_name: str,
        *,
        notify: bool = True,
    ) -> None:
        """The broadcast event (no player named), the owner's notification, and for a
        no-show an admin alert."""
        ts = now.timestamp()
        event = ReservationEvent(
            type=EVENT_FOR[after.status],
            reservation_id=after.id,
            device_id=after.device_id,
            timestamp=ts,
            data={
                "status": after.status.value,
                "starts_at": after.starts_at.timestamp(),
                "ends_at": after.ends_at.timestamp(),
            },
        )
        writes.outbox.append(self.message(self.topics.reservation_events, event.encode()))
        local = after.starts_at.astimezone(self.policy.tz).strftime("%m/%d %H:%M")
        if after.status is rules.Status.NO_SHOW:
            alert = make_alert(
                "no_show", AlertSeverity.MEDIUM, ts, after.device_id, name=device_name, start=local
            )
            writes.alerts.append(alert)
            writes.outbox.append(self.message(self.topics.admin_alerts, alert.encode()))
        if not notify:
            return
        kind, priority = NOTICE_FOR[after.status]
        writes.notes.append(
            Note(
                user=after.user,
                topic=self.topics.notifications(after.user),
                type=kind,
                priority=priority,
                params={"name": device_name, "start": local, "code": after.code},
                reservation=public(after, private=True),
            )
        )

    def device_cmd(
        self,
        device_id: str,
        name: CommandName,
        now: datetime,
        *,
        session: Session | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        cmd = DeviceCommand(cmd=name, ts=now.timestamp(), session=session, reason=reason)
        return self.message(self.topics.cmd(device_id), cmd.encode())


#: after this many failures in a row, batches shrink to one job, to find a poison job
RETRIES_BEFORE_SPLIT = 3


def _window(cmd: rules.Command, target: Any, now: datetime) -> tuple[datetime, datetime]:
    """The time span whose reservations matter to ``cmd``: the requested slot, else the
    target reservation's (a row or a Slot), else just now."""
    if cmd.op is rules.Op.RESERVE and cmd.starts_at and cmd.ends_at:
        return cmd.starts_at, cmd.ends_at
    if target is not None:
        return target.starts_at, target.ends_at
    return now, now


def _touched(batch: list[Job], outcomes: list[Outcome]) -> set[str]:
    """Machines whose reservations the batch changed."""
    touched = {j.device_id for j, o in zip(batch, outcomes, strict=True) if o.touched}
    return touched | {d for o in outcomes for d in o.also}


def _what(job: Job) -> str:
    return job.timer or (job.command.op.value if job.command else "?")


def _batchable(job: Job) -> bool:
    """Jobs the batched path decides; the rest take the careful path."""
    cmd = job.command
    return (
        cmd is not None
        and job.timer is None
        and (cmd.op is rules.Op.RESERVE or cmd.reservation_id is not None)
    )


class BatchDecision:
    """The batched path: facts for the whole batch up front, decisions in memory. Runs on a
    synchronous connection in a worker thread (pysqlite or psycopg; ``run_sync`` on the
    async engine for a database without a synchronous driver here)."""

    def __init__(self, committer: Committer, conn: Connection, now: datetime, writes: Writes):
        self.c = committer
        self.conn = conn
        self.now = now
        self.writes = writes
        self.slots: dict[str, rules.Slot] = {}
        self.by_device: dict[str, set[str]] = {}
        self.by_player: dict[str, set[str]] = {}
        self.held: dict[str, int] = {}

    def _index(self, slot: rules.Slot) -> None:
        self.slots[slot.id] = slot
        self.by_device.setdefault(slot.device_id, set()).add(slot.id)
        self.by_player.setdefault(slot.user, set()).add(slot.id)

    def _load(self, batch: list[Job]) -> tuple[dict[str, Reply], dict[str, Any]]:
        sql = batch_sql(self.conn)
        keys = [j.request_key for j in batch if j.request_key]
        logged = {key: Reply.model_validate_json(text) for key, text in sql.logged(keys)}
        device_ids = {j.device_id for j in batch}
        devices = {d.id: d for d in sql.devices(device_ids)}
        cmds = [j.command for j in batch if j.command is not None]
        target_ids = {c.reservation_id for c in cmds if c.reservation_id}
        target_ids |= {c.replaces for c in cmds if c.replaces}
        if target_ids:
            for row in sql.targets(target_ids):
                self._index(slot_of(row))
        starts = [c.starts_at for c in cmds if c.starts_at]
        starts += [r.starts_at for r in self.slots.values()]
        ends = [c.ends_at for c in cmds if c.ends_at] + [r.ends_at for r in self.slots.values()]
        players = {c.actor.user for c in cmds if c.op is rules.Op.RESERVE}
        if starts and ends:
            for row in sql.near(device_ids, players, min(starts), max(ends)):
                if row.id not in self.slots:
                    self._index(slot_of(row))
        if players:
            self.held = dict(sql.held(players, self.now))
        return logged, devices

    def run(self, batch: list[Job]) -> list[Outcome]:
        logged, devices = self._load(batch)
        outcomes = []
        for job in batch:
            if job.request_key is not None and job.request_key in logged:
                reply = logged[job.request_key]  # a retry, also one earlier in this batch
                self.writes.outbox += self.c.reply_rows(job, reply)
                outcomes.append(Outcome(reply))
                continue
            outcome = self._decide(job, devices.get(job.device_id))
            if job.request_key is not None and outcome.reply is not None:
                logged[job.request_key] = outcome.reply
            outcomes.append(outcome)
        return outcomes

    def _near(self, ids: set[str], window: tuple[datetime, datetime]) -> tuple[rules.Slot, ...]:
        return tuple(
            slot
            for slot in (self.slots[i] for i in ids)
            if slot.status in rules.ACTIVE and slot.overlaps(*window)
        )

    def _decide(self, job: Job, device: DeviceFacts | None) -> Outcome:
        cmd = job.command
        assert cmd is not None
        target = self.slots.get(cmd.reservation_id) if cmd.reservation_id else None
        window = _window(cmd, target, self.now)
        mine = self.by_player.get(cmd.actor.user, set()) if cmd.op is rules.Op.RESERVE else set()
        ctx = self.c.context(
            self.now,
            device,
            self._near(self.by_device.get(job.device_id, set()), window),
            self._near(mine, window),
            target,
            held=self.held.get(cmd.actor.user, 0),
            replaced=self.slots.get(cmd.replaces) if cmd.replaces else None,
        )
        decision = rules.decide(ctx, cmd)
        outcome = self.c.apply(self.writes, job, cmd, decision, target, device, self.now)
        after = decision.after
        if decision.released is not None:
            self._index(decision.released)
            self.held[cmd.actor.user] = max(0, self.held.get(cmd.actor.user, 0) - 1)
        if after is not None:  # later commands in this batch must see this one
            if target is None:
                self.held[after.user] = self.held.get(after.user, 0) + 1
            elif (
                target.status in rules.ACTIVE
                and after.status not in rules.ACTIVE
                and target.ends_at > self.now  # only those were counted
            ):
                self.held[after.user] = max(0, self.held.get(after.user, 0) - 1)
            self._index(after)
        return outcome
