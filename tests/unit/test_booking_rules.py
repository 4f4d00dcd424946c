"""plaza.rules for booking as venues know it (issue 17): extend and move, waitlist holds,
parties, the no-show policy; and plaza.waitlist's line arithmetic.

The pure rules first (feed a context and a command, assert the decision), then the same
commands through the committer's own decision step over an in-memory BatchSql (the SlotBook
loads and records every machine a command touches), then hypothesis: random mixes of reserve,
reserve_party, extend, move, cancel, cancel_party, approve and no-show, in batches, with the
invariants checked after every step.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from bridge.reservations.actors import Job
from bridge.reservations.committer import decide_job
from bridge.reservations.effects import ReservationEffects
from bridge.reservations.slotbook import SlotBook
from bridge.sql import DeviceRow, SlotRow
from bridge.writes import Writes
from plaza import i18n
from plaza.messages import CommandName, DeviceCommand, NotificationType, Reply
from plaza.rules import (
    ACTIVE,
    AMENDED,
    Actor,
    Code,
    Command,
    Context,
    Decision,
    Entry,
    EntryStatus,
    Machine,
    Op,
    Policy,
    Role,
    Slot,
    Status,
    decide,
    pick_seats,
)
from plaza.topics import Topics
from plaza.waitlist import expected_turns, positions
from tests.unit.helpers import MemorySql, job

pytestmark = pytest.mark.unit

NOW = datetime(2025, 3, 10, 3, 0, tzinfo=UTC)  # 12:00 in Seoul
ANA = Actor("ana", Role.PLAYER)
BO = Actor("bo", Role.PLAYER)
STAFF = Actor("staff", Role.ADMIN)
TIMER = Actor("system", Role.SYSTEM)
POLICY = Policy()


def at(minutes: float) -> datetime:
    return NOW + timedelta(minutes=minutes)


def slot(
    rid: str = "r1",
    *,
    device: str = "pc-01",
    user: str = "ana",
    start: float = 5,
    minutes: float = 60,
    status: Status = Status.APPROVED,
    party: str = "",
    hold: float | None = None,
) -> Slot:
    hold_until = at(hold) if hold is not None else None
    return Slot(
        rid, device, user, at(start), at(start + minutes), status, "482913", party, hold_until
    )


def machine(mid: str, *slots: Slot, kind: str = "pc", zone: str = "main", **kw: Any) -> Machine:
    return Machine(mid, kind, zone, slots=slots, **kw)


def ctx(**changes: Any) -> Context:
    base = Context(now=NOW, policy=POLICY, device_exists=True, new_id="new-1", new_code="000777")
    return replace(base, **changes)


def on(target: Slot, op: Op, actor: Actor = ANA, **kw: Any) -> Command:
    return Command(op, actor, target.device_id, reservation_id=target.id, **kw)


def refused(decision: Decision) -> Code:
    assert decision.refusal is not None, decision
    assert decision.after is None
    assert decision.entry is None
    assert not decision.also
    return decision.refusal.code


def accepted(decision: Decision) -> Slot:
    assert decision.refusal is None, decision.refusal
    assert decision.after is not None
    return decision.after


# -- extend --------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [Status.PENDING, Status.APPROVED, Status.CHECKED_IN])
def test_extend_lengthens_a_live_reservation_and_keeps_its_status(status: Status) -> None:
    mine = slot(status=status)
    after = accepted(
        decide(ctx(target=mine, device_slots=(mine,)), on(mine, Op.EXTEND, ends_at=at(95)))
    )
    assert after == replace(mine, ends_at=at(95))


def test_extend_into_the_next_booking_on_the_machine_is_a_conflict_naming_it() -> None:
    mine, theirs = slot(), slot("r2", user="bo", start=80)
    decision = decide(
        ctx(target=mine, device_slots=(mine, theirs)), on(mine, Op.EXTEND, ends_at=at(95))
    )
    assert refused(decision) is Code.CONFLICT
    assert decision.refusal is not None
    assert decision.refusal.conflict == theirs


def test_extend_up_to_the_next_booking_is_fine_half_open() -> None:
    mine, theirs = slot(), slot("r2", user="bo", start=80)
    accepted(
        decide(ctx(target=mine, device_slots=(mine, theirs)), on(mine, Op.EXTEND, ends_at=at(80)))
    )


def test_extend_into_the_players_own_booking_elsewhere_is_a_conflict() -> None:
    mine, other = slot(), slot("r2", device="pc-02", start=70)
    decision = decide(
        ctx(target=mine, device_slots=(mine,), player_slots=(mine, other)),
        on(mine, Op.EXTEND, ends_at=at(95)),
    )
    assert refused(decision) is Code.CONFLICT


@pytest.mark.parametrize(
    ("end", "policy", "code"),
    [
        pytest.param(65, POLICY, Code.INVALID, id="not-later"),
        pytest.param(30, POLICY, Code.INVALID, id="shorter"),
        pytest.param(5 + 241, POLICY, Code.TOO_LONG, id="past-max-length"),
        pytest.param(
            95, Policy(opens=time(10), closes=time(13)), Code.OUTSIDE_HOURS, id="past-closing"
        ),
    ],
)
def test_extend_respects_every_rule(end: float, policy: Policy, code: Code) -> None:
    mine = slot()
    decision = decide(
        ctx(target=mine, device_slots=(mine,), policy=policy), on(mine, Op.EXTEND, ends_at=at(end))
    )
    assert refused(decision) is code


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.CANCELLED, Status.HELD])
def test_only_a_live_booking_can_be_extended(status: Status) -> None:
    mine = slot(status=status)
    decision = decide(ctx(target=mine), on(mine, Op.EXTEND, ends_at=at(95)))
    assert refused(decision) is Code.INVALID_TRANSITION


def test_a_player_cannot_extend_someone_elses_but_staff_can() -> None:
    theirs = slot(user="bo")
    facts = ctx(target=theirs, device_slots=(theirs,))
    assert refused(decide(facts, on(theirs, Op.EXTEND, ANA, ends_at=at(95)))) is Code.NOT_FOUND
    assert accepted(decide(facts, on(theirs, Op.EXTEND, STAFF, ends_at=at(95)))).ends_at == at(95)


def test_extending_a_checked_in_session_tells_the_machine_its_new_end() -> None:
    consequence = AMENDED[Op.EXTEND]
    assert consequence.machine is CommandName.EXTEND_SESSION
    assert consequence.machine_while == frozenset({Status.CHECKED_IN})


# -- move ----------------------------------------------------------------------------------------
MACHINES = {m: machine(m) for m in ("pc-01", "pc-02")}


def moving(target: Slot, **facts: Any) -> Context:
    base = {
        "target": target,
        "device_slots": (target,),
        "player_slots": (target,),
        "machines": MACHINES,
    }
    return ctx(**{**base, **facts})


def test_move_to_another_machine_keeps_the_id_code_and_slot() -> None:
    mine = slot(status=Status.PENDING)
    after = accepted(decide(moving(mine), on(mine, Op.MOVE, to_device="pc-02")))
    assert after == replace(mine, device_id="pc-02")


def test_move_in_time_keeps_the_length_unless_an_end_is_given() -> None:
    mine = slot(status=Status.PENDING)
    later = accepted(decide(moving(mine), on(mine, Op.MOVE, starts_at=at(30))))
    assert (later.starts_at, later.ends_at) == (at(30), at(90))
    shorter = accepted(decide(moving(mine), on(mine, Op.MOVE, starts_at=at(30), ends_at=at(60))))
    assert (shorter.starts_at, shorter.ends_at) == (at(30), at(60))


def test_a_move_onto_its_own_old_slot_overlapping_itself_is_fine() -> None:
    mine = slot(status=Status.PENDING)
    accepted(decide(moving(mine), on(mine, Op.MOVE, starts_at=at(35))))


def test_a_move_that_conflicts_is_refused_and_names_the_slot_in_the_way() -> None:
    mine, theirs = slot(), slot("r2", device="pc-02", user="bo")
    machines = {**MACHINES, "pc-02": machine("pc-02", theirs)}
    decision = decide(moving(mine, machines=machines), on(mine, Op.MOVE, to_device="pc-02"))
    assert refused(decision) is Code.CONFLICT
    assert decision.refusal is not None
    assert decision.refusal.conflict == theirs


def test_a_move_onto_the_players_own_other_booking_is_a_conflict() -> None:
    mine, other = slot(), slot("r2", device="pc-02", start=100)
    decision = decide(moving(mine, player_slots=(mine, other)), on(mine, Op.MOVE, starts_at=at(90)))
    assert refused(decision) is Code.CONFLICT


@pytest.mark.parametrize(
    ("cmd", "code"),
    [
        pytest.param({"to_device": "pc-01"}, Code.INVALID, id="nowhere"),
        pytest.param({"to_device": "gone"}, Code.NOT_FOUND, id="unknown-machine"),
        pytest.param({"starts_at": at(-30)}, Code.IN_PAST, id="into-the-past"),
        pytest.param({"starts_at": at(10), "ends_at": at(300)}, Code.TOO_LONG, id="too-long"),
        pytest.param({"starts_at": NOW + timedelta(days=15)}, Code.INVALID, id="too-far-ahead"),
    ],
)
def test_move_respects_every_rule(cmd: dict[str, Any], code: Code) -> None:
    mine = slot()
    assert refused(decide(moving(mine), on(mine, Op.MOVE, **cmd))) is code


def test_a_move_onto_a_machine_in_maintenance_is_refused() -> None:
    mine = slot()
    machines = {**MACHINES, "pc-02": machine("pc-02", maintenance=True)}
    decision = decide(moving(mine, machines=machines), on(mine, Op.MOVE, to_device="pc-02"))
    assert refused(decision) is Code.DEVICE_UNAVAILABLE


@pytest.mark.parametrize(
    ("actor", "status", "auto", "then"),
    [
        pytest.param(ANA, Status.APPROVED, False, Status.PENDING, id="player-moves-approved"),
        pytest.param(STAFF, Status.APPROVED, False, Status.APPROVED, id="staff-moves-approved"),
        pytest.param(ANA, Status.APPROVED, True, Status.APPROVED, id="onto-auto-approve"),
        pytest.param(ANA, Status.PENDING, True, Status.APPROVED, id="pending-onto-auto"),
        pytest.param(ANA, Status.PENDING, False, Status.PENDING, id="pending-stays"),
    ],
)
def test_approval_follows_the_machine_a_reservation_moves_to(
    actor: Actor, status: Status, auto: bool, then: Status
) -> None:
    mine = slot(status=status)
    machines = {**MACHINES, "pc-02": machine("pc-02", auto_approve=auto)}
    after = accepted(
        decide(moving(mine, machines=machines), on(mine, Op.MOVE, actor, to_device="pc-02"))
    )
    assert after.status is then


@pytest.mark.parametrize("status", [Status.CHECKED_IN, Status.COMPLETED, Status.HELD])
def test_only_a_booking_not_yet_under_way_can_move(status: Status) -> None:
    mine = slot(status=status)
    decision = decide(moving(mine), on(mine, Op.MOVE, to_device="pc-02"))
    assert refused(decision) is Code.INVALID_TRANSITION


# -- waitlist offers: take, decline, lapse -------------------------------------------------------
OFFERED = Entry("e1", "ana", "pc", None, 60, 1.0, EntryStatus.OFFERED, "h1")


def held(**kw: Any) -> Slot:
    return slot("h1", start=0, status=Status.HELD, hold=3, **kw)


@pytest.mark.parametrize(("auto", "then"), [(False, Status.PENDING), (True, Status.APPROVED)])
def test_taking_an_offer_books_the_held_slot_and_the_entry(auto: bool, then: Status) -> None:
    hold = held()
    decision = decide(ctx(target=hold, entry=OFFERED, auto_approve=auto), on(hold, Op.TAKE))
    assert accepted(decision) == replace(hold, status=then, hold_until=None)
    assert decision.entry == replace(OFFERED, status=EntryStatus.BOOKED)


def test_an_offer_cannot_be_taken_once_its_hold_has_run_out() -> None:
    hold = held()
    late = ctx(target=hold, entry=OFFERED, now=hold.hold_until)
    assert refused(decide(late, on(hold, Op.TAKE))) is Code.OFFER_EXPIRED


def test_an_offer_held_for_someone_else_is_not_found() -> None:
    hold = held(user="bo")
    assert refused(decide(ctx(target=hold), on(hold, Op.TAKE))) is Code.NOT_FOUND


def test_taking_an_offer_with_other_times_is_invalid() -> None:
    hold = held()
    cmd = on(hold, Op.TAKE, starts_at=at(10), ends_at=at(70))
    assert refused(decide(ctx(target=hold), cmd)) is Code.INVALID


@pytest.mark.parametrize(
    ("op", "actor", "entry_then"),
    [(Op.DECLINE, ANA, EntryStatus.DECLINED), (Op.LAPSE, TIMER, EntryStatus.LAPSED)],
)
def test_a_declined_or_lapsed_hold_frees_the_machine(
    op: Op, actor: Actor, entry_then: EntryStatus
) -> None:
    hold = held()
    device = "" if op is Op.DECLINE else "pc-01"  # declined over the venue topic
    decision = decide(
        ctx(target=hold, entry=OFFERED), Command(op, actor, device, reservation_id="h1")
    )
    after = accepted(decision)
    assert after.status is Status.LAPSED
    assert after.status not in ACTIVE
    assert decision.entry == replace(OFFERED, status=entry_then)


def test_a_held_machine_blocks_anyone_elses_booking() -> None:
    hold = held(user="bo")
    cmd = Command(Op.RESERVE, ANA, "pc-01", starts_at=at(10), ends_at=at(40))
    decision = decide(ctx(device_slots=(hold,)), cmd)
    assert refused(decision) is Code.CONFLICT
    assert decision.refusal is not None
    assert decision.refusal.conflict == hold


# -- the no-show policy --------------------------------------------------------------------------
@pytest.mark.parametrize(("strikes", "suspends"), [(0, False), (1, False), (2, True), (5, True)])
def test_the_third_no_show_in_the_window_suspends_booking(strikes: int, suspends: bool) -> None:
    gone = slot(start=-20)
    decision = decide(ctx(target=gone, strikes=strikes), on(gone, Op.NO_SHOW, TIMER))
    assert accepted(decision).status is Status.NO_SHOW
    assert decision.suspend_until == (NOW + POLICY.no_show_suspension if suspends else None)


@pytest.mark.parametrize(
    "cmd",
    [
        pytest.param(
            Command(Op.RESERVE, ANA, "pc-01", starts_at=at(5), ends_at=at(65)), id="reserve"
        ),
        pytest.param(
            Command(Op.RESERVE_PARTY, ANA, "", starts_at=at(5), ends_at=at(65), seats=2, kind="pc"),
            id="party",
        ),
        pytest.param(Command(Op.JOIN_WAITLIST, ANA, "", kind="pc", minutes=60), id="waitlist"),
        pytest.param(Command(Op.TAKE, ANA, "pc-01", reservation_id="h1"), id="take"),
        pytest.param(
            Command(Op.EXTEND, ANA, "pc-01", reservation_id="r1", ends_at=at(95)), id="extend"
        ),
    ],
)
def test_a_suspended_player_cannot_book_for_themselves_and_hears_until_when(cmd: Command) -> None:
    until = NOW + timedelta(days=3)
    decision = decide(ctx(suspended_until=until), cmd)
    assert refused(decision) is Code.SUSPENDED
    assert decision.refusal is not None
    assert decision.refusal.until == until


def test_staff_still_book_for_a_suspended_player_and_a_lapsed_suspension_stops_nothing() -> None:
    cmd = Command(Op.RESERVE, ANA, "pc-01", starts_at=at(5), ends_at=at(65))
    accepted(decide(ctx(suspended_until=at(60)), replace(cmd, initiated_by="staff")))
    accepted(decide(ctx(suspended_until=NOW), cmd))


def test_a_suspended_player_may_still_cancel() -> None:
    mine = slot()
    after = accepted(decide(ctx(target=mine, suspended_until=at(60)), on(mine, Op.CANCEL)))
    assert after.status is Status.CANCELLED


def test_staff_lift_a_suspension() -> None:
    decision = decide(ctx(), Command(Op.LIFT_SUSPENSION, STAFF, "", subject="ana"))
    assert decision == Decision(lifted="ana")
    assert (
        refused(decide(ctx(), Command(Op.LIFT_SUSPENSION, ANA, "", subject="ana")))
        is Code.FORBIDDEN
    )


# -- parties -------------------------------------------------------------------------------------
def floor(
    *specs: tuple[str, str], taken: dict[str, Slot] | None = None, **kw: Any
) -> dict[str, Machine]:
    """Machines by (id, zone); ``taken``: a slot on some of them."""
    taken = taken or {}
    return {
        mid: machine(mid, *([taken[mid]] if mid in taken else []), zone=zone, **kw)
        for mid, zone in specs
    }


def party(seats: int | None = None, devices: Sequence[str] = (), **kw: Any) -> Command:
    return Command(
        Op.RESERVE_PARTY,
        ANA,
        "",
        starts_at=at(10),
        ends_at=at(70),
        seats=seats,
        devices=tuple(devices),
        kind="pc" if not devices else kw.pop("kind", None),
        **kw,
    )


def party_ctx(machines: dict[str, Machine], **kw: Any) -> Context:
    ids = tuple(f"s{i}" for i in range(8))
    codes = tuple(f"{i:06d}" for i in range(8))
    return ctx(machines=machines, new_ids=ids, new_codes=codes, new_id="p1", **kw)


PCS = floor(("pc-01", "a"), ("pc-02", "a"), ("pc-03", "a"), ("pc-04", "b"), ("pc-05", "b"))


def seats_of(decision: Decision) -> list[Slot]:
    return [c.after for c in decision.changes()]


def test_a_party_books_every_seat_for_one_slot_each_with_its_own_code() -> None:
    decision = decide(party_ctx(PCS), party(3))
    seats = seats_of(decision)
    assert [s.device_id for s in seats] == ["pc-01", "pc-02", "pc-03"]
    assert {(s.starts_at, s.ends_at, s.party_id, s.user) for s in seats} == {
        (at(10), at(70), "p1", "ana")
    }
    assert len({s.code for s in seats}) == 3
    assert all(c.before is None for c in decision.changes())


def test_a_party_names_its_machines_or_gets_them_picked_in_one_zone_next_to_each_other() -> None:
    busy = slot("x", device="pc-02", user="bo", start=0)
    machines = floor(*[(m.id, m.zone) for m in PCS.values()], taken={"pc-02": busy})
    # zone a has pc-01 and pc-03 free (a gap); zone b has pc-04, pc-05 side by side
    assert [s.device_id for s in seats_of(decide(party_ctx(machines), party(2)))] == [
        "pc-04",
        "pc-05",
    ]
    exact = decide(party_ctx(machines), party(devices=["pc-03", "pc-01"]))
    assert [s.device_id for s in seats_of(exact)] == ["pc-03", "pc-01"]


def test_a_party_bigger_than_any_zone_spreads_over_zones() -> None:
    assert [s.device_id for s in seats_of(decide(party_ctx(PCS), party(4)))] == [
        "pc-01",
        "pc-02",
        "pc-03",
        "pc-04",
    ]


def test_a_party_with_one_seat_taken_books_nothing_and_names_the_seat() -> None:
    busy = slot("x", device="pc-02", user="bo", start=0)
    machines = floor(*[(m.id, m.zone) for m in PCS.values()], taken={"pc-02": busy})
    decision = decide(party_ctx(machines), party(devices=["pc-01", "pc-02", "pc-03"]))
    assert refused(decision) is Code.CONFLICT
    assert decision.refusal is not None
    assert (decision.refusal.seat, decision.refusal.conflict) == ("pc-02", busy)


def test_a_party_too_big_for_the_free_machines_books_nothing() -> None:
    assert refused(decide(party_ctx(PCS), party(6))) is Code.CONFLICT
    assert refused(decide(party_ctx(PCS), party(2, zone="c"))) is Code.CONFLICT


@pytest.mark.parametrize(
    ("cmd", "code"),
    [
        pytest.param(party(9), Code.LIMIT_REACHED, id="more-than-max-seats"),
        pytest.param(party(0), Code.INVALID, id="no-seats"),
        pytest.param(party(2, devices=["pc-01"]), Code.INVALID, id="seats-and-devices-disagree"),
        pytest.param(party(devices=["pc-01", "pc-01"]), Code.INVALID, id="a-machine-twice"),
        pytest.param(party(devices=["pc-01", "gone"]), Code.NOT_FOUND, id="unknown-machine"),
        pytest.param(replace(party(2), kind=None), Code.INVALID, id="no-kind"),
        pytest.param(replace(party(2), ends_at=at(300)), Code.TOO_LONG, id="too-long"),
    ],
)
def test_a_party_respects_every_rule(cmd: Command, code: Code) -> None:
    assert refused(decide(party_ctx(PCS), cmd)) is code


def test_a_party_counts_once_under_the_cap_and_clashes_with_the_players_own_bookings() -> None:
    policy = Policy(max_active_per_player=1)
    accepted(decide(party_ctx(PCS, policy=policy, player_active_count=0), party(3)))
    capped = decide(party_ctx(PCS, policy=policy, player_active_count=1), party(3))
    assert refused(capped) is Code.LIMIT_REACHED
    mine = slot("m", device="vr-01", start=30)
    assert refused(decide(party_ctx(PCS, player_slots=(mine,)), party(2))) is Code.CONFLICT


def test_a_party_is_approved_at_once_only_where_every_machine_auto_approves() -> None:
    auto = floor(("pc-01", "a"), ("pc-02", "a"), auto_approve=True)
    assert {s.status for s in seats_of(decide(party_ctx(auto), party(2)))} == {Status.APPROVED}
    mixed = {**auto, "pc-02": machine("pc-02", zone="a")}
    assert {s.status for s in seats_of(decide(party_ctx(mixed), party(2)))} == {Status.PENDING}


def seats(status: Status = Status.PENDING, user: str = "ana") -> tuple[Slot, ...]:
    return tuple(
        slot(f"s{i}", device=f"pc-0{i}", user=user, status=status, party="p1") for i in (1, 2, 3)
    )


def test_approving_one_seat_of_a_pending_party_approves_every_seat() -> None:
    party_seats = seats()
    decision = decide(
        ctx(target=party_seats[1], party=party_seats, machines=PCS),
        on(party_seats[1], Op.APPROVE, STAFF),
    )
    assert [(c.before, c.after.status) for c in decision.changes()] == [
        (party_seats[1], Status.APPROVED),
        (party_seats[0], Status.APPROVED),
        (party_seats[2], Status.APPROVED),
    ]


def test_a_party_with_one_seat_in_conflict_is_approved_not_at_all() -> None:
    party_seats = seats()
    rival = slot("x", device="pc-03", user="bo", start=30)
    machines = {**PCS, "pc-03": machine("pc-03", rival, zone="a")}
    decision = decide(
        ctx(target=party_seats[0], party=party_seats, machines=machines),
        on(party_seats[0], Op.APPROVE, STAFF),
    )
    assert refused(decision) is Code.CONFLICT
    assert decision.refusal is not None
    assert decision.refusal.seat == "pc-03"


def test_rejecting_a_seat_rejects_the_whole_pending_party() -> None:
    party_seats = seats()
    decision = decide(
        ctx(target=party_seats[2], party=party_seats), on(party_seats[2], Op.REJECT, STAFF)
    )
    assert {c.after.status for c in decision.changes()} == {Status.REJECTED}
    assert len(decision.changes()) == 3


def test_cancel_takes_one_seat_and_cancel_party_every_open_one() -> None:
    party_seats = (*seats(Status.APPROVED)[:2], replace(seats()[2], status=Status.CHECKED_IN))
    one = decide(ctx(target=party_seats[0], party=party_seats), on(party_seats[0], Op.CANCEL))
    assert [c.after.id for c in one.changes()] == ["s1"]
    whole = decide(ctx(party=party_seats), Command(Op.CANCEL_PARTY, ANA, "", party_id="p1"))
    assert [(c.after.id, c.after.status) for c in whole.changes()] == [
        ("s1", Status.CANCELLED),
        ("s2", Status.CANCELLED),
    ]


def test_someone_elses_party_is_not_found() -> None:
    cmd = Command(Op.CANCEL_PARTY, ANA, "", party_id="p1")
    assert refused(decide(ctx(party=seats(user="bo")), cmd)) is Code.NOT_FOUND
    assert accepted(decide(ctx(party=seats(user="bo")), replace(cmd, actor=STAFF)))


def test_seat_picking_prefers_the_shortest_run_in_one_zone() -> None:
    everyone = [machine(f"pc-{i:02d}", zone="a" if i < 6 else "b") for i in range(1, 10)]
    free = [m for m in everyone if m.id not in ("pc-02", "pc-03", "pc-08")]
    # zone a free: 01 04 05 (04-05 adjacent); zone b free: 06 07 09
    assert [m.id for m in pick_seats(free, everyone, 2)] == ["pc-04", "pc-05"]
    assert [m.id for m in pick_seats(free, everyone, 3)] == ["pc-06", "pc-07", "pc-09"]


# -- the waitlist --------------------------------------------------------------------------------
def entry(eid: str, user: str, rank: float, **kw: Any) -> Entry:
    return Entry(
        eid, user, kw.pop("kind", "pc"), kw.pop("zone", None), kw.pop("minutes", 60), rank, **kw
    )


def join(**kw: Any) -> Command:
    return Command(
        Op.JOIN_WAITLIST, ANA, "", kind=kw.pop("kind", "pc"), minutes=kw.pop("minutes", 60), **kw
    )


def test_joining_a_line_puts_the_player_at_its_end() -> None:
    line = (entry("e1", "bo", 1.0), entry("e2", "cy", 2.0))
    decision = decide(ctx(machines=PCS, line=line), join())
    assert decision == Decision(entry=Entry("new-1", "ana", "pc", None, 60, 3.0))


@pytest.mark.parametrize(
    ("facts", "cmd", "code"),
    [
        pytest.param({}, join(kind="vr"), Code.NOT_FOUND, id="no-such-kind"),
        pytest.param({}, join(zone="c"), Code.NOT_FOUND, id="no-such-zone"),
        pytest.param({}, join(minutes=5), Code.INVALID, id="too-short"),
        pytest.param({}, join(minutes=300), Code.TOO_LONG, id="too-long"),
        pytest.param(
            {"player_entries": (entry("e1", "ana", 1.0),)},
            join(),
            Code.CONFLICT,
            id="already-in-it",
        ),
        pytest.param(
            {"player_entries": (entry("e1", "ana", 1, zone="a"), entry("e2", "ana", 1, zone="b"))},
            join(),
            Code.LIMIT_REACHED,
            id="in-too-many-lines",
        ),
        pytest.param(
            {"line": tuple(entry(f"e{i}", f"p{i}", i) for i in range(50))},
            join(),
            Code.LIMIT_REACHED,
            id="line-full",
        ),
        pytest.param({"player_active_count": 3}, join(), Code.LIMIT_REACHED, id="at-the-cap"),
    ],
)
def test_joining_respects_every_rule(facts: dict[str, Any], cmd: Command, code: Code) -> None:
    assert refused(decide(ctx(machines=PCS, **facts), cmd)) is code


def test_leaving_the_line_and_staff_removing_someone() -> None:
    mine = entry("e1", "ana", 1.0)
    leave = Command(Op.LEAVE_WAITLIST, ANA, "", entry_id="e1")
    assert decide(ctx(entry=mine), leave).entry == replace(mine, status=EntryStatus.LEFT)
    removed = decide(ctx(entry=mine), replace(leave, actor=STAFF)).entry
    assert removed == replace(mine, status=EntryStatus.REMOVED)
    assert refused(decide(ctx(entry=mine), replace(leave, actor=BO))) is Code.NOT_FOUND
    gone = replace(mine, status=EntryStatus.BOOKED)
    assert refused(decide(ctx(entry=gone), leave)) is Code.INVALID_TRANSITION


def test_leaving_while_offered_lets_the_hold_go() -> None:
    hold = held()
    decision = decide(
        ctx(entry=OFFERED, target=hold), Command(Op.LEAVE_WAITLIST, ANA, "", entry_id="e1")
    )
    assert accepted(decision).status is Status.LAPSED
    assert decision.entry is not None
    assert decision.entry.status is EntryStatus.LEFT


@pytest.mark.parametrize(("position", "rank"), [(1, 0.0), (2, 1.5), (3, 2.5), (9, 4.0)])
def test_staff_move_an_entry_to_a_place_in_its_line(position: int, rank: float) -> None:
    line = tuple(entry(f"e{i}", f"p{i}", float(i)) for i in (1, 2, 3))
    moving_one = entry("e9", "ana", 9.0)
    cmd = Command(Op.MOVE_ENTRY, STAFF, "", entry_id="e9", position=position)
    decision = decide(ctx(entry=moving_one, line=(*line, moving_one)), cmd)
    assert decision.entry == replace(moving_one, rank=rank)


def offer(machine_: Machine, *line: Entry, **facts: Any) -> Decision:
    return decide(
        ctx(machines={machine_.id: machine_}, line=line, **facts),
        Command(Op.OFFER, TIMER, machine_.id),
    )


def test_a_free_machine_is_held_for_the_first_in_line() -> None:
    decision = offer(machine("pc-01"), entry("e2", "bo", 2.0), entry("e1", "ana", 1.0, minutes=30))
    hold = accepted(decision)
    assert hold == Slot(
        "new-1",
        "pc-01",
        "ana",
        NOW,
        at(30),
        Status.HELD,
        "000777",
        hold_until=NOW + POLICY.waitlist_hold,
    )
    assert decision.entry == replace(
        entry("e1", "ana", 1.0, minutes=30), status=EntryStatus.OFFERED, offer_id="new-1"
    )


def test_an_offer_skips_who_it_does_not_fit() -> None:
    soon = slot("x", user="cy", start=40)
    busy = slot("y", device="vr-01", user="ana", start=0)
    line = (
        entry("e1", "ana", 1.0),  # busy elsewhere right now
        entry("e2", "bo", 2.0, zone="b"),  # wants the other zone
        entry("e3", "dan", 3.0, minutes=60),  # the machine is booked in 40 minutes
        entry("e4", "eve", 4.0, minutes=30),  # fits
    )
    decision = offer(machine("pc-01", soon, zone="a"), *line, line_slots=(busy,))
    assert decision.entry is not None
    assert decision.entry.id == "e4"


def test_a_suspended_player_in_line_is_passed_over() -> None:
    line = (entry("e1", "ana", 1.0), entry("e2", "bo", 2.0))
    decision = offer(machine("pc-01"), *line, suspended=frozenset({"ana"}))
    assert decision.entry is not None
    assert decision.entry.id == "e2"


def test_nobody_is_offered_a_machine_nobody_in_line_fits() -> None:
    assert refused(offer(machine("pc-01"), entry("e1", "ana", 1.0, kind="vr"))) is Code.NOT_FOUND
    taken = replace(entry("e1", "ana", 1.0), status=EntryStatus.OFFERED)
    assert refused(offer(machine("pc-01"), taken)) is Code.NOT_FOUND


def test_places_in_line_and_the_expected_turns() -> None:
    line = [entry(f"e{i}", f"p{i}", float(i), minutes=30) for i in (3, 1, 2, 4)]
    line.append(entry("v1", "q", 1.0, kind="vr"))
    assert positions(line) == {"e1": 1, "e2": 2, "e3": 3, "e4": 4, "v1": 1}
    turns = expected_turns(line, {"pc": [at(20), at(-5), at(50)], "vr": []}, NOW)
    assert turns == {
        "e1": NOW,  # a machine is free already
        "e2": at(20),
        "e3": at(50),
        "e4": NOW + timedelta(minutes=30),  # the second round, one entry's length later
        "v1": None,  # no machine of that kind in service
    }


# -- every new text exists in both languages -----------------------------------------------------
BOOKING_NOTICES = [
    "reservation_extended",
    "reservation_moved",
    "waitlist_offer",
    "waitlist_offer_lapsed",
    "waitlist_removed",
    "booking_suspended",
    "suspension_lifted",
]
WEB_I18N = Path(__file__).parents[2] / "api" / "web" / "js" / "i18n.js"


@pytest.mark.parametrize("kind", [k for k in get_args(NotificationType) if k != "system_notice"])
def test_every_notification_has_korean_and_english_texts(kind: str) -> None:
    for locale in ("ko", "en"):
        title, message = i18n.render(kind, locale, {})
        assert title
        assert message is not None
    assert i18n.TEXTS[kind]["ko"] != i18n.TEXTS[kind]["en"]


@pytest.mark.parametrize("code", [c.value for c in Code])
def test_every_error_code_has_a_web_text_in_both_languages(code: str) -> None:
    source = WEB_I18N.read_text()
    ko, en = source.split("\n  en: {", 1)
    for catalogue in (ko, en):
        assert re.search(rf'"error\.{code}(_plain)?":', catalogue), code


# -- through the committer's decision step (a SlotBook over an in-memory BatchSql) --------------
ZONES = {"pc-01": "a", "pc-02": "a", "pc-03": "a", "pc-04": "b"}


@dataclass
class Plaza:
    """The committer's decision step over dicts: each batch's facts are loaded into a SlotBook
    through an in-memory BatchSql, decided, rendered and stored."""

    sql: MemorySql = field(
        default_factory=lambda: MemorySql(
            DeviceRow(m, m.upper(), False, False, "pc", z) for m, z in ZONES.items()
        )
    )
    now: datetime = NOW
    policy: Policy = field(default_factory=lambda: Policy(max_active_per_player=2))
    replies: list[Reply] = field(default_factory=list)
    written: list[Writes] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=itertools.count)

    def batch(self, *cmds: Command) -> list[Reply]:
        jobs = [job(c, request_key=f"{c.actor.user}:{next(self.ids)}") for c in cmds]
        return self.jobs(jobs)

    def jobs(self, jobs: list[Job]) -> list[Reply]:
        book = SlotBook.load(self.sql, jobs, self.policy, self.now)
        writes = Writes()
        effects = ReservationEffects(Topics(), self.policy)
        replies = []
        for each in jobs:
            outcome = decide_job(book, effects, writes, each)
            assert outcome.reply is not None
            replies.append(outcome.reply)
        self.sql.flush(writes, self.now)
        self.written.append(writes)
        self.replies += replies
        return replies

    def system(self, op: Op, rid: str | None = None, device: str = "") -> None:
        cmd = Command(op, TIMER, device, reservation_id=rid)
        book = SlotBook.load(self.sql, [job(cmd)], self.policy, self.now)
        writes = Writes()
        decide_job(book, ReservationEffects(Topics(), self.policy), writes, job(cmd))
        self.sql.flush(writes, self.now)
        self.written.append(writes)

    def row(self, rid: str) -> SlotRow:
        return self.sql.rows[rid]


def reserve(actor: Actor, device: str, start: float, minutes: float = 60) -> Command:
    return Command(Op.RESERVE, actor, device, starts_at=at(start), ends_at=at(start + minutes))


def test_a_party_booked_earlier_in_a_batch_blocks_its_machines_for_the_rest_of_it() -> None:
    plaza = Plaza()
    booked, blocked, free = plaza.batch(
        Command(Op.RESERVE_PARTY, ANA, "", starts_at=at(10), ends_at=at(70), seats=2, kind="pc"),
        reserve(BO, "pc-02", 30),
        reserve(BO, "pc-03", 30),
    )
    assert booked.ok
    assert booked.reservations is not None
    assert [r.device_id for r in booked.reservations] == ["pc-01", "pc-02"]
    assert booked.party_id
    assert {r.party_id for r in booked.reservations} == {booked.party_id}
    assert blocked.error is not None
    assert blocked.error.code == "conflict"
    assert free.ok


def test_a_move_frees_its_old_slot_for_the_next_command_of_the_batch() -> None:
    plaza = Plaza()
    (first,) = plaza.batch(reserve(ANA, "pc-01", 10))
    assert first.reservation is not None
    rid = first.reservation.id
    moved, taken = plaza.batch(
        Command(Op.MOVE, ANA, "pc-01", reservation_id=rid, to_device="pc-02"),
        reserve(BO, "pc-01", 10),
    )
    assert moved.ok
    assert taken.ok
    assert plaza.row(rid).device_id == "pc-02"
    assert plaza.written[-1].changed[0] == {
        "id": rid,
        "status": "pending",
        "updated_at": NOW,
        "device_id": "pc-02",
    }


def test_a_move_refused_leaves_the_original_exactly_as_it_was() -> None:
    plaza = Plaza()
    (mine,) = plaza.batch(reserve(ANA, "pc-01", 10))
    plaza.batch(reserve(BO, "pc-02", 0))
    assert mine.reservation is not None
    before = plaza.row(mine.reservation.id)
    (refusal,) = plaza.batch(
        Command(Op.MOVE, ANA, "pc-01", reservation_id=mine.reservation.id, to_device="pc-02")
    )
    assert refusal.error is not None
    assert refusal.error.code == "conflict"
    assert plaza.row(mine.reservation.id) == before
    assert plaza.written[-1].changed == []


def test_extending_a_checked_in_session_sends_the_machine_its_new_end() -> None:
    plaza = Plaza()
    plaza.sql.rows["r1"] = SlotRow("r1", "pc-01", "ana", at(-10), at(50), "checked_in", "123456")
    (reply,) = plaza.batch(Command(Op.EXTEND, ANA, "pc-01", reservation_id="r1", ends_at=at(80)))
    assert reply.ok
    assert reply.reservation is not None
    assert reply.reservation.ends_at == at(80).timestamp()
    sent = [m for m in plaza.written[-1].outbox if m.topic == "plaza/devices/pc-01/cmd"]
    assert len(sent) == 1
    command = DeviceCommand.model_validate_json(sent[0].payload)
    assert command.cmd is CommandName.EXTEND_SESSION
    assert command.session is not None
    assert command.session.ends_at == at(80).timestamp()


def test_three_no_shows_suspend_and_a_suspended_player_hears_suspended_until() -> None:
    plaza = Plaza(policy=Policy(max_active_per_player=9))
    for i in range(3):
        rid = f"n{i}"
        plaza.sql.rows[rid] = SlotRow(
            rid, "pc-01", "ana", at(-60 - 100 * i), at(-20 - 100 * i), "approved", "1"
        )
        plaza.system(Op.NO_SHOW, rid, "pc-01")
    until, _ = plaza.sql.standings["ana"]
    assert until == NOW + plaza.policy.no_show_suspension
    notes = [n for w in plaza.written for n in w.notes if n.type == "booking_suspended"]
    assert [n.until for n in notes] == [until.timestamp()]
    (refusal,) = plaza.batch(reserve(ANA, "pc-02", 10))
    assert refusal.error is not None
    assert (refusal.error.code, refusal.error.until) == ("suspended", until.timestamp())
    plaza.batch(Command(Op.LIFT_SUSPENSION, STAFF, "", subject="ana"))
    (booked,) = plaza.batch(reserve(ANA, "pc-02", 10))
    assert booked.ok


def test_a_held_machine_is_held_until_the_hold_lapses_then_offered_to_the_next() -> None:
    plaza = Plaza()
    (ana_in,) = plaza.batch(Command(Op.JOIN_WAITLIST, ANA, "", kind="pc", zone="b", minutes=30))
    (bo_in,) = plaza.batch(Command(Op.JOIN_WAITLIST, BO, "", kind="pc", zone="b", minutes=30))
    assert ana_in.entry is not None
    assert (
        ana_in.entry.position,
        bo_in.entry and bo_in.entry.position,
    ) == (1, 2)
    plaza.system(Op.OFFER, device="pc-04")
    (hold,) = [r for r in plaza.sql.rows.values() if r.status == "held"]
    assert (hold.player, hold.device_id, hold.hold_until) == (
        "ana",
        "pc-04",
        NOW + plaza.policy.waitlist_hold,
    )
    (blocked,) = plaza.batch(reserve(Actor("cy", Role.PLAYER), "pc-04", 5))
    assert blocked.error is not None
    assert blocked.error.conflict is not None
    assert blocked.error.conflict.reservation_id == hold.id
    plaza.now = hold.hold_until  # type: ignore[assignment]
    plaza.system(Op.LAPSE, hold.id, "pc-04")
    assert plaza.row(hold.id).status == "lapsed"
    plaza.system(Op.OFFER, device="pc-04")
    (again,) = [r for r in plaza.sql.rows.values() if r.status == "held"]
    assert again.player == "bo"
    (taken,) = plaza.batch(Command(Op.TAKE, BO, "pc-04", reservation_id=again.id))
    assert taken.ok
    assert taken.reservation is not None
    assert taken.reservation.status == "pending"
    assert taken.entry is not None
    assert taken.entry.status == "booked"


# -- hypothesis: random mixes of every booking command, invariants after every step -------------
PLAYERS = ("ana", "bo", "cy")
DEVICES = tuple(ZONES)


@dataclass(frozen=True)
class Step:
    kind: str
    player: str
    device: str = "pc-01"
    start: int = 0
    minutes: int = 30
    seats: int = 2
    pick: int = 0
    flush: bool = False


def _command(plaza: Plaza, step: Step) -> Command | None:
    actor = Actor(step.player, Role.PLAYER)

    def at(minutes: float) -> datetime:  # from the plaza's own clock
        return plaza.now + timedelta(minutes=minutes)

    rows = sorted(plaza.sql.rows.values(), key=lambda r: r.id)
    live = [r for r in rows if r.status in {s.value for s in ACTIVE}]
    target = live[step.pick % len(live)] if live else None
    if step.kind == "reserve":
        start = at(step.start)
        return Command(
            Op.RESERVE,
            actor,
            step.device,
            starts_at=start,
            ends_at=start + timedelta(minutes=step.minutes),
        )
    if step.kind == "party":
        return Command(
            Op.RESERVE_PARTY,
            actor,
            "",
            starts_at=at(step.start),
            ends_at=at(step.start + step.minutes),
            seats=step.seats,
            kind="pc",
        )
    if target is None:
        return None
    owner = Actor(target.player, Role.PLAYER)
    if step.kind == "extend":
        return Command(
            Op.EXTEND,
            owner,
            target.device_id,
            reservation_id=target.id,
            ends_at=target.ends_at + timedelta(minutes=step.minutes),
        )
    if step.kind == "move":
        return Command(
            Op.MOVE,
            owner,
            target.device_id,
            reservation_id=target.id,
            to_device=step.device,
            starts_at=at(step.start) if step.seats % 2 else None,  # else the machine only
        )
    if step.kind == "cancel":
        return Command(Op.CANCEL, owner, target.device_id, reservation_id=target.id)
    if step.kind == "cancel_party" and target.party_id:
        return Command(Op.CANCEL_PARTY, owner, "", party_id=target.party_id)
    if step.kind == "approve":
        return Command(Op.APPROVE, STAFF, target.device_id, reservation_id=target.id)
    return None


steps = st.builds(
    Step,
    kind=st.sampled_from(
        [
            "reserve",
            "reserve",
            "party",
            "party",
            "extend",
            "move",
            "cancel",
            "cancel_party",
            "approve",
            "no_show",
        ]
    ),
    player=st.sampled_from(PLAYERS),
    device=st.sampled_from(DEVICES),
    start=st.integers(min_value=0, max_value=8).map(lambda k: 15 * k),
    minutes=st.integers(min_value=1, max_value=6).map(lambda k: 15 * k),
    seats=st.integers(min_value=1, max_value=4),
    pick=st.integers(min_value=0, max_value=30),
    flush=st.booleans(),
)


def _overlapping(a: SlotRow, b: SlotRow) -> bool:
    return a.starts_at < b.ends_at and b.starts_at < a.ends_at


def check_invariants(plaza: Plaza, parties: dict[str, int]) -> None:
    live = [r for r in plaza.sql.rows.values() if r.status in {s.value for s in ACTIVE}]
    for a, b in itertools.combinations(live, 2):
        if not _overlapping(a, b):
            continue
        assert a.device_id != b.device_id, (a, b)
        same_party = a.party_id is not None and a.party_id == b.party_id
        assert a.player != b.player or same_party, (a, b)
    for party_id, size in parties.items():
        seats_ = [r for r in plaza.sql.rows.values() if r.party_id == party_id]
        assert len(seats_) == size, "a party is booked whole"
        waiting = {s.status for s in seats_} & {"pending", "approved"}
        assert len(waiting) <= 1, f"a party is approved whole or not at all: {seats_}"
    for player in PLAYERS:
        groups = {r.party_id or r.id for r in live if r.player == player and r.ends_at > plaza.now}
        assert len(groups) <= plaza.policy.max_active_per_player


@settings(max_examples=150, deadline=None)
@given(script=st.lists(steps, min_size=5, max_size=30))
def test_no_mix_of_booking_commands_double_books_or_splits_a_party(script: list[Step]) -> None:
    plaza = Plaza()
    parties: dict[str, int] = {}
    pending: list[Command] = []

    def flush() -> None:
        if not pending:
            return
        before = dict(plaza.sql.rows)
        replies = plaza.batch(*pending)
        for cmd, reply in zip(pending, replies, strict=True):
            event(f"{cmd.op.value}: {'ok' if reply.ok else reply.error and reply.error.code}")
            if cmd.op is Op.RESERVE_PARTY and reply.ok:
                assert reply.reservations is not None
                assert reply.party_id
                assert len(reply.reservations) == cmd.seats
                parties[reply.party_id] = len(reply.reservations)
        new_parties = {r.party_id for r in plaza.sql.rows.values() if r.party_id} - {
            r.party_id for r in before.values() if r.party_id
        }
        assert new_parties <= set(parties), "a refused party leaves no seat behind"
        pending.clear()

    for step in script:
        if step.kind == "no_show":
            flush()
            live = sorted(
                (r for r in plaza.sql.rows.values() if r.status == "approved"), key=lambda r: r.id
            )
            if live:
                target = live[step.pick % len(live)]
                plaza.now = max(plaza.now, target.starts_at + timedelta(minutes=1))
                plaza.system(Op.NO_SHOW, target.id, target.device_id)
        else:
            cmd = _command(plaza, step)
            if cmd is not None:
                pending.append(cmd)
        if step.flush:
            flush()
        check_invariants(plaza, parties)
    flush()
    check_invariants(plaza, parties)
