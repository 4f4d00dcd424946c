"""The venue floor over MQTT (issue 18): players call staff (deduplicated, capped per hour, the
call following its player, staff's steps reaching the player) and a machine without an agent
(booked, checked in at the desk, completed, never shown offline); real broker, real bridge,
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import col

from plaza.messages import AdminAlert, BoardStatus
from plaza.settings import Settings
from plaza.tables import Device, HelpCallRow, Reservation
from tests.conftest import BrokerHandle, RunningService, Watch, running_bridge
from tests.integration.helpers import CONSOLE, admin, api, board_of, code_of, player, rows, sql
from tests.integration.reserving import as_admin
from venue.up import init_venue

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

PER_HOUR = 3


@pytest.fixture
def bridge_settings(bridge_settings: Settings) -> Settings:
    return bridge_settings.model_copy(update={"help_per_hour": PER_HOUR, "outage_grace": 0.2})


@pytest.fixture
async def bridge(
    bridge_settings: Settings, seeded: list[str], db_url: str
) -> AsyncIterator[RunningService]:
    """The bridge, started on a venue whose console has no agent (set in SQL before, as the
    seed of `plaza up` writes it)."""
    assert CONSOLE in seeded
    await sql(db_url, update(Device).where(col(Device.id) == CONSOLE).values(agent=False))
    async with running_bridge(bridge_settings) as running:
        yield running


def alerts_of(watch: Watch, kind: str) -> list[AdminAlert]:
    found = [
        AdminAlert.model_validate_json(s.payload)
        for s in watch.seen
        if s.payload and s.topic.endswith("/admin/alerts")
    ]
    return [a for a in found if a.type == kind]


async def alert(watch: Watch, kind: str, timeout: float = 5.0) -> AdminAlert:
    seen = await watch.wait_for(
        lambda s: s.topic.endswith("/admin/alerts") and json.loads(s.payload).get("type") == kind,
        timeout,
    )
    return AdminAlert.model_validate_json(seen.payload)


async def test_a_second_call_returns_the_open_one_and_the_hourly_cap_refuses_with_retry_after(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str], db_url: str
) -> None:
    device = seeded[0]
    async with (
        player(broker) as p1,
        api(broker) as desk,
        Watch(broker.observer(), [broker.topics.admin_alerts]) as alerts,
    ):
        first = await p1.venue(op="call_staff", device_id=device, topic="hardware", message="no")
        assert first.ok, first
        assert first.help is not None
        assert (first.help.status, first.help.device_id, first.help.user) == (
            "open",
            device,
            "player1",
        )
        raised = await alert(alerts, "help_requested")
        assert (raised.device_id, raised.severity.value) == (device, "high")
        assert "player1" in raised.message
        assert raised.message_en
        again = await p1.venue(op="call_staff", device_id=seeded[1], topic="other")
        assert again.help is not None
        assert again.help.id == first.help.id, "one open call at a time: the same one"
        # the same request id again: the same answer
        retry = {"request_id": "c-retry", "op": "call_staff", "device_id": device}
        await p1.send_venue({**retry, "topic": "software"})
        assert (await p1.reply("c-retry")).help is not None
        calls = [first.help.id]
        for _ in range(PER_HOUR - 1):  # resolve, call again: up to the hourly cap
            done = await admin(desk, op="help_resolve", help_id=calls[-1], author="staff1")
            assert done.ok, done
            made = await p1.venue(op="call_staff", device_id=device, topic="payment")
            assert made.help is not None
            assert made.help.id not in calls
            calls.append(made.help.id)
        await admin(desk, op="help_resolve", help_id=calls[-1], author="staff1")
        over = await p1.venue(op="call_staff", device_id=device, topic="hardware")
        assert code_of(over) == "too_many_help_calls"
        assert over.error is not None
        assert over.error.retry_after is not None
        assert 3000 < over.error.retry_after <= 3600
        unknown = await p1.venue(op="call_staff", device_id="nope", topic="hardware")
        assert code_of(unknown) == "not_found"
        missing = await p1.venue(op="call_staff", device_id=device)
        assert code_of(missing) == "invalid"
        long = await p1.venue(op="call_staff", device_id=device, topic="other", message="x" * 281)
        assert code_of(long) == "invalid"
        await alerts.wait_for(
            lambda s: b"help_resolved" in s.payload and calls[-1].encode() in s.payload
        )
    assert len(alerts_of(alerts, "help_requested")) == PER_HOUR, "no alert for a duplicate"
    stored = await rows(db_url, HelpCallRow)
    assert sorted(r.id for r in stored) == sorted(calls)


async def test_staff_acknowledge_and_resolve_and_the_player_hears_each_step_once(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str]
) -> None:
    async with player(broker, "player2") as p2, api(broker) as desk:
        made = await p2.venue(op="call_staff", device_id=seeded[0], topic="software")
        assert made.help is not None
        hid = made.help.id
        ack = await admin(desk, op="help_ack", help_id=hid, author="minji")
        assert ack.help is not None
        assert (ack.help.status, ack.help.acknowledged_by) == ("acknowledged", "minji")
        on_the_way = await p2.notification("help_acknowledged")
        assert on_the_way.help is not None
        assert on_the_way.help.id == hid
        assert "minji" in on_the_way.message
        twice = await admin(desk, op="help_ack", help_id=hid, author="minji")
        assert twice.ok, "a second screen's ack: the call as it is"
        done = await admin(desk, op="help_resolve", help_id=hid, author="minji")
        assert done.help is not None
        assert done.help.status == "resolved"
        resolved = await p2.notification("help_resolved")
        assert resolved.help is not None
        assert resolved.help.status == "resolved"
        late = await admin(desk, op="help_ack", help_id=hid)
        assert code_of(late) == "invalid_transition"
        assert code_of(await admin(desk, op="help_ack", help_id="ab12")) == "not_found"
        await asyncio.sleep(0.3)  # nothing more arrives for the steps already told
    told = [n.type for n in p2.notifications]
    assert told.count("help_acknowledged") == 1
    assert told.count("help_resolved") == 1


async def test_a_machine_without_an_agent_is_booked_checked_in_at_the_desk_and_completed_and_the_call_follows_the_player(  # noqa: E501
    broker: BrokerHandle, bridge: RunningService, seeded: list[str], db_url: str
) -> None:
    now = datetime.now(UTC)
    booking = Reservation(
        id="desk1",
        device_id=CONSOLE,
        player="player3",
        starts_at=now - timedelta(seconds=5),
        ends_at=now + timedelta(seconds=4),
        status="approved",
        code="777001",
        request_key="player3:seeded-desk1",
    )
    board = broker.topics.board(CONSOLE)
    async with (
        player(broker, "player3") as p3,
        api(broker) as desk,
        Watch(broker.observer(), [board, broker.topics.admin_alerts]) as watch,
    ):
        first = await watch.wait_for(lambda s: s.topic == board and bool(s.payload))
        assert board_of(first).managed == "staff"
        assert board_of(first).status is BoardStatus.AVAILABLE
        # staff say it is in use (a walk-in), then free again: through the bridge, live
        set_in_use = await admin(desk, op="device_state", device_id=CONSOLE, state="in_use")
        assert set_in_use.ok, set_in_use
        await watch.wait_for(lambda s: s.topic == board and board_of(s).status == "in_use")
        await admin(desk, op="device_state", device_id=CONSOLE, state="idle")
        agent = await admin(desk, op="device_state", device_id=seeded[0], state="fault")
        assert code_of(agent) == "has_agent"
        # the player calls from a PC, then checks in on the console at the desk
        call = await p3.venue(op="call_staff", device_id=seeded[0], topic="hardware")
        assert call.help is not None
        await sql(db_url, booking)
        await admin(desk, op="sync_device", device_id=CONSOLE)  # its board shows the slot
        mark = len(watch.seen)
        checked = await desk.request(
            CONSOLE, **as_admin({"op": "check_in", "reservation_id": "desk1"})
        )
        assert checked.ok, checked
        moved = await alert(watch, "help_moved")
        assert moved.device_id == CONSOLE
        assert seeded[0] in (moved.message_en or "")
        await watch.wait_for(
            lambda s: s.topic == board and board_of(s).status == "in_use", since=mark
        )
        # the slot ends: completed as on any machine, the console free again
        await p3.notification("reservation_completed", timeout=10)
        await watch.wait_for(
            lambda s: s.topic == board and board_of(s).status == "available", since=mark
        )
        # a fault staff set while a booking is near pages nobody through the outage watch
        soon = now + timedelta(minutes=10)
        later = Reservation(
            id="desk2",
            device_id=CONSOLE,
            player="player2",
            starts_at=soon,
            ends_at=soon + timedelta(minutes=30),
            status="approved",
            code="777002",
            request_key="player2:seeded-desk2",
        )
        await sql(db_url, later)
        await admin(desk, op="device_state", device_id=CONSOLE, state="fault", fault="pad")
        await watch.wait_for(lambda s: s.topic == board and board_of(s).status == "fault")
        await asyncio.sleep(1.0)  # five outage ticks past the grace
    (stored,) = [r for r in await rows(db_url, HelpCallRow) if r.player == "player3"]
    assert stored.device_id == CONSOLE
    (done,) = [r for r in await rows(db_url, Reservation) if r.id == "desk1"]
    assert done.status == "completed"
    entries = [board_of(s) for s in watch.seen if s.topic == board and s.payload]
    assert entries
    assert all(e.status is not BoardStatus.OFFLINE and e.online for e in entries)
    assert all(e.managed == "staff" for e in entries)
    assert not alerts_of(watch, "device_down_reserved")


def test_the_demo_venue_seeds_consoles_without_an_agent_and_the_simulator_gets_none(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path}/v.db")
    _, device_ids = init_venue(settings, 3, consoles=2)
    assert device_ids[-2:] == ["desk-console-1", "desk-console-2"]
    agents = json.loads((tmp_path / "devices.json").read_text())
    assert sorted(agents) == sorted(device_ids[:3]), "the simulator starts only the agents"
    stored = asyncio.run(rows(settings.db_url, Device))
    assert {d.id for d in stored if not d.agent} == {"desk-console-1", "desk-console-2"}
    assert all(d.agent for d in stored if d.id in agents)
