"""plaza.rules, in the style of h11's test_state: feed commands, assert decisions and states.

The transition table is checked pair by pair (every status x every op x every role allowed to
ask), then roles, reserve validation and the approve re-check. Hypothesis drives random command
scripts through the committer's own batched path (its SlotBook and decision step, with the
database swapped for dicts: tests/unit/helpers.py), in batches, and checks the overlap
invariants and the cap after every step.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.reservations.actors import Job
from bridge.reservations.committer import decide_job
from bridge.reservations.effects import ReservationEffects
from bridge.reservations.slotbook import SlotBook
from bridge.reservations.slots import public, slot_of
from bridge.sql import DeviceRow, SlotRow
from bridge.writes import Writes
from plaza.messages import Reply
from plaza.rules import (
    ACTIVE,
    ALLOWED,
    CONSEQUENCES,
    HOLDING,
    REMINDER,
    TIMED,
    TRANSITIONS,
    VENUE_OPS,
    Actor,
    Code,
    Command,
    Context,
    Decision,
    Entry,
    Machine,
    Op,
    Policy,
    Role,
    Slot,
    Status,
    decide,
)
from plaza.topics import Topics
from tests.unit.helpers import MemorySql, job

pytestmark = pytest.mark.unit

KST = timezone(timedelta(hours=9))
NOW = datetime(2025, 3, 10, 3, 0, tzinfo=UTC)  # 12:00 on Monday in Seoul
DEFAULT = Policy()  # around the clock, KST
LATE_NIGHTS = Policy(opens=time(10, 0), closes=time(2, 0))  # 10:00 to 02:00 the next day
CODE = "482913"
NEW_ID, NEW_CODE = "new-1", "000777"

ANA = Actor("ana", Role.PLAYER)
STAFF = Actor("staff", Role.ADMIN)
MACHINE = Actor("pc-01", Role.DEVICE)
TIMER = Actor("system", Role.SYSTEM)
#: one actor per role; the player is the owner of the default slot
BY_ROLE: dict[Role, Actor] = {
    Role.PLAYER: ANA,
    Role.ADMIN: STAFF,
    Role.DEVICE: MACHINE,
    Role.SYSTEM: TIMER,
}

#: ops on a reservation that change nothing but its status
TARGET_OPS = (
    Op.APPROVE,
    Op.REJECT,
    Op.CANCEL,
    Op.CHECK_IN,
    Op.COMPLETE,
    Op.NO_SHOW,
    Op.DECLINE,
    Op.LAPSE,
)
#: ops on a reservation that change its slot or machine too (tests/unit/test_booking_rules.py)
SLOT_OPS = (Op.EXTEND, Op.MOVE, Op.TAKE)
INACTIVE = sorted(set(Status) - ACTIVE)


def at(minutes: float) -> datetime:
    return NOW + timedelta(minutes=minutes)


def kst(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 3, day, hour, minute, tzinfo=KST)


def slot(
    rid: str = "r1",
    *,
    device: str = "pc-01",
    user: str = "ana",
    start: float = 5,
    minutes: float = 60,
    status: Status = Status.APPROVED,
    code: str = CODE,
    party_id: str = "",
) -> Slot:
    return Slot(rid, device, user, at(start), at(start + minutes), status, code, party_id)


def context(**changes: Any) -> Context:
    base = Context(now=NOW, policy=DEFAULT, device_exists=True, new_id=NEW_ID, new_code=NEW_CODE)
    return replace(base, **changes)


def book(
    start: datetime | None, end: datetime | None, *, actor: Actor = ANA, device: str = "pc-01"
) -> Command:
    return Command(Op.RESERVE, actor, device, starts_at=start, ends_at=end)


def act(
    op: Op, target: Slot, actor: Actor, *, code: str | None = None, device: str | None = None
) -> Command:
    return Command(op, actor, device or target.device_id, reservation_id=target.id, code=code)


def refused(decision: Decision) -> Code:
    """The refusal's code, after checking that a refusal carries no reservation at all."""
    assert decision.refusal is not None, decision
    assert decision.after is None
    assert decision.before is None
    return decision.refusal.code


def accepted(decision: Decision) -> Slot:
    assert decision.refusal is None, decision.refusal
    assert decision.after is not None
    return decision.after


# -- the transition table ----------------------------------------------------------------------
ALL_PAIRS = [
    (status, op, role) for status in Status for op in TARGET_OPS for role in sorted(ALLOWED[op])
]
LEGAL = [
    pytest.param(s, op, role, id=f"{s}-{op}-by-{role}")
    for s, op, role in ALL_PAIRS
    if op in TRANSITIONS.get(s, {})
]
ILLEGAL = [
    pytest.param(s, op, role, id=f"{s}-{op}-by-{role}")
    for s, op, role in ALL_PAIRS
    if op not in TRANSITIONS.get(s, {})
]


def table_context(target: Slot) -> Context:
    """What the bridge loads for a command on ``target``: it, among the machine's active slots."""
    return context(target=target, device_slots=(target,) if target.status in ACTIVE else ())


def test_eighteen_of_the_135_status_op_and_allowed_role_cases_are_legal() -> None:
    assert len(ALL_PAIRS) == len(Status) * 15 == 135  # 15 = (op, allowed role) pairs
    assert (len(LEGAL), len(ILLEGAL)) == (18, 117)


def test_only_active_reservations_have_a_way_out_and_every_way_leads_to_a_known_status() -> None:
    assert set(TRANSITIONS) == ACTIVE
    assert HOLDING < ACTIVE
    for moves in TRANSITIONS.values():
        assert set(moves) <= set(TARGET_OPS + SLOT_OPS)
        assert set(moves.values()) <= set(Status)


def test_every_op_says_who_may_ask_for_it() -> None:
    assert set(ALLOWED) == set(Op)
    assert all(ALLOWED[op] for op in Op)


