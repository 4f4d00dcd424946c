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

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bridge.alerts import make_alert
from bridge.help_rows import Follow
from bridge.models import Outbound
from bridge.notifier import Note
from bridge.reservations.actors import Job, Outcome
from bridge.reservations.slots import entry_public, offer_of, public
from bridge.writes import Writes
from plaza import rules
from plaza.floor import in_lock_window, lock_released
from plaza.messages import (
    RESERVATION_LOCK,
    AlertSeverity,
    CommandName,
    ConflictSlot,
    DeviceCommand,
    ErrorBody,
    NotificationType,
    Reply,
    ReservationEvent,
    Session,
    WaitlistEntryPublic,
)
from plaza.rules import Status
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

    def __init__(
        self, topics: Topics, policy: rules.Policy, *, pre_slot_lock: timedelta = timedelta(0)
    ) -> None:
        self.topics = topics
        self.policy = policy
        #: PLAZA_PRE_SLOT_LOCK: a slot's machine is locked this long before it starts
        self.pre_slot_lock = pre_slot_lock

    def apply(
        self,
        writes: Writes,
        job: Job,
        cmd: rules.Command,
        decision: rules.Decision,
        names: Mapping[str, str],
        now: datetime,
        *,
        position: int | None = None,
    ) -> Outcome:
        """Render an accepted decision (or a refusal); ``names``: machines' names by id,
        ``position``: the entry's place in its line after the decision."""
        if decision.refusal is not None:
            return self.refused(writes, job, cmd, decision.refusal, now)
        changes = decision.changes()
        fresh = 0
        for change in changes:
            self._write(writes, job, change, now, fresh)
            fresh += change.before is None
        # The owner who asked already has the reply (on their own tree, so on every one of
        # their screens); a notification is for what others or the clock did to it.
        by_owner = job.initiated_by is None and cmd.actor.role is rules.Role.PLAYER
        released = decision.released.id if decision.released is not None else None
        for change in changes:
            after = change.after
            notify = after.id != released and not (by_owner and cmd.actor.user == after.user)
            name = names.get(after.device_id, after.device_id)
            consequence = rules.AMENDED.get(cmd.op) or rules.CONSEQUENCES[after.status]
            self.announce(writes, after, now, name, notify=notify, consequence=consequence)
            if change.before is not None and lock_released(
                change.before, after, now, self.pre_slot_lock
            ):
                # the machine kept free for this slot is free again (or its player is here)
                writes.outbox.append(
                    self.device_cmd(
                        change.before.device_id,
                        CommandName.UNLOCK,
                        now,
                        reason=RESERVATION_LOCK,
                        reservation_id=after.id,
                    )
                )
            self._machine(writes, after, consequence, now)
            if after.status is Status.CHECKED_IN and (
                change.before is None or change.before.status is not Status.CHECKED_IN
            ):  # the player is at this machine now: their help call follows them
                writes.follows.append(
                    Follow(after.user, after.device_id, name, self.topics.admin_alerts)
                )
        entry = self._entry(writes, job, cmd, decision, now, position)
        self._standing(writes, decision, now)
        primary = decision.after
        reply = Reply(
            request_id=job.request_id,
            ok=True,
            reservation=public(primary, private=True) if primary is not None else None,
            reservations=(
                [public(c.after, private=True) for c in changes]
                if cmd.op is rules.Op.RESERVE_PARTY or (primary and primary.party_id)
                else None
            ),
            party_id=primary.party_id or None if primary is not None else None,
            entry=entry,
        )
        writes.outbox += self.reply_rows(job, reply)
        self.log_reply(writes, job, cmd, reply)
        moved = {c.after.device_id for c in changes}
        moved |= {c.before.device_id for c in changes if c.before is not None}
        kinds = {decision.entry.kind} if decision.entry is not None else set()
        players = {decision.entry.user} if decision.entry is not None else set()
        return Outcome(
            reply,
            touched=job.device_id in moved,
            also=frozenset(moved - {job.device_id}),
            lines=frozenset(kinds),
            waiters=frozenset(players),
        )

    def _write(
        self, writes: Writes, job: Job, change: rules.Change, now: datetime, fresh: int
    ) -> None:
        """The row of one changed reservation: inserted (the ``fresh``-th new one of the
        decision: a party's seats after the first get the request key with ``#n``, so a
        party redelivered to another bridge collides on it), or its changed columns
        updated."""
        before, after = change.before, change.after
        if before is None:
            key = job.request_key or f"system:{after.id}"
            writes.new.append(
                {
                    "id": after.id,
                    "device_id": after.device_id,
                    "player": after.user,
                    "starts_at": after.starts_at,
                    "ends_at": after.ends_at,
                    "status": after.status.value,
                    "code": after.code,
                    "request_key": f"{key}#{fresh}" if fresh else key,
                    "created_at": now,
                    "updated_at": now,
                    "reminded_at": None,
                    "party_id": after.party_id or None,
                    "hold_until": after.hold_until,
                    "locked_at": None,
                    "overrun_at": None,
                    "ending_warned_at": None,
                }
            )
            return
        row: dict[str, Any] = {"id": after.id, "status": after.status.value, "updated_at": now}
        if after.device_id != before.device_id:
            row["device_id"] = after.device_id
        if after.starts_at != before.starts_at:
            row["starts_at"] = after.starts_at
            row["reminded_at"] = None  # a new start: remind again
        moved = (after.device_id, after.starts_at) != (before.device_id, before.starts_at)
        if moved and in_lock_window(before, now, self.pre_slot_lock):
            row["locked_at"] = row["overrun_at"] = None  # lock the new machine / slot again
        if after.ends_at != before.ends_at:
            row["ends_at"] = after.ends_at
            row["ending_warned_at"] = None  # a new end: warn before it again
        if after.hold_until != before.hold_until:
            row["hold_until"] = after.hold_until
        writes.changed.append(row)

    def _machine(
        self, writes: Writes, after: rules.Slot, consequence: rules.Consequence, now: datetime
    ) -> None:
        machine = consequence.machine
        if machine is None:
            return
        if consequence.machine_while is not None and after.status not in consequence.machine_while:
            return
        if machine in (CommandName.START_SESSION, CommandName.EXTEND_SESSION):
            started = Session(
                id=after.id,
                started_at=now.timestamp(),
                ends_at=after.ends_at.timestamp(),
                reservation_code=after.code,
            )
            writes.outbox.append(self.device_cmd(after.device_id, machine, now, session=started))
        else:
            writes.outbox.append(
                self.device_cmd(after.device_id, machine, now, reason="slot ended")
            )

    def _entry(
        self,
        writes: Writes,
        job: Job,
        cmd: rules.Command,
        decision: rules.Decision,
        now: datetime,
        position: int | None,
    ) -> WaitlistEntryPublic | None:
        """The waitlist entry's row (new or changed), a note when staff removed it, and the
        entry as the reply shows it."""
        entry = decision.entry
        if entry is None:
            return None
        if cmd.op is rules.Op.JOIN_WAITLIST:
            writes.entries_new.append(
                {
                    "id": entry.id,
                    "player": entry.user,
                    "kind": entry.kind,
                    "zone": entry.zone,
                    "minutes": entry.minutes,
                    "rank": entry.rank,
                    "status": entry.status.value,
                    "offer_id": None,
                    "request_key": job.request_key or f"system:{entry.id}",
                    "created_at": now,
                    "updated_at": now,
                }
            )
        else:
            writes.entries_changed.append(
                {
                    "id": entry.id,
                    "status": entry.status.value,
                    "rank": entry.rank,
                    "offer_id": entry.offer_id or None,
                    "updated_at": now,
                }
            )
        if entry.status is rules.EntryStatus.REMOVED:
            writes.notes.append(
                Note(
                    user=entry.user,
                    topic=self.topics.notifications(entry.user),
                    type="waitlist_removed",
                    priority=AlertSeverity.MEDIUM,
                    params={"kind": entry.kind},
                )
            )
        held = decision.after if decision.after and decision.after.status is Status.HELD else None
        return entry_public(entry, position, offer_of(held) if held else None)

    def _standing(self, writes: Writes, decision: rules.Decision, now: datetime) -> None:
        """A suspension that a no-show started, or one staff lifted: the standing row (the
        strikes count again from now) and the player's notification."""
        if decision.suspend_until is not None and decision.after is not None:
            until = decision.suspend_until
            local = until.astimezone(self.policy.tz).strftime("%m/%d %H:%M")
            params = {"until": local, "strikes": self.policy.no_show_strikes}
            self._stand(writes, decision.after.user, until, now, "booking_suspended", params)
        if decision.lifted is not None:
            self._stand(writes, decision.lifted, None, now, "suspension_lifted", {})

    def _stand(
        self,
        writes: Writes,
        player: str,
        until: datetime | None,
        now: datetime,
        notice: NotificationType,
        params: dict[str, object],
    ) -> None:
        writes.standings.append(
            {"player": player, "suspended_until": until, "strikes_since": now, "updated_at": now}
        )
        high = until is not None
        writes.notes.append(
            Note(
                user=player,
                topic=self.topics.notifications(player),
                type=notice,
                priority=AlertSeverity.HIGH if high else AlertSeverity.MEDIUM,
                params=params,
                until=until.timestamp() if until else None,
            )
        )

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
            error=ErrorBody(
                code=refusal.code.value,
                message=refusal.message,
                conflict=conflict,
                seat=refusal.seat,
                until=refusal.until.timestamp() if refusal.until else None,
            ),
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
        consequence: rules.Consequence | None = None,
    ) -> None:
        """What entering ``after.status`` (or the ``consequence`` given: an extend, a move)
        announces: the broadcast event (no player named), an admin alert if the table names
        one, and (``notify``) the owner's notification."""
        ts = now.timestamp()
        consequence = consequence or rules.CONSEQUENCES[after.status]
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
        tz = self.policy.tz
        params = {
            "name": device_name,
            "start": local,
            "end": after.ends_at.astimezone(tz).strftime("%H:%M"),
            "code": after.code,
        }
        if after.hold_until is not None:
            params["until"] = after.hold_until.astimezone(tz).strftime("%H:%M:%S")
        writes.notes.append(
            Note(
                user=after.user,
                topic=self.topics.notifications(after.user),
                type=consequence.notice,
                priority=consequence.priority,
                params=params,
                reservation=public(after, private=True),
                waitlist_offer=offer_of(after) if after.status is Status.HELD else None,
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
        minutes: int | None = None,
        reservation_id: str | None = None,
    ) -> Outbound:
        cmd = DeviceCommand(
            cmd=name,
            ts=now.timestamp(),
            session=session,
            reason=reason,
            minutes=minutes,
            reservation_id=reservation_id,
        )
        return Outbound(self.topics.cmd(device_id), cmd.encode())
