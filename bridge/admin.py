"""AdminDesk: the api's admin commands to the bridge (``admin/requests``).

The api owns machine *configuration* rows (name, kind, zone, auto-approve, maintenance) and
broker identities; the bridge owns what every screen sees. After changing a row the api asks
the bridge to ``sync_device`` (re-read the row, republish the board entry, lock or unlock the
machine on a maintenance change) or to ``remove_device`` (forget it and clear its retained
topics). A ``notice`` is written with its retained message and one notification per player in
one transaction (the outbox), so a crash loses none of them.

Every command is answered on the requester's response topic with a :class:`Reply`; a command
that names no known machine gets ``not_found``. Only the api account may publish here (ACL).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from sqlmodel import select

from bridge.context import BridgeContext
from bridge.help import HelpDesk
from bridge.models import Incoming, Outbound
from bridge.notifier import Note
from bridge.presence.handler import PresenceHandler
from bridge.presence.store import position_of
from bridge.writes import Writes
from plaza.acl import API_USER
from plaza.messages import (
    MAINTENANCE_LOCK,
    AdminCommand,
    CommandName,
    DeviceCommand,
    ErrorBody,
    MachineState,
    Notice,
    PayloadError,
    Reply,
    decode,
    now,
)
from plaza.tables import Device, NoticeRow, User
from plaza.topics import AdminRequestTopic

log = logging.getLogger(__name__)


class AdminDesk:
    def __init__(
        self,
        ctx: BridgeContext,
        *,
        presence: PresenceHandler,
        refresh: Callable[[set[str]], None],
        help_desk: HelpDesk | None = None,
    ) -> None:
        self.settings = ctx.settings
        self.topics = ctx.topics
        self.presence = presence
        self.tracker = presence.tracker
        self._sessions = ctx.sessions
        self._gate = ctx.gate
        self._outbox = ctx.outbox
        self._publish = ctx.link.publish
        self._refresh = refresh
        #: players' help calls: staff's ack and resolve (bridge/help.py)
        self.help = help_desk or HelpDesk(ctx)
        #: reads go through the reader engine (SQLite: no write lock outside the gate)
        self._reads = ctx.reads
        self._queue: asyncio.Queue[Incoming] = asyncio.Queue()
        #: several bridges (bridge/partitions.py): every bridge applies a sync or a removal
        #: to its own view of the machine, the machine's owner answers; the leader alone
        #: writes a notice and answers a command that names no machine
        self._ownership = ctx.ownership

    async def submit(self, _where: AdminRequestTopic, message: Incoming) -> bool:
        """Queue an admin command: they run one at a time, off the MQTT loop."""
        self._queue.put_nowait(message)
        return True

    async def run(self) -> None:
        while True:
            message = await self._queue.get()
            try:
                await self.handle(message.payload, message.response_topic, message.correlation)
            except Exception:  # the api times out and retries; the next command goes on
                log.exception("admin command failed")

    async def handle(
        self, payload: bytes, response_topic: str | None, correlation: bytes | None
    ) -> None:
        reply_to = response_topic or self.topics.replies(API_USER)
        leads = self._ownership.leading.is_set()
        try:
            cmd = decode(AdminCommand, payload, self.settings.max_payload_bytes)
        except PayloadError as exc:
            log.warning("bad admin command: %s", exc)
            if leads:
                await self._answer(reply_to, correlation, None, "invalid", str(exc))
            return
        if cmd.op == "notice":
            if leads:
                await self._notice(cmd, reply_to, correlation)
            return
        if cmd.op in ("help_ack", "help_resolve"):
            if leads:  # help calls are the leader's, as every venue request
                await self.help.staff(cmd, reply_to, correlation)
            return
        if cmd.device_id is None:
            if not leads:
                return
            await self._answer(
                reply_to, correlation, cmd.request_id, "invalid", "device_id missing"
            )
            return
        if cmd.op == "device_state":
            if self._ownership.owns(cmd.device_id):
                code, why = await self._set_state(cmd)
                await self._answer(reply_to, correlation, cmd.request_id, code, why)
            return
        if cmd.op == "sync_device":
            found = await self._sync(cmd.device_id)
        else:
            found = await self._remove(cmd.device_id)
        if not self._ownership.owns(cmd.device_id):
            return
        if found:
            await self._answer(reply_to, correlation, cmd.request_id)
        else:
            await self._answer(
                reply_to, correlation, cmd.request_id, "not_found", f"no machine {cmd.device_id!r}"
            )

    async def _answer(
        self,
        topic: str,
        correlation: bytes | None,
        request_id: str | None,
        code: str | None = None,
        message: str = "",
    ) -> None:
        error = ErrorBody(code=code, message=message) if code else None
        reply = Reply(request_id=request_id, ok=code is None, error=error)
        async with self._gate, self._sessions() as session:
            outbox = [Outbound(topic, reply.encode(), correlation=correlation)]
            rows = await Writes(outbox=outbox).flush(session, self._outbox.max_packet)
            await session.commit()
        self._outbox.enqueue(rows)

    async def _sync(self, device_id: str) -> bool:
        async with self._reads() as session:
            row = await session.get(Device, device_id)
        if row is None:
            return False
        self.tracker.removed.discard(device_id)
        before = self.tracker.views.get(device_id)
        ts = now()
        effects = self.tracker.configure(
            device_id,
            name=row.name,
            kind=row.kind,
            zone=row.zone,
            maintenance=row.maintenance,
            ts=ts,
            agent=row.agent,
            pos=position_of(row),
        )
        if before is None or before.maintenance != row.maintenance:
            name = CommandName.LOCK if row.maintenance else CommandName.UNLOCK
            reason = MAINTENANCE_LOCK if row.maintenance else "maintenance over"
            cmd = DeviceCommand(cmd=name, ts=ts, reason=reason)
            effects.publish.append(Outbound(self.topics.cmd(device_id), cmd.encode()))
        await self.presence.apply(effects)
        self._refresh({device_id})
        return True

    async def _set_state(self, cmd: AdminCommand) -> tuple[str | None, str]:
        """Staff set the state of a machine without an agent: (error code, message)."""
        assert cmd.device_id is not None
        if cmd.state is None:
            return "invalid", "state missing"
        async with self._reads() as session:
            row = await session.get(Device, cmd.device_id)
        if row is None or cmd.device_id in self.tracker.removed:
            return "not_found", f"no machine {cmd.device_id!r}"
        if row.agent:
            return "has_agent", f"{cmd.device_id!r} reports its own state (it has an agent)"
        if cmd.device_id not in self.tracker.views or self.tracker.views[cmd.device_id].agent:
            await self._sync(cmd.device_id)  # configured without an agent just now
        state = MachineState(cmd.state)
        effects = self.tracker.set_managed_state(cmd.device_id, state, cmd.fault, now())
        await self.presence.apply(effects)
        log.info("%s set %s to %s", cmd.author or "staff", cmd.device_id, state.value)
        return None, ""

    async def _remove(self, device_id: str) -> bool:
        known = device_id in self.tracker.views
        clear = self.tracker.forget(device_id)
        await self._publish(clear)
        return known

    async def _notice(self, cmd: AdminCommand, reply_to: str, correlation: bytes | None) -> None:
        if cmd.notice is None:
            await self._answer(reply_to, correlation, cmd.request_id, "invalid", "notice missing")
            return
        body = cmd.notice
        notice_id = cmd.notice_id or uuid.uuid4().hex
        ts = now()
        notice = Notice(
            id=notice_id,
            title=body.title,
            message=body.message,
            priority=body.priority,
            ts=ts,
            title_en=body.title_en,
            message_en=body.message_en,
        )
        reply = Reply(request_id=cmd.request_id, ok=True)
        writes = Writes(outbox=[Outbound(reply_to, reply.encode(), correlation=correlation)])
        players: list[str] = []
        async with self._gate, self._sessions() as session:
            if await session.get(NoticeRow, notice_id) is None:  # else a retry: answer only
                players = list(
                    (await session.exec(select(User.username).where(User.role == "player"))).all()
                )
                session.add(
                    NoticeRow(
                        id=notice_id,
                        title=body.title,
                        message=body.message,
                        title_en=body.title_en,
                        message_en=body.message_en,
                        priority=body.priority.value,
                        created_by=cmd.author or API_USER,
                        created_at=datetime.fromtimestamp(ts, UTC),
                    )
                )
                await session.flush()
                writes.outbox.insert(0, Outbound(self.topics.notices, notice.encode(), retain=True))
                texts = {"ko": (body.title, body.message)}
                if body.title_en or body.message_en:
                    texts["en"] = (body.title_en or body.title, body.message_en or body.message)
                writes.notes = [
                    Note(
                        user=player,
                        topic=self.topics.notifications(player),
                        type="system_notice",
                        priority=body.priority,
                        texts=texts,
                    )
                    for player in players
                ]
            rows = await writes.flush(session, self._outbox.max_packet)
            await session.commit()
        self._outbox.enqueue(rows)
        log.info("notice %s published to %d players", notice_id, len(players))