def test_every_status_a_reservation_can_enter_says_what_entering_it_causes() -> None:
    entered = {Status.PENDING, Status.APPROVED, Status.HELD} | {  # made so (held: by an offer)
        s for m in TRANSITIONS.values() for s in m.values()
    }
    assert set(CONSEQUENCES) == entered == set(Status)
    assert len({c.event for c in CONSEQUENCES.values()}) == len(Status), "one event per status"


def test_the_clock_makes_only_legal_transitions_and_only_as_the_system() -> None:
    for timed in TIMED:
        assert timed.op in TRANSITIONS[timed.status]
        assert Role.SYSTEM in ALLOWED[timed.op]
    assert len({t.status for t in TIMED}) == len(TIMED), "one clock per status"
    assert REMINDER.statuses <= ACTIVE - {Status.CHECKED_IN}


@pytest.mark.parametrize(("status", "op", "role"), LEGAL)
def test_a_legal_transition_changes_the_status_as_the_table_says_and_nothing_else(
    status: Status, op: Op, role: Role
) -> None:
    target = slot(status=status)
    decision = decide(table_context(target), act(op, target, BY_ROLE[role], code=CODE))
    assert decision == Decision(
        before=target, after=replace(target, status=TRANSITIONS[status][op])
    )


@pytest.mark.parametrize(("status", "op", "role"), ILLEGAL)
def test_an_illegal_transition_is_refused_as_invalid_transition_and_changes_nothing(
    status: Status, op: Op, role: Role
) -> None:
    target = slot(status=status)
    decision = decide(table_context(target), act(op, target, BY_ROLE[role], code=CODE))
    assert refused(decision) == Code.INVALID_TRANSITION
    assert decision.refusal is not None
    assert status.value in decision.refusal.message


def feed(target: Slot, *commands: tuple[Op, Actor]) -> list[Status | Code]:
    """Apply commands one after another; the status after each, or the refusal's code."""
    seen: list[Status | Code] = []
    for op, actor in commands:
        decision = decide(table_context(target), act(op, target, actor, code=target.code))
        if decision.after is None:
            assert decision.refusal is not None
            seen.append(decision.refusal.code)
        else:
            target = decision.after
            seen.append(target.status)
    return seen


def test_a_reservation_walks_from_request_through_check_in_to_completion() -> None:
    request = accepted(decide(context(), book(at(5), at(65))))
    assert request.status is Status.PENDING
    assert feed(
        request,
        (Op.APPROVE, STAFF),
        (Op.CHECK_IN, ANA),
        (Op.COMPLETE, TIMER),
        (Op.CANCEL, STAFF),
    ) == [Status.APPROVED, Status.CHECKED_IN, Status.COMPLETED, Code.INVALID_TRANSITION]


def test_a_refused_command_changes_nothing_and_the_next_legal_one_still_applies() -> None:
    assert feed(
        slot(status=Status.PENDING),
        (Op.CHECK_IN, ANA),
        (Op.NO_SHOW, TIMER),
        (Op.APPROVE, STAFF),
        (Op.APPROVE, STAFF),
        (Op.NO_SHOW, TIMER),
        (Op.CHECK_IN, ANA),
    ) == [
        Code.INVALID_TRANSITION,
        Code.INVALID_TRANSITION,
        Status.APPROVED,
        Code.INVALID_TRANSITION,
        Status.NO_SHOW,
        Code.INVALID_TRANSITION,
    ]


@pytest.mark.parametrize(
    ("first", "then"),
    [
        pytest.param((Op.REJECT, STAFF), Status.REJECTED, id="rejected"),
        pytest.param((Op.CANCEL, ANA), Status.CANCELLED, id="cancelled-by-owner"),
        pytest.param((Op.CANCEL, TIMER), Status.CANCELLED, id="expired-by-timer"),
    ],
)
def test_a_pending_request_that_ends_early_never_comes_back(
    first: tuple[Op, Actor], then: Status
) -> None:
    everything = [(op, BY_ROLE[role]) for op in TARGET_OPS for role in sorted(ALLOWED[op])]
    assert feed(slot(status=Status.PENDING), first, *everything) == [then] + [
        Code.INVALID_TRANSITION
    ] * len(everything)


# -- roles -------------------------------------------------------------------------------------
def ready_for(op: Op, actor: Actor) -> tuple[Context, Command]:
    """A context and command that would succeed if ``actor`` were allowed to ask for ``op``."""
    machines = {m: Machine(m) for m in ("pc-01", "pc-02")}
    venue = Command(op, actor, "")
    if op is Op.RESERVE:
        return context(), book(at(5), at(65), actor=actor)
    if op is Op.RESERVE_PARTY:
        cmd = replace(venue, starts_at=at(5), ends_at=at(65), devices=("pc-01", "pc-02"))
        return context(machines=machines, new_ids=("s1", "s2"), new_codes=("1", "2")), cmd
    if op is Op.CANCEL_PARTY:
        seats = tuple(slot(f"s{i}", user=actor.user, party_id="p1") for i in (1, 2))
        return context(party=seats), replace(venue, party_id="p1")
    entry = Entry("e1", actor.user, "pc", None, 60, 1.0)
    if op is Op.JOIN_WAITLIST:
        return context(machines=machines), replace(venue, kind="pc", minutes=60)
    if op in (Op.LEAVE_WAITLIST, Op.MOVE_ENTRY):
        return context(entry=entry, line=(entry,)), replace(venue, entry_id="e1", position=1)
    if op is Op.OFFER:
        cmd = Command(op, actor, "pc-01")
        return context(machines=machines, line=(replace(entry, user="bo"),)), cmd
    if op is Op.LIFT_SUSPENSION:
        return context(), replace(venue, subject="bo")
    status = next(s for s, moves in TRANSITIONS.items() if op in moves)
    target = slot(status=status, user=actor.user)
    if op is Op.EXTEND:
        return table_context(target), replace(act(op, target, actor), ends_at=at(95))
    if op is Op.MOVE:
        cmd = replace(act(op, target, actor), to_device="pc-02")
        return replace(table_context(target), machines=machines), cmd
    if status is Status.HELD:
        target = replace(target, hold_until=at(3))
    return table_context(target), act(op, target, actor, code=CODE)


