"""The committer's and the board's reservation lookups seek the (device_id, ends_at) and
(player, ends_at) indexes on SQLite, so their cost follows what one machine or player holds,
not the size of the table. A status index looks selective to SQLite's planner without ANALYZE
(it took one before, scanning every live reservation on every batch); ``is_active`` keeps it
out of reach."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, event
from sqlmodel import SQLModel

from bridge.sql.core import CoreBatchSql
from bridge.sql.sqlite import _SQL, sqlite_time

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)
DEVICES = [f"pc-{i}" for i in range(64)]  # a busy batch
PLAYERS = [f"player-{i}" for i in range(64)]


def assert_seeks_by_machine_or_player(plan: list[str]) -> None:
    on_reservations = [step for step in plan if "reservation" in step]
    assert on_reservations, plan
    for step in on_reservations:
        assert step.startswith("SEARCH reservation USING"), plan
        assert "ix_reservation_device_ends" in step or "ix_reservation_player_ends" in step, plan


def test_core_lookups_seek_a_machine_or_player_index_and_never_scan(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'plans.db'}")
    SQLModel.metadata.create_all(engine)
    seen: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def grab(
        _conn: Connection, _cursor: Any, statement: str, params: Any, _ctx: Any, _many: bool
    ) -> None:
        seen.append((statement, params))

    with engine.begin() as conn:
        sql = CoreBatchSql(conn)
        sql.near(DEVICES, PLAYERS, NOW, NOW + timedelta(hours=1))
        sql.held(PLAYERS, NOW)
        sql.board_rows(DEVICES, NOW, NOW + timedelta(hours=24))
    assert len(seen) == 3
    raw = engine.raw_connection()
    try:
        for statement, params in seen:
            plan = [row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + statement, params)]
            assert_seeks_by_machine_or_player(plan)
    finally:
        raw.close()
        engine.dispose()


def test_sqlite_driver_lookups_seek_a_machine_or_player_index_and_never_scan(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'plans.db'}")
    SQLModel.metadata.create_all(engine)
    engine.dispose()
    raw = sqlite3.connect(tmp_path / "plans.db")
    params = {
        "devices": json.dumps(DEVICES),
        "players": json.dumps(PLAYERS),
        "after": sqlite_time(NOW),
        "before": sqlite_time(NOW + timedelta(hours=1)),
        "now": sqlite_time(NOW),
    }
    try:
        for statement in (_SQL.near, _SQL.held, _SQL.board):
            used = {k: v for k, v in params.items() if f":{k}" in statement}
            plan = [row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + statement, used)]
            assert_seeks_by_machine_or_player(plan)
    finally:
        raw.close()


@pytest.mark.anyio
@pytest.mark.parametrize("zoned", [False, True])
async def test_the_utilization_reads_never_scan_the_history_or_the_reservations(
    tmp_path: Path, zoned: bool
) -> None:
    """plaza.history: the last change before the window is one probe of (device_id, at) per
    machine, the window a range of the covering (at, device_id, status) index (no table
    read, no sort), the reservations a range of a time index."""
    from zoneinfo import ZoneInfo

    from plaza import history
    from plaza.db import make_engine, migrate

    url = f"sqlite+aiosqlite:///{tmp_path / 'plans.db'}"
    writer = make_engine(url)
    await migrate(writer)
    await writer.dispose()
    engine = make_engine(url, reader=True)  # as the api reads
    seen: list[tuple[str, Any]] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def grab(
        _conn: Connection, _cursor: Any, statement: str, params: Any, _ctx: Any, _many: bool
    ) -> None:
        if statement.startswith("SELECT"):
            seen.append((statement, params))

    bound = {"start": NOW - timedelta(days=31), "end": NOW}
    async with engine.connect() as conn:
        await history.read(
            conn,
            start=bound["start"],
            end=bound["end"],
            zone="pc-zone" if zoned else None,
            tz=ZoneInfo("Asia/Seoul"),
        )
        # the window's rows are read from the driver itself (no SQLAlchemy event): its SQL
        window = history.statements("sqlite", zoned)[2]
        seen.insert(2, history.driver_statement(window, conn.dialect, bound))
    await engine.dispose()
    assert len(seen) == 4
    raw = sqlite3.connect(tmp_path / "plans.db")
    try:
        plans = [
            [row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + statement, params)]
            for statement, params in seen
        ]
    finally:
        raw.close()
    _machines, before, inside, bookings = plans
    for plan in plans:
        assert not [s for s in plan if s.startswith("SCAN device_status_change")], plans
        assert not [s for s in plan if s.startswith("SCAN reservation")], plans
    probes = [s for s in before if "earlier" in s]
    assert len(probes) == 2, before
    assert all("ix_device_status_change_device_at (device_id=? AND at<?)" in s for s in probes)
    assert inside == [
        "SEARCH device_status_change USING COVERING INDEX ix_device_status_change_window "
        "(at>? AND at<?)"
    ]
    assert bookings == ["SEARCH reservation USING INDEX ix_reservation_ends_at (ends_at>?)"], (
        "a time range, never the status index (every completed reservation ever)"
    )
