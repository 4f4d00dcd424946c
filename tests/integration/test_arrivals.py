"""The simulator's players (plaza_sim/arrivals.py, issue 18) book over MQTT as a phone does,
the bridge locks the machine for the slot, and the player walks up and types the code: real
broker, real bridge, a simulated machine, SQLite and PostgreSQL. A no-show's seat is released
by the no-show rule. Lead times are seconds here (settings)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.app import create_app
from plaza.db import make_engine
from plaza.settings import Settings
from plaza.tables import Reservation
from plaza_sim.arrivals import ArrivalStats, Player, PlayerLink, PlayerPlan
from plaza_sim.desk import Desk
from plaza_sim.machine import Machine
from tests.conftest import BrokerHandle, Watch, running_bridge
from tests.integration.reserving import Requester, as_admin, slot
from tests.integration.test_floor_lock import (
    LEAD,
    auto_approve,
    command,
    commands,
    floor,
    floor_settings,
)
from venue.broker import free_port

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def plan(**changes: object) -> PlayerPlan:
    """One short booking: it starts a little after the lock lead, so the machine is locked
    for it first, and lasts 30 s; the player is punctual and comes unless told otherwise."""
    base: dict[str, object] = {
        "book_ahead": LEAD + 2,
        "slot_minutes": (0.5, 0.5),
        "pace": 1.0,
        "no_show": 0.0,
        "late": 0.0,
        "wrong_code": 0.0,
        "early_by": 0.5,
    }
    return PlayerPlan(**{**base, **changes})  # type: ignore[arg-type]


def simulated_player(broker: BrokerHandle, m: Machine, player_plan: PlayerPlan) -> Player:
    name = "player1"
    return Player(
        name,
        broker.secrets.players[name],
        PlayerLink(broker.host, broker.port),
        [m],
        player_plan,
        ArrivalStats(),
        random.Random(18),
    )


@contextlib.asynccontextmanager
async def playing(p: Player) -> AsyncIterator[asyncio.Task[None]]:
    """The player's one booking running in a task (it lasts to the slot's end: stopped
    once the test has seen what it waits for)."""
    task = asyncio.get_running_loop().create_task(p.run(bookings=1))
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def rows_of(db_url: str, user: str) -> list[Reservation]:
    engine = make_engine(db_url, reader=True)
    try:
        async with AsyncSession(engine) as session:
            query = select(Reservation).where(col(Reservation.player) == user)
            return list((await session.exec(query)).all())
    finally:
        await engine.dispose()


async def status_becomes(db_url: str, user: str, status: str, timeout: float = 15) -> Reservation:
    async with asyncio.timeout(timeout):
        while True:
            rows = await rows_of(db_url, user)
            if len(rows) == 1 and rows[0].status == status:
                return rows[0]
            await asyncio.sleep(0.1)


async def stats_show(p: Player, field: str, value: int = 1, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while getattr(p.stats, field) < value:  # noqa: ASYNC110 - the player's own counters
            await asyncio.sleep(0.05)


def session_commands(watch: Watch, device: str) -> list[tuple[str, str | None]]:
    return [
        (c.cmd.value, c.reason)
        for c in commands(watch, device)
        if c.cmd.value in ("lock", "unlock", "start_session", "end_session")
    ]


async def test_a_simulated_player_books_arrives_mistypes_then_checks_in_with_the_code(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str], db_url: str, tmp_path: Path
) -> None:
    device = seeded[0]
    await auto_approve(db_url, device)
    async with (
        running_bridge(floor_settings(bridge_settings)),
        floor(broker, device, tmp_path) as (m, watch),
    ):
        p = simulated_player(broker, m, plan(wrong_code=1.0))
        async with playing(p):
            await watch.wait_for(command(device, "lock", "reservation"), timeout=15)
            (booked,) = await rows_of(db_url, "player1")
            assert booked.status == "approved", "the machine auto-approves"
            assert booked.request_key.startswith("player1:"), "booked by the player's account"
            await watch.wait_for(command(device, "start_session"), timeout=15)
            row = await status_becomes(db_url, "player1", "checked_in")
            await stats_show(p, "checked_in")
        assert row.id == booked.id
        assert m.session is not None
        assert m.session.reservation_code == booked.code
        assert m.started_code == booked.code
        names = session_commands(watch, device)
        refused = next(i for i, (n, r) in enumerate(names) if n == "end_session")
        assert (names[refused][1] or "").startswith("check-in refused"), names
        assert names.index(("lock", "reservation")) < refused, "locked before the player came"
        assert names[refused + 1 :] == [("unlock", "reservation"), ("start_session", None)]
        assert (p.stats.booked, p.stats.wrong_codes, p.stats.checked_in) == (1, 1, 1)
        assert not m.locked


async def test_a_simulated_no_show_leaves_the_seat_to_the_no_show_rule(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str], db_url: str, tmp_path: Path
) -> None:
    device = seeded[1]
    await auto_approve(db_url, device)
    async with (
        running_bridge(floor_settings(bridge_settings, no_show_grace=1.0)),
        floor(broker, device, tmp_path) as (m, watch),
    ):
        p = simulated_player(broker, m, plan(no_show=1.0))
        async with playing(p):
            await watch.wait_for(command(device, "lock", "reservation"), timeout=15)
            mark = watch.mark()
            await watch.wait_for(command(device, "unlock", "reservation"), since=mark, timeout=15)
            row = await status_becomes(db_url, "player1", "no_show")
            await stats_show(p, "no_shows")
            async with asyncio.timeout(15):  # the release's notification reaches the player
                while p.holding is None or p.holding.status != "no_show":  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert not m.locked
        assert row.locked_at is not None, "the seat was kept for the player"
        assert "start_session" not in [n for n, _ in session_commands(watch, device)]
        assert (p.stats.booked, p.stats.no_shows, p.stats.checked_in) == (1, 1, 0)


async def test_a_simulated_player_waits_for_staff_to_approve_then_checks_in(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str], db_url: str, tmp_path: Path
) -> None:
    device = seeded[2]  # not auto-approved: the booking is pending until staff approve it
    async with (
        running_bridge(floor_settings(bridge_settings)),
        floor(broker, device, tmp_path) as (m, watch),
        Requester(broker, "api", broker.secrets.api) as staff,
    ):
        p = simulated_player(broker, m, plan(book_ahead=LEAD + 4))
        async with playing(p):
            pending = await status_becomes(db_url, "player1", "pending")
            approved = await staff.request(
                device, **as_admin({"op": "approve", "reservation_id": pending.id})
            )
            assert approved.ok
            await watch.wait_for(command(device, "lock", "reservation"), timeout=15)
            await status_becomes(db_url, "player1", "checked_in")
            await stats_show(p, "checked_in")
        assert (p.stats.approved_later, p.stats.not_approved, p.stats.checked_in) == (1, 0, 1)


async def test_a_simulated_player_never_approved_cancels_at_the_slots_start(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str], db_url: str, tmp_path: Path
) -> None:
    device = seeded[3]
    async with (
        running_bridge(floor_settings(bridge_settings)),
        floor(broker, device, tmp_path) as (m, _watch),
    ):
        p = simulated_player(broker, m, plan(book_ahead=2))
        async with playing(p):
            await status_becomes(db_url, "player1", "cancelled")
            await stats_show(p, "not_approved")
        assert (p.stats.booked, p.stats.checked_in) == (1, 0)
        assert m.state.value == "idle"


@contextlib.asynccontextmanager
async def serving_api(settings: Settings) -> AsyncIterator[str]:
    """The real api over real HTTP (uvicorn, its lifespan and broker link), as `plaza up`
    runs it; its base URL."""
    port = free_port()
    app = create_app(settings.model_copy(update={"http_port": port}))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    task = asyncio.get_running_loop().create_task(server.serve())
    try:
        async with asyncio.timeout(15):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
                await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)


async def test_the_simulated_desk_approves_the_players_bookings_over_rest_and_no_one_elses(
    broker: BrokerHandle,
    bridge_settings: Settings,
    api_settings: Settings,
    seeded: list[str],
    db_url: str,
    tmp_path: Path,
) -> None:
    device = seeded[4]  # not auto-approved
    async with (
        running_bridge(floor_settings(bridge_settings)),
        serving_api(api_settings) as api,
        floor(broker, device, tmp_path) as (m, _watch),
        Requester(broker, "player2", broker.secrets.players["player2"]) as person,
    ):
        theirs = await person.request(seeded[5], op="reserve", **slot(3600, 30))
        assert theirs.reservation is not None
        assert theirs.reservation.status == "pending"
        desk = Desk(api, "admin", broker.secrets.admin, frozenset({"player1"}), every=1.0)
        p = simulated_player(broker, m, plan(book_ahead=LEAD + 4))
        async with playing(p), desk_running(desk):
            await status_becomes(db_url, "player1", "checked_in", timeout=20)
            await stats_show(p, "checked_in")
        assert desk.stats.approved == 1
        assert p.stats.approved_later == 1
        (still,) = await rows_of(db_url, "player2")
        assert still.status == "pending", "a person's booking is left for a person"


@contextlib.asynccontextmanager
async def desk_running(desk: Desk) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(desk.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