FORBIDDEN = [
    pytest.param(op, role, id=f"{role}-may-not-{op}")
    for op in Op
    for role in Role
    if role not in ALLOWED[op]
]
PERMITTED = [
    pytest.param(op, role, id=f"{role}-may-{op}") for op in Op for role in sorted(ALLOWED[op])
]


@pytest.mark.parametrize(("op", "role"), FORBIDDEN)
def test_a_role_not_allowed_to_ask_for_an_op_is_refused_as_forbidden(op: Op, role: Role) -> None:
    ctx, cmd = ready_for(op, BY_ROLE[role])
    assert refused(decide(ctx, cmd)) == Code.FORBIDDEN


@pytest.mark.parametrize(("op", "role"), PERMITTED)
def test_a_role_allowed_to_ask_for_an_op_gets_it_when_everything_else_is_in_order(
    op: Op, role: Role
) -> None:
    ctx, cmd = ready_for(op, BY_ROLE[role])
    decision = decide(ctx, cmd)
    assert decision.refusal is None, decision.refusal


@pytest.mark.parametrize(
    ("op", "status"),
    [
        pytest.param(Op.CANCEL, Status.PENDING, id="cancel-pending"),
        pytest.param(Op.CANCEL, Status.APPROVED, id="cancel-approved"),
        pytest.param(Op.CHECK_IN, Status.APPROVED, id="check-in"),
        pytest.param(Op.CHECK_IN, Status.COMPLETED, id="check-in-completed"),
    ],
)
def test_a_player_acting_on_another_players_reservation_hears_exactly_what_a_missing_one_gets(
    op: Op, status: Status
) -> None:
    theirs = slot(user="bo", status=status)
    decision = decide(table_context(theirs), act(op, theirs, ANA, code=CODE))
    assert refused(decision) == Code.NOT_FOUND
    assert decision == decide(context(), act(op, theirs, ANA, code=CODE))


@pytest.mark.parametrize("status", [Status.PENDING, Status.APPROVED])
def test_an_admin_can_cancel_anyones_reservation(status: Status) -> None:
    theirs = slot(user="bo", status=status)
    after = accepted(decide(table_context(theirs), act(Op.CANCEL, theirs, STAFF)))
    assert after == replace(theirs, status=Status.CANCELLED)


@pytest.mark.parametrize("role", sorted(ALLOWED[Op.CANCEL]))
def test_a_reservation_on_another_machine_is_not_found(role: Role) -> None:
    target = slot(device="pc-02", status=Status.APPROVED)
    cmd = act(Op.CANCEL, target, BY_ROLE[role], device="pc-01")
    assert refused(decide(table_context(target), cmd)) == Code.NOT_FOUND


@pytest.mark.parametrize("op", TARGET_OPS)
def test_a_command_on_no_reservation_is_not_found(op: Op) -> None:
    role = sorted(ALLOWED[op])[0]
    assert refused(decide(context(), act(op, slot(), BY_ROLE[role]))) == Code.NOT_FOUND


@pytest.mark.parametrize("op", sorted(set(Op) - VENUE_OPS))
def test_a_command_on_an_unknown_machine_is_not_found(op: Op) -> None:
    ctx, cmd = ready_for(op, BY_ROLE[sorted(ALLOWED[op])[0]])
    assert refused(decide(replace(ctx, device_exists=False), cmd)) == Code.NOT_FOUND


# -- check-in ----------------------------------------------------------------------------------
CODE_CHECKERS = [pytest.param(ANA, id="player"), pytest.param(MACHINE, id="machine")]


@pytest.mark.parametrize("actor", CODE_CHECKERS)
@pytest.mark.parametrize("code", ["000000", "48291", CODE + " ", "", None])
def test_a_player_or_machine_with_a_wrong_or_missing_code_hears_bad_code(
    actor: Actor, code: str | None
) -> None:
    target = slot()
    cmd = act(Op.CHECK_IN, target, actor, code=code)
    assert refused(decide(table_context(target), cmd)) == Code.BAD_CODE


@pytest.mark.parametrize("actor", CODE_CHECKERS)
def test_a_player_or_machine_with_the_right_code_checks_in(actor: Actor) -> None:
    target = slot()
    after = accepted(decide(table_context(target), act(Op.CHECK_IN, target, actor, code=CODE)))
    assert after.status is Status.CHECKED_IN


@pytest.mark.parametrize("code", [None, "000000"])
def test_an_admin_checks_anyone_in_without_the_code(code: str | None) -> None:
    theirs = slot(user="bo")
    after = accepted(decide(table_context(theirs), act(Op.CHECK_IN, theirs, STAFF, code=code)))
    assert after == replace(theirs, status=Status.CHECKED_IN)


CHECKERS = [*CODE_CHECKERS, pytest.param(STAFF, id="admin")]


@pytest.mark.parametrize("actor", CHECKERS)
def test_check_in_before_the_early_window_is_too_early(actor: Actor) -> None:
    target = slot(start=60)
    opens = target.starts_at - DEFAULT.check_in_early
    cmd = act(Op.CHECK_IN, target, actor, code=CODE)
    early = replace(table_context(target), now=opens - timedelta(seconds=1))
    assert refused(decide(early, cmd)) == Code.TOO_EARLY
    accepted(decide(replace(early, now=opens), cmd))


@pytest.mark.parametrize("actor", CHECKERS)
@pytest.mark.parametrize("late", [timedelta(0), timedelta(seconds=1), timedelta(hours=3)])
def test_check_in_at_or_after_the_end_of_the_slot_is_in_past(actor: Actor, late: timedelta) -> None:
    target = slot(start=-30, minutes=60)
    cmd = act(Op.CHECK_IN, target, actor, code=CODE)
    over = replace(table_context(target), now=target.ends_at + late)
    assert refused(decide(over, cmd)) == Code.IN_PAST
    accepted(decide(replace(over, now=target.ends_at - timedelta(seconds=1)), cmd))


