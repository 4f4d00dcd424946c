"""The outbox keeps what is unsent and prunes what was sent long ago."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aiomqtt
import pytest
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from bridge.link import Link
from bridge.metrics import BridgeMetrics
from bridge.outbox import OutboxPublisher
from bridge.retention import Keep, Retention
from plaza.db import make_engine, migrate, session_factory
from plaza.mqtt import stop_task
from plaza.settings import Settings
from plaza.tables import Outbox
from plaza.topics import Topics

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
        metrics = BridgeMetrics()
        sessions, gate = session_factory(engine), asyncio.Lock()
        publisher = OutboxPublisher(sessions, Link(metrics), gate, metrics=metrics, topics=Topics())
        assert await Retention(sessions, gate, Keep.from_settings(Settings())).prune() == 1
        async with AsyncSession(engine) as session:
            left = sorted(o.topic for o in (await session.exec(select(Outbox))).all())
        assert left == ["t/new-sent", "t/unsent"]
        # The unsent row is what a sweep or a restart queues again.
        assert await publisher.load_unsent() == 1
    finally:
        await engine.dispose()


class DroppingBroker:
    """A broker connection that is lost whenever one topic is published (a row that gets the
    bridge dropped for a reason the bridge cannot see coming)."""

    broker_max_packet = None

    def __init__(self, link: Link, poison: str) -> None:
        self.link = link
        self.poison = poison
        self.sent: list[str] = []
        self.alerted = asyncio.Event()

    async def publish_acked(self, topic: str, payload: bytes, **_: object) -> None:
        await asyncio.sleep(0)
        if topic == self.poison:  # dropped, and at once connected again
            self.link.down()
            self.link.client = self  # type: ignore[assignment]
            self.link.connected.set()
            raise aiomqtt.MqttError("Disconnected")
        self.sent.append(topic)
        if topic == "plaza/admin/alerts":
            self.alerted.set()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_row_that_keeps_losing_the_connection_is_set_aside_and_the_rest_are_sent(
    db_url: str,
) -> None:
    engine = make_engine(db_url)
    try:
        await migrate(engine)
        async with AsyncSession(engine) as session:
            for topic in ("t/before", "t/poison", "t/after-1", "t/after-2"):
                session.add(Outbox(topic=topic, payload=b"{}"))
            await session.commit()
        metrics = BridgeMetrics()
        link = Link(metrics)
        broker = DroppingBroker(link, "t/poison")
        link.client = broker  # type: ignore[assignment]
        link.connected.set()
        publisher = OutboxPublisher(
            session_factory(engine), link, asyncio.Lock(), metrics=metrics, topics=Topics()
        )
        assert await publisher.load_unsent() == 4
        task = asyncio.get_running_loop().create_task(publisher.run())
        try:
            # the alert is queued once the dead letter is marked in SQL
            await asyncio.wait_for(broker.alerted.wait(), 10)
        finally:
            await stop_task(task)
        assert broker.sent == ["t/before", "t/after-1", "t/after-2", "plaza/admin/alerts"]
        assert metrics.dead_letters == 1
        async with AsyncSession(engine) as session:
            rows = {o.topic: o for o in (await session.exec(select(Outbox))).all()}
        assert rows["t/poison"].published_at is None
        assert str(rows["t/poison"].dead_reason).startswith("dropped_connection:")
        assert all(rows[t].published_at for t in ("t/before", "t/after-1", "t/after-2"))
    finally:
        await engine.dispose()
