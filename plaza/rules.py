"""Reservation rules: a pure state machine, ``decide(context, command) -> Decision``.

Theory of operation
-------------------
A reservation lives through this table (in the spirit of h11's ``_state.py``)::

    PENDING    --approve--> APPROVED   --check_in--> CHECKED_IN --complete--> COMPLETED
    PENDING    --reject---> REJECTED
    PENDING    --cancel---> CANCELLED
    APPROVED   --cancel---> CANCELLED
    APPROVED   --no_show--> NO_SHOW

Anything else is an illegal transition: the decision is a refusal and nothing changes.

Everything that affects the state machine lives in this file (h11's rule), so next to the
table stand:

- :data:`CONSEQUENCES`: what entering each status causes, besides the reply to whoever asked:
  the broadcast event, the owner's notification and its priority, the machine's command, and
  an admin alert. The bridge renders a decision into rows by reading it.
- :data:`TIMED`: the transitions the clock makes (no-show after the grace, expiry of a pending
  request whose start is long past, completion at the end of the slot), and :data:`REMINDER`:
  the reminder ``reminder_lead`` before the start. The bridge's timers are built from them.

Which reservations block a slot:
- *active* = pending, approved, checked_in. A new reservation may not overlap an active one on
  the same machine, nor an active one of the same player on any machine (first come, first
  served: a pending request holds its slot, so the second player hears "conflict" at once).
- *holding* = approved, checked_in. Approving re-checks against holding reservations, so two
  overlapping pending requests (possible only when two bridges raced on PostgreSQL, or rows came
  from elsewhere) can never both be approved (the bug of calcom/cal.com#10789). SQL enforces the
  holding rule as well (PostgreSQL exclusion constraints; SQLite serializes with BEGIN IMMEDIATE).

No I/O, no clock: ``now`` and every fact come in through :class:`Context`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta, timezone
from enum import StrEnum
from typing import Literal

from plaza.messages import AlertSeverity, CommandName, NotificationType, ReservationEventType


class Status(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    CHECKED_IN = "checked_in"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    NO_SHOW = "no_show"


class Op(StrEnum):
    RESERVE = "reserve"
    CANCEL = "cancel"
    APPROVE = "approve"
    REJECT = "reject"
    CHECK_IN = "check_in"
    COMPLETE = "complete"
    NO_SHOW = "no_show"  # timers only


class Role(StrEnum):
    PLAYER = "player"
    ADMIN = "admin"
    DEVICE = "device"  # the machine itself (check-in by code)
    SYSTEM = "system"  # the bridge's timers


ACTIVE = frozenset({Status.PENDING, Status.APPROVED, Status.CHECKED_IN})
HOLDING = frozenset({Status.APPROVED, Status.CHECKED_IN})

TRANSITIONS: dict[Status, dict[Op, Status]] = {
    Status.PENDING: {
        Op.APPROVE: Status.APPROVED,
        Op.REJECT: Status.REJECTED,
        Op.CANCEL: Status.CANCELLED,
    },
    Status.APPROVED: {
        Op.CANCEL: Status.CANCELLED,
        Op.CHECK_IN: Status.CHECKED_IN,
        Op.NO_SHOW: Status.NO_SHOW,
    },
    Status.CHECKED_IN: {Op.COMPLETE: Status.COMPLETED},
}


@dataclass(frozen=True, slots=True)
class Consequence:
    """What entering a status causes, besides the reply to whoever asked."""

    #: the broadcast ``ReservationEvent`` type (no player named in it)
    event: ReservationEventType
    #: the owner's notification (texts in plaza.i18n); not sent when the owner asked, since
    #: the reply already says it on every one of their screens
    notice: NotificationType
    priority: AlertSeverity
    #: the command the machine gets
    machine: CommandName | None = None
    #: an admin alert (kind, severity; texts in plaza.i18n)
    alert: tuple[str, AlertSeverity] | None = None


CONSEQUENCES: dict[Status, Consequence] = {
    Status.PENDING: Consequence("reservation_created", "reservation_created", AlertSeverity.LOW),
    Status.APPROVED: Consequence(
        "reservation_approved", "reservation_approved", AlertSeverity.HIGH
    ),
    Status.REJECTED: Consequence(
        "reservation_rejected", "reservation_rejected", AlertSeverity.HIGH
    ),
    Status.CANCELLED: Consequence(
        "reservation_cancelled", "reservation_cancelled", AlertSeverity.MEDIUM
    ),
    Status.CHECKED_IN: Consequence(
        "reservation_checked_in",
        "reservation_checked_in",
        AlertSeverity.LOW,
        machine=CommandName.START_SESSION,
    ),
    Status.COMPLETED: Consequence(
        "reservation_completed",
        "reservation_completed",
        AlertSeverity.LOW,
        machine=CommandName.END_SESSION,
    ),
    Status.NO_SHOW: Consequence(
        "reservation_no_show",
        "no_show_released",
        AlertSeverity.HIGH,
        alert=("no_show", AlertSeverity.MEDIUM),
    ),
}

#: a check-in the machine asked for and was refused: the session it started is ended
REFUSED_CHECK_IN_ON_MACHINE = CommandName.END_SESSION


@dataclass(frozen=True, slots=True)
class Timed:
    """A transition the clock makes: a reservation in ``status`` whose ``since`` time lies
    ``grace`` (the ``no_show_grace`` setting) or nothing in the past gets ``op`` from the
    system."""

    status: Status
    op: Op
    since: Literal["starts_at", "ends_at"]
    grace: bool


TIMED: tuple[Timed, ...] = (
    Timed(Status.APPROVED, Op.NO_SHOW, "starts_at", grace=True),  # not checked in in time
    Timed(Status.PENDING, Op.CANCEL, "starts_at", grace=True),  # never approved, start long past
    Timed(Status.CHECKED_IN, Op.COMPLETE, "ends_at", grace=False),  # the slot is over
)


@dataclass(frozen=True, slots=True)
class Reminder:
    """A notification ``reminder_lead`` (a setting) before the start, once per reservation."""

    statuses: frozenset[Status]
    notice: NotificationType
    priority: AlertSeverity


REMINDER = Reminder(
    frozenset({Status.PENDING, Status.APPROVED}), "reservation_reminder", AlertSeverity.HIGH
)

#: who may ask for each op (owner-only rules are checked separately)
ALLOWED: dict[Op, frozenset[Role]] = {
    Op.RESERVE: frozenset({Role.PLAYER, Role.ADMIN}),
    Op.CANCEL: frozenset({Role.PLAYER, Role.ADMIN, Role.SYSTEM}),  # system: expired pending
    Op.APPROVE: frozenset({Role.ADMIN}),
    Op.REJECT: frozenset({Role.ADMIN}),
    Op.CHECK_IN: frozenset({Role.PLAYER, Role.DEVICE, Role.ADMIN}),
    Op.COMPLETE: frozenset({Role.ADMIN, Role.SYSTEM, Role.DEVICE}),
    Op.NO_SHOW: frozenset({Role.SYSTEM}),
}


class Code(StrEnum):
    """Stable error codes on the wire (docs/protocol.md)."""

    CONFLICT = "conflict"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    INVALID = "invalid"
    INVALID_TRANSITION = "invalid_transition"
    RATE_LIMITED = "rate_limited"
    DEVICE_UNAVAILABLE = "device_unavailable"
    OUTSIDE_HOURS = "outside_hours"
    TOO_LONG = "too_long"
    IN_PAST = "in_past"
    LIMIT_REACHED = "limit_reached"
    BAD_CODE = "bad_code"
    TOO_EARLY = "too_early"


@dataclass(frozen=True, slots=True)
class Slot:
    """A reservation as the rules see it."""

    id: str
    device_id: str
    user: str
    starts_at: datetime
    ends_at: datetime
    status: Status
    code: str = ""

    def overlaps(self, starts_at: datetime, ends_at: datetime) -> bool:
        return self.starts_at < ends_at and starts_at < self.ends_at  # half-open [start, end)


@dataclass(frozen=True, slots=True)
class Policy:
    max_minutes: int = 240
    min_minutes: float = 10
    max_active_per_player: int = 3
    opens: time = time(0, 0)
    closes: time = time(0, 0)  # equal to opens: open around the clock
    tz: timezone = timezone(timedelta(hours=9))  # venue local time (KST)
    check_in_early: timedelta = timedelta(minutes=15)
    max_days_ahead: int = 14

    def within_hours(self, starts_at: datetime, ends_at: datetime) -> bool:
        if self.opens == self.closes:
            return True
        local_start, local_end = starts_at.astimezone(self.tz), ends_at.astimezone(self.tz)
        day = local_start.date()
        for offset in (-1, 0):  # the opening that may have begun the day before (late nights)
            open_day = day + timedelta(days=offset)
            opening = datetime.combine(open_day, self.opens, self.tz)
            closing = datetime.combine(open_day, self.closes, self.tz)
            if closing <= opening:
                closing += timedelta(days=1)
            if opening <= local_start and local_end <= closing:
                return True
        return False


@dataclass(frozen=True, slots=True)
class Actor:
    user: str
    role: Role


@dataclass(frozen=True, slots=True)
class Command:
    op: Op
    actor: Actor
    device_id: str
    reservation_id: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    code: str | None = None
    #: reserve only: the actor's own reservation this one replaces (a rebook offer), released
    #: in the same decision, so the player never holds both nor loses both
    replaces: str | None = None


@dataclass(frozen=True, slots=True)
class Context:
    """Facts the bridge loaded for one command, inside its transaction."""

    now: datetime
    policy: Policy
    device_exists: bool
    maintenance: bool = False
    auto_approve: bool = False
    #: active reservations on this machine that may matter (overlapping the window in question)
    device_slots: tuple[Slot, ...] = ()
    #: the actor's active reservations (all machines)
    player_slots: tuple[Slot, ...] = ()
    #: the reservation named by the command, if any
    target: Slot | None = None
    #: how many active reservations the actor holds, when ``player_slots`` lists only those
    #: near the requested window (the bridge's batched path); None: count ``player_slots``
    player_active_count: int | None = None
    new_id: str = ""
    new_code: str = ""
    #: the reservation named by ``Command.replaces``, if it exists
    replaced: Slot | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    code: Code
    message: str
    conflict: Slot | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """Either ``after`` (the reservation after the command) or ``refusal``."""

    before: Slot | None = None
    after: Slot | None = None
    refusal: Refusal | None = None
    #: a reserve that replaces another: that one, cancelled
    released: Slot | None = None

    @property
    def ok(self) -> bool:
        return self.refusal is None


def _refuse(code: Code, message: str, conflict: Slot | None = None) -> Decision:
    return Decision(refusal=Refusal(code, message, conflict))


def decide(ctx: Context, cmd: Command) -> Decision:
    """Apply one command to the facts; never raises for bad input, never does I/O."""
    if cmd.actor.role not in ALLOWED[cmd.op]:
        return _refuse(Code.FORBIDDEN, f"{cmd.actor.role.value} may not {cmd.op.value}")
    if cmd.actor.role is Role.DEVICE and cmd.actor.user != cmd.device_id:
        return _refuse(Code.FORBIDDEN, "a machine may act only on itself")
    if not ctx.device_exists:
        return _refuse(Code.NOT_FOUND, f"no machine {cmd.device_id!r}")
    if cmd.op is Op.RESERVE:
        return _reserve(ctx, cmd)
    return _transition(ctx, cmd)


def _reserve(ctx: Context, cmd: Command) -> Decision:
    start, end, policy = cmd.starts_at, cmd.ends_at, ctx.policy
    if start is None or end is None:
        return _refuse(Code.INVALID, "reserve needs starts_at and ends_at")
    if start.tzinfo is None or end.tzinfo is None:
        return _refuse(Code.INVALID, "starts_at and ends_at must carry a timezone")
    if end <= start:
        return _refuse(Code.INVALID, "ends_at must be after starts_at")
    if end <= ctx.now:
        return _refuse(Code.IN_PAST, "the slot has already ended")
    if start < ctx.now - timedelta(minutes=1):
        return _refuse(Code.IN_PAST, "the slot starts in the past")
    if start > ctx.now + timedelta(days=policy.max_days_ahead):
        return _refuse(
            Code.INVALID, f"slots can be booked up to {policy.max_days_ahead} days ahead"
        )
    minutes = (end - start).total_seconds() / 60
    if minutes > policy.max_minutes:
        return _refuse(Code.TOO_LONG, f"a slot may last at most {policy.max_minutes} minutes")
    if minutes < policy.min_minutes:
        return _refuse(Code.INVALID, f"a slot lasts at least {policy.min_minutes} minutes")
    if not policy.within_hours(start, end):
        return _refuse(Code.OUTSIDE_HOURS, "the slot is outside opening hours")
    if ctx.maintenance:
        return _refuse(Code.DEVICE_UNAVAILABLE, "the machine is in maintenance")
    released = None
    if cmd.replaces is not None:
        old = ctx.replaced
        if old is None or old.user != cmd.actor.user:
            return _refuse(Code.NOT_FOUND, f"no reservation {cmd.replaces!r} of yours to replace")
        if old.status not in (Status.PENDING, Status.APPROVED):
            return _refuse(
                Code.INVALID_TRANSITION, f"a {old.status.value} reservation cannot be replaced"
            )
        released = replace(old, status=Status.CANCELLED)
    for slot in ctx.device_slots:
        if released is not None and slot.id == released.id:
            continue
        if slot.status in ACTIVE and slot.overlaps(start, end):
            return _refuse(Code.CONFLICT, "the machine is taken for part of that slot", slot)
    mine = [
        s
        for s in ctx.player_slots
        if s.status in ACTIVE and (released is None or s.id != released.id)
    ]
    for slot in mine:
        if slot.overlaps(start, end):
            return _refuse(Code.CONFLICT, "you already hold a reservation at that time", slot)
    held = len(mine) if ctx.player_active_count is None else ctx.player_active_count
    if released is not None and ctx.player_active_count is not None:
        held -= 1
    if held >= policy.max_active_per_player:
        return _refuse(
            Code.LIMIT_REACHED,
            f"at most {policy.max_active_per_player} active reservations per player",
        )
    status = Status.APPROVED if ctx.auto_approve else Status.PENDING
    after = Slot(ctx.new_id, cmd.device_id, cmd.actor.user, start, end, status, ctx.new_code)
    return Decision(after=after, released=released)


def _transition(ctx: Context, cmd: Command) -> Decision:
    target = ctx.target
    if target is None or target.device_id != cmd.device_id:
        return _refuse(Code.NOT_FOUND, f"no reservation {cmd.reservation_id!r} on this machine")
    role = cmd.actor.role
    if role is Role.PLAYER and target.user != cmd.actor.user:
        return _refuse(Code.NOT_FOUND, f"no reservation {cmd.reservation_id!r} on this machine")
    nxt = TRANSITIONS.get(target.status, {}).get(cmd.op)
    if nxt is None:
        return _refuse(
            Code.INVALID_TRANSITION, f"a {target.status.value} reservation cannot {cmd.op.value}"
        )
    if cmd.op is Op.APPROVE:
        for slot in ctx.device_slots:
            if (
                slot.id != target.id
                and slot.status in HOLDING
                and slot.overlaps(target.starts_at, target.ends_at)
            ):
                return _refuse(Code.CONFLICT, "an approved reservation overlaps this one", slot)
        if ctx.maintenance:
            return _refuse(Code.DEVICE_UNAVAILABLE, "the machine is in maintenance")
    if cmd.op is Op.CHECK_IN:
        if role in (Role.PLAYER, Role.DEVICE) and (not target.code or cmd.code != target.code):
            return _refuse(Code.BAD_CODE, "the check-in code does not match")
        if ctx.now < target.starts_at - ctx.policy.check_in_early:
            return _refuse(Code.TOO_EARLY, "check-in opens shortly before the slot")
        if ctx.now >= target.ends_at:
            return _refuse(Code.IN_PAST, "the slot is over")
    return Decision(before=target, after=replace(target, status=nxt))