# -- reserve -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("start", "end", "code"),
    [
        pytest.param(None, at(60), Code.INVALID, id="no-start"),
        pytest.param(at(0), None, Code.INVALID, id="no-end"),
        pytest.param(None, None, Code.INVALID, id="no-times"),
        pytest.param(at(60), at(60), Code.INVALID, id="ends-at-start"),
        pytest.param(at(60), at(30), Code.INVALID, id="ends-before-start"),
        pytest.param(at(-90), at(-30), Code.IN_PAST, id="already-ended"),
        pytest.param(at(-60), at(0), Code.IN_PAST, id="ends-right-now"),
        pytest.param(
            NOW - timedelta(minutes=1, seconds=1), at(30), Code.IN_PAST, id="started-61s-ago"
        ),
        pytest.param(at(-30), at(30), Code.IN_PAST, id="started-half-an-hour-ago"),
        pytest.param(
            NOW + timedelta(days=14, seconds=1),
            NOW + timedelta(days=14, minutes=60),
            Code.INVALID,
            id="beyond-max-days-ahead",
        ),
        pytest.param(at(0), at(241), Code.TOO_LONG, id="longer-than-max"),
        pytest.param(at(0), at(24 * 60), Code.TOO_LONG, id="a-whole-day"),
        pytest.param(at(0), at(9.99), Code.INVALID, id="shorter-than-min"),
    ],
)
def test_a_reservation_with_bad_times_is_refused(
    start: datetime | None, end: datetime | None, code: Code
) -> None:
    assert refused(decide(context(), book(start, end))) == code


@pytest.mark.parametrize(
    ("start", "end"),
    [
        pytest.param(NOW - timedelta(minutes=1), at(30), id="started-exactly-a-minute-ago"),
        pytest.param(at(0), at(10), id="exactly-min-minutes"),
        pytest.param(at(0), at(240), id="exactly-max-minutes"),
        pytest.param(
            NOW + timedelta(days=14), NOW + timedelta(days=14, minutes=60), id="exactly-max-days"
        ),
        pytest.param(kst(11, 3), kst(11, 4), id="3am-when-open-around-the-clock"),
    ],
)
def test_a_reservation_on_the_edge_of_every_limit_is_accepted(
    start: datetime, end: datetime
) -> None:
    after = accepted(decide(context(), book(start, end)))
    assert (after.starts_at, after.ends_at) == (start, end)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        pytest.param(kst(11, 1, 0), kst(11, 1, 30), id="01:00-late-night"),
        pytest.param(kst(11, 1, 30), kst(11, 2, 0), id="01:30-until-closing"),
        pytest.param(kst(11, 23, 30), kst(12, 0, 30), id="23:30-across-midnight"),
        pytest.param(kst(11, 10, 0), kst(11, 10, 30), id="10:00-at-opening"),
        pytest.param(kst(10, 22, 0), kst(11, 2, 0), id="22:00-until-closing"),
    ],
)
def test_a_late_night_slot_inside_opening_hours_is_accepted(start: datetime, end: datetime) -> None:
    accepted(decide(context(policy=LATE_NIGHTS), book(start, end)))


@pytest.mark.parametrize(
    ("start", "end"),
    [
        pytest.param(kst(11, 3, 0), kst(11, 3, 30), id="03:00-closed"),
        pytest.param(kst(11, 2, 0), kst(11, 2, 30), id="02:00-at-closing"),
        pytest.param(kst(11, 1, 30), kst(11, 2, 30), id="01:30-past-closing"),
        pytest.param(kst(11, 9, 30), kst(11, 10, 30), id="09:30-before-opening"),
        pytest.param(kst(11, 9, 50), kst(11, 10, 0), id="09:50-until-opening"),
    ],
)
def test_a_slot_outside_opening_hours_is_refused(start: datetime, end: datetime) -> None:
    assert refused(decide(context(policy=LATE_NIGHTS), book(start, end))) == Code.OUTSIDE_HOURS


def test_opening_hours_are_read_in_venue_time_not_utc() -> None:
    ctx = context(policy=LATE_NIGHTS)
    noon_in_seoul = datetime(2025, 3, 11, 3, 0, tzinfo=UTC)
    three_am_in_seoul = datetime(2025, 3, 10, 18, 0, tzinfo=UTC)
    accepted(decide(ctx, book(noon_in_seoul, noon_in_seoul + timedelta(minutes=30))))
    late = book(three_am_in_seoul, three_am_in_seoul + timedelta(minutes=30))
    assert refused(decide(ctx, late)) == Code.OUTSIDE_HOURS


def test_a_machine_in_maintenance_takes_no_reservations() -> None:
    assert (
        refused(decide(context(maintenance=True), book(at(5), at(65)))) == Code.DEVICE_UNAVAILABLE
    )


def test_a_reservation_on_an_unknown_machine_is_not_found() -> None:
    assert refused(decide(context(device_exists=False), book(at(5), at(65)))) == Code.NOT_FOUND


@pytest.mark.parametrize("status", sorted(ACTIVE))
@pytest.mark.parametrize(
    ("start", "end"),
    [
        pytest.param(0, 60, id="overlapping-the-start"),
        pytest.param(60, 120, id="overlapping-the-end"),
        pytest.param(40, 50, id="inside"),
        pytest.param(0, 240, id="around"),
        pytest.param(30, 90, id="the-same"),
    ],
)
def test_a_slot_overlapping_an_active_one_on_the_machine_is_refused_naming_it(
    status: Status, start: int, end: int
) -> None:
    taken = slot("r9", user="bo", start=30, minutes=60, status=status)
    decision = decide(context(device_slots=(taken,)), book(at(start), at(end)))
    assert refused(decision) == Code.CONFLICT
    assert decision.refusal is not None
    assert decision.refusal.conflict == taken


