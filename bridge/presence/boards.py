"""BoardRefresher: a machine's current and next reservation slot, onto its board.

Two kinds of items arrive, in order: board rows the committer read in its own transaction
(shown as they are, no query), and sets of machines whose boards moved for other reasons
(time crossed a slot boundary, an admin changed the machine), whose rows are read here on a
reader session. The slots are picked when shown, so a boundary crossed meanwhile counts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from bridge.models import Outbound
from bridge.presence.store import DeviceStore
from bridge.presence.tracker import PresenceTracker
from bridge.queues import next_batch
from bridge.reservations.board_rows import BoardRows, board_slots, current_and_next
from plaza.messages import now

log = logging.getLogger(__name__)


class BoardRefresher:
    def __init__(
        self,
        *,
        tracker: PresenceTracker,
        store: DeviceStore,
        reads: Callable[[], AsyncSession],
        publish: Callable[[Sequence[Outbound]], Awaitable[None]],
        owns: Callable[[str], bool] = lambda _device: True,
    ) -> None:
        self.tracker = tracker
        self.store = store
        self._reads = reads
        self._publish = publish
        #: several bridges: every bridge keeps every view's slots, only the owner publishes
        self._owns = owns
        self._queue: asyncio.Queue[set[str] | dict[str, BoardRows]] = asyncio.Queue()

    def committed(self, rows: dict[str, BoardRows]) -> None:
        """Show these rows (read by the committer in its own transaction)."""
        self._queue.put_nowait(rows)

    def moved(self, devices: set[str]) -> None:
        """Read and show the slots of ``devices`` (time passed, or an admin change)."""
        self._queue.put_nowait(devices)

    async def run(self) -> None:
        """Show what arrives, in order; a failed refresh is redone by the next change."""
        while True:
            items = await next_batch(self._queue)
            try:
                slots: dict[str, BoardRows] = {}
                for item in items:
                    slots.update(item if isinstance(item, dict) else await self._read(item))
                await self.show(slots)
            except Exception:  # a failed refresh is redone by the next change or tick
                log.exception("board refresh failed for %d items", len(items))

    async def refresh(self, devices: set[str]) -> None:
        """Recompute current and next slots of ``devices`` from SQL and publish what moved."""
        await self.show(await self._read(devices))

    async def _read(self, devices: set[str]) -> dict[str, BoardRows]:
        if not devices:
            return {}
        async with self._reads() as session:
            conn = await session.connection()
            return await conn.run_sync(board_slots, devices, datetime.now(UTC))

    async def show(self, slots: dict[str, BoardRows]) -> None:
        """Give machines their current and next slots; publish the boards that moved at once."""
        ts, moment = now(), datetime.now(UTC)
        outbound: list[Outbound] = []
        for device, rows in slots.items():
            if device not in self.tracker.views:
                continue
            current, nxt = current_and_next(rows, moment)
            effects = self.tracker.set_slots(device, current, nxt, ts)
            if effects.view is None or not self._owns(device):
                continue
            outbound += effects.publish
            if effects.status_changed or effects.alerts:
                # A move of the slots alone is not stored: slots are read from SQL at start,
                # and board versions carry the bridge generation, so they still only grow.
                self.store.enqueue(
                    effects.view, effects.status_changed, effects.alerts, effects.view.since
                )
        if outbound:
            await self._publish(outbound)
