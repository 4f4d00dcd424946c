"""The venue floor over MQTT (issue 18): a reserved seat is kept free for its player, and
sessions end on time; real broker, real bridge, simulated machines, SQLite and PostgreSQL.

Lead times are seconds here (settings), so every clock moment comes within a test."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from plaza.db import make_engine
from plaza.messages import BoardEntry, DeviceCommand
from plaza.settings import Settings
from plaza.tables import Device, Notification, Reservation
from plaza_sim.machine import Machine
from tests.conftest import BridgeProcess, BrokerHandle, Seen, Watch, running_bridge
from tests.integration.helpers import CONSOLE, admin, api, board_of, machine, sql, start, stop
from tests.integration.reserving import Requester
from tests.integration.test_keyed_bridges import locks, make_bridge, running, settled

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
LEAD = 3.0  # PLAZA_PRE_SLOT_LOCK in these tests (seconds)
TICK = 0.2


def floor_settings(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(
        update={"pre_slot_lock": LEAD, "timer_tick": TICK, "session_end_warning": 4, **changes}
    )


async def booked(
    db_url: str,
    device: str,
    *,
    start_in: float,
    minutes: float = 30,
    status: str = "approved",
    user: str = "player1",
    rid: str = "",
) -> Reservation:
    """A reservation written straight into SQL (staff approved it, or it is checked in)."""
    now = datetime.now(UTC)
    row = Reservation(
        id=rid or f"r{time.monotonic_ns() % 10**12}",
        device_id=device,
        player=user,
        starts_at=now + timedelta(seconds=start_in),
        ends_at=now + timedelta(seconds=start_in + minutes * 60),
        status=status,
        code="424242",
        request_key=f"{user}:{rid or device}:{time.monotonic_ns()}",
    )
    engine = make_engine(db_url)
    try:
        async with AsyncSession(engine) as session:
            session.add(row)
            await session.commit()
            await session.refresh(row)
    finally:
        await engine.dispose()
    return row


async def auto_approve(db_url: str, device: str) -> None:
    engine = make_engine(db_url)
    try:
        async with AsyncSession(engine) as session:
            await session.exec(
                update(Device).where(col(Device.id) == device).values(auto_approve=True)
            )
            await session.commit()
    finally:
        await engine.dispose()


async def row_of(db_url: str, rid: str) -> Reservation:
    engine = make_engine(db_url, reader=True)
    try:
        async with AsyncSession(engine) as session:
            got = await session.get(Reservation, rid)
            assert got is not None
            return got
    finally:
        await engine.dispose()


async def notes_in_sql(db_url: str, kind: str) -> list[Notification]:
    engine = make_engine(db_url, reader=True)
    try:
        async with AsyncSession(engine) as session:
            query = select(Notification).where(col(Notification.type) == kind)
            return list((await session.exec(query)).all())
    finally:
        await engine.dispose()


def command(device: str, name: str, reason: str | None = None) -> Callable[[Seen], bool]:
    def check(seen: Seen) -> bool:
        if seen.topic != f"plaza/devices/{device}/cmd":
            return False
        cmd = DeviceCommand.model_validate_json(seen.payload)
        return cmd.cmd.value == name and (reason is None or cmd.reason == reason)

    return check


def board(device: str, check: Callable[[BoardEntry], bool]) -> Callable[[Seen], bool]:
    def match(seen: Seen) -> bool:
        return (
            seen.topic == f"plaza/board/{device}" and bool(seen.payload) and check(board_of(seen))
        )

    return match


def commands(watch: Watch, device: str, since: int = 0) -> list[DeviceCommand]:
    return [
        DeviceCommand.model_validate_json(s.payload)
        for s in watch.seen[since:]
        if s.topic == f"plaza/devices/{device}/cmd"
    ]


@asynccontextmanager
async def floor(
    broker: BrokerHandle, device: str, tmp_path: Path
) -> AsyncIterator[tuple[Machine, Watch]]:
    """A simulated machine online, and a watch on its commands, board and the admin alerts."""
    m = machine(broker, device, tmp_path)
    task = await start(m)
    topics = [f"plaza/devices/{device}/cmd", f"plaza/board/{device}", "plaza/admin/alerts"]
    try:
        async with Watch(broker.observer(), topics) as watch:
            await watch.wait_for(board(device, lambda e: e.online and e.state.value == "idle"))
            yield m, watch
    finally:
        await stop(m, task)


# -- keeping a reserved seat free ----------------------------------------------------------------
async def test_an_idle_machine_is_locked_at_the_lead_time_and_check_in_by_code_unlocks_it(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str], db_url: str, tmp_path: Path
) -> None:
    device = seeded[0]
    async with (
        running_bridge(floor_settings(bridge_settings)),
        floor(broker, device, tmp_path) as (
            m,
            watch,
        ),
    ):
        r = await booked(db_url, device, start_in=LEAD + 2)
        locked = await watch.wait_for(command(device, "lock", "reservation"), timeout=10)
        # not before the lead time (a tick's slack), and within a few ticks of it
        lead_left = r.starts_at.timestamp() - time.time()
        assert lead_left <= LEAD + TICK
        assert lead_left > LEAD - 1.5
        assert DeviceCommand.model_validate_json(locked.payload).reservation_id == r.id
        entry = await watch.wait_for(board(device, lambda e: e.locked == "reservation"))
        assert board_of(entry).status.value == "reserved"
        await asyncio.sleep(0.2)
        assert m.locked
        assert await m.walk_in() is False, "a walk-in cannot start on a locked machine"
        assert (await row_of(db_url, r.id)).locked_at is not None
        mark = watch.mark()
        await m.start_session_with_code(r.code)
        unlock = await watch.wait_for(command(device, "unlock", "reservation"), since=mark)
        started = await watch.wait_for(command(device, "start_session"), since=mark)
        assert watch.seen.index(unlock) < watch.seen.index(started), "unlocked, then started"
        assert DeviceCommand.model_validate_json(unlock.payload).reservation_id == r.id
        await watch.wait_for(
            board(device, lambda e: e.status.value == "in_use" and e.locked is None), since=mark
        )
        assert not m.locked
        assert (await row_of(db_url, r.id)).status == "checked_in"
        lock_cmds = [c for c in commands(watch, device) if c.cmd.value == "lock"]
        assert len(lock_cmds) == 1, "locked once"
        assert watch.seen.index(locked) < mark


async def test_a_walk_in_overrunning_into_a_slot_is_warned_then_ended_under_strict(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str], db_url: str, tmp_path: Path
) -> None:
    device = seeded[1]
    settings = floor_settings(bridge_settings, walkin_policy="strict")
    async with running_bridge(settings), floor(broker, device, tmp_path) as (m, watch):
        assert await m.walk_in(minutes=90)
        await watch.wait_for(board(device, lambda e: e.state.value == "in_use"))
        r = await booked(db_url, device, start_in=LEAD + 1)
        warned = await watch.wait_for(command(device, "session_warning", "reservation"), timeout=10)
        warning = DeviceCommand.model_validate_json(warned.payload)
        assert warning.minutes == 0, "the slot starts in seconds: 0 whole minutes left"
        await watch.wait_for(command(device, "lock", "reservation"))
        ended = await watch.wait_for(command(device, "end_session", "reservation"), timeout=10)
        assert ended.at >= warned.at
        assert time.time() >= r.starts_at.timestamp() - TICK, "ended at the slot's start"
        await watch.wait_for(
            board(device, lambda e: e.state.value == "idle" and e.locked == "reservation")
        )
        assert m.stats.bumped == 1
        assert m.locked
        row = await row_of(db_url, r.id)
        assert row.overrun_at is not None
        assert row.status == "approved"
        await asyncio.sleep(1)  # more ticks: nothing twice
        names = [c.cmd.value for c in commands(watch, device)]
        assert names.count("end_session") == 1
        assert names.count("session_warning") == 1


async def test_a_walk_in_overrunning_under_soft_alerts_staff_and_keeps_playing(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str], db_url: str, tmp_path: Path
) -> None:
    device = seeded[1]
    kind = device.rsplit("-", 1)[0]
    settings = floor_settings(bridge_settings, walkin_policy=f"strict,{kind}=soft")
    async with running_bridge(settings), floor(broker, device, tmp_path) as (m, watch):
        assert await m.walk_in(minutes=90)
        await watch.wait_for(board(device, lambda e: e.state.value == "in_use"))
        await booked(db_url, device, start_in=LEAD + 1)
        await watch.wait_for(command(device, "session_warning", "reservation"), timeout=10)
        alert = await watch.wait_for(
            lambda s: (
                s.topic == "plaza/admin/alerts"
                and json.loads(s.payload)["type"] == "walk_in_overrun"
            ),
            timeout=10,
        )
        assert json.loads(alert.payload)["device_id"] == device
        await asyncio.sleep(1)  # more ticks: the session is not ended, the alert not repeated
        assert "end_session" not in [c.cmd.value for c in commands(watch, device)]
        alerts = [
            s
            for s in watch.seen
            if s.topic == "plaza/admin/alerts"
            and json.loads(s.payload)["type"] == "walk_in_overrun"
        ]
        assert len(alerts) == 1
        assert m.session is not None
        assert m.session.reservation_code is None


async def test_a_no_show_release_a_cancel_and_a_move_unlock_the_machine(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str], db_url: str, tmp_path: Path
) -> None:
    device, other = seeded[2], seeded[3]
    settings = floor_settings(bridge_settings, no_show_grace=1.0)
    async with (
        running_bridge(settings),
        floor(broker, device, tmp_path) as (m, watch),
        Requester(broker, "player2", broker.secrets.players["player2"]) as p2,
    ):
        r = await booked(db_url, device, start_in=1)
        await watch.wait_for(command(device, "lock", "reservation"), timeout=10)
        mark = watch.mark()
        await watch.wait_for(command(device, "unlock", "reservation"), since=mark, timeout=10)
        assert (await row_of(db_url, r.id)).status == "no_show"
        await watch.wait_for(
            board(device, lambda e: e.locked is None and e.status.value == "available"),
            since=mark,
        )
        await asyncio.sleep(0.2)
        assert not m.locked
        assert await m.walk_in()
        # a cancel inside the lock window unlocks too (on another machine, no sim needed)
        async with Watch(broker.observer(), [f"plaza/devices/{other}/cmd"]) as cmds:
            c = await booked(db_url, other, start_in=LEAD, user="player2")
            await cmds.wait_for(command(other, "lock", "reservation"), timeout=10)
            cancelled = await p2.request(other, op="cancel", reservation_id=c.id)
            assert cancelled.ok, cancelled
            await cmds.wait_for(command(other, "unlock", "reservation"))
        # a move to another machine unlocks the old one and locks the new one in its turn
        dest = seeded[4]
        await auto_approve(db_url, dest)  # (a player's move stays approved there)
        filters = [f"plaza/devices/{other}/cmd", f"plaza/devices/{dest}/cmd"]
        async with Watch(broker.observer(), filters) as cmds:
            mv = await booked(db_url, other, start_in=LEAD, user="player2")
            await cmds.wait_for(command(other, "lock", "reservation"), timeout=10)
            mark = cmds.mark()
            moved = await p2.request(other, op="move", reservation_id=mv.id, device_id=dest)
            assert moved.ok, moved
            await cmds.wait_for(command(other, "unlock", "reservation"), since=mark)
            await cmds.wait_for(command(dest, "lock", "reservation"), since=mark, timeout=10)


# -- sessions end on time ------------------------------------------------------------------------
async def test_the_session_end_warning_comes_once_across_a_bridge_restart_with_an_extension(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str], db_url: str, tmp_path: Path
) -> None:
    free, taken = seeded[4], seeded[5]
    env = {
        "PLAZA_SESSION_END_WARNING": "6",
        "PLAZA_PRE_SLOT_LOCK": str(LEAD),
        "PLAZA_TIMER_TICK": str(TICK),
        "PLAZA_BRIDGE_METRICS_PORT": "0",
        "PLAZA_MAX_SLOT_MINUTES": "240",
    }
    bridges = [BridgeProcess(bridge_settings, tmp_path / f"b{i}.log", **env) for i in range(2)]
    # player1's session on a machine free afterwards; player2's, with player3 booked next
    ends_in = 15 / 60  # minutes: the warning is due 9 s after this
    mine = await booked(db_url, free, start_in=-600, minutes=10 + ends_in, status="checked_in")
    theirs = await booked(
        db_url, taken, start_in=-600, minutes=10 + ends_in, status="checked_in", user="player2"
    )
    after = await booked(  # a second after theirs ends: no room to extend into
        db_url, taken, start_in=theirs.ends_at.timestamp() + 1 - time.time(), user="player3"
    )
    try:
        async with (
            Requester(broker, "player1", broker.secrets.players["player1"]) as p1,
            Requester(broker, "player2", broker.secrets.players["player2"]) as p2,
            Watch(
                broker.observer(), [f"plaza/devices/{free}/cmd", f"plaza/devices/{taken}/cmd"]
            ) as watch,
        ):
            await bridges[0].start()
            note = await p1.notification("session_ending", timeout=10)
            warned_at = time.time()
            assert note.priority.value == "high"
            assert note.reservation is not None
            assert note.reservation.id == mine.id
            # at the lead time: 6 s before the end, within a tick or two
            assert 4.5 < mine.ends_at.timestamp() - warned_at <= 6 + TICK
            assert note.extend is not None
            assert note.extend.reservation_id == mine.id
            assert note.extend.until == pytest.approx(mine.ends_at.timestamp() + 3600, abs=0.01)
            assert note.next_starts_at is None
            other = await p2.notification("session_ending", timeout=5)
            assert other.extend is None
            assert other.next_starts_at == pytest.approx(after.starts_at.timestamp(), abs=0.01)
            await watch.wait_for(command(free, "session_warning", "slot_ending"))
            await watch.wait_for(command(taken, "session_warning", "slot_ending"))
            bridges[0].kill9()
            await bridges[1].start()
            await asyncio.sleep(1.5)  # several ticks of the new bridge inside the lead time
            sent = [n for n in p1.notifications if n.type == "session_ending"]
            assert len({(n.id, n.seq) for n in sent}) == 1, "warned once"
            assert len(await notes_in_sql(db_url, "session_ending")) == 2
            warnings = [c for c in commands(watch, free) if c.cmd.value == "session_warning"]
            assert len({c.ts for c in warnings}) == 1
            # the offer is taken: extend to its end, the machine hears the new end
            longer = await p1.request(
                free, op="extend", reservation_id=mine.id, ends_at=note.extend.until
            )
            assert longer.ok, longer
            await watch.wait_for(command(free, "extend_session"))
            assert (await row_of(db_url, mine.id)).ending_warned_at is None, "warned again later"
    finally:
        for b in bridges:
            b.stop()


# -- several bridges, keyed routing: the clock is the leader's ----------------------------------
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_with_keyed_bridges_the_lock_and_the_end_warning_come_once_also_after_failover(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str], db_url: str, tmp_path: Path
) -> None:
    kept, playing = seeded[0], seeded[1]
    env = {"PLAZA_PRE_SLOT_LOCK": str(LEAD), "PLAZA_SESSION_END_WARNING": "6"}
    bridges = [await make_bridge(broker, bridge_settings, tmp_path, i, **env) for i in range(2)]
    filters = [f"plaza/devices/{kept}/cmd", f"plaza/devices/{playing}/cmd"]
    async with (
        running(bridges),
        Requester(broker, "player1", broker.secrets.players["player1"]) as p1,
        Watch(broker.observer(), filters) as watch,
    ):
        await settled(db_url, 2)
        await booked(db_url, kept, start_in=LEAD + 2, user="player2")
        await booked(db_url, playing, start_in=-600, minutes=10 + 8 / 60, status="checked_in")
        await watch.wait_for(command(kept, "lock", "reservation"), timeout=10)
        await p1.notification("session_ending", timeout=10)
        await watch.wait_for(command(playing, "session_warning", "slot_ending"))
        _, leader = await locks(db_url)
        next(b for b in bridges if b.env["PLAZA_BRIDGE_ID"] == leader).kill9()
        await settled(db_url, 1)
        await asyncio.sleep(1.5)  # several ticks of the new leader inside both windows
    locked = [c for c in commands(watch, kept) if c.cmd.value == "lock"]
    warned = [c for c in commands(watch, playing) if c.cmd.value == "session_warning"]
    assert len({c.ts for c in locked}) == 1, "locked once (an outbox replay repeats it as is)"
    assert len({c.ts for c in warned}) == 1
    assert len({(n.id, n.seq) for n in p1.notifications if n.type == "session_ending"}) == 1
    assert len(await notes_in_sql(db_url, "session_ending")) == 1


async def test_a_staff_managed_console_in_use_when_its_slot_starts_alerts_staff_under_strict(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str], db_url: str
) -> None:
    """A machine without an agent has nothing to lock, warn or end: when staff have it in
    use (a walk-in) as a booking starts, staff get walk_in_overrun whatever the policy, and no
    lock, warning or end goes to its empty cmd topic (a no-show's unlock may: harmless)."""
    assert CONSOLE in seeded
    await sql(db_url, update(Device).where(col(Device.id) == CONSOLE).values(agent=False))
    topics = [f"plaza/devices/{CONSOLE}/cmd", f"plaza/board/{CONSOLE}", "plaza/admin/alerts"]
    settings = floor_settings(bridge_settings, walkin_policy="strict")
    async with (
        running_bridge(settings),
        api(broker) as desk,
        Watch(broker.observer(), topics) as watch,
    ):
        in_use = await admin(desk, op="device_state", device_id=CONSOLE, state="in_use")
        assert in_use.ok, in_use
        await watch.wait_for(board(CONSOLE, lambda e: e.status.value == "in_use"))
        r = await booked(db_url, CONSOLE, start_in=LEAD + 1)
        alert = await watch.wait_for(
            lambda s: (
                s.topic == "plaza/admin/alerts"
                and json.loads(s.payload)["type"] == "walk_in_overrun"
            ),
            timeout=10,
        )
        body = json.loads(alert.payload)
        assert body["device_id"] == CONSOLE
        assert "staff-managed" in body["message_en"]
        await watch.wait_for(board(CONSOLE, lambda e: e.locked == "reservation"))
        await asyncio.sleep(1)  # more ticks: one alert, and nothing to lock, warn or end sent
        sent = {c.cmd.value for c in commands(watch, CONSOLE)}
        assert not sent & {"lock", "session_warning", "end_session"}, sent
        alerts = [
            s
            for s in watch.seen
            if s.topic == "plaza/admin/alerts"
            and json.loads(s.payload)["type"] == "walk_in_overrun"
        ]
        assert len(alerts) == 1
        row = await row_of(db_url, r.id)
        assert row.overrun_at is not None
        assert row.locked_at is not None