@pytest.mark.parametrize("status", sorted(ACTIVE))
def test_a_slot_overlapping_the_players_own_active_one_on_another_machine_is_refused(
    status: Status,
) -> None:
    mine = slot("r8", device="pc-02", start=30, minutes=60, status=status)
    decision = decide(context(player_slots=(mine,)), book(at(0), at(45)))
    assert refused(decision) == Code.CONFLICT
    assert decision.refusal is not None
    assert decision.refusal.conflict == mine


@pytest.mark.parametrize(
    ("start", "end"),
    [pytest.param(0, 60, id="just-before"), pytest.param(120, 180, id="just-after")],
)
def test_back_to_back_slots_do_not_conflict(start: int, end: int) -> None:
    theirs = slot("r9", user="bo", start=60, minutes=60)
    mine = slot("r8", device="pc-02", start=60, minutes=60)
    ctx = context(device_slots=(theirs,), player_slots=(mine,))
    accepted(decide(ctx, book(at(start), at(end))))


@pytest.mark.parametrize("status", INACTIVE)
def test_a_finished_reservation_never_conflicts(status: Status) -> None:
    theirs = slot("r9", user="bo", start=0, minutes=60, status=status)
    mine = slot("r8", device="pc-02", start=0, minutes=60, status=status)
    ctx = context(device_slots=(theirs,), player_slots=(mine,) * 5)
    accepted(decide(ctx, book(at(0), at(60))))


def spread(n: int, status: Status = Status.APPROVED) -> tuple[Slot, ...]:
    """``n`` of ana's reservations on other machines, one a day, clear of today's slots."""
    return tuple(
        slot(f"r{i}", device="pc-02", start=(i + 1) * 24 * 60, status=status) for i in range(n)
    )


def test_a_player_at_the_cap_of_active_reservations_hears_limit_reached() -> None:
    full = context(player_slots=spread(DEFAULT.max_active_per_player))
    assert refused(decide(full, book(at(5), at(65)))) == Code.LIMIT_REACHED


def test_a_player_below_the_cap_may_book_and_finished_reservations_do_not_count() -> None:
    below = spread(DEFAULT.max_active_per_player - 1)
    finished = tuple(replace(s, id=f"old-{s.id}", status=Status.COMPLETED) for s in spread(5))
    accepted(decide(context(player_slots=below + finished), book(at(5), at(65))))


@pytest.mark.parametrize(
    ("auto_approve", "status"), [(True, Status.APPROVED), (False, Status.PENDING)]
)
def test_a_new_reservation_is_approved_only_where_the_machine_auto_approves(
    auto_approve: bool, status: Status
) -> None:
    after = accepted(decide(context(auto_approve=auto_approve), book(at(5), at(65))))
    assert after.status is status


@pytest.mark.parametrize("actor", [ANA, STAFF])
def test_a_new_reservation_carries_the_new_id_and_code_and_belongs_to_the_actor(
    actor: Actor,
) -> None:
    decision = decide(context(), book(at(5), at(65), actor=actor, device="pc-01"))
    assert decision == Decision(
        after=Slot(NEW_ID, "pc-01", actor.user, at(5), at(65), Status.PENDING, NEW_CODE)
    )


def test_a_naive_datetime_is_refused_as_invalid_rather_than_raising() -> None:
    naive = datetime(2025, 3, 10, 13, 0)  # no tzinfo: the bad input under test
    assert refused(decide(context(), book(naive, naive + timedelta(hours=1)))) == Code.INVALID


def test_a_machine_may_check_in_only_on_itself() -> None:
    target = slot("r1", status=Status.APPROVED, start=0, minutes=60)
    other = Actor("pc-02", Role.DEVICE)
    cmd = Command(Op.CHECK_IN, other, "pc-01", reservation_id="r1", code=target.code)
    assert refused(decide(context(target=target), cmd)) == Code.FORBIDDEN


def test_a_reservation_without_a_code_cannot_be_checked_in_with_an_empty_code() -> None:
    target = slot("r1", status=Status.APPROVED, start=0, minutes=60, code="")
    cmd = Command(Op.CHECK_IN, Actor(target.user, Role.PLAYER), "pc-01", reservation_id="r1")
    assert refused(decide(context(target=target), cmd)) == Code.BAD_CODE


# -- approve re-checks holding reservations -----------------------------------------------------
@pytest.mark.parametrize("status", sorted(HOLDING))
def test_approving_a_request_that_overlaps_a_holding_one_is_refused_naming_it(
    status: Status,
) -> None:
    request = slot("r1", status=Status.PENDING, start=0, minutes=60)
    holder = slot("r2", user="bo", status=status, start=30, minutes=60)
    decision = decide(
        context(target=request, device_slots=(request, holder)), act(Op.APPROVE, request, STAFF)
    )
    assert refused(decision) == Code.CONFLICT
    assert decision.refusal is not None
    assert decision.refusal.conflict == holder


def test_approving_a_request_that_overlaps_only_other_requests_is_allowed() -> None:
    request = slot("r1", status=Status.PENDING, start=0, minutes=60)
    rival = slot("r2", user="bo", status=Status.PENDING, start=30, minutes=60)
    done = [slot(f"d{i}", status=s, start=0, minutes=60) for i, s in enumerate(INACTIVE)]
    after_it = slot("r3", user="bo", status=Status.APPROVED, start=60, minutes=60)
    ctx = context(target=request, device_slots=(request, rival, after_it, *done))
    after = accepted(decide(ctx, act(Op.APPROVE, request, STAFF)))
    assert after == replace(request, status=Status.APPROVED)


def test_approving_on_a_machine_in_maintenance_is_refused() -> None:
    request = slot(status=Status.PENDING)
    ctx = replace(table_context(request), maintenance=True)
    assert refused(decide(ctx, act(Op.APPROVE, request, STAFF))) == Code.DEVICE_UNAVAILABLE


