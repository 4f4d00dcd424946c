"""DeviceStore: the bridge's SQL side for machines: load at start, write behind the publish.

The board is published from memory first and SQL follows in batches (group commit): the ORM,
not the disk, limits SQLite, and a slow or failing database must not freeze the live board.
A batch that fails is retried with backoff and counted; nothing is dropped while the bridge
runs. See bridge.presence.board for why board versions still grow across restarts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bridge.alerts import alert_row
from bridge.context import BridgeContext
from bridge.presence.board import DeviceView
from bridge.queues import RetryDelay, next_batch
from plaza.messages import AdminAlert, BoardStatus, MachineState, Position, Session
from plaza.tables import Alert, BridgeMeta, Device, DeviceStatusChange, from_timestamp

log = logging.getLogger(__name__)


def view_from_row(row: Device) -> DeviceView:
    return DeviceView(
        id=row.id,
        name=row.name,
        kind=row.kind,
        zone=row.zone,
        maintenance=row.maintenance,
        online=row.online,
        state=MachineState(row.state),
        epoch=row.epoch,
        state_epoch=row.state_epoch,
        state_seq=row.state_seq,
        session=Session.model_validate_json(row.session_json) if row.session_json else None,
        fault=row.fault,
        version=row.board_version,
        status=BoardStatus(row.status),
        since=row.since.timestamp(),
        agent=row.agent,
        pos=position_of(row),
    )


def position_of(row: Device) -> Position | None:
    """The row's place on the floor map, if it has one."""
    return None if row.x is None or row.y is None else Position(x=row.x, y=row.y)


def _apply(row: Device, view: DeviceView, seen: float) -> None:
    row.online = view.online
    row.state = view.state.value
    row.status = view.status.value
    row.epoch = view.epoch
    row.state_epoch = view.state_epoch
    row.state_seq = view.state_seq
    row.session_json = view.session.model_dump_json() if view.session else None
    row.fault = view.fault
    row.board_version = view.version
    row.since = from_timestamp(view.since)
    row.last_seen = from_timestamp(seen)


async def start_generation(sessions: Callable[[], AsyncSession]) -> int:
    """Bump and commit the bridge generation; call once before publishing anything, and
    again before taking a machine over from another bridge. One UPDATE, so bridges bumping
    at once each get their own, higher generation."""
    for _ in range(5):
        async with sessions() as session:
            conn = await session.connection()
            bumped = await conn.execute(
                sa.update(BridgeMeta)
                .where(col(BridgeMeta.id) == 1)
                .values(generation=col(BridgeMeta.generation) + 1)
                .returning(col(BridgeMeta.generation))
            )
            generation = bumped.scalar_one_or_none()
            if generation is None:  # a new database: the first bridge creates the row
                session.add(BridgeMeta(id=1, generation=1))
                generation = 1
            try:
                await session.commit()
            except IntegrityError:  # another bridge created it first: bump theirs instead
                continue
            return int(generation)
    raise RuntimeError("the bridge generation could not be bumped")


async def load_views(sessions: Callable[[], AsyncSession]) -> dict[str, DeviceView]:
    """Every machine's last known view, as SQL has it."""
    async with sessions() as session:
        rows = (await session.exec(select(Device))).all()
        return {row.id: view_from_row(row) for row in rows}


@dataclass(frozen=True, slots=True)
class _Write:
    view: DeviceView | None
    history: bool
    alerts: tuple[AdminAlert, ...]
    ts: float


class DeviceStore:
    def __init__(self, ctx: BridgeContext, *, removed: set[str], max_batch: int = 500) -> None:
        self._sessions = ctx.sessions
        #: machines removed while this bridge runs (the tracker's set): their rows stay gone
        self.removed = removed
        self._gate = ctx.gate
        self._metrics = ctx.metrics
        self._queue: asyncio.Queue[_Write] = asyncio.Queue()
        self._max_batch = max_batch

    def enqueue(
        self, view: DeviceView | None, history: bool, alerts: list[AdminAlert], ts: float
    ) -> None:
        if view is not None or alerts:
            self._queue.put_nowait(_Write(view, history, tuple(alerts), ts))

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    async def flushed(self) -> None:
        """Wait until everything enqueued so far is committed."""
        await self._queue.join()

    async def run(self) -> None:
        retry = RetryDelay()
        while True:
            batch = await next_batch(self._queue, self._max_batch)
            while True:
                try:
                    await self._commit(batch)
                except Exception:  # the database may be down; keep the batch and retry
                    self._metrics.db_errors += 1
                    delay = retry.failed()
                    log.exception("device batch of %d failed; retrying in %.2fs", len(batch), delay)
                    await asyncio.sleep(delay)
                    continue
                retry.reset()
                self._metrics.db_batches += 1
                break
            for _ in batch:
                self._queue.task_done()

    async def _commit(self, batch: list[_Write]) -> None:
        async with self._gate:  # one writer at a time: no SQLite busy-wait between ours
            await self._commit_batch(batch)

    async def _commit_batch(self, batch: list[_Write]) -> None:
        latest: dict[str, tuple[DeviceView, float]] = {}
        for w in batch:
            if w.view is not None and w.view.id not in self.removed:
                latest[w.view.id] = (w.view, w.ts)
        async with self._sessions() as session:
            if latest:
                rows = (
                    await session.exec(select(Device).where(Device.id.in_(latest)))  # type: ignore[attr-defined]
                ).all()
                by_id = {r.id: r for r in rows}
                for device_id, (view, ts) in latest.items():
                    row = by_id.get(device_id) or Device(
                        id=view.id, name=view.name, kind=view.kind, zone=view.zone
                    )
                    _apply(row, view, ts)
                    session.add(row)
                await session.flush()
            for w in batch:
                if w.view is not None and w.history and w.view.id in latest:
                    session.add(
                        DeviceStatusChange(
                            device_id=w.view.id,
                            status=w.view.status.value,
                            online=w.view.online,
                            state=w.view.state.value,
                            epoch=w.view.epoch,
                            at=from_timestamp(w.ts),
                        )
                    )
                for alert in w.alerts:
                    session.add(Alert(**alert_row(alert)))
            await session.commit()
