"""Decision -> rows: what a reservation decision writes (pure: no I/O, no clock).

One renderer for both of the committer's paths. An accepted decision becomes the reservation's
new or changed row, the requester's reply (outbox) and its command-log row, the broadcast
event, the owner's notification (unless the owner asked: the reply says it), the machine's
command when a session starts or ends, and an admin alert for a no-show. A refusal becomes the
reply and its log row (and, for a refused check-in on the machine, the command that ends the
session it started).
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
    AlertSeverity,
    CommandName,
    ConflictSlot,
    DeviceCommand,
    ErrorBody,
    NotificationType,
    Reply,
    ReservationEvent,
    ReservationEventType,
    Session,
)
from plaza.topics import Topics

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
        writes.outbox.append(Outbound(self.topics.reservation_events, event.encode()))
        local = after.starts_at.astimezone(self.policy.tz).strftime("%m/%d %H:%M")
        if after.status is rules.Status.NO_SHOW:
            alert = make_alert(
                "no_show", AlertSeverity.MEDIUM, ts, after.device_id, name=device_name, start=local
            )
            writes.alerts.append(alert)
            writes.outbox.append(Outbound(self.topics.admin_alerts, alert.encode()))
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
    ) -> Outbound:
        cmd = DeviceCommand(cmd=name, ts=now.timestamp(), session=session, reason=reason)
        return Outbound(self.topics.cmd(device_id), cmd.encode())