# -- hypothesis: the overlap and opening-hours rules ----------------------------------------------
FAST = settings(max_examples=200, deadline=None)
minutes_from_now = st.integers(min_value=0, max_value=3 * 24 * 60)
lengths = st.integers(min_value=1, max_value=240)


@FAST
@given(
    a=st.integers(min_value=0, max_value=240),
    a_len=st.integers(min_value=1, max_value=60),
    b=st.integers(min_value=0, max_value=240),
    b_len=st.integers(min_value=1, max_value=60),
)
def test_overlap_is_a_symmetric_half_open_interval_intersection(
    a: int, a_len: int, b: int, b_len: int
) -> None:
    one = slot("a", start=a, minutes=a_len)
    other = slot("b", start=b, minutes=b_len)
    shared = set(range(a, a + a_len)) & set(range(b, b + b_len))
    assert one.overlaps(other.starts_at, other.ends_at) == bool(shared)
    assert other.overlaps(one.starts_at, one.ends_at) == bool(shared)


@FAST
@given(
    opens=st.integers(min_value=0, max_value=24 * 60 - 1),
    closes=st.integers(min_value=0, max_value=24 * 60 - 1),
    start=minutes_from_now,
    length=lengths,
)
def test_a_slot_is_within_hours_exactly_when_every_minute_of_it_is_open(
    opens: int, closes: int, start: int, length: int
) -> None:
    policy = Policy(opens=time(*divmod(opens, 60)), closes=time(*divmod(closes, 60)))

    def is_open(moment: datetime) -> bool:
        local = moment.astimezone(KST)
        minute = local.hour * 60 + local.minute
        if opens == closes:
            return True
        if opens < closes:
            return opens <= minute < closes
        return minute >= opens or minute < closes

    every_minute = (at(start + m) for m in range(length))
    assert policy.within_hours(at(start), at(start + length)) == all(map(is_open, every_minute))


# -- hypothesis: decide never raises ------------------------------------------------------------
instants = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2025, 12, 31), timezones=st.just(UTC)
)
any_slot = st.builds(
    Slot,
    id=st.sampled_from(["r1", "r2", "r3"]),
    device_id=st.sampled_from(["pc-01", "pc-02"]),
    user=st.sampled_from(["ana", "bo"]),
    starts_at=instants,
    ends_at=instants,
    status=st.sampled_from(Status),
    code=st.sampled_from(["", CODE, "000000"]),
)
any_codes = st.none() | st.sampled_from(["", CODE, "000000"])


@FAST
@given(
    ctx=st.builds(
        Context,
        now=instants,
        policy=st.sampled_from([DEFAULT, LATE_NIGHTS, Policy(max_active_per_player=0)]),
        device_exists=st.booleans(),
        maintenance=st.booleans(),
        auto_approve=st.booleans(),
        device_slots=st.lists(any_slot, max_size=3).map(tuple),
        player_slots=st.lists(any_slot, max_size=3).map(tuple),
        target=st.none() | any_slot,
        new_id=st.just(NEW_ID),
        new_code=st.just(NEW_CODE),
    ),
    cmd=st.builds(
        Command,
        op=st.sampled_from(Op),
        actor=st.builds(
            Actor, user=st.sampled_from(["ana", "bo", "staff", "pc-01"]), role=st.sampled_from(Role)
        ),
        device_id=st.sampled_from(["pc-01", "pc-02"]),
        reservation_id=st.none() | st.sampled_from(["r1", "r2"]),
        starts_at=st.none() | instants,
        ends_at=st.none() | instants,
        code=any_codes,
    ),
)
def test_decide_never_raises_and_answers_with_exactly_one_of_after_or_refusal(
    ctx: Context, cmd: Command
) -> None:
    decision = decide(ctx, cmd)
    changed = decision.after is not None or decision.entry is not None or decision.lifted
    assert bool(changed) != (decision.refusal is not None)
    if decision.after is None:
        assert decision.before is None
        return
    assert cmd.actor.role in ALLOWED[cmd.op]
    assert ctx.device_exists or cmd.op in VENUE_OPS
    if cmd.op not in (Op.RESERVE, *TARGET_OPS):
        return  # the booking ops: tests/unit/test_booking_rules.py
    if cmd.op is Op.RESERVE:
        assert decision.before is None
        assert decision.after.status is (Status.APPROVED if ctx.auto_approve else Status.PENDING)
    else:
        assert ctx.target is not None
        assert decision.before == ctx.target
        nxt = TRANSITIONS[ctx.target.status][cmd.op]
        assert decision.after == replace(ctx.target, status=nxt)


# -- hypothesis: the committer's batched path, random command scripts, invariants after every step
def row_of(slot: Slot) -> SlotRow:
    """A stored reservation row for ``slot`` (as the batch statements return it)."""
    return SlotRow(
        slot.id,
        slot.device_id,
        slot.user,
        slot.starts_at,
        slot.ends_at,
        slot.status.value,
        slot.code,
    )


MACHINES = ("pc-01", "pc-02", "pc-03")
AUTO_APPROVING = frozenset({"pc-03"})
VENUE = Policy(max_active_per_player=2)  # a small cap, so random scripts reach it
PLAYERS = ("ana", "bo", "cy")
ON_ITS_OWN_MACHINE = Actor("", Role.DEVICE)  # the target's machine, filled in when sent


@dataclass(frozen=True)
class Book:
    """A player asks for ``minutes`` on ``machine``, starting ``start`` minutes from now."""

    player: str
    machine: str
    start: int
    minutes: int

    def command(self, plaza: Venue) -> Command:
        start = plaza.now + timedelta(minutes=self.start)
        end = start + timedelta(minutes=self.minutes)
        return book(start, end, actor=Actor(self.player, Role.PLAYER), device=self.machine)


