"""OutboxPublisher: publishes committed outbox rows in commit order and marks them sent.

Rows are written in the same transaction as the change they announce (:mod:`bridge.writes`).
After the commit the writer hands them here; at start-up every row not yet marked is loaded
and sent first. So a crash between commit and publish loses nothing; a crash between publish
and mark sends a row twice (at-least-once: replies carry their request id and clients drop
duplicates).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import aiomqtt
from sqlalchemy import bindparam, delete, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bridge.link import Link
from bridge.models import Outbound, Stored
from bridge.queues import next_batch
from plaza.tables import Outbox, table_of

log = logging.getLogger(__name__)
SWEEP_SECONDS = 5.0
PRUNE_EVERY_ROUNDS = 120  # every 10 minutes
KEEP_SENT = timedelta(days=1)  # sent rows kept this long, for inspection after an incident

_OUTBOX = table_of(Outbox)
#: Core, not the ORM: an ORM bulk UPDATE of a few hundred ids cost ~18 ms of the event loop
_MARK_SENT = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id.in_(bindparam("ids", expanding=True)))
    .values(published_at=bindparam("at"))
)


def _stored(row: Outbox) -> Stored:
    assert row.id is not None
    return row.id, Outbound.from_row(row.topic, row.payload, row.qos, row.retain, row.props_json)


class OutboxPublisher:
    def __init__(
        self, sessions: Callable[[], AsyncSession], link: Link, write_gate: asyncio.Lock
    ) -> None:
        self._sessions = sessions
        self._gate = write_gate
        self._link = link
        self._queue: asyncio.Queue[Stored] = asyncio.Queue()
        self._sent: list[int] = []
        self._known: set[int] = set()  # queued or sent, not yet marked in SQL
        self.published = 0

    def enqueue(self, rows: list[Stored]) -> None:
        for row in rows:
            if row[0] not in self._known:
                self._known.add(row[0])
                self._queue.put_nowait(row)

    async def load_unsent(self, older_than: float = 0.0) -> int:
        """Queue every committed row not marked as sent that this run does not know of: at
        start, what a previous run left; later, what a commit that reported an error (but
        did commit) left behind."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        async with self._sessions() as session:
            rows = (
                await session.exec(
                    select(Outbox)
                    .where(col(Outbox.published_at).is_(None), col(Outbox.created_at) <= cutoff)
                    .order_by(col(Outbox.id))
                )
            ).all()
        fresh = [_stored(r) for r in rows if r.id not in self._known]
        self.enqueue(fresh)
        return len(fresh)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._mark_loop())
            tg.create_task(self._sweep_loop())
            while True:
                await self._send(await next_batch(self._queue, 500))

    async def _send(self, batch: list[Stored]) -> None:
        while True:
            await self._link.connected.wait()
            client = self._link.client
            if client is None:
                await asyncio.sleep(0.05)
                continue
            try:
                await asyncio.gather(
                    *(
                        client.publish(
                            m.topic,
                            m.payload,
                            qos=m.qos,
                            retain=m.retain,
                            properties=m.properties(),
                        )
                        for _, m in batch
                    )
                )
            except aiomqtt.MqttError as exc:
                log.warning("outbox publish failed (%s); retrying after reconnect", exc)
                await asyncio.sleep(0.1)
                continue
            self.published += len(batch)
            self._sent.extend(i for i, _ in batch)
            return

    async def _sweep_loop(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            rounds += 1
            try:
                found = await self.load_unsent(older_than=SWEEP_SECONDS)
                if rounds % PRUNE_EVERY_ROUNDS == 0:
                    await self.prune(KEEP_SENT)
            except Exception:  # the database may be down: sweep again later
                log.exception("outbox sweep failed")
                continue
            if found:
                log.warning("outbox sweep found %d committed rows nobody queued", found)

    async def prune(self, keep: timedelta) -> int:
        """Delete rows sent longer ago than ``keep``; unsent rows are never deleted."""
        cutoff = datetime.now(UTC) - keep
        async with self._gate, self._sessions() as session:
            result = await session.exec(
                delete(Outbox).where(
                    col(Outbox.published_at).is_not(None), col(Outbox.published_at) < cutoff
                )
            )
            await session.commit()
        return int(result.rowcount or 0)

    async def _mark_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            if not self._sent:
                continue
            ids, self._sent = self._sent, []
            try:
                async with self._gate, self._sessions() as session:
                    conn = await session.connection()
                    await conn.execute(_MARK_SENT, {"ids": ids, "at": datetime.now(UTC)})
                    await session.commit()
            except Exception:  # the database may be busy or down: try again next round
                log.exception("could not mark %d outbox rows as sent", len(ids))
                self._sent.extend(ids)
                continue
            self._known.difference_update(ids)
