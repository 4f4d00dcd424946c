"""Reservation rules: a pure state machine, ``decide(context, command) -> Decision``.

Theory of operation
-------------------
A reservation lives through this table (in the spirit of h11's ``_state.py``)::

    PENDING    --approve--> APPROVED   --check_in--> CHECKED_IN --complete--> COMPLETED
    PENDING    --reject---> REJECTED
    PENDING    --cancel---> CANCELLED
    APPROVED   --cancel---> CANCELLED
    APPROVED   --no_show--> NO_SHOW
    HELD       --take-----> PENDING      (a waitlist offer taken: a reserve with offer_id)
    HELD       --decline--> LAPSED       (declined, or --lapse-- when the hold runs out)
    PENDING, APPROVED, CHECKED_IN --extend--> (the same status, a later end)
    PENDING, APPROVED             --move----> (the same status, another machine or slot)

Anything else is an illegal transition: the decision is a refusal and nothing changes.
Approval follows the machine: a reservation made, taken or moved onto a machine that
auto-approves is approved at once; a player's move of an approved reservation onto one that
does not is pending again (staff approve where it now lies); staff's own moves keep it. A
party is approved whole: its seats move only to other machines, keeping the party's slot and
status.

Everything that affects the state machine lives in this file (h11's rule), so next to the
table stand:

- :data:`CONSEQUENCES`: what entering each status causes, besides the reply to whoever asked:
  the broadcast event, the owner's notification and its priority, the machine's command, and
  an admin alert; :data:`AMENDED`, the same for an extend or a move (no new status). The
  bridge renders a decision into rows by reading them.
- :data:`TIMED`: the transitions the clock makes (no-show after the grace, expiry of a pending
  request whose start is long past, completion at the end of the slot, a hold that lapsed),
  and :data:`REMINDER`: the reminder ``reminder_lead`` before the start. The bridge's timers
  are built from them.

Which reservations block a slot:
- *active* = pending, approved, checked_in, held. A new reservation may not overlap an active
  one on the same machine, nor an active one of the same player on any machine (first come,
  first served: a pending request holds its slot, so the second player hears "conflict" at
  once). The seats of one party are the exception: they share their slot.
- *holding* = approved, checked_in, held. Approving re-checks against holding reservations, so
  two overlapping pending requests (possible only when two bridges raced on PostgreSQL, or
  rows came from elsewhere) can never both be approved (the bug of calcom/cal.com#10789). SQL
  enforces the holding rule as well (PostgreSQL exclusion constraints; SQLite serializes with
  BEGIN IMMEDIATE).

Beyond one reservation (the venue-level ops, :data:`VENUE_OPS`):
- a *party* books N machines for one slot in one decision, all or nothing; approving or
  rejecting one seat of a pending party does it to every pending seat, all or none;
- the *waitlist*: a player joins the line of a kind (and zone); when a machine of it is free
  for the entry's minutes, the clock's ``offer`` holds it (a ``held`` reservation) for the
  first entry that fits, until ``hold_until``;
- *no-show strikes*: ``no_show_strikes`` no-shows within ``no_show_window`` suspend the
  player's self-service booking for ``no_show_suspension`` (``suspended``); staff lift it.

No I/O, no clock: ``now`` and every fact come in through :class:`Context`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta, timezone
from enum import StrEnum
from typing import Literal

from plaza import floormap
from plaza.messages import AlertSeverity, CommandName, NotificationType, ReservationEventType


class Status(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    CHECKED_IN = "checked_in"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    NO_SHOW = "no_show"
    #: a machine held for a player on the waitlist (an offer) until ``hold_until``
    HELD = "held"
    #: an offer nobody took (declined, or the hold ran out)
    LAPSED = "lapsed"


class Op(StrEnum):
    RESERVE = "reserve"
    CANCEL = "cancel"
    APPROVE = "approve"
    REJECT = "reject"
    CHECK_IN = "check_in"
    COMPLETE = "complete"
    NO_SHOW = "no_show"  # timers only
    EXTEND = "extend"
    MOVE = "move"
    TAKE = "take"  # on the wire: a reserve with offer_id
    DECLINE = "decline_offer"
    LAPSE = "lapse"  # timers only
    RESERVE_PARTY = "reserve_party"
    CANCEL_PARTY = "cancel_party"
    JOIN_WAITLIST = "join_waitlist"
    LEAVE_WAITLIST = "leave_waitlist"
    MOVE_ENTRY = "move_waitlist_entry"
    OFFER = "offer"  # timers only: the head of a line gets a free machine, held
    LIFT_SUSPENSION = "lift_suspension"


class Role(StrEnum):
    PLAYER = "player"
    ADMIN = "admin"
    DEVICE = "device"  # the machine itself (check-in by code)
    SYSTEM = "system"  # the bridge's timers


#: ops that name no one machine: they come over the venue's own request topic
VENUE_OPS = frozenset(
    {
        Op.RESERVE_PARTY,
        Op.CANCEL_PARTY,
        Op.JOIN_WAITLIST,
        Op.LEAVE_WAITLIST,
        Op.DECLINE,
        Op.MOVE_ENTRY,
        Op.LIFT_SUSPENSION,
    }
)
#: what a suspended player may not do for themselves (staff still may, for them)
BOOKING_OPS = frozenset({Op.RESERVE, Op.RESERVE_PARTY, Op.JOIN_WAITLIST, Op.TAKE, Op.EXTEND})

ACTIVE = frozenset({Status.PENDING, Status.APPROVED, Status.CHECKED_IN, Status.HELD})
HOLDING = frozenset({Status.APPROVED, Status.CHECKED_IN, Status.HELD})

TRANSITIONS: dict[Status, dict[Op, Status]] = {
    Status.PENDING: {
        Op.APPROVE: Status.APPROVED,
        Op.REJECT: Status.REJECTED,
        Op.CANCEL: Status.CANCELLED,
        Op.EXTEND: Status.PENDING,
        Op.MOVE: Status.PENDING,
    },
    Status.APPROVED: {
        Op.CANCEL: Status.CANCELLED,
        Op.CHECK_IN: Status.CHECKED_IN,
        Op.NO_SHOW: Status.NO_SHOW,
        Op.EXTEND: Status.APPROVED,
        Op.MOVE: Status.APPROVED,
    },
    Status.CHECKED_IN: {Op.COMPLETE: Status.COMPLETED, Op.EXTEND: Status.CHECKED_IN},
    Status.HELD: {Op.TAKE: Status.PENDING, Op.DECLINE: Status.LAPSED, Op.LAPSE: Status.LAPSED},
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
    #: the machine's command only while the reservation is in one of these (None: always)
    machine_while: frozenset[Status] | None = None


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
    Status.HELD: Consequence("reservation_held", "waitlist_offer", AlertSeverity.HIGH),
    Status.LAPSED: Consequence("reservation_lapsed", "waitlist_offer_lapsed", AlertSeverity.MEDIUM),
}

#: what an extend or a move causes (the status stays, or follows the machine's approval)
AMENDED: dict[Op, Consequence] = {
    Op.EXTEND: Consequence(
        "reservation_extended",
        "reservation_extended",
        AlertSeverity.MEDIUM,
        machine=CommandName.EXTEND_SESSION,
        machine_while=frozenset({Status.CHECKED_IN}),
    ),
    Op.MOVE: Consequence("reservation_moved", "reservation_moved", AlertSeverity.MEDIUM),
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
    since: Literal["starts_at", "ends_at", "hold_until"]
    grace: bool


TIMED: tuple[Timed, ...] = (
    Timed(Status.APPROVED, Op.NO_SHOW, "starts_at", grace=True),  # not checked in in time
    Timed(Status.PENDING, Op.CANCEL, "starts_at", grace=True),  # never approved, start long past
    Timed(Status.CHECKED_IN, Op.COMPLETE, "ends_at", grace=False),  # the slot is over
    Timed(Status.HELD, Op.LAPSE, "hold_until", grace=False),  # the offer was not taken
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
    Op.EXTEND: frozenset({Role.PLAYER, Role.ADMIN}),
    Op.MOVE: frozenset({Role.PLAYER, Role.ADMIN}),
    Op.TAKE: frozenset({Role.PLAYER, Role.ADMIN}),
    Op.DECLINE: frozenset({Role.PLAYER, Role.ADMIN}),
    Op.LAPSE: frozenset({Role.SYSTEM}),
    Op.RESERVE_PARTY: frozenset({Role.PLAYER, Role.ADMIN}),
    Op.CANCEL_PARTY: frozenset({Role.PLAYER, Role.ADMIN}),
    Op.JOIN_WAITLIST: frozenset({Role.PLAYER}),
    Op.LEAVE_WAITLIST: frozenset({Role.PLAYER, Role.ADMIN}),
    Op.MOVE_ENTRY: frozenset({Role.ADMIN}),
    Op.OFFER: frozenset({Role.SYSTEM}),
    Op.LIFT_SUSPENSION: frozenset({Role.ADMIN}),
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
    SUSPENDED = "suspended"
    OFFER_EXPIRED = "offer_expired"


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
    #: the party this seat belongs to ("" for a reservation of its own)
    party_id: str = ""
    #: a held machine: the offer lapses at this moment
    hold_until: datetime | None = None

    def overlaps(self, starts_at: datetime, ends_at: datetime) -> bool:
        return self.starts_at < ends_at and starts_at < self.ends_at  # half-open [start, end)

    @property
    def group(self) -> str:
        """What counts once under the player's cap, and may share a slot: the party, or the
        reservation itself."""
        return self.party_id or self.id


class EntryStatus(StrEnum):
    WAITING = "waiting"
    OFFERED = "offered"  # a machine is held for it (``offer_id``)
    BOOKED = "booked"  # the offer was taken
    LEFT = "left"  # the player left the line
    REMOVED = "removed"  # staff removed it
    DECLINED = "declined"  # the player declined the offer
    LAPSED = "lapsed"  # the hold ran out


#: entries that are in their line
LIVE_ENTRIES = frozenset({EntryStatus.WAITING, EntryStatus.OFFERED})


@dataclass(frozen=True, slots=True)
class Entry:
    """A waitlist entry as the rules see it: the line of ``kind`` (and ``zone``: None means
    any zone) is its live entries in ``rank`` order."""

    id: str
    user: str
    kind: str
    zone: str | None
    minutes: int
    rank: float
    status: EntryStatus = EntryStatus.WAITING
    offer_id: str = ""

    def fits(self, machine: Machine) -> bool:
        return self.kind == machine.kind and self.zone in (None, machine.zone)


@dataclass(frozen=True, slots=True)
class Machine:
    """A machine a command may touch besides (or instead of) the one it came on: a move's
    destination, a party's candidates, the machine of an offer, each seat of a party."""

    id: str
    kind: str = "pc"
    zone: str = "main"
    maintenance: bool = False
    auto_approve: bool = False
    #: its active reservations overlapping the window in question
    slots: tuple[Slot, ...] = ()
    #: where it stands on the floor map (plaza.floormap), if placed
    pos: tuple[float, float] | None = None

    def taken(
        self, start: datetime, end: datetime, ignore: frozenset[str] = frozenset()
    ) -> Slot | None:
        """The first active reservation (not in ``ignore``) overlapping ``[start, end)``."""
        for slot in self.slots:
            if slot.id not in ignore and slot.status in ACTIVE and slot.overlaps(start, end):
                return slot
        return None


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
    max_party_seats: int = 8
    waitlist_hold: timedelta = timedelta(minutes=3)
    waitlist_max_length: int = 50
    waitlist_max_per_player: int = 2
    no_show_strikes: int = 3
    no_show_window: timedelta = timedelta(days=30)
    no_show_suspension: timedelta = timedelta(days=7)

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
    #: the machine the command came on ("" for the venue-level ops)
    device_id: str
    reservation_id: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    code: str | None = None
    #: reserve only: the actor's own reservation this one replaces (a rebook offer), released
    #: in the same decision, so the player never holds both nor loses both
    replaces: str | None = None
    #: move: the machine to move to (None: the same one)
    to_device: str | None = None
    #: reserve_party: how many seats, or exactly which machines
    seats: int | None = None
    devices: tuple[str, ...] = ()
    #: reserve_party and join_waitlist: the kind of machine (and its zone, if it matters)
    kind: str | None = None
    zone: str | None = None
    #: join_waitlist: how long the player wants to play
    minutes: int | None = None
    party_id: str | None = None
    #: leave_waitlist, move_waitlist_entry
    entry_id: str | None = None
    #: move_waitlist_entry: the new place in the line (1: the head)
    position: int | None = None
    #: lift_suspension: whose
    subject: str | None = None
    #: staff made this for the player (an admin booking for them): not self-service
    initiated_by: str | None = None


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
    #: the actor's active reservations (all machines); for a command on a reservation, its
    #: owner's
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
    #: the other machines the command may touch, by id, with their active slots in its window
    machines: Mapping[str, Machine] = field(default_factory=dict)
    #: every seat of the party the command names (or its target belongs to)
    party: tuple[Slot, ...] = ()
    #: fresh ids and check-in codes for the seats of a party
    new_ids: tuple[str, ...] = ()
    new_codes: tuple[str, ...] = ()
    #: the waitlist entry the command names (or whose offer its target is)
    entry: Entry | None = None
    #: the live entries of the line in question, and of the actor (any line)
    line: tuple[Entry, ...] = ()
    player_entries: tuple[Entry, ...] = ()
    #: an offer: the line's players' active reservations in the window
    line_slots: tuple[Slot, ...] = ()
    #: the actor's self-service booking is suspended until then (None: it is not)
    suspended_until: datetime | None = None
    #: no-show strikes of the target's owner so far (within the window, since the last lift)
    strikes: int = 0
    #: an offer: the line's players whose self-service booking is suspended (they are passed)
    suspended: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Refusal:
    code: Code
    message: str
    conflict: Slot | None = None
    #: a party: the machine (seat) that could not be booked
    seat: str | None = None
    #: ``suspended``: until when
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One reservation before (None: new) and after a decision."""

    before: Slot | None
    after: Slot


@dataclass(frozen=True, slots=True)
class Decision:
    """Either a change (``after``, ``entry``, ``lifted``) or ``refusal``."""

    before: Slot | None = None
    after: Slot | None = None
    refusal: Refusal | None = None
    #: a reserve that replaces another: that one, cancelled (also among ``also``)
    released: Slot | None = None
    #: the other reservations the decision changes (a released one, a party's other seats)
    also: tuple[Change, ...] = ()
    #: the waitlist entry after the decision (new, or changed)
    entry: Entry | None = None
    #: a no-show that was the last strike: self-service booking suspended until then
    suspend_until: datetime | None = None
    #: lift_suspension: whose
    lifted: str | None = None

    @property
    def ok(self) -> bool:
        return self.refusal is None

    def changes(self) -> tuple[Change, ...]:
        """Every reservation the decision changes: the named one first, then the rest (a
        released one, a party's other seats)."""
        first = (Change(self.before, self.after),) if self.after is not None else ()
        return first + self.also


def _refuse(
    code: Code,
    message: str,
    conflict: Slot | None = None,
    *,
    seat: str | None = None,
    until: datetime | None = None,
) -> Decision:
    return Decision(refusal=Refusal(code, message, conflict, seat, until))


def decide(ctx: Context, cmd: Command) -> Decision:
    """Apply one command to the facts; never raises for bad input, never does I/O."""
    if cmd.actor.role not in ALLOWED[cmd.op]:
        return _refuse(Code.FORBIDDEN, f"{cmd.actor.role.value} may not {cmd.op.value}")
    if cmd.actor.role is Role.DEVICE and cmd.actor.user != cmd.device_id:
        return _refuse(Code.FORBIDDEN, "a machine may act only on itself")
    if cmd.op not in VENUE_OPS and not ctx.device_exists:
        return _refuse(Code.NOT_FOUND, f"no machine {cmd.device_id!r}")
    if (
        cmd.op in BOOKING_OPS
        and cmd.actor.role is Role.PLAYER
        and cmd.initiated_by is None
        and ctx.suspended_until is not None
        and ctx.suspended_until > ctx.now
    ):
        until = ctx.suspended_until
        return _refuse(
            Code.SUSPENDED,
            f"self-service booking is suspended until {until.isoformat()} (no-shows)",
            until=until,
        )
    handler = _VENUE.get(cmd.op)
    if handler is not None:
        return handler(ctx, cmd)
    if cmd.op is Op.RESERVE:
        return _reserve(ctx, cmd)
    if cmd.op is Op.OFFER:
        return _offer(ctx, cmd)
    return _transition(ctx, cmd)


def _slot_refusal(ctx: Context, start: datetime | None, end: datetime | None) -> Decision | None:
    """Why ``[start, end)`` cannot be booked at all (times, length, hours), or None."""
    policy = ctx.policy
    if start is None or end is None:
        return _refuse(Code.INVALID, "the slot needs starts_at and ends_at")
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
    return None


def _own_clash(
    ctx: Context, start: datetime, end: datetime, ignore: frozenset[str] = frozenset()
) -> Slot | None:
    """The player's own active reservation overlapping ``[start, end)`` (not in ``ignore``)."""
    for slot in ctx.player_slots:
        if slot.id not in ignore and slot.status in ACTIVE and slot.overlaps(start, end):
            return slot
    return None


def _held(ctx: Context, mine: list[Slot]) -> int:
    """How many reservations (a party counts once) the player holds under the cap."""
    if ctx.player_active_count is not None:
        return ctx.player_active_count
    return len({s.group for s in mine})


def _capped(ctx: Context, held: int) -> Decision | None:
    """The refusal for a player who holds ``held`` reservations, if that is the cap."""
    cap = ctx.policy.max_active_per_player
    if held >= cap:
        return _refuse(Code.LIMIT_REACHED, f"at most {cap} active reservations per player")
    return None


def _reserve(ctx: Context, cmd: Command) -> Decision:
    start, end = cmd.starts_at, cmd.ends_at
    bad = _slot_refusal(ctx, start, end)
    if bad is not None:
        return bad
    assert start is not None
    assert end is not None
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
    held = _held(ctx, mine)
    if released is not None and ctx.player_active_count is not None:
        held -= 1
    if (capped := _capped(ctx, held)) is not None:
        return capped
    status = Status.APPROVED if ctx.auto_approve else Status.PENDING
    after = Slot(ctx.new_id, cmd.device_id, cmd.actor.user, start, end, status, ctx.new_code)
    if released is None:
        return Decision(after=after)
    assert ctx.replaced is not None
    return Decision(after=after, released=released, also=(Change(ctx.replaced, released),))


def _transition(ctx: Context, cmd: Command) -> Decision:
    target = ctx.target
    on_machine = cmd.op not in VENUE_OPS
    if target is None or (on_machine and target.device_id != cmd.device_id):
        return _refuse(Code.NOT_FOUND, f"no reservation {cmd.reservation_id!r} on this machine")
    role = cmd.actor.role
    if role is Role.PLAYER and target.user != cmd.actor.user:
        return _refuse(Code.NOT_FOUND, f"no reservation {cmd.reservation_id!r} on this machine")
    nxt = TRANSITIONS.get(target.status, {}).get(cmd.op)
    if nxt is None:
        return _refuse(
            Code.INVALID_TRANSITION, f"a {target.status.value} reservation cannot {cmd.op.value}"
        )
    if cmd.op in (Op.APPROVE, Op.REJECT) and target.party_id:
        return _party_decision(ctx, cmd, target, nxt)
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
    if cmd.op is Op.EXTEND:
        return _extend(ctx, cmd, target)
    if cmd.op is Op.MOVE:
        return _move(ctx, cmd, target)
    if cmd.op is Op.TAKE:
        return _take(ctx, cmd, target)
    after = replace(target, status=nxt)
    if cmd.op in (Op.DECLINE, Op.LAPSE):
        entry = ctx.entry
        settled = EntryStatus.DECLINED if cmd.op is Op.DECLINE else EntryStatus.LAPSED
        moved = replace(entry, status=settled) if entry is not None else None
        return Decision(before=target, after=replace(after, hold_until=None), entry=moved)
    if cmd.op is Op.NO_SHOW:
        policy = ctx.policy
        last = ctx.strikes + 1 >= policy.no_show_strikes
        until = ctx.now + policy.no_show_suspension if last else None
        return Decision(before=target, after=after, suspend_until=until)
    return Decision(before=target, after=after)


def _extend(ctx: Context, cmd: Command, target: Slot) -> Decision:
    end, policy = cmd.ends_at, ctx.policy
    if end is None or end.tzinfo is None:
        return _refuse(Code.INVALID, "extend needs ends_at with a timezone")
    if target.ends_at <= ctx.now:
        return _refuse(Code.IN_PAST, "the slot is over")
    if end <= target.ends_at:
        return _refuse(Code.INVALID, "extend lengthens: ends_at must be after the current end")
    if (end - target.starts_at).total_seconds() / 60 > policy.max_minutes:
        return _refuse(Code.TOO_LONG, f"a slot may last at most {policy.max_minutes} minutes")
    if not policy.within_hours(target.starts_at, end):
        return _refuse(Code.OUTSIDE_HOURS, "the slot would run outside opening hours")
    if ctx.maintenance:
        return _refuse(Code.DEVICE_UNAVAILABLE, "the machine is in maintenance")
    itself = frozenset({target.id})
    for slot in ctx.device_slots:
        if slot.id not in itself and slot.status in ACTIVE and slot.overlaps(target.ends_at, end):
            return _refuse(Code.CONFLICT, "the machine is taken after your slot", slot)
    siblings = frozenset(s.id for s in ctx.player_slots if target.party_id == s.party_id != "")
    clash = _own_clash(ctx, target.ends_at, end, itself | siblings)
    if clash is not None:
        return _refuse(Code.CONFLICT, "you hold another reservation at that time", clash)
    return Decision(before=target, after=replace(target, ends_at=end))


def _move(ctx: Context, cmd: Command, target: Slot) -> Decision:
    dest_id = cmd.to_device or target.device_id
    start = cmd.starts_at or target.starts_at
    end = cmd.ends_at or start + (target.ends_at - target.starts_at)
    if (dest_id, start, end) == (target.device_id, target.starts_at, target.ends_at):
        return _refuse(Code.INVALID, "move needs another machine or another slot")
    if target.party_id and (start, end) != (target.starts_at, target.ends_at):
        return _refuse(Code.INVALID, "a seat of a party keeps the party's slot: move its machine")
    bad = _slot_refusal(ctx, start, end)
    if bad is not None:
        return bad
    dest = ctx.machines.get(dest_id)
    if dest is None:
        return _refuse(Code.NOT_FOUND, f"no machine {dest_id!r}")
    if dest.maintenance:
        return _refuse(Code.DEVICE_UNAVAILABLE, "the machine is in maintenance")
    itself = frozenset({target.id})
    taken = dest.taken(start, end, itself)
    if taken is not None:
        return _refuse(Code.CONFLICT, "the machine is taken for part of that slot", taken)
    siblings = frozenset(s.id for s in ctx.player_slots if target.party_id == s.party_id != "")
    clash = _own_clash(ctx, start, end, itself | siblings)
    if clash is not None:
        return _refuse(Code.CONFLICT, "you hold another reservation at that time", clash)
    status = target.status
    if target.party_id:
        pass  # a party is approved whole: a seat keeps the party's status
    elif dest.auto_approve:
        status = Status.APPROVED
    elif status is Status.APPROVED and cmd.actor.role is Role.PLAYER:
        status = Status.PENDING  # staff approve it where it now lies
    after = replace(target, device_id=dest_id, starts_at=start, ends_at=end, status=status)
    return Decision(before=target, after=after)


def _take(ctx: Context, cmd: Command, target: Slot) -> Decision:
    if target.hold_until is None or ctx.now >= target.hold_until:
        return _refuse(Code.OFFER_EXPIRED, "the offer has lapsed")
    given = (cmd.starts_at, cmd.ends_at)
    if given != (None, None) and given != (target.starts_at, target.ends_at):
        return _refuse(Code.INVALID, "the slot is the offer's own: leave out or match its times")
    mine = [s for s in ctx.player_slots if s.status in ACTIVE and s.id != target.id]
    held = _held(ctx, mine)
    if ctx.player_active_count is not None:
        held -= 1  # the hold itself was counted
    if (capped := _capped(ctx, held)) is not None:
        return capped
    status = Status.APPROVED if ctx.auto_approve else Status.PENDING
    entry = ctx.entry
    booked = replace(entry, status=EntryStatus.BOOKED) if entry is not None else None
    after = replace(target, status=status, hold_until=None)
    return Decision(before=target, after=after, entry=booked)


# -- parties -------------------------------------------------------------------------------------
def _party_decision(ctx: Context, cmd: Command, target: Slot, nxt: Status) -> Decision:
    """Approve or reject a pending party: every pending seat, all or none."""
    seats = sorted(
        (s for s in ctx.party if s.status is Status.PENDING or s.id == target.id),
        key=lambda s: s.id != target.id,  # the named seat first
    )
    ids = frozenset(s.id for s in ctx.party)
    if cmd.op is Op.APPROVE:
        for seat in seats:
            machine = ctx.machines.get(seat.device_id)
            if machine is None:
                return _refuse(
                    Code.NOT_FOUND, f"no machine {seat.device_id!r}", seat=seat.device_id
                )
            for slot in machine.slots:
                if (
                    slot.id not in ids
                    and slot.status in HOLDING
                    and slot.overlaps(seat.starts_at, seat.ends_at)
                ):
                    return _refuse(
                        Code.CONFLICT,
                        "an approved reservation overlaps a seat of this party",
                        slot,
                        seat=seat.device_id,
                    )
            if machine.maintenance:
                return _refuse(
                    Code.DEVICE_UNAVAILABLE,
                    "a machine of this party is in maintenance",
                    seat=seat.device_id,
                )
    changed = [Change(s, replace(s, status=nxt)) for s in seats]
    return Decision(before=changed[0].before, after=changed[0].after, also=tuple(changed[1:]))


def _reserve_party(ctx: Context, cmd: Command) -> Decision:
    start, end, policy = cmd.starts_at, cmd.ends_at, ctx.policy
    bad = _slot_refusal(ctx, start, end)
    if bad is not None:
        return bad
    assert start is not None
    assert end is not None
    wanted = cmd.seats if cmd.seats is not None else len(cmd.devices)
    if wanted < 1 or (cmd.devices and len(cmd.devices) != wanted):
        return _refuse(Code.INVALID, "seats must be at least 1 and match devices when both given")
    if len(set(cmd.devices)) != len(cmd.devices):
        return _refuse(Code.INVALID, "a machine may be named once")
    if wanted > policy.max_party_seats:
        return _refuse(
            Code.LIMIT_REACHED, f"a party books at most {policy.max_party_seats} machines"
        )
    if not cmd.devices and not cmd.kind:
        return _refuse(Code.INVALID, "a party names its devices or their kind")
    mine = [s for s in ctx.player_slots if s.status in ACTIVE]
    clash = _own_clash(ctx, start, end)
    if clash is not None:
        return _refuse(Code.CONFLICT, "you already hold a reservation at that time", clash)
    if (capped := _capped(ctx, _held(ctx, mine))) is not None:
        return capped
    if cmd.devices:
        chosen = []
        for device in cmd.devices:
            machine = ctx.machines.get(device)
            if machine is None:
                return _refuse(Code.NOT_FOUND, f"no machine {device!r}", seat=device)
            if machine.maintenance:
                return _refuse(Code.DEVICE_UNAVAILABLE, f"{device} is in maintenance", seat=device)
            taken = machine.taken(start, end)
            if taken is not None:
                return _refuse(
                    Code.CONFLICT, f"{device} is taken for part of that slot", taken, seat=device
                )
            chosen.append(machine)
    else:
        free = [
            m
            for m in ctx.machines.values()
            if m.kind == cmd.kind
            and (cmd.zone is None or m.zone == cmd.zone)
            and not m.maintenance
            and m.taken(start, end) is None
        ]
        if len(free) < wanted:
            where = f"{cmd.kind}" + (f" in {cmd.zone}" if cmd.zone else "")
            return _refuse(
                Code.CONFLICT, f"only {len(free)} machines of {where} are free for that slot"
            )
        everyone = [m for m in ctx.machines.values() if m.kind == cmd.kind]
        chosen = pick_seats(free, everyone, wanted)
    if len(ctx.new_ids) < wanted or len(ctx.new_codes) < wanted:
        return _refuse(Code.INVALID, "too many seats for one request")
    approved = all(m.auto_approve for m in chosen)
    status = Status.APPROVED if approved else Status.PENDING
    seats = [
        Slot(
            ctx.new_ids[i],
            m.id,
            cmd.actor.user,
            start,
            end,
            status,
            ctx.new_codes[i],
            party_id=ctx.new_id,
        )
        for i, m in enumerate(chosen)
    ]
    return Decision(after=seats[0], also=tuple(Change(None, s) for s in seats[1:]))


def pick_seats(free: list[Machine], everyone: list[Machine], wanted: int) -> list[Machine]:
    """``wanted`` of the ``free`` machines, next to each other. On the floor map first: when
    enough free machines of one zone have a position, the group of them that stands closest
    together (plaza.floormap.closest_group), the tightest over the zones (then the first zone by
    name); else, if enough placed free machines exist across zones, the closest group of all.
    Without positions: in one zone if any zone has enough, there the run of machines next to
    each other (id order, with the busy ones counted as gaps) that is shortest, the first such
    zone by name winning a tie; else the first free ones in (zone, id) order."""
    by_map = _closest_on_the_map(free, wanted)
    if by_map is not None:
        return by_map
    best: tuple[int, str, list[Machine]] | None = None
    for zone in sorted({m.zone for m in free}):
        places = {
            m.id: i for i, m in enumerate(sorted(everyone, key=lambda m: m.id)) if m.zone == zone
        }
        here = sorted((m for m in free if m.zone == zone), key=lambda m: m.id)
        for i in range(len(here) - wanted + 1):
            run = here[i : i + wanted]
            span = places[run[-1].id] - places[run[0].id]
            if best is None or span < best[0]:
                best = (span, zone, run)
    if best is not None:
        return best[2]
    return sorted(free, key=lambda m: (m.zone, m.id))[:wanted]


def _closest_on_the_map(free: list[Machine], wanted: int) -> list[Machine] | None:
    placed = {m.id: m for m in free if m.pos is not None}
    if len(placed) < wanted:
        return None
    best: tuple[float, str, list[str]] | None = None
    for zone in sorted({m.zone for m in placed.values()}):
        here = {i: m.pos for i, m in placed.items() if m.zone == zone and m.pos is not None}
        group = floormap.closest_group(here, wanted)
        if group is not None:
            score = floormap.spread(here[i] for i in group)
            if best is None or score < best[0]:
                best = (score, zone, group)
    if best is None:
        anywhere = {i: m.pos for i, m in placed.items() if m.pos is not None}
        group = floormap.closest_group(anywhere, wanted)
        assert group is not None
        return [placed[i] for i in group]
    return [placed[i] for i in best[2]]


def _cancel_party(ctx: Context, cmd: Command) -> Decision:
    seats = [s for s in ctx.party if s.party_id == cmd.party_id]
    if not seats or (cmd.actor.role is Role.PLAYER and seats[0].user != cmd.actor.user):
        return _refuse(Code.NOT_FOUND, f"no party {cmd.party_id!r}")
    open_seats = [s for s in seats if Op.CANCEL in TRANSITIONS.get(s.status, {})]
    if not open_seats:
        return _refuse(Code.INVALID_TRANSITION, "no seat of this party can be cancelled")
    changed = [Change(s, replace(s, status=Status.CANCELLED)) for s in open_seats]
    return Decision(before=changed[0].before, after=changed[0].after, also=tuple(changed[1:]))


# -- the waitlist --------------------------------------------------------------------------------
def _join(ctx: Context, cmd: Command) -> Decision:
    policy, kind, minutes = ctx.policy, cmd.kind, cmd.minutes
    if not kind or minutes is None:
        return _refuse(Code.INVALID, "join_waitlist needs kind and minutes")
    if minutes > policy.max_minutes:
        return _refuse(Code.TOO_LONG, f"a slot may last at most {policy.max_minutes} minutes")
    if minutes < policy.min_minutes:
        return _refuse(Code.INVALID, f"a slot lasts at least {policy.min_minutes} minutes")
    if not any(m.kind == kind and cmd.zone in (None, m.zone) for m in ctx.machines.values()):
        where = kind + (f" in {cmd.zone}" if cmd.zone else "")
        return _refuse(Code.NOT_FOUND, f"no machines of {where}")
    for entry in ctx.player_entries:
        if (entry.kind, entry.zone) == (kind, cmd.zone):
            return _refuse(Code.CONFLICT, "you are already in this line")
    if len(ctx.player_entries) >= policy.waitlist_max_per_player:
        return _refuse(
            Code.LIMIT_REACHED, f"at most {policy.waitlist_max_per_player} lines per player"
        )
    line = [e for e in ctx.line if e.kind == kind]
    if len(line) >= policy.waitlist_max_length:
        return _refuse(Code.LIMIT_REACHED, "this line is full")
    mine = [s for s in ctx.player_slots if s.status in ACTIVE]
    if (capped := _capped(ctx, _held(ctx, mine))) is not None:
        return capped
    rank = max((e.rank for e in line), default=0.0) + 1
    entry = Entry(ctx.new_id, cmd.actor.user, kind, cmd.zone, minutes, rank)
    return Decision(entry=entry)


def _visible_entry(ctx: Context, cmd: Command) -> Entry | Decision:
    entry = ctx.entry
    if (
        entry is None
        or entry.id != cmd.entry_id
        or (cmd.actor.role is Role.PLAYER and entry.user != cmd.actor.user)
    ):
        return _refuse(Code.NOT_FOUND, f"no waitlist entry {cmd.entry_id!r}")
    if entry.status not in LIVE_ENTRIES:
        return _refuse(Code.INVALID_TRANSITION, f"the entry is {entry.status.value}")
    return entry


def _leave(ctx: Context, cmd: Command) -> Decision:
    entry = _visible_entry(ctx, cmd)
    if isinstance(entry, Decision):
        return entry
    mine = cmd.actor.role is Role.PLAYER or cmd.actor.user == entry.user
    gone = replace(entry, status=EntryStatus.LEFT if mine else EntryStatus.REMOVED)
    held = ctx.target
    if held is not None and held.id == entry.offer_id and held.status is Status.HELD:
        return Decision(
            before=held,
            after=replace(held, status=Status.LAPSED, hold_until=None),
            entry=gone,
        )
    return Decision(entry=gone)


def _move_entry(ctx: Context, cmd: Command) -> Decision:
    entry = _visible_entry(ctx, cmd)
    if isinstance(entry, Decision):
        return entry
    if cmd.position is None:
        return _refuse(Code.INVALID, "move_waitlist_entry needs a position")
    others = sorted((e for e in ctx.line if e.kind == entry.kind and e.id != entry.id), key=_order)
    at = min(max(cmd.position, 1), len(others) + 1) - 1
    if not others:
        rank = entry.rank
    elif at == 0:
        rank = others[0].rank - 1
    elif at == len(others):
        rank = others[-1].rank + 1
    else:
        rank = (others[at - 1].rank + others[at].rank) / 2
    return Decision(entry=replace(entry, rank=rank))


def _order(entry: Entry) -> tuple[float, str]:
    return entry.rank, entry.id


def _offer(ctx: Context, cmd: Command) -> Decision:
    """The first waiting entry of the line that the machine fits, free for its minutes from
    now (the machine and the player alike): the machine is held for it."""
    machine = ctx.machines.get(cmd.device_id)
    if machine is None or machine.maintenance:
        return _refuse(Code.DEVICE_UNAVAILABLE, f"{cmd.device_id} cannot be offered")
    now, policy = ctx.now, ctx.policy
    for entry in sorted(ctx.line, key=_order):
        if entry.status is not EntryStatus.WAITING or not entry.fits(machine):
            continue
        if entry.user in ctx.suspended:  # could not take it: the next in line gets it
            continue
        end = now + timedelta(minutes=entry.minutes)
        if machine.taken(now, end) is not None or not policy.within_hours(now, end):
            continue
        if any(
            s.user == entry.user and s.status in ACTIVE and s.overlaps(now, end)
            for s in ctx.line_slots
        ):
            continue
        held = Slot(
            ctx.new_id,
            machine.id,
            entry.user,
            now,
            end,
            Status.HELD,
            ctx.new_code,
            hold_until=now + policy.waitlist_hold,
        )
        offered = replace(entry, status=EntryStatus.OFFERED, offer_id=held.id)
        return Decision(after=held, entry=offered)
    return _refuse(Code.NOT_FOUND, "nobody in line fits this machine now")


def _lift(ctx: Context, cmd: Command) -> Decision:
    if not cmd.subject:
        return _refuse(Code.INVALID, "lift_suspension needs the player (user)")
    return Decision(lifted=cmd.subject)


_VENUE = {
    Op.RESERVE_PARTY: _reserve_party,
    Op.CANCEL_PARTY: _cancel_party,
    Op.JOIN_WAITLIST: _join,
    Op.LEAVE_WAITLIST: _leave,
    Op.MOVE_ENTRY: _move_entry,
    Op.LIFT_SUSPENSION: _lift,
}