@dataclass(frozen=True)
class Handle:
    """``op`` on the ``pick``-th stored reservation, or on a missing one if there is none.

    ``own`` narrows the choice to the actor's own reservations and ``live`` to those that
    ``op`` can move (when there are any), so that scripts reach deep states often."""

    op: Op
    actor: Actor
    pick: int
    own: bool = False
    live: bool = False
    right_code: bool = True

    def command(self, plaza: Venue) -> Command:
        rows = plaza.rows
        ids = list(rows)  # in the order they were stored
        if self.own:
            ids = [rid for rid in ids if rows[rid].user == self.actor.user] or ids
        if self.live:
            ids = [rid for rid in ids if self.op in TRANSITIONS.get(rows[rid].status, {})] or ids
        target = rows[ids[self.pick % len(ids)]] if ids else slot("missing")
        actor = self.actor
        if actor == ON_ITS_OWN_MACHINE:
            actor = Actor(target.device_id, Role.DEVICE)
        code = target.code if self.right_code else "000000"
        return act(self.op, target, actor, code=code)


@dataclass(frozen=True)
class Wait:
    minutes: int


@dataclass(frozen=True)
class Flush:
    """The batch so far is committed (a Wait commits it too)."""


Step = Book | Handle | Wait | Flush


@dataclass
class Venue:
    """The committer's batched path with the database swapped for dicts: each batch's facts
    are loaded into a SlotBook (through an in-memory BatchSql), its jobs are decided, rendered
    and recorded by the committer's own step, and the rows it writes are stored. Commands are
    built from what is stored (what clients can know of), so several in one batch may race for
    one slot or one player's cap, and only the SlotBook's bookkeeping keeps them apart."""

    sql: MemorySql = field(
        default_factory=lambda: MemorySql(
            DeviceRow(m, m, False, m in AUTO_APPROVING) for m in MACHINES
        )
    )
    now: datetime = NOW
    batch: list[Job] = field(default_factory=list)
    effects: ReservationEffects = field(default_factory=lambda: ReservationEffects(Topics(), VENUE))

    @property
    def rows(self) -> dict[str, Slot]:
        """The stored reservations."""
        return {rid: slot_of(row) for rid, row in self.sql.rows.items()}

    def run(self, step: Step) -> None:
        """Queue a command in the batch, or commit the batch (and let time pass)."""
        if isinstance(step, Wait | Flush):
            self.commit()
            if isinstance(step, Wait):
                self.now += timedelta(minutes=step.minutes)
            return
        self.batch.append(job(step.command(self)))

    def commit(self) -> None:
        batch, self.batch = self.batch, []
        book = SlotBook.load(self.sql, batch, VENUE, self.now)
        writes = Writes()
        for each in batch:
            cmd = each.command
            assert cmd is not None
            known, target = dict(book.slots), book.target(cmd)
            outcome = decide_job(book, self.effects, writes, each)
            assert outcome.reply is not None
            self.check_step(known, target, cmd, outcome.reply)
        self.sql.flush(writes, self.now)

    def check_step(
        self, known: dict[str, Slot], target: Slot | None, cmd: Command, reply: Reply
    ) -> None:
        """The reply to ``cmd`` against what the batch knew before deciding it."""
        assert reply.ok == (reply.error is None) == (reply.reservation is not None)
        if reply.error is not None:
            conflict = reply.error.conflict
            if conflict is not None:  # names a real, active, overlapping reservation
                named = known[conflict.reservation_id]
                assert (conflict.starts_at, conflict.ends_at, conflict.status) == (
                    named.starts_at.timestamp(),
                    named.ends_at.timestamp(),
                    named.status.value,
                )
                assert named.status in ACTIVE
                if cmd.op is Op.RESERVE:
                    assert cmd.starts_at is not None
                    assert cmd.ends_at is not None
                    start, end = cmd.starts_at, cmd.ends_at
                else:
                    assert target is not None
                    start, end = target.starts_at, target.ends_at
                assert named.starts_at < end
                assert start < named.ends_at
            return
        after = reply.reservation
        assert after is not None
        if cmd.op is Op.RESERVE:
            assert after.id not in known
            approves = cmd.device_id in AUTO_APPROVING
            assert after.status == (Status.APPROVED if approves else Status.PENDING)
        else:
            before = known[after.id]
            assert target == before
            moved = replace(before, status=TRANSITIONS[before.status][cmd.op])
            assert after == public(moved, private=True)

    def upcoming(self, player: str) -> int:
        """The player's active reservations that have not ended (what the cap counts)."""
        return sum(
            1
            for s in self.rows.values()
            if s.user == player and s.status in ACTIVE and s.ends_at > self.now
        )


def clashes(rows: dict[str, Slot], statuses: frozenset[Status], by: str) -> list[tuple[str, str]]:
    """Pairs of reservations in ``statuses`` that share a machine (or player) and overlap."""
    chosen = [s for s in rows.values() if s.status in statuses]
    return [
        (a.id, b.id)
        for a, b in itertools.combinations(chosen, 2)
        if getattr(a, by) == getattr(b, by) and a.overlaps(b.starts_at, b.ends_at)
    ]


books = st.builds(
    Book,
    player=st.sampled_from(PLAYERS),
    machine=st.sampled_from(MACHINES),
    start=st.integers(min_value=0, max_value=12).map(lambda k: 10 * k),  # often back to back
    minutes=st.integers(min_value=1, max_value=6).map(lambda k: 10 * k),
)
waits = st.builds(Wait, minutes=st.integers(min_value=1, max_value=12).map(lambda k: 5 * k))
flushes = st.just(Flush())


@st.composite
def handles(draw: st.DrawFn, work: Sequence[tuple[Op, Actor]]) -> Handle:
    op, actor = draw(st.sampled_from(work))
    pick = draw(st.integers(min_value=0, max_value=40))
    own, live, right_code = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    return Handle(op, actor, pick, own=own, live=live, right_code=right_code)


