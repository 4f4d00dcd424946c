"""Decision -> rows: what a reservation decision writes (no I/O).

One renderer for both of the committer's paths, driven by the rules' consequence table
(:data:`plaza.rules.CONSEQUENCES`). An accepted decision becomes the reservation's new or
changed row, the requester's reply (outbox) and its command-log row, and what entering the
new status causes: the broadcast event, the owner's notification (unless the owner asked: the
reply says it), the machine's command, an admin alert. A refusal becomes the reply and its log
row (and, for a refused check-in on the machine, the command that ends the session it
started: :data:`plaza.rules.REFUSED_CHECK_IN_ON_MACHINE`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from bridge.alerts import make_alert
from bridge.models import Outbound
from bridge.notifier import Note
from bridge.reservations.actors import Job, Outcome
from bridge.reservations.slots import public
from bridge.writes import Writes
from plaza import rules
from plaza.messages import (
    CommandName,
    ConflictSlot,
    DeviceCommand,
    ErrorBody,
    Reply,
    ReservationEvent,
    Session,
)
from plaza.topics import Topics


class DeviceFacts(Protocol):
    """What decisions need of a machine (a table row or a Core row)."""

    @property
    def name(self) -> str: ...
    @property
    def maintenance(self) -> bool: ...
    @property
    def auto_approve(self) -> bool: ...


class ReservationEffects:
    """Renders decisions into :class:`~bridge.writes.Writes` (see the module docstring)."""

    def __init__(self, topics: Topics, policy: rules.Policy) -> None:
        self.topics = topics
        self.policy = policy

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
        machine = rules.CONSEQUENCES[after.status].machine
        if machine is CommandName.START_SESSION:
            started = Session(
                id=after.id,
                started_at=now.timestamp(),
                ends_at=after.ends_at.timestamp(),
                reservation_code=after.code,
            )
            writes.outbox.append(self.device_cmd(after.device_id, machine, now, session=started))
        elif machine is not None:
            writes.outbox.append(
                self.device_cmd(after.device_id, machine, now, reason="slot ended")
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
                    rules.REFUSED_CHECK_IN_ON_MACHINE,
                    now,
                    reason=f"check-in refused: {refusal.message}",
                )
            )
        self.log_reply(writes, job, cmd, reply)
        return Outcome(reply)

    def reply_rows(self, job: Job, reply: Reply) -> list[Outbound]:
        if job.reply_topic is None:
            return []
        return [Outbound(job.reply_topic, reply.encode(), correlation=job.correlation)]

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
        """What entering ``after.status`` announces: the broadcast event (no player named),
        an admin alert if the table names one, and (``notify``) the owner's notification."""
        ts, consequence = now.timestamp(), rules.CONSEQUENCES[after.status]
        event = ReservationEvent(
            type=consequence.event,
            reservation_id=after.id,
            device_id=after.device_id,
            timestamp=ts,
            data={
                "status": after.status.value,
                "starts_at": after.starts_at.timestamp(),
                "ends_at": after.ends_at.timestamp(),
            },
        )
        writes.outbox.append(Outbound(self.topics.reservation_events, event.encode()))
        local = after.starts_at.astimezone(self.policy.tz).strftime("%m/%d %H:%M")
        if consequence.alert is not None:
            kind, severity = consequence.alert
            alert = make_alert(kind, severity, ts, after.device_id, name=device_name, start=local)
            writes.alerts.append(alert)
            writes.outbox.append(Outbound(self.topics.admin_alerts, alert.encode()))
        if not notify:
            return
        writes.notes.append(
            Note(
                user=after.user,
                topic=self.topics.notifications(after.user),
                type=consequence.notice,
                priority=consequence.priority,
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
    ) -> Outbound:
        cmd = DeviceCommand(cmd=name, ts=now.timestamp(), session=session, reason=reason)
        return Outbound(self.topics.cmd(device_id), cmd.encode())
