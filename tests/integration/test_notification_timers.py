"""Notification timers across bridge restarts: nothing skipped, nothing sent twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from plaza.db import make_engine
from plaza.settings import Settings
from plaza.tables import Notification
from tests.conftest import BridgeProcess, BrokerHandle
from tests.integration.reserving import Requester, slot

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
TIMERS = {
    "PLAZA_REMINDER_LEAD": "16",
    "PLAZA_TIMER_TICK": "0.2",
    "PLAZA_MIN_SLOT_MINUTES": "0.05",
    "PLAZA_BRIDGE_METRICS_PORT": "0",
}


async def reminders_in_sql(db_url: str) -> list[Notification]:
    engine = make_engine(db_url)
    try:
        async with AsyncSession(engine) as session:
            query = select(Notification).where(col(Notification.type) == "reservation_reminder")
            return list((await session.exec(query)).all())
    finally:
        await engine.dispose()


async def test_a_reminder_due_while_the_bridge_is_down_comes_once_after_it_returns(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str], db_url: str, tmp_path: Path
) -> None:
    bridges = [BridgeProcess(bridge_settings, tmp_path / f"b{i}.log", **TIMERS) for i in range(3)]
    await bridges[0].start()
    async with Requester(broker, "player1", broker.secrets.players["player1"]) as phone:
        # due 4 s from now; the slot starts 16 s after that, so a restarted bridge that is slow
        # to come up (2-4 s here under load) still finds the reminder due
        made = await phone.request(seeded[3], op="reserve", **slot(20, 5))
        assert made.ok, made
        assert made.reservation is not None
        bridges[0].kill9()  # down before the reminder is due (start - 16 s)
        await asyncio.sleep(5)  # the due time passes while no bridge runs
        await bridges[1].start()
        note = await phone.notification("reservation_reminder", timeout=5)
        assert note.reservation is not None
        assert note.reservation.id == made.reservation.id
        bridges[1].kill9()  # killed right after sending it
        await bridges[2].start()
        await asyncio.sleep(1.5)  # several ticks of the new bridge inside the lead time
        sent = [n for n in phone.notifications if n.type == "reservation_reminder"]
        bridges[2].stop()
    # The outbox is at-least-once: a bridge killed between publishing a row and marking it
    # sent publishes it again on start, byte for byte (same id, same seq). Clients drop a seq
    # they have seen, so the player sees one reminder; SQL holds one.
    assert len({(n.id, n.seq) for n in sent}) == 1
    rows = await reminders_in_sql(db_url)
    assert [(r.user, r.reservation_id) for r in rows] == [("player1", made.reservation.id)]
