"""GET /admin/utilization's figures (plaza.history over plaza.utilization) for a small week
counted by hand, on SQLite and PostgreSQL; the reads' plans are in test_query_plans.py.

The week: Monday 2025-03-10 00:00 to Monday 2025-03-17 00:00 in Seoul (15:00 UTC the day
before). Zone ``a`` has two PCs, zone ``b`` one VR booth with no history at all. All times
below are UTC.

- a1: in use since 14:00 on the 9th (before the window) until 15:30: 30 min in the first
  hour, not a session (it began before the window); 10:00-10:05 on the 11th (a short
  session); 12:00-14:00 on the 12th (120 min); from 14:30 on the 16th, still going at the end
  (30 min, not a session).
- a2: available since the 1st; in use 12:30-13:30 on the 12th (60 min), with a repeated
  ``in_use`` row at 13:00 (the online flag changed: one run).
- reservations: a1 completed 12:00-14:00 on the 12th; a2 a no-show 09:00-10:00 on the 13th;
  b1 checked in 09:00-09:30 on the 14th; a1 cancelled on the 13th (nothing); a2 approved from
  14:30 on the 16th (30 min inside, not decided); a1 completed 14:00-15:30 on the 9th (30 min
  inside, its outcome before the window).

So: 3 sessions (5, 120, 60 min: average 61.67, one short); 3 decided, 1 no-show; zone a in
use 30 + 5 + 90 + 90 + 30 = 245 machine-minutes; on Wednesday 21:00 in Seoul (12:00 UTC) the
whole floor is 90 of 180 machine-minutes in use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from plaza import history
from plaza.db import make_engine, migrate
from plaza.tables import Device, DeviceStatusChange, Reservation, table_of

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SEOUL = ZoneInfo("Asia/Seoul")
START = datetime(2025, 3, 9, 15, 0, tzinfo=UTC)
END = START + timedelta(days=7)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 3, day, hour, minute, tzinfo=UTC)


CHANGES = [
    ("a1", at(9, 14), "in_use"),
    ("a1", at(9, 15, 30), "available"),
    ("a1", at(11, 10), "in_use"),
    ("a1", at(11, 10, 5), "available"),
    ("a1", at(12, 12), "in_use"),
    ("a1", at(12, 14), "offline"),
    ("a1", at(16, 14, 30), "in_use"),
    ("a2", at(1, 0), "available"),
    ("a2", at(12, 12, 30), "in_use"),
    ("a2", at(12, 13), "in_use"),
    ("a2", at(12, 13, 30), "available"),
]
BOOKINGS = [
    ("a1", at(12, 12), at(12, 14), "completed"),
    ("a2", at(13, 9), at(13, 10), "no_show"),
    ("b1", at(14, 9), at(14, 9, 30), "checked_in"),
    ("a1", at(13, 9), at(13, 10), "cancelled"),
    ("a2", at(16, 14, 30), at(16, 15, 30), "approved"),
    ("a1", at(9, 14), at(9, 15, 30), "completed"),
]


@pytest.fixture
async def week(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(db_url)
    await migrate(engine)
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(table_of(Device)),
            [
                {"id": i, "name": i, "kind": k, "zone": z}
                for i, k, z in (("a1", "pc", "a"), ("a2", "pc", "a"), ("b1", "vr", "b"))
            ],
        )
        await conn.execute(
            sa.insert(table_of(DeviceStatusChange)),
            [
                {"device_id": d, "at": t, "status": s, "online": True, "state": "idle", "epoch": 1}
                for d, t, s in CHANGES
            ],
        )
        await conn.execute(
            sa.insert(table_of(Reservation)),
            [
                {
                    "id": f"r{n}",
                    "device_id": d,
                    "player": "player1",
                    "starts_at": a,
                    "ends_at": b,
                    "status": s,
                    "code": "123456",
                    "request_key": f"player1:r{n}",
                }
                for n, (d, a, b, s) in enumerate(BOOKINGS)
            ],
        )
    yield engine
    await engine.dispose()


def minutes(seconds: float) -> float:
    return round(seconds / 60, 3)


async def test_the_figures_of_a_hand_counted_week(week: AsyncEngine) -> None:
    async with week.connect() as conn:
        got = await history.read(conn, start=START, end=END, zone=None, tz=SEOUL)
    assert (got.sessions, got.short_sessions) == (3, 1)
    assert got.average_session == pytest.approx(185 * 60 / 3)
    assert (got.decided, got.no_shows) == (3, 1)
    assert got.no_show_rate == pytest.approx(1 / 3)
    zone_a = {
        r.start: (minutes(r.in_use), minutes(r.booked), round(r.occupancy, 4))
        for r in got.hours
        if r.zone == "a" and (r.in_use or r.booked)
    }
    assert zone_a == {
        at(9, 15).timestamp(): (30.0, 30.0, 0.25),
        at(11, 10).timestamp(): (5.0, 0.0, round(5 / 120, 4)),
        at(12, 12).timestamp(): (90.0, 60.0, 0.75),
        at(12, 13).timestamp(): (90.0, 60.0, 0.75),
        at(13, 9).timestamp(): (0.0, 60.0, 0.0),
        at(16, 14).timestamp(): (30.0, 30.0, 0.25),
    }
    assert sum(r.in_use for r in got.hours if r.zone == "a") == 245 * 60
    b = [r for r in got.hours if r.zone == "b"]
    assert len(b) == 7 * 24
    assert {r.machines for r in b} == {1}
    assert sum(r.in_use for r in b) == 0
    assert sum(r.booked for r in b) == 30 * 60
    cells = {(c.weekday, c.hour): c.occupancy for c in got.heatmap}
    assert len(cells) == 7 * 24
    assert cells[(2, 21)] == pytest.approx(90 / 180)  # Wednesday 21:00 in Seoul
    assert cells[(0, 0)] == pytest.approx(30 / 180)  # Monday 00:00
    assert cells[(6, 23)] == pytest.approx(30 / 180)  # Sunday 23:00: still going


async def test_one_zone_counts_only_its_machines_and_their_reservations(
    week: AsyncEngine,
) -> None:
    async with week.connect() as conn:
        got = await history.read(conn, start=START, end=END, zone="a", tz=SEOUL)
    assert {r.zone for r in got.hours} == {"a"}
    assert (got.decided, got.no_shows, got.sessions) == (2, 1, 3)
    cells = {(c.weekday, c.hour): c.occupancy for c in got.heatmap}
    assert cells[(2, 21)] == pytest.approx(90 / 120)


async def test_a_window_inside_a_session_counts_its_hours_but_not_the_session(
    week: AsyncEngine,
) -> None:
    async with week.connect() as conn:
        got = await history.read(conn, start=at(12, 13), end=at(12, 14), zone="a", tz=SEOUL)
    assert [(minutes(r.in_use), r.occupancy) for r in got.hours] == [(90.0, 0.75)]
    assert got.sessions == 0, "both sessions began before the window"
