"""Retention on a real database (SQLite and PostgreSQL): one pruning pass deletes what is past
its retention in every table the bridge keeps, and keeps the newest rows; with several bridges
one of them runs a pass."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.retention import Keep, Retention
from plaza.db import make_engine, migrate, session_factory
from plaza.settings import Settings
from plaza.tables import (
    Alert,
    CommandLog,
    Device,
    DeviceStatusChange,
    HelpCallRow,
    Notification,
    Outbox,
    table_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

DAY = timedelta(days=1)
#: the defaults, except where a test needs a number of its own
KEEP = Keep.from_settings(Settings())


async def fill(engine: AsyncEngine, now: datetime) -> None:
    """Rows on both sides of every retention: names say old (past it) or new (inside it)."""
    rows: dict[type, list[dict[str, object]]] = {
        Device: [{"id": m, "name": m} for m in ("pc-01", "pc-02")],
        DeviceStatusChange: [  # pc-02's only change is old: it is its newest, so it stays
            {"device_id": "pc-01", "status": "old", "at": now - KEEP.status_history - DAY},
            {"device_id": "pc-01", "status": "new", "at": now - KEEP.status_history + DAY},
            {"device_id": "pc-02", "status": "newest", "at": now - KEEP.status_history - DAY},
        ],
        CommandLog: [
            {"request_key": "p:old", "created_at": now - KEEP.commands - DAY},
            {"request_key": "p:new", "created_at": now - KEEP.commands + DAY},
        ],
        Notification: [
            {"id": "old", "seq": 1, "created_at": now - KEEP.notifications - DAY},
            {"id": "new", "seq": 2, "created_at": now - KEEP.notifications + DAY},
        ],
        Alert: [
            {"id": "old", "created_at": now - KEEP.alerts - DAY, "acknowledged_at": now},
            {"id": "new", "created_at": now - KEEP.alerts + DAY},
        ],
        HelpCallRow: [  # resolved long ago goes; one still waiting stays however old
            {"id": "old", "request_key": "a", "resolved_at": now - KEEP.alerts - DAY},
            {"id": "new", "request_key": "b", "resolved_at": now - KEEP.alerts + DAY},
            {"id": "waiting", "request_key": "c", "status": "open", "resolved_at": None},
        ],
        Outbox: [
            {"topic": "old-sent", "published_at": now - KEEP.sent_outbox - DAY},
            {"topic": "new-sent", "published_at": now - KEEP.sent_outbox + timedelta(hours=1)},
            {"topic": "old-dead", "dead_at": now - KEEP.dead_letters - DAY},
            {"topic": "new-dead", "dead_at": now - KEEP.dead_letters + DAY},
            {"topic": "unsent", "created_at": now - 400 * DAY},
        ],
    }
    defaults: dict[type, dict[str, object]] = {
        DeviceStatusChange: {"online": True, "state": "idle", "epoch": 1},
        CommandLog: {"device_id": "pc-01", "op": "reserve", "ok": True, "reply_json": "{}"},
        Notification: {
            "user": "ana",
            "type": "system_notice",
            "priority": "low",
            "title": "t",
            "message": "m",
        },
        Alert: {"type": "machine_offline", "severity": "high", "message": "m"},
        Outbox: {"payload": b"{}"},
        HelpCallRow: {
            "player": "ana",
            "device_id": "pc-01",
            "topic": "other",
            "status": "resolved",
            "created_at": now - 400 * DAY,
        },
    }
    async with engine.begin() as conn:
        for model, values in rows.items():
            for v in values:  # one at a time: in order (ids), and each with its own columns
                row = model(**{**defaults.get(model, {}), **v}).model_dump(exclude_none=True)
                await conn.execute(sa.insert(table_of(model)).values(row))


async def left(engine: AsyncEngine) -> dict[str, list[str]]:
    columns = {
        "status_history": table_of(DeviceStatusChange).c.status,
        "command_log": table_of(CommandLog).c.request_key,
        "notifications": table_of(Notification).c.id,
        "alerts": table_of(Alert).c.id,
        "outbox": table_of(Outbox).c.topic,
        "help_calls": table_of(HelpCallRow).c.id,
    }
    async with engine.connect() as conn:
        return {k: sorted((await conn.execute(sa.select(c))).scalars()) for k, c in columns.items()}


async def test_one_pass_removes_what_is_past_each_retention_and_keeps_the_newest(
    db_url: str,
) -> None:
    engine = make_engine(db_url)
    try:
        await migrate(engine)
        now = datetime.now(UTC)
        await fill(engine, now)
        retention = Retention(session_factory(engine), asyncio.Lock(), KEEP, chunk=1)
        assert await retention.prune(now) == 7
        assert await left(engine) == {
            "status_history": ["new", "newest"],
            "command_log": ["p:new"],
            "notifications": ["new"],
            "alerts": ["new"],
            "outbox": ["new-dead", "new-sent", "unsent"],
            "help_calls": ["new", "waiting"],
        }
        assert retention.pruned == {
            "command_log": 1,
            "status_history": 1,
            "notifications": 1,
            "alerts": 1,
            "outbox": 2,
            "help_calls": 1,
        }
        assert await retention.prune(now) == 0
    finally:
        await engine.dispose()


async def test_of_several_bridges_one_runs_a_pruning_pass_at_a_time(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        await migrate(engine)
        first = Retention(session_factory(engine), asyncio.Lock(), KEEP)
        second = Retention(session_factory(engine), asyncio.Lock(), KEEP)
        async with first.turn() as mine:
            assert mine
            async with second.turn() as theirs:
                # SQLite has one bridge only (several need PostgreSQL): it always prunes
                assert theirs is db_url.startswith("sqlite")
        async with second.turn() as theirs:
            assert theirs, "the lock is released with the pass"
    finally:
        await engine.dispose()
