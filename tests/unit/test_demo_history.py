"""The demo venue's week of history (venue.floorplan.demo_history): every machine with an
agent ends it offline; a machine without one (a desk console) is never offline."""

from __future__ import annotations

from datetime import UTC, datetime

from venue.accounts import DeviceSpec
from venue.floorplan import demo_history


def test_a_console_without_an_agent_is_never_offline_in_the_demo_history() -> None:
    pc = DeviceSpec("pc-01", "PC 1", "pc", "pc-zone")
    console = DeviceSpec("desk-console-1", "Desk console 1", "console", "desk", agent=False)
    changes, _bookings = demo_history([pc, console], datetime(2026, 12, 1, tzinfo=UTC), UTC)
    pcs = [c.status for c in changes if c.device_id == "pc-01"]
    consoles = [c.status for c in changes if c.device_id == "desk-console-1"]
    assert pcs[-1] == "offline"
    assert consoles, "the console has a history too"
    assert "offline" not in consoles
    assert consoles[-1] == "available"
