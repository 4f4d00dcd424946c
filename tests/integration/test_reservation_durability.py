"""Reservations under crashes and several bridges: bridges run as real processes here."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from plaza.db import make_engine
from plaza.messages import Reply
from plaza.settings import Settings
from plaza.tables import CommandLog, Device, Outbox, Reservation
from tests.conftest import BridgeProcess, BrokerHandle
from tests.integration.reserving import Requester, drive, load, race
from venue.accounts import bridge_accounts

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def counts(db_url: str) -> tuple[int, int, int, list[str]]:
    engine = make_engine(db_url)
    try:
        async with AsyncSession(engine) as session:
            reservations = (await session.exec(select(func.count()).select_from(Reservation))).one()
            logged = (await session.exec(select(func.count()).select_from(CommandLog))).one()
            unsent = (
                await session.exec(
                    select(func.count())
                    .select_from(Outbox)
                    .where(col(Outbox.published_at).is_(None))
                )
            ).one()
            keys = list((await session.exec(select(Reservation.request_key))).all())
            return reservations, logged, unsent, keys
    finally:
        await engine.dispose()


async def test_kill_9_with_500_commands_in_flight_loses_none_and_applies_none_twice(
    broker: BrokerHandle,
    seeded: list[str],
    bridge_settings: Settings,
    db_url: str,
    tmp_path: Path,
) -> None:
    bridge = BridgeProcess(bridge_settings, tmp_path / "bridge.log")
    await bridge.start()
    players = [Requester(broker, f"racer{i:03d}", f"racer-pw-{i:03d}") for i in range(5)]
    for p in players:
        await p.__aenter__()
    # 500 reservations that conflict with nothing: every one must succeed exactly once.
    commands = load(players, seeded, 500)
    final: dict[str, Reply] = {}
    sends = Counter[str]()

    killer_done = asyncio.Event()

    async def killer() -> None:
        while len(final) < 150:  # noqa: ASYNC110 - polls a dict the drivers fill
            await asyncio.sleep(0.005)
        bridge.kill9()  # mid-stream: commands queued, half-committed, published, not marked
        await asyncio.sleep(0.5)
        await bridge.start()
        killer_done.set()

    try:
        async with asyncio.timeout(120):
            await asyncio.gather(killer(), *(drive(*c, final, sends) for c in commands))
        assert killer_done.is_set()
        # the restarted bridge marks what it re-sent (every 0.2 s; slower on a loaded machine)
        deadline = asyncio.get_running_loop().time() + 15
        while (await counts(db_url))[2] and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110 - polls SQL
            await asyncio.sleep(0.2)
    finally:
        for p in players:
            await p.__aexit__()
        bridge.stop()

    assert len(final) == 500, "every command got a reply"
    assert all(r.ok for r in final.values()), Counter(
        r.error.code for r in final.values() if r.error
    )
    for p in players:  # every reply a client saw for one request is the same reply
        for rid, seen in p.replies.items():
            assert all(r == seen[0] for r in seen), rid
    reservations, logged, unsent, keys = await counts(db_url)
    assert reservations == 500, "no lost and no duplicated rows"
    assert logged == 500
    assert len(set(keys)) == 500
    assert unsent == 0, "every committed message was published after the restart"
    assert sum(sends.values()) > 500, "the kill really forced retries"
    print(f"kill -9: {sum(sends.values())} sends for 500 commands, 500 rows, 500 replies")


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_two_bridges_on_one_postgresql_behind_a_shared_subscription_still_have_one_winner(
    broker: BrokerHandle,
    seeded: list[str],
    bridge_settings: Settings,
    db_url: str,
    tmp_path: Path,
) -> None:
    device = seeded[0]
    engine = make_engine(db_url)
    async with AsyncSession(engine) as session:
        await session.exec(update(Device).where(col(Device.id) == device).values(auto_approve=True))
        await session.commit()
    await engine.dispose()
    bridges = []
    for i in range(2):  # accounts of its own: an account is bound to one client id
        for account in bridge_accounts(f"bridge-{i}", f"bridge-pw-{i}", f"plaza-bridge-{i}"):
            await broker.add_account(account)  # the main connection's and the intake's
        bridges.append(
            BridgeProcess(
                bridge_settings,
                tmp_path / f"bridge{i}.log",
                PLAZA_BRIDGE_ID=f"plaza-bridge-{i}",
                PLAZA_SHARED_GROUP="bridges",
                PLAZA_MQTT_USERNAME=f"bridge-{i}",
                PLAZA_MQTT_PASSWORD=f"bridge-pw-{i}",
            )
        )
    for b in bridges:
        await b.start()
    try:
        replies = await race(broker, device, 60, 5400)
    finally:
        for b in bridges:
            b.stop()
    handled = [b.log_path.read_text().count("SQL refused") for b in bridges]
    assert sum(r.ok for r in replies) == 1
    assert Counter(r.error.code for r in replies if r.error) == {"conflict": 59}
    reservations, _, _, _ = await counts(db_url)
    assert reservations == 1
    print(f"two bridges: one winner; constraint refusals per bridge {handled}")
