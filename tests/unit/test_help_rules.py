"""plaza.help (calling staff: one waiting call per player, an hourly cap, the call follows the
player, staff's steps) and the board of a machine without an agent, as tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.metrics import BridgeMetrics
from bridge.presence.board import DeviceView
from bridge.presence.tracker import PresenceTracker
from plaza.help import HelpStatus, decide_call, follows, staff_step
from plaza.messages import BoardEntry, BoardStatus, DeviceState, MachineState, Presence, Slot
from plaza.topics import Topics

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 4, 20, 0, tzinfo=UTC)


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


@pytest.mark.parametrize(
    ("waiting", "recent", "per_hour", "outcome", "retry_after"),
    [
        (None, [], 6, "new", None),
        ("c1", [ago(1)], 6, "existing", None),  # one open call: the same one again
        ("c1", [ago(m) for m in range(6)], 6, "existing", None),  # dedup before the cap
        (None, [ago(m) for m in (5, 10, 15, 20, 25)], 6, "new", None),  # 5 of 6
        (None, [ago(m) for m in (5, 10, 15, 20, 25, 30)], 6, "refused", 30 * 60),
        (None, [ago(m) for m in (5, 10, 15, 20, 25, 59)], 6, "refused", 60),
        (None, [ago(m) for m in (5, 10, 15, 20, 25, 60)], 6, "new", None),  # aged out
        (None, [ago(m) for m in (5, 10, 15, 20, 25, 90)], 6, "new", None),
        (None, [ago(10)], 1, "refused", 50 * 60),
        (None, [ago(10), ago(40)], 2, "refused", 20 * 60),  # the oldest of the hour frees
        (None, [ago(59.99)], 1, "refused", 1),  # never less than a second
    ],
)
def test_a_call_is_new_the_open_one_or_refused_past_the_hourly_cap(
    waiting: str | None,
    recent: list[datetime],
    per_hour: int,
    outcome: str,
    retry_after: float | None,
) -> None:
    decision = decide_call(waiting, recent, NOW, per_hour)
    assert decision.outcome == outcome
    assert decision.existing == waiting if outcome == "existing" else decision.existing is None
    if retry_after is None:
        assert decision.retry_after is None
    else:
        assert decision.retry_after == pytest.approx(retry_after, abs=0.5)


@pytest.mark.parametrize(
    ("status", "op", "after"),
    [
        (HelpStatus.OPEN, "ack", HelpStatus.ACKNOWLEDGED),
        (HelpStatus.OPEN, "resolve", HelpStatus.RESOLVED),
        (HelpStatus.ACKNOWLEDGED, "resolve", HelpStatus.RESOLVED),
        (HelpStatus.ACKNOWLEDGED, "ack", None),
        (HelpStatus.RESOLVED, "ack", None),
        (HelpStatus.RESOLVED, "resolve", None),
    ],
)
def test_staff_acknowledge_then_resolve_and_nothing_after(
    status: HelpStatus, op: str, after: HelpStatus | None
) -> None:
    assert staff_step(status, op) is after  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "call_device", "checked_in_at", "moves"),
    [
        (HelpStatus.OPEN, "pc-01", "pc-02", True),
        (HelpStatus.ACKNOWLEDGED, "pc-01", "console-1", True),
        (HelpStatus.OPEN, "pc-01", "pc-01", False),  # already there
        (HelpStatus.RESOLVED, "pc-01", "pc-02", False),  # over: stays where it was
    ],
)
def test_a_waiting_call_follows_its_player_to_the_machine_they_check_in_on(
    status: HelpStatus, call_device: str, checked_in_at: str, moves: bool
) -> None:
    assert follows(status, call_device, checked_in_at) is moves


# -- a machine without an agent ------------------------------------------------------------------
def console(**kw: object) -> DeviceView:
    return DeviceView(id="desk-1", name="Desk 1", kind="console", zone="c", agent=False, **kw)  # type: ignore[arg-type]


def slot(status: str, starts_at: float = 0) -> Slot:
    return Slot(reservation_id="r1", starts_at=starts_at, ends_at=starts_at + 1, status=status)


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({}, BoardStatus.AVAILABLE),  # never connected, never offline
        ({"state": MachineState.IN_USE}, BoardStatus.IN_USE),
        ({"state": MachineState.FAULT}, BoardStatus.FAULT),
        ({"maintenance": True}, BoardStatus.MAINTENANCE),
        ({"current_slot": slot("approved")}, BoardStatus.RESERVED),
        ({"current_slot": slot("checked_in")}, BoardStatus.IN_USE),  # checked in at the desk
        ({"next_slot": slot("checked_in")}, BoardStatus.IN_USE),  # early, before its slot
        # a later booking (past the pre-slot lock: none here) leaves it free for now
        ({"next_slot": slot("approved", starts_at=1000)}, BoardStatus.AVAILABLE),
        ({"current_slot": slot("held")}, BoardStatus.HELD),
    ],
)
def test_a_machine_without_an_agent_is_never_offline(
    changes: dict[str, object], status: BoardStatus
) -> None:
    view = console().advanced(1, 10.0, **changes)
    assert view.status is status
    entry = BoardEntry.model_validate_json(view.entry(10.0).encode())
    assert entry.managed == "staff"
    assert entry.online is True


def test_a_machine_with_an_agent_has_no_managed_field_and_is_offline_until_it_connects() -> None:
    view = DeviceView(id="pc-01", name="PC 1", kind="pc", zone="z").advanced(1, 10.0)
    assert view.status is BoardStatus.OFFLINE
    assert b"managed" not in view.entry(10.0).encode()


def test_what_connects_under_an_agentless_machines_name_does_not_change_its_board() -> None:
    tracker = PresenceTracker(Topics(), {"desk-1": console()}, 1, BridgeMetrics())
    assert tracker.on_presence("desk-1", Presence(online=False, epoch=1), 1.0).view is None
    state = DeviceState(state=MachineState.FAULT, epoch=1, seq=1, ts=1.0)
    assert tracker.on_state("desk-1", state, 1.0).view is None
    staff = tracker.set_managed_state("desk-1", MachineState.FAULT, "controller broken", 2.0)
    assert staff.view is not None
    assert (staff.view.status, staff.view.fault) == (BoardStatus.FAULT, "controller broken")
    (settled,) = PresenceTracker(
        Topics(), {"desk-1": console()}, 1, BridgeMetrics()
    ).settle_managed(3.0)
    assert settled.view is not None
    assert settled.view.status is BoardStatus.AVAILABLE


@given(
    gaps=st.lists(st.floats(min_value=0, max_value=3600), min_size=1, max_size=40),
    per_hour=st.integers(min_value=1, max_value=8),
)
def test_no_hour_ever_holds_more_calls_than_the_cap_and_retry_after_is_when_one_fits(
    gaps: list[float], per_hour: int
) -> None:
    """A player calling again and again (each call resolved at once): the accepted calls of
    any hour are at most ``per_hour``, and a refused call made again ``retry_after`` later
    is accepted."""
    accepted: list[datetime] = []
    moment = NOW
    for gap in gaps:
        moment += timedelta(seconds=gap)
        decision = decide_call(None, accepted, moment, per_hour)
        if decision.outcome == "new":
            accepted.append(moment)
            continue
        assert decision.outcome == "refused"
        assert decision.retry_after is not None
        later = moment + timedelta(seconds=decision.retry_after)
        assert decide_call(None, accepted, later, per_hour).outcome == "new"
    for start in accepted:
        assert sum(1 for t in accepted if start <= t < start + timedelta(hours=1)) <= per_hour