staff_work = handles(
    [(Op.APPROVE, STAFF), (Op.REJECT, STAFF), (Op.CANCEL, STAFF), (Op.CHECK_IN, STAFF)]
)
timer_and_machine_work = handles(
    [
        (Op.CANCEL, TIMER),
        (Op.NO_SHOW, TIMER),
        (Op.COMPLETE, TIMER),
        (Op.COMPLETE, STAFF),
        (Op.CHECK_IN, ON_ITS_OWN_MACHINE),
        (Op.COMPLETE, ON_ITS_OWN_MACHINE),
    ]
)
player_work = handles(
    [(op, Actor(p, Role.PLAYER)) for p in PLAYERS for op in (Op.CANCEL, Op.CHECK_IN)]
)
scripts = st.lists(
    st.one_of(
        books,
        books,
        books,
        staff_work,
        staff_work,
        player_work,
        timer_and_machine_work,
        waits,
        flushes,
    ),
    min_size=10,
    max_size=40,
)


#: everything in one batch: only the SlotBook's bookkeeping (what earlier jobs of the batch
#: booked, and each player's count) stands between the commands
one_batch = st.lists(st.one_of(books, books, books, player_work, staff_work), max_size=40)


@FAST
@given(script=scripts | one_batch)
def test_no_sequence_of_commands_ever_double_books_a_machine_or_a_player(
    script: Sequence[Step],
) -> None:
    plaza = Venue()
    for step in [*script, Flush()]:
        plaza.run(step)
        assert clashes(plaza.rows, ACTIVE, by="device_id") == []
        assert clashes(plaza.rows, ACTIVE, by="user") == []
        assert clashes(plaza.rows, HOLDING, by="device_id") == []
        for player in PLAYERS:
            assert plaza.upcoming(player) <= VENUE.max_active_per_player


racing_requests = st.lists(
    st.tuples(
        st.sampled_from(MACHINES[:2]),
        st.sampled_from(PLAYERS),
        st.integers(min_value=0, max_value=60),
        st.integers(min_value=10, max_value=60),
    ),
    max_size=8,
)


@FAST
@given(
    requests=racing_requests,
    script=st.lists(
        st.one_of(
            staff_work, staff_work, staff_work, timer_and_machine_work, books, waits, flushes
        ),
        max_size=30,
    ),
)
def test_overlapping_requests_that_slipped_in_are_never_both_approved(
    requests: list[tuple[str, str, int, int]], script: Sequence[Step]
) -> None:
    """Rows from two racing bridges (or from elsewhere) may overlap while pending; approving
    re-checks against holding reservations, so at most one of them ever holds the machine."""
    plaza = Venue()
    for i, (machine, player, start, minutes) in enumerate(requests):
        raced = slot(f"p{i}", device=machine, user=player, start=start, minutes=minutes)
        plaza.sql.rows[raced.id] = row_of(replace(raced, status=Status.PENDING, code=f"9{i:05d}"))
    for step in [*script, Flush()]:
        plaza.run(step)
        assert clashes(plaza.rows, HOLDING, by="device_id") == []


# -- replacing a reservation (a rebook offer) ---------------------------------------------------
def rebook(old: Slot, *, actor: Actor = ANA, device: str = "pc-02") -> Command:
    return Command(
        Op.RESERVE,
        actor,
        device,
        starts_at=old.starts_at,
        ends_at=old.ends_at,
        replaces=old.id,
    )


def test_a_reservation_replacing_the_players_own_overlapping_one_releases_it() -> None:
    old = slot("r1", device="pc-01", status=Status.APPROVED)
    decision = decide(context(player_slots=(old,), replaced=old), rebook(old))
    new = accepted(decision)
    assert (new.device_id, new.starts_at, new.ends_at) == ("pc-02", old.starts_at, old.ends_at)
    assert decision.released == replace(old, status=Status.CANCELLED)


def test_without_replaces_the_same_booking_conflicts_with_the_players_own() -> None:
    old = slot("r1", device="pc-01")
    decision = decide(
        context(player_slots=(old,)), book(old.starts_at, old.ends_at, device="pc-02")
    )
    assert refused(decision) is Code.CONFLICT


def test_a_replacement_on_the_same_machine_may_overlap_the_slot_it_releases() -> None:
    old = slot("r1", device="pc-01", start=5, minutes=60)
    cmd = replace(rebook(old, device="pc-01"), starts_at=at(35), ends_at=at(95))
    decision = decide(context(device_slots=(old,), player_slots=(old,), replaced=old), cmd)
    assert accepted(decision).starts_at == at(35)
    assert decision.released is not None


def test_a_replaced_slot_frees_its_place_under_the_cap() -> None:
    mine = tuple(slot(f"r{i}", device="pc-01", start=100 * i + 5) for i in range(3))
    cmd = rebook(mine[0])
    decision = decide(context(player_slots=mine, replaced=mine[0]), cmd)
    assert accepted(decision)
    capped = decide(context(player_slots=mine, player_active_count=3, replaced=mine[0]), cmd)
    assert accepted(capped)


@pytest.mark.parametrize(
    ("owner", "status", "code"),
    [
        ("bo", Status.APPROVED, Code.NOT_FOUND),  # someone else's: as if it did not exist
        ("ana", Status.CHECKED_IN, Code.INVALID_TRANSITION),
        ("ana", Status.CANCELLED, Code.INVALID_TRANSITION),
    ],
)
def test_only_the_players_own_pending_or_approved_reservation_can_be_replaced(
    owner: str, status: Status, code: Code
) -> None:
    old = slot("r1", device="pc-01", user=owner, status=status)
    decision = decide(context(replaced=old), rebook(old))
    assert refused(decision) is code


def test_replacing_a_reservation_that_does_not_exist_is_not_found() -> None:
    cmd = replace(book(at(5), at(65), device="pc-02"), replaces="gone")
    assert refused(decide(context(), cmd)) is Code.NOT_FOUND
