"""HelpDesk: players call staff, staff acknowledge and resolve (issue 18).

A ``call_staff`` venue request (``venue/requests/{user}``, after the flood gate and the
player's command budget, like every venue request) reaches :meth:`HelpDesk.call`; staff's
``help_ack`` and ``help_resolve`` admin commands (``admin/requests``, the api only) reach
:meth:`HelpDesk.staff`. Both run one at a time on this desk's own queue, so two calls of one
player are never decided at once; with several bridges only the clock's leader decides them
(as every venue request: see bridge/reservations/venue_intake.py).

The rules are :mod:`plaza.help`: one waiting call per player (a second call answers the
first, with no second alert), at most ``PLAZA_HELP_PER_HOUR`` an hour (``too_many_help_calls``
with ``retry_after``). Each change is one transaction: the row, the reply, the admin alert
(stored and published: ``help_requested``, ``help_acknowledged``, ``help_resolved``) and, for
staff's steps, the player's notification (``help_acknowledged``: someone is on the way;
``help_resolved``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bridge.alerts import make_alert
from bridge.context import BridgeContext
from bridge.models import Outbound
from bridge.notifier import Note
from bridge.writes import Writes
from plaza import help as rules
from plaza.help_calls import call_public
from plaza.messages import (
    AdminCommand,
    AlertSeverity,
    ErrorBody,
    NotificationType,
    Reply,
)
from plaza.tables import Device, HelpCallRow

log = logging.getLogger(__name__)

TOPIC_KO = {
    "hardware": "기기 고장",
    "software": "게임/프로그램",
    "payment": "결제",
    "other": "기타",
}


@dataclass(frozen=True, slots=True)
class CallRequest:
    """One ``call_staff`` as the venue desk accepted it."""

    user: str
    request_id: str
    request_key: str
    device_id: str
    topic: str
    message: str | None
    reply_to: str
    correlation: bytes | None
    future: asyncio.Future[Reply | None]


class HelpDesk:
    def __init__(self, ctx: BridgeContext) -> None:
        self.settings = ctx.settings
        self.topics = ctx.topics
        self._sessions = ctx.sessions
        self._gate = ctx.gate
        self._outbox = ctx.outbox
        self._queue: asyncio.Queue[CallRequest] = asyncio.Queue()

    def submit(self, request: CallRequest) -> None:
        self._queue.put_nowait(request)

    async def run(self) -> None:
        while True:
            request = await self._queue.get()
            try:
                reply = await self.call(request)
            except Exception:  # the player retries with the same request id; the next goes on
                log.exception("help call of %s failed", request.user)
                reply = None
            if not request.future.done():
                request.future.set_result(reply)

    # -- players -----------------------------------------------------------------------------
    async def call(self, req: CallRequest) -> Reply:
        now = datetime.now(UTC)
        writes = Writes()
        async with self._gate, self._sessions() as session:
            reply = await self._decide(session, req, now, writes)
            writes.outbox.insert(
                0, Outbound(req.reply_to, reply.encode(), correlation=req.correlation)
            )
            rows = await writes.flush(session, self._outbox.max_packet)
            await session.commit()
        self._outbox.enqueue(rows)
        return reply

    async def _decide(
        self, session: AsyncSession, req: CallRequest, now: datetime, writes: Writes
    ) -> Reply:
        def refused(code: str, message: str, retry_after: float | None = None) -> Reply:
            error = ErrorBody(code=code, message=message, retry_after=retry_after)
            return Reply(request_id=req.request_id, ok=False, error=error)

        again = (
            await session.exec(
                select(HelpCallRow).where(HelpCallRow.request_key == req.request_key)
            )
        ).first()
        if again is not None:  # a retry of a call already made: its answer again
            return Reply(request_id=req.request_id, ok=True, help=call_public(again))
        device = await session.get(Device, req.device_id)
        if device is None:
            return refused("not_found", f"no machine {req.device_id!r}")
        mine = (
            await session.exec(
                select(HelpCallRow).where(
                    HelpCallRow.player == req.user,
                    col(HelpCallRow.created_at) > now - rules.WINDOW,
                )
            )
        ).all()
        waiting = (
            await session.exec(
                select(HelpCallRow).where(
                    HelpCallRow.player == req.user,
                    col(HelpCallRow.status).in_([s.value for s in rules.WAITING]),
                )
            )
        ).first()
        decision = rules.decide_call(
            waiting.id if waiting else None,
            [r.created_at for r in mine],
            now,
            self.settings.help_per_hour,
        )
        if decision.outcome == "existing":
            assert waiting is not None
            return Reply(request_id=req.request_id, ok=True, help=call_public(waiting))
        if decision.outcome == "refused":
            retry = decision.retry_after or 1.0
            return refused(
                "too_many_help_calls",
                f"at most {self.settings.help_per_hour} calls an hour; "
                f"the next one in {timedelta(seconds=round(retry))}",
                retry,
            )
        row = HelpCallRow(
            id=uuid.uuid4().hex,
            player=req.user,
            device_id=device.id,
            topic=req.topic,
            message=req.message,
            status=rules.HelpStatus.OPEN.value,
            request_key=req.request_key,
            created_at=now,
        )
        session.add(row)
        await session.flush()
        self._alert(
            writes,
            "help_requested",
            AlertSeverity.HIGH,
            now,
            row,
            device.name,
            topic_ko=TOPIC_KO.get(req.topic, req.topic),
            topic_en=req.topic,
            message=f": {req.message}" if req.message else "",
        )
        log.info("%s calls staff to %s (%s)", req.user, device.id, req.topic)
        return Reply(request_id=req.request_id, ok=True, help=call_public(row))

    # -- staff -------------------------------------------------------------------------------
    async def staff(self, cmd: AdminCommand, reply_to: str, correlation: bytes | None) -> None:
        """``help_ack`` or ``help_resolve``: answered on ``reply_to``."""
        now = datetime.now(UTC)
        writes = Writes()
        async with self._gate, self._sessions() as session:
            reply = await self._step(session, cmd, now, writes)
            writes.outbox.insert(0, Outbound(reply_to, reply.encode(), correlation=correlation))
            rows = await writes.flush(session, self._outbox.max_packet)
            await session.commit()
        self._outbox.enqueue(rows)

    async def _step(
        self, session: AsyncSession, cmd: AdminCommand, now: datetime, writes: Writes
    ) -> Reply:
        def refused(code: str, message: str) -> Reply:
            error = ErrorBody(code=code, message=message)
            return Reply(request_id=cmd.request_id, ok=False, error=error)

        row = await session.get(HelpCallRow, cmd.help_id) if cmd.help_id else None
        if row is None:
            return refused("not_found", f"no help call {cmd.help_id!r}")
        op: rules.StaffOp = "ack" if cmd.op == "help_ack" else "resolve"
        status = rules.HelpStatus(row.status)
        nxt = rules.staff_step(status, op)
        if nxt is None:
            if (status, op) in (
                (rules.HelpStatus.ACKNOWLEDGED, "ack"),
                (rules.HelpStatus.RESOLVED, "resolve"),
            ):  # a retry (or a second screen): the call as it is, nothing twice
                return Reply(request_id=cmd.request_id, ok=True, help=call_public(row))
            return refused("invalid_transition", f"a {status.value} call cannot {op}")
        staff = cmd.author or "staff"
        row.status = nxt.value
        if nxt is rules.HelpStatus.ACKNOWLEDGED:
            row.acknowledged_at, row.acknowledged_by = now, staff
        else:
            row.resolved_at, row.resolved_by = now, staff
        session.add(row)
        await session.flush()
        device = await session.get(Device, row.device_id)
        name = device.name if device else row.device_id
        public = call_public(row)
        kind: NotificationType = (
            "help_acknowledged" if nxt is rules.HelpStatus.ACKNOWLEDGED else "help_resolved"
        )
        self._alert(writes, kind, AlertSeverity.LOW, now, row, name, staff=staff)
        writes.notes.append(
            Note(
                user=row.player,
                topic=self.topics.notifications(row.player),
                type=kind,
                priority=AlertSeverity.HIGH,
                params={"name": name, "staff": staff},
                help=public,
            )
        )
        return Reply(request_id=cmd.request_id, ok=True, help=public)

    def _alert(
        self,
        writes: Writes,
        kind: str,
        severity: AlertSeverity,
        now: datetime,
        row: HelpCallRow,
        name: str,
        **params: object,
    ) -> None:
        alert = make_alert(
            kind,
            severity,
            now.timestamp(),
            row.device_id,
            user=row.player,
            name=name,
            help_id=row.id,
            **params,
        )
        writes.alerts.append(alert)
        writes.outbox.append(Outbound(self.topics.admin_alerts, alert.encode()))
