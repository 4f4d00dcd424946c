"""venue.check's pure invariants, at their edges (the integration tests break each one on a
real venue; these pin the boundaries)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.presence.board import DeviceView
from plaza.messages import BoardEntry, BoardStatus, MachineState, Slot
from venue.broker import CONFIG_SOURCE, render_config
from venue.check import (
    DeviceRow,
    ReservationRow,
    _entry_problems,
    _reachable,
    broker_port_of,
    double_bookings,
)

pytestmark = pytest.mark.unit
T0 = datetime(2026, 12, 1, 10, tzinfo=UTC)


def row(rid: str, device: str, player: str, start_h: float, end_h: float) -> ReservationRow:
    return ReservationRow(
        rid,
        device,
        player,
        T0 + timedelta(hours=start_h),
        T0 + timedelta(hours=end_h),
        "approved",
        f"system:{rid}",
        T0,
    )


def test_back_to_back_slots_are_not_a_double_booking() -> None:
    # half-open [start, end): one ends when the next begins, on one machine and for one player
    assert double_bookings([row("a", "pc-01", "p1", 0, 1), row("b", "pc-01", "p1", 1, 2)]) == []


def test_a_long_slot_overlapping_two_later_ones_is_reported_for_each() -> None:
    found = double_bookings(
        [
            row("long", "pc-01", "p1", 0, 4),
            row("x", "pc-01", "p2", 1, 2),
            row("y", "pc-01", "p3", 3, 5),
        ]
    )
    assert [(p.subject, "long" in p.message) for p in found] == [
        ("machine pc-01", True),
        ("machine pc-01", True),
    ]


def test_one_player_on_two_machines_at_once_is_reported_once_as_a_player() -> None:
    found = double_bookings([row("a", "pc-01", "p1", 0, 2), row("b", "vr-01", "p1", 1, 3)])
    assert [p.subject for p in found] == ["player p1"]


def test_the_seats_of_one_party_share_their_slot_but_not_with_the_players_other_bookings() -> None:
    seats = [
        dataclasses.replace(row(f"s{i}", f"pc-0{i}", "p1", 0, 2 + i), party_id="party1")
        for i in (1, 2, 3)
    ]
    assert double_bookings(seats) == []
    found = double_bookings([*seats, row("solo", "vr-01", "p1", 4, 6)])
    assert [(p.subject, "solo" in p.message) for p in found] == [("player p1", True)]


def test_statuses_that_can_follow_one_another() -> None:
    assert _reachable("pending") == {
        "pending",
        "approved",
        "rejected",
        "cancelled",
        "checked_in",
        "completed",
        "no_show",
    }
    assert _reachable("approved") == {"approved", "cancelled", "checked_in", "completed", "no_show"}
    assert _reachable("held") == {"held", "lapsed", *_reachable("pending")}
    assert _reachable("completed") == {"completed"}


def test_the_broker_port_is_read_from_the_config_plaza_up_rendered(tmp_path: Path) -> None:
    assert broker_port_of(tmp_path) is None
    (tmp_path / "broker").mkdir()
    (tmp_path / "broker" / "mosquitto.conf").write_text(
        render_config(
            CONFIG_SOURCE.read_text(),
            mqtt_port=18830,
            ws_port=19002,
            data_dir=tmp_path / "broker",
            plugin_path="/x.so",
        )
    )
    assert broker_port_of(tmp_path) == 18830


def test_plaza_check_takes_a_staff_managed_board_entry_as_it_is_meant() -> None:
    """A machine without an agent has no retained presence, is online on the board and in
    use while a booking checked in at the desk (also early) is its session."""
    device = DeviceRow("desk-1", "Desk 1", "console", "c", False, 3, agent=False)
    checked_in = Slot(reservation_id="r1", starts_at=2e9, ends_at=2e9 + 60, status="checked_in")
    entry = BoardEntry(
        device_id="desk-1",
        name="Desk 1",
        kind="console",
        zone="c",
        status=BoardStatus.IN_USE,
        online=True,
        state=MachineState.IDLE,
        version=3,
        next_slot=checked_in,
        ts=1.0,
        managed="staff",
    )
    view = DeviceView(
        id="desk-1",
        name="Desk 1",
        kind="console",
        zone="c",
        online=True,
        state=MachineState.IDLE,
        next_slot=checked_in,
        agent=False,
    )
    assert list(_entry_problems(entry, device, None, None, view)) == []
    with_agent = dataclasses.replace(device, agent=True)
    agent_view = dataclasses.replace(view, agent=True)
    assert list(_entry_problems(entry, with_agent, None, None, agent_view)) != []
