"""Reservation commands: router -> per-device actors -> group committer -> outbox.

Theory of operation
-------------------
- The router (:meth:`ReservationDesk.submit`) only enqueues: every command goes to the actor of
  its machine, one asyncio queue and one worker per machine, created on demand and reaped
  after ``actor_idle_seconds`` without work. An actor hands its commands to the committer one
  at a time and in arrival order, so commands for one machine are applied one after another.
- The committer takes whatever the actors have handed it (up to ``commit_batch_max``) and
  decides them in one transaction (group commit), each inside its own SAVEPOINT, in arrival
  order. Machines therefore proceed in parallel, and a constraint violation undoes only its
  own command. Every decision is made by :func:`plaza.rules.decide` on facts read inside the
  transaction; SQL backs it (PostgreSQL exclusion constraints; SQLite BEGIN IMMEDIATE).
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
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bridge.outbox import OutboxPublisher, OutboxRow, reply_properties
from plaza import rules
from plaza.messages import (
    AlertSeverity,
    CommandName,
    ConflictSlot,
    DeviceCommand,
    ErrorBody,
    NotificationEvent,
    NotificationType,
    Reply,
    ReservationEvent,
    ReservationEventType,
    ReservationPublic,
    Session,
    Slot,
)
from plaza.settings import Settings
from plaza.tables import CommandLog, Device, Outbox, Reservation
from plaza.topics import Topics

log = logging.getLogger(__name__)

TimerOp = Literal["remind"]


def to_dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def policy_from(settings: Settings) -> rules.Policy:
    opens, closes = settings.opening_hours.split("-")
    h1, m1 = (int(x) for x in opens.split(":"))
    h2, m2 = (int(x) for x in closes.split(":"))
    from datetime import time as dtime

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


def slot_of(row: Reservation) -> rules.Slot:
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
    received: float = field(default_factory=time.monotonic)
    future: asyncio.Future[Reply | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass
class Outcome:
    reply: Reply | None
    rows: list[Outbox] = field(default_factory=list)
    touched: bool = False
    row: Reservation | None = None  # the reservation written, if any


_EVENT: dict[rules.Status, ReservationEventType] = {
    rules.Status.PENDING: "reservation_created",
    rules.Status.APPROVED: "reservation_approved",
    rules.Status.REJECTED: "reservation_rejected",
    rules.Status.CANCELLED: "reservation_cancelled",
    rules.Status.CHECKED_IN: "reservation_checked_in",
    rules.Status.COMPLETED: "reservation_completed",
    rules.Status.NO_SHOW: "reservation_no_show",
}

# (type, priority, Korean title, Korean message) per new status; the player's own topic
_NOTICE: dict[rules.Status, tuple[NotificationType, AlertSeverity, str, str]] = {
    rules.Status.PENDING: (
        "reservation_created",
        AlertSeverity.LOW,
        "예약 요청 접수",
        "{name} {start} 예약 요청이 접수되었습니다.",
    ),
    rules.Status.APPROVED: (
        "reservation_approved",
        AlertSeverity.HIGH,
        "예약 승인",
        "{name} {start} 예약이 승인되었습니다. 체크인 코드: {code}",
    ),
    rules.Status.REJECTED: (
        "reservation_rejected",
        AlertSeverity.HIGH,
        "예약 거절",
        "{name} {start} 예약이 거절되었습니다.",
    ),
    rules.Status.CANCELLED: (
        "reservation_cancelled",
        AlertSeverity.MEDIUM,
        "예약 취소",
        "{name} {start} 예약이 취소되었습니다.",
    ),
    rules.Status.NO_SHOW: (
        "no_show_released",
        AlertSeverity.HIGH,
        "노쇼 처리",
        "{name} {start} 예약이 체크인 없이 지나 해제되었습니다.",
    ),
    rules.Status.CHECKED_IN: (
        "reservation_checked_in",
        AlertSeverity.LOW,
        "체크인 완료",
        "{name} 이용을 시작합니다.",
    ),
    rules.Status.COMPLETED: (
        "reservation_completed",
        AlertSeverity.LOW,
        "이용 종료",
        "{name} 이용 시간이 끝났습니다.",
    ),
}


class Committer:
    """Decides batches of jobs in one transaction each (see the module docstring)."""

    def __init__(
        self,
        sessions: Callable[[], AsyncSession],
        settings: Settings,
        topics: Topics,
        publisher: OutboxPublisher,
        on_devices_changed: Callable[[set[str]], None],
    ) -> None:
        self._sessions = sessions
        self.settings = settings
        self.topics = topics
        self.policy = policy_from(settings)
        self.publisher = publisher
        self._on_devices_changed = on_devices_changed
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self.latencies_ms: list[float] = []
        self.batches = 0
        self.careful_batches = 0
        self.decided = 0

    async def submit(self, job: Job) -> Reply | None:
        self._queue.put_nowait(job)
        return await job.future

    async def run(self) -> None:
        delay = 0.05
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < self.settings.commit_batch_max:
                batch.append(self._queue.get_nowait())
            try:
                outcomes = await self._commit(batch)
            except Exception:
                log.exception(
                    "reservation batch of %d failed; retrying in %.2fs", len(batch), delay
                )
                for job in reversed(batch):  # keep arrival order for the retry
                    self._requeue_front(job)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.05
            self.batches += 1
            self.decided += len(batch)
            try:
                self.publisher.enqueue([OutboxRow.of(r) for o in outcomes for r in o.rows])
                touched = {j.device_id for j, o in zip(batch, outcomes, strict=True) if o.touched}
                if touched:
                    self._on_devices_changed(touched)
            except Exception:  # committed rows are still sent at the next start (outbox)
                log.exception("after-commit hand-off failed for a batch of %d", len(batch))
            now = time.monotonic()
            for job, outcome in zip(batch, outcomes, strict=True):
                self.latencies_ms.append((now - job.received) * 1000)
                if not job.future.done():
                    job.future.set_result(outcome.reply)

    def _requeue_front(self, job: Job) -> None:
        # asyncio.Queue has no push-front; rebuild it with the job first
        rest = []
        while not self._queue.empty():
            rest.append(self._queue.get_nowait())
        self._queue.put_nowait(job)
        for item in rest:
            self._queue.put_nowait(item)

    async def _commit(self, batch: list[Job]) -> list[Outcome]:
        now = datetime.now(UTC)
        if all(_batchable(j) for j in batch):
            try:
                async with self._sessions() as session:
                    outcomes = await BatchDecision(self, session, now).run(batch)
                    await session.commit()
                return outcomes
            except IntegrityError as exc:
                # Another bridge won a race (PostgreSQL constraint): redo this batch one
                # command at a time, each in its own savepoint, so only the loser is refused.
                log.info(
                    "batch of %d hit a constraint (%s); deciding one by one", len(batch), exc.orig
                )
                self.careful_batches += 1
        outcomes = []
        async with self._sessions() as session:
            for job in batch:
                outcomes.append(await self._one(session, job, now))
            await session.commit()
        return outcomes

    # -- one job -------------------------------------------------------------------------------
    async def _one(self, session: AsyncSession, job: Job, now: datetime) -> Outcome:
        if job.request_key is not None:
            logged = await session.get(CommandLog, job.request_key)
            if logged is not None:  # a retry or redelivery: answer again, change nothing
                reply = Reply.model_validate_json(logged.reply_json)
                rows = self._reply_rows(job, reply)
                session.add_all(rows)
                return Outcome(reply, rows)
        if job.timer == "remind":
            return await self._remind(session, job, now)
        assert job.command is not None
        try:
            async with session.begin_nested():
                outcome = await self._decide(session, job, now)
        except IntegrityError as exc:
            outcome = await self._after_integrity_error(session, job, exc)
        return outcome

    async def _context(
        self, session: AsyncSession, job: Job, now: datetime
    ) -> tuple[rules.Context, Device | None, Reservation | None]:
        cmd = job.command
        assert cmd is not None
        device = await session.get(Device, job.device_id)
        target_row: Reservation | None = None
        if cmd.reservation_id:
            target_row = await session.get(Reservation, cmd.reservation_id)
        elif cmd.op is rules.Op.CHECK_IN and cmd.code:
            target_row = await self._by_code(session, job.device_id, cmd.code, now)
        if cmd.op is rules.Op.RESERVE and cmd.starts_at and cmd.ends_at:
            window = (cmd.starts_at, cmd.ends_at)
        elif target_row is not None:
            window = (target_row.starts_at, target_row.ends_at)
        else:
            window = (now, now)
        active = [s.value for s in rules.ACTIVE]
        device_rows = (
            await session.exec(
                select(Reservation).where(
                    Reservation.device_id == job.device_id,
                    col(Reservation.status).in_(active),
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
                            col(Reservation.status).in_(active),
                            Reservation.ends_at > now,
                        )
                    )
                ).all()
            )
        ctx = rules.Context(
            now=now,
            policy=self.policy,
            device_exists=device is not None,
            maintenance=bool(device and device.maintenance),
            auto_approve=bool(device and device.auto_approve),
            device_slots=tuple(slot_of(r) for r in device_rows),
            player_slots=tuple(slot_of(r) for r in player_rows),
            target=slot_of(target_row) if target_row is not None else None,
            new_id=uuid.uuid4().hex[:16],
            new_code=f"{secrets.randbelow(10**6):06d}",
        )
        return ctx, device, target_row

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

    async def _decide(self, session: AsyncSession, job: Job, now: datetime) -> Outcome:
        cmd = job.command
        assert cmd is not None
        ctx, device, target_row = await self._context(session, job, now)
        decision = rules.decide(ctx, cmd)
        if decision.refusal is not None:
            return self.refused(session, job, cmd, decision.refusal, now)
        assert decision.after is not None
        outcome = self.accepted(session, job, cmd, decision.after, target_row, device, now)
        await session.flush()
        return outcome

    def refused(
        self,
        session: AsyncSession,
        job: Job,
        cmd: rules.Command,
        refusal: rules.Refusal,
        now: datetime,
    ) -> Outcome:
        """Log the refusal and queue its reply (and tell a machine whose check-in failed)."""
        reply = self._refusal_reply(job, refusal)
        rows = self._reply_rows(job, reply)
        if cmd.op is rules.Op.CHECK_IN and cmd.actor.role is rules.Role.DEVICE:
            reason = f"check-in refused: {refusal.message}"
            rows.append(
                self._device_cmd(job.device_id, CommandName.END_SESSION, now, reason=reason)
            )
        self._log(session, job, cmd, reply)
        session.add_all(rows)
        return Outcome(reply, rows)

    def accepted(
        self,
        session: AsyncSession,
        job: Job,
        cmd: rules.Command,
        after: rules.Slot,
        row: Reservation | None,
        device: Device | None,
        now: datetime,
    ) -> Outcome:
        """Write the reservation as the rules left it, log the reply and queue the messages:
        reply, event, notification, and a session command for the machine when needed."""
        if row is None:
            row = Reservation(
                id=after.id,
                device_id=after.device_id,
                player=after.user,
                starts_at=after.starts_at,
                ends_at=after.ends_at,
                status=after.status.value,
                code=after.code,
                request_key=job.request_key or f"system:{after.id}",
            )
        else:
            row.status = after.status.value
            row.updated_at = now
        session.add(row)
        reply = Reply(request_id=job.request_id, ok=True, reservation=public(after, private=True))
        rows = self._reply_rows(job, reply)
        rows += self._announce(after, now, device.name if device else after.device_id)
        if after.status is rules.Status.CHECKED_IN:
            session_msg = Session(
                id=after.id,
                started_at=now.timestamp(),
                ends_at=after.ends_at.timestamp(),
                reservation_code=after.code,
            )
            rows.append(
                self._device_cmd(
                    after.device_id, CommandName.START_SESSION, now, session=session_msg
                )
            )
        elif after.status is rules.Status.COMPLETED:
            rows.append(
                self._device_cmd(after.device_id, CommandName.END_SESSION, now, reason="slot ended")
            )
        self._log(session, job, cmd, reply)
        session.add_all(rows)
        return Outcome(reply, rows, touched=True, row=row)

    async def _after_integrity_error(
        self, session: AsyncSession, job: Job, exc: IntegrityError
    ) -> Outcome:
        """SQL refused what the rules allowed: another bridge won the race (exclusion
        constraint) or the same request was applied meanwhile (unique request key)."""
        if job.request_key is not None:
            logged = await session.get(CommandLog, job.request_key)
            if logged is not None:
                reply = Reply.model_validate_json(logged.reply_json)
                rows = self._reply_rows(job, reply)
                session.add_all(rows)
                return Outcome(reply, rows)
        cmd = job.command
        assert cmd is not None
        conflict: rules.Slot | None = None
        if cmd.starts_at and cmd.ends_at:
            row = (
                await session.exec(
                    select(Reservation).where(
                        or_(
                            Reservation.device_id == job.device_id,
                            Reservation.player == cmd.actor.user,
                        ),
                        col(Reservation.status).in_([s.value for s in rules.HOLDING]),
                        Reservation.starts_at < cmd.ends_at,
                        Reservation.ends_at > cmd.starts_at,
                    )
                )
            ).first()
            conflict = slot_of(row) if row else None
        log.info("SQL refused %s on %s: %s", cmd.op.value, job.device_id, exc.orig)
        refusal = rules.Refusal(rules.Code.CONFLICT, "the slot was taken meanwhile", conflict)
        reply = self._refusal_reply(job, refusal)
        rows = self._reply_rows(job, reply)
        async with session.begin_nested():
            self._log(session, job, cmd, reply)
            session.add_all(rows)
        return Outcome(reply, rows)

    async def _remind(self, session: AsyncSession, job: Job, now: datetime) -> Outcome:
        assert job.reservation_id is not None
        row = await session.get(Reservation, job.reservation_id)
        if (
            row is None
            or row.reminded_at is not None
            or row.status not in (rules.Status.APPROVED.value, rules.Status.PENDING.value)
        ):
            return Outcome(None)
        row.reminded_at = now
        session.add(row)
        device = await session.get(Device, row.device_id)
        slot = slot_of(row)
        minutes = max(0, round((row.starts_at - now).total_seconds() / 60))
        note = NotificationEvent(
            id=uuid.uuid4().hex,
            type="reservation_reminder",
            user_id=row.player,
            title="예약 알림",
            message=f"{device.name if device else row.device_id} 예약이 {minutes}분 후 시작합니다. "
            f"체크인 코드: {row.code}",
            priority=AlertSeverity.HIGH,
            ts=now.timestamp(),
            reservation=public(slot, private=True),
        )
        out = Outbox(topic=self.topics.notifications(row.player), payload=note.encode())
        session.add(out)
        return Outcome(None, [out])

    # -- message builders ------------------------------------------------------------------------
    def _refusal_reply(self, job: Job, refusal: rules.Refusal) -> Reply:
        conflict = None
        if refusal.conflict is not None:
            c = refusal.conflict
            conflict = ConflictSlot(
                reservation_id=c.id,
                starts_at=c.starts_at.timestamp(),
                ends_at=c.ends_at.timestamp(),
                status=c.status.value,
            )
        return Reply(
            request_id=job.request_id,
            ok=False,
            error=ErrorBody(code=refusal.code.value, message=refusal.message, conflict=conflict),
        )

    def _reply_rows(self, job: Job, reply: Reply) -> list[Outbox]:
        if job.reply_topic is None:
            return []
        return [
            Outbox(
                topic=job.reply_topic,
                payload=reply.encode(),
                props_json=reply_properties(job.correlation),
            )
        ]

    def _log(self, session: AsyncSession, job: Job, cmd: rules.Command, reply: Reply) -> None:
        if job.request_key is None:
            return
        session.add(
            CommandLog(
                request_key=job.request_key,
                device_id=job.device_id,
                op=cmd.op.value,
                ok=reply.ok,
                reply_json=reply.model_dump_json(),
            )
        )

    def _announce(self, after: rules.Slot, now: datetime, device_name: str) -> list[Outbox]:
        ts = now.timestamp()
        event = ReservationEvent(
            type=_EVENT[after.status],
            reservation_id=after.id,
            device_id=after.device_id,
            timestamp=ts,
            data={
                "status": after.status.value,
                "starts_at": after.starts_at.timestamp(),
                "ends_at": after.ends_at.timestamp(),
            },
        )
        rows = [Outbox(topic=self.topics.reservation_events, payload=event.encode())]
        kind, priority, title, text = _NOTICE[after.status]
        local = after.starts_at.astimezone(self.policy.tz).strftime("%m/%d %H:%M")
        note = NotificationEvent(
            id=uuid.uuid4().hex,
            type=kind,
            user_id=after.user,
            title=title,
            message=text.format(name=device_name, start=local, code=after.code),
            priority=priority,
            ts=ts,
            reservation=public(after, private=True),
        )
        rows.append(Outbox(topic=self.topics.notifications(after.user), payload=note.encode()))
        return rows

    def _device_cmd(
        self,
        device_id: str,
        name: CommandName,
        now: datetime,
        *,
        session: Session | None = None,
        reason: str | None = None,
    ) -> Outbox:
        cmd = DeviceCommand(cmd=name, ts=now.timestamp(), session=session, reason=reason)
        return Outbox(topic=self.topics.cmd(device_id), payload=cmd.encode())


def _batchable(job: Job) -> bool:
    """Jobs the batched path decides; the rest (reminders, check-in by code on the machine)
    take the one-by-one path, which looks things up as it goes."""
    cmd = job.command
    return (
        cmd is not None
        and job.timer is None
        and (cmd.op is rules.Op.RESERVE or cmd.reservation_id is not None)
    )


class BatchDecision:
    """Decides a whole batch on facts loaded with a handful of queries (group commit).

    All facts a batch can need are read up front: the command log for its keys, its machines,
    its target reservations, every active reservation of its machines and players inside the
    batch's time window, and each player's count of active reservations. Commands are then
    decided in arrival order against that in-memory picture, which each decision updates, and
    everything is written by one flush. Correct because within one bridge the committer is the
    only writer; across bridges SQL constraints refuse what a stale picture let through, and
    the batch is redone one by one (:meth:`Committer._commit`)."""

    def __init__(self, committer: Committer, session: AsyncSession, now: datetime) -> None:
        self.c = committer
        self.session = session
        self.now = now
        self.rows: dict[str, Reservation] = {}
        self.by_device: dict[str, list[Reservation]] = {}
        self.by_player: dict[str, list[Reservation]] = {}
        self.held: dict[str, int] = {}

    def _index(self, row: Reservation) -> None:
        if row.id in self.rows:
            return
        self.rows[row.id] = row
        self.by_device.setdefault(row.device_id, []).append(row)
        self.by_player.setdefault(row.player, []).append(row)

    async def _load(self, batch: list[Job]) -> tuple[dict[str, Reply], dict[str, Device]]:
        s, active = self.session, [st.value for st in rules.ACTIVE]
        keys = [j.request_key for j in batch if j.request_key]
        logged = {
            c.request_key: Reply.model_validate_json(c.reply_json)
            for c in (
                await s.exec(select(CommandLog).where(col(CommandLog.request_key).in_(keys)))
            ).all()
        }
        device_ids = {j.device_id for j in batch}
        devices = {
            d.id: d for d in (await s.exec(select(Device).where(col(Device.id).in_(device_ids))))
        }
        cmds = [j.command for j in batch if j.command is not None]
        target_ids = {c.reservation_id for c in cmds if c.reservation_id}
        if target_ids:
            for row in (
                await s.exec(select(Reservation).where(col(Reservation.id).in_(target_ids)))
            ).all():
                self._index(row)
        starts = [c.starts_at for c in cmds if c.starts_at] + [
            r.starts_at for r in self.rows.values()
        ]
        ends = [c.ends_at for c in cmds if c.ends_at] + [r.ends_at for r in self.rows.values()]
        players = {c.actor.user for c in cmds if c.op is rules.Op.RESERVE}
        if starts and ends:
            owners = or_(
                col(Reservation.device_id).in_(device_ids),
                col(Reservation.player).in_(players or {""}),
            )
            for row in (
                await s.exec(
                    select(Reservation).where(
                        col(Reservation.status).in_(active),
                        Reservation.starts_at < max(ends),
                        Reservation.ends_at > min(starts),
                        owners,
                    )
                )
            ).all():
                self._index(row)
        if players:
            counted = await s.exec(
                select(Reservation.player, func.count())
                .where(
                    col(Reservation.player).in_(players),
                    col(Reservation.status).in_(active),
                    Reservation.ends_at > self.now,
                )
                .group_by(col(Reservation.player))
            )
            self.held = {player: int(n) for player, n in counted.all()}
        return logged, devices

    async def run(self, batch: list[Job]) -> list[Outcome]:
        logged, devices = await self._load(batch)
        outcomes = []
        for job in batch:
            if job.request_key is not None and job.request_key in logged:
                reply = logged[job.request_key]
                rows = self.c._reply_rows(job, reply)
                self.session.add_all(rows)
                outcomes.append(Outcome(reply, rows))
                continue
            outcome = self._decide(job, devices.get(job.device_id))
            if job.request_key is not None and outcome.reply is not None:
                logged[job.request_key] = outcome.reply  # a repeat later in this batch
            outcomes.append(outcome)
        return outcomes

    def _decide(self, job: Job, device: Device | None) -> Outcome:
        c, cmd = self.c, job.command
        assert cmd is not None
        target_row = self.rows.get(cmd.reservation_id) if cmd.reservation_id else None
        if cmd.op is rules.Op.RESERVE and cmd.starts_at and cmd.ends_at:
            window = (cmd.starts_at, cmd.ends_at)
        elif target_row is not None:
            window = (target_row.starts_at, target_row.ends_at)
        else:
            window = (self.now, self.now)

        def near(rows: list[Reservation]) -> tuple[rules.Slot, ...]:
            return tuple(
                slot_of(r)
                for r in rows
                if r.status in _ACTIVE_VALUES and r.starts_at < window[1] and r.ends_at > window[0]
            )

        mine = self.by_player.get(cmd.actor.user, []) if cmd.op is rules.Op.RESERVE else []
        ctx = rules.Context(
            now=self.now,
            policy=c.policy,
            device_exists=device is not None,
            maintenance=bool(device and device.maintenance),
            auto_approve=bool(device and device.auto_approve),
            device_slots=near(self.by_device.get(job.device_id, [])),
            player_slots=near(mine),
            target=slot_of(target_row) if target_row is not None else None,
            new_id=uuid.uuid4().hex[:16],
            new_code=f"{secrets.randbelow(10**6):06d}",
            player_active_count=self.held.get(cmd.actor.user, 0),
        )
        decision = rules.decide(ctx, cmd)
        if decision.refusal is not None:
            return c.refused(self.session, job, cmd, decision.refusal, self.now)
        after = decision.after
        assert after is not None
        if target_row is None:
            self.held[after.user] = self.held.get(after.user, 0) + 1
        elif target_row.status in _ACTIVE_VALUES and after.status not in rules.ACTIVE:
            self.held[after.user] = max(0, self.held.get(after.user, 0) - 1)
        outcome = c.accepted(self.session, job, cmd, after, target_row, device, self.now)
        if target_row is None and outcome.row is not None:
            self._index(outcome.row)  # later commands in this batch must see it
        return outcome


_ACTIVE_VALUES = frozenset(s.value for s in rules.ACTIVE)


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


def current_and_next(rows: list[Reservation], now: datetime) -> tuple[Slot | None, Slot | None]:
    current = nxt = None
    for row in sorted(rows, key=lambda r: r.starts_at):
        if row.starts_at <= now < row.ends_at and current is None:
            current = row
        elif row.starts_at > now and nxt is None:
            nxt = row

    def wire(row: Reservation | None) -> Slot | None:
        if row is None:
            return None
        return Slot(
            reservation_id=row.id,
            starts_at=row.starts_at.timestamp(),
            ends_at=row.ends_at.timestamp(),
            status=row.status,
        )

    return wire(current), wire(nxt)
