"""The committer's and the board's reservation lookups seek the (device_id, ends_at) and
(player, ends_at) indexes on SQLite, so their cost follows what one machine or player holds,
not the size of the table. A status index looks selective to SQLite's planner without ANALYZE
(it took one before, scanning every live reservation on every batch); ``is_active`` keeps it
out of reach."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, event
from sqlmodel import SQLModel

from bridge.committer import _HELD, _NEAR
from bridge.reservations import board_slots

pytestmark = pytest.mark.integration


def test_reservation_lookups_seek_a_machine_or_player_index_and_never_scan(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'plans.db'}")
    SQLModel.metadata.create_all(engine)
    seen: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def grab(
        _conn: Connection, _cursor: Any, statement: str, params: Any, _ctx: Any, _many: bool
    ) -> None:
        seen.append((statement, params))

    now = datetime.now(UTC)
    window = {"after": now, "before": now + timedelta(hours=1)}
    devices = [f"pc-{i}" for i in range(64)]  # a busy batch
    players = [f"player-{i}" for i in range(64)]
    with engine.begin() as conn:
        conn.execute(_NEAR, {"devices": devices, "players": players, **window})
        conn.execute(_HELD, {"players": players, "now": now})
        board_slots(conn, devices, now)
    assert len(seen) == 3
    raw = engine.raw_connection()
    try:
        for statement, params in seen:
            plan = [row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + statement, params)]
            on_reservations = [step for step in plan if "reservation" in step]
            assert on_reservations, plan
            for step in on_reservations:
                assert step.startswith("SEARCH reservation USING"), (statement, plan)
                assert "ix_reservation_device_ends" in step or "ix_reservation_player_ends" in step
    finally:
        raw.close()
        engine.dispose()
