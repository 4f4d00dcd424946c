"""The outbox keeps what is unsent and prunes what was sent long ago."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from bridge.link import Link
from bridge.metrics import BridgeMetrics
from bridge.outbox import OutboxPublisher
from plaza.db import make_engine, migrate, session_factory
from plaza.tables import Outbox

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_prune_deletes_rows_sent_long_ago_and_never_unsent_ones(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        await migrate(engine)
        now = datetime.now(UTC)
        async with AsyncSession(engine) as session:
            session.add_all(
                [
                    Outbox(topic="t/old-sent", payload=b"1", published_at=now - timedelta(days=2)),
                    Outbox(topic="t/new-sent", payload=b"2", published_at=now - timedelta(hours=1)),
                    Outbox(topic="t/unsent", payload=b"3", created_at=now - timedelta(days=3)),
                ]
            )
            await session.commit()
        publisher = OutboxPublisher(session_factory(engine), Link(BridgeMetrics()), asyncio.Lock())
        assert await publisher.prune(timedelta(days=1)) == 1
        async with AsyncSession(engine) as session:
            left = sorted(o.topic for o in (await session.exec(select(Outbox))).all())
        assert left == ["t/new-sent", "t/unsent"]
        # The unsent row is what a sweep or a restart queues again.
        assert await publisher.load_unsent() == 1
    finally:
        await engine.dispose()
