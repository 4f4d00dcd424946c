"""BridgeContext: what every component of the bridge shares, handed over as one value.

A component takes the context plus its own options by keyword (the api's ``AppState`` is
the model), instead of a row of positional parameters. :func:`open_context` makes one for a
running bridge: the writer and reader engines (migrated, disposed on exit), the write gate,
the broker link and the outbox publisher.

The write gate: every write transaction of this bridge takes it, so its writers never meet
inside SQLite's busy handler (which sleeps in 1-100 ms steps).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from bridge.link import Link
from bridge.metrics import BridgeMetrics
from bridge.outbox import OutboxPublisher
from bridge.partitions import Ownership
from plaza.db import make_engine, migrate, session_factory
from plaza.settings import Settings
from plaza.topics import Topics


@dataclass(frozen=True, slots=True)
class BridgeContext:
    settings: Settings
    topics: Topics
    #: the writer engine, and sessions on it (take ``gate`` around a write transaction)
    engine: AsyncEngine
    sessions: Callable[[], AsyncSession]
    #: sessions on the reader engine (SQLite: deferred, never the write lock)
    reads: Callable[[], AsyncSession]
    gate: asyncio.Lock
    link: Link
    outbox: OutboxPublisher
    metrics: BridgeMetrics
    #: which machines this bridge decides, and whether it runs the clock (bridge/partitions.py)
    ownership: Ownership


@asynccontextmanager
async def open_context(
    settings: Settings, topics: Topics, metrics: BridgeMetrics, link: Link
) -> AsyncIterator[BridgeContext]:
    """The context of one run of the bridge: engines made and migrated, disposed on exit."""
    engine = make_engine(settings.db_url)
    reader = make_engine(settings.db_url, reader=True)
    try:
        await migrate(engine)
        gate = asyncio.Lock()
        sessions = session_factory(engine)
        yield BridgeContext(
            settings=settings,
            topics=topics,
            engine=engine,
            sessions=sessions,
            reads=session_factory(reader),
            gate=gate,
            link=link,
            outbox=OutboxPublisher(
                sessions,
                link,
                gate,
                metrics=metrics,
                topics=topics,
                alert_cooldown=settings.alert_cooldown,
            ),
            metrics=metrics,
            ownership=Ownership(settings),
        )
    finally:
        await engine.dispose()
        await reader.dispose()
