"""Keyed routing for several bridges on one PostgreSQL, and one leader for the clock.

Machines are split into ``PLAZA_PARTITIONS`` slots (:func:`slot_of`: CRC-32 of the machine
id, modulo the count). Each slot is owned by one bridge at a time through a PostgreSQL
session advisory lock ``(SLOT_LOCKS, slot)`` held on a connection of its own (the *lock
connection*, application name ``plaza-owner:{bridge id}``). The lock connection also holds
the clock's lock ``(LEADER_LOCK, 0)``: its holder, the leader, runs the timers' due jobs,
the digests, the outage watch and the pruning. A bridge that dies loses its connection, so
PostgreSQL frees its locks; the others take them on their next tick (``PLAZA_PARTITION_TICK``).

Rebalance: the live bridges are the lock connections PostgreSQL lists in
``pg_stat_activity``; each bridge takes at most ``ceil(slots / bridges)`` and releases what
is over that when another joins (it stops taking that slot's requests, waits for the jobs it
already has for it, then unlocks).

Every bridge receives every request (no shared subscription). One for a slot it does not own
is kept in a bounded :class:`HandoverBuffer` (``PLAZA_HANDOVER_WINDOW`` seconds, at most
``PLAZA_HANDOVER_MAX``), not decoded. A bridge that takes a slot replays that slot's buffered
requests in arrival order before any new one; a replayed request the old owner had already
decided is answered from the command log, without a second effect.

Fencing: every batch transaction first takes ``pg_advisory_xact_lock_shared(FENCE_LOCKS,
slot)`` for its machines' slots, then checks in ``pg_locks`` that this bridge's lock
connection still holds each slot; jobs of a slot it no longer holds are not decided (their
requests are in the new owner's buffer). A new owner, after locking a slot, takes and drops
``FENCE_LOCKS`` exclusively, which waits for any transaction of the old owner that passed
its check: the old owner's last batch commits before the new owner's first one starts. The
clock's jobs (the leader's, for any machine) take the fence lock exclusively instead, so they
are decided between two batches of the owner, never beside one.

With ``PLAZA_PARTITIONS`` 0 (the default, and SQLite) there is one owner of everything and
one leader: the bridge itself, with no SQL at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from sqlalchemy import Connection, text

from plaza.settings import Settings

log = logging.getLogger(__name__)

#: advisory lock namespaces (the first of the two int4 keys)
SLOT_LOCKS = 0x504C5A01
FENCE_LOCKS = 0x504C5A02
LEADER_LOCK = 0x504C5A03
#: the lock connections' application name, which is how bridges count each other
APPLICATION = "plaza-owner:"

_MEMBERS = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND application_name LIKE 'plaza-owner:%'"
)
#: the fence of one batch: shared fence locks on its slots, then the slots this bridge's lock
#: connection (``pid``) still holds (the subquery's locks are taken before the check)
_FENCE = text(
    "SELECT f.s FROM (SELECT s, pg_advisory_xact_lock_shared(:fence, s) AS l "
    "FROM unnest(CAST(:slots AS int[])) AS s OFFSET 0) AS f "
    "WHERE EXISTS (SELECT 1 FROM pg_locks k WHERE k.locktype = 'advisory' "
    "AND k.classid = CAST(:ns AS oid) AND k.objid = CAST(f.s AS oid) AND k.objsubid = 2 "
    "AND k.pid = :pid AND k.granted)"
)
_CLOCK_FENCE = text(
    "SELECT count(pg_advisory_xact_lock(:fence, s)) FROM unnest(CAST(:slots AS int[])) AS s"
)


def slot_of(device: str, partitions: int) -> int:
    """The slot of a machine: stable across processes, releases and restarts."""
    return zlib.crc32(device.encode()) % partitions


class HandoverBuffer:
    """Requests for slots this bridge does not own, kept for ``window`` seconds (at most
    ``limit``, oldest dropped first), so a bridge taking a slot replays what arrived while
    it changed hands."""

    def __init__(self, window: float, limit: int) -> None:
        self.window = window
        self.limit = limit
        self._items: deque[tuple[float, int, Any]] = deque()
        #: requests dropped from the buffer unreplayed (too old, or over the limit)
        self.expired = 0

    def __len__(self) -> int:
        return len(self._items)

    def keep(self, slot: int, item: object, now: float) -> None:
        self._items.append((now, slot, item))
        self._trim(now)

    def take(self, slot: int, now: float) -> list[Any]:
        """The slot's buffered requests, oldest first, removed from the buffer."""
        self._trim(now)
        taken = [item for _, s, item in self._items if s == slot]
        if taken:
            self._items = deque(e for e in self._items if e[1] != slot)
        return taken

    def _trim(self, now: float) -> None:
        items, cutoff = self._items, now - self.window
        while items and (len(items) > self.limit or items[0][0] < cutoff):
            items.popleft()
            self.expired += 1


#: called with a slot just taken (owned already): replays synchronously, returns the rest
Gained = Callable[[int], Awaitable[None]]
#: called with a slot being given up (no longer owned): returns once its jobs are done
Releasing = Callable[[int], Awaitable[None]]


class Ownership:
    """Which slots this bridge owns and whether it leads (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.partitions = settings.partitions
        self.enabled = settings.partitions > 0
        self.owned: set[int] = set()
        #: set while this bridge runs the clock (always, without partitions)
        self.leading = asyncio.Event()
        #: its opposite (set while another bridge may be leading)
        self.not_leading = asyncio.Event()
        if not self.enabled:
            self.leading.set()
        else:
            self.not_leading.set()
        self.buffer = HandoverBuffer(settings.handover_window, settings.handover_max)
        #: the lock connection's backend pid (the fence checks its locks)
        self.lock_pid: int | None = None
        self.members = 1
        self.taken = 0
        self.released = 0
        self.fenced = 0
        self._bump: Callable[[], Awaitable[None]] | None = None
        self._gained: Gained | None = None
        self._releasing: Releasing | None = None

    def wire(
        self, *, bump: Callable[[], Awaitable[None]], gained: Gained, releasing: Releasing
    ) -> None:
        """``bump``: raise the board generation (before the first board of a taken slot)."""
        self._bump, self._gained, self._releasing = bump, gained, releasing

    def figures(self) -> list[tuple[str, str, float, bool]]:
        """(name, help, value, is a counter) for /metrics (``plaza_bridge_*``)."""
        return [
            (
                "slots_owned",
                "Machine slots this bridge owns (keyed routing)",
                len(self.owned),
                False,
            ),
            (
                "leader",
                "1 while this bridge runs the clock (timers, digests, outages)",
                float(self.leading.is_set()),
                False,
            ),
            (
                "bridges_seen",
                "Live bridges on the database, as the last tick counted",
                self.members,
                False,
            ),
            (
                "handover_buffered",
                "Requests kept for slots other bridges own",
                len(self.buffer),
                False,
            ),
            (
                "handover_expired",
                "Kept requests dropped unreplayed (too old, or over the cap)",
                self.buffer.expired,
                True,
            ),
            ("slots_taken", "Slots this bridge took over", self.taken, True),
            ("slots_released", "Slots this bridge gave up to another", self.released, True),
            (
                "jobs_fenced",
                "Jobs not decided because their slot had moved to another bridge",
                self.fenced,
                True,
            ),
        ]

    # -- what the hot path asks ---------------------------------------------------------------
    def slot(self, device: str) -> int:
        return slot_of(device, self.partitions) if self.enabled else 0

    def owns(self, device: str) -> bool:
        return not self.enabled or slot_of(device, self.partitions) in self.owned

    def keep(self, device: str, item: object) -> None:
        self.buffer.keep(self.slot(device), item, time.monotonic())

    # -- the fence (inside a batch's transaction, on the synchronous driver) ------------------
    def fence(self, conn: Connection, devices: Iterable[str], clock: Iterable[str]) -> set[str]:
        """Of ``devices`` (a batch's owned-path machines), those this bridge may no longer
        decide; ``clock`` (the leader's timer jobs' machines) wait for the owner's batch."""
        if not self.enabled:
            return set()
        clock_slots = sorted({self.slot(d) for d in clock})
        if clock_slots:
            conn.execute(_CLOCK_FENCE, {"fence": FENCE_LOCKS, "slots": clock_slots})
        wanted = {d: self.slot(d) for d in devices}
        if not wanted:
            return set()
        mine = {s for s in wanted.values() if s in self.owned}
        held: set[int] = set()
        if mine and self.lock_pid is not None:
            params = {"fence": FENCE_LOCKS, "ns": SLOT_LOCKS, "pid": self.lock_pid}
            rows = conn.execute(_FENCE, {**params, "slots": sorted(mine)})
            held = {int(r[0]) for r in rows}
        out = {d for d, s in wanted.items() if s not in held}
        self.fenced += len(out)
        return out

    # -- the lock connection --------------------------------------------------------------------
    def _dsn(self) -> str:
        url = self.settings.db_url
        return "postgresql://" + url.split("://", 1)[1]

    async def run(self, ready: asyncio.Event) -> None:
        """Hold the lock connection and rebalance every tick, forever (nothing without
        partitions). Starts only once ``ready`` (the intake is subscribed, so everything a
        taken slot needs from now on is buffered)."""
        if not self.enabled:
            return
        import asyncpg  # type: ignore[import-untyped]

        tick = self.settings.partition_tick
        while True:
            await ready.wait()
            conn = None
            try:
                conn = await asyncpg.connect(
                    self._dsn(),
                    server_settings={"application_name": APPLICATION + self.settings.bridge_id},
                    timeout=10,
                )
                self.lock_pid = conn.get_server_pid()
                while True:
                    # a tick may wait for a release's drain (handover_window / 4 per slot)
                    limit = max(10 * tick, 10.0) + self.settings.handover_window
                    await asyncio.wait_for(self._tick(conn), timeout=limit)
                    await asyncio.sleep(tick)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("partition locks lost (%s); owning nothing until reconnected", exc)
            except Exception:  # a take's follow-up failed (the database, the broker): start over
                log.exception("partition tick failed; owning nothing until reconnected")
            finally:
                self._lose_all()
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(tick)

    def _lose_all(self) -> None:
        if self.owned:
            log.warning("gave up slots %s", sorted(self.owned))
        self.owned.clear()
        self.lock_pid = None
        if self.leading.is_set():
            log.warning("no longer the clock's leader")
        self.leading.clear()
        self.not_leading.set()

    async def _tick(self, conn: Any) -> None:
        self.members = max(1, int(await conn.fetchval(_MEMBERS)))
        if not self.leading.is_set() and await conn.fetchval(
            "SELECT pg_try_advisory_lock($1, 0)", LEADER_LOCK
        ):
            log.info("leading the clock")
            self.not_leading.clear()
            self.leading.set()
        share = math.ceil(self.partitions / self.members)
        extra = len(self.owned) - share
        for slot in sorted(self.owned, reverse=True)[: max(0, extra)]:
            self.owned.discard(slot)  # its requests are buffered from here on
            if self._releasing is not None:
                await self._releasing(slot)
            await conn.fetchval("SELECT pg_advisory_unlock($1, $2)", SLOT_LOCKS, slot)
            self.released += 1
            log.info("released slot %d (%d bridges)", slot, self.members)
        if len(self.owned) >= share:
            return
        bumped = False
        start = zlib.crc32(self.settings.bridge_id.encode()) % self.partitions
        for i in range(self.partitions):
            slot = (start + i) % self.partitions
            if slot in self.owned:
                continue
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", SLOT_LOCKS, slot):
                continue
            # the old owner's transaction that passed its fence commits before we decide
            await conn.fetchval("SELECT pg_advisory_lock($1, $2)", FENCE_LOCKS, slot)
            await conn.fetchval("SELECT pg_advisory_unlock($1, $2)", FENCE_LOCKS, slot)
            if not bumped and self._bump is not None:
                await self._bump()
                bumped = True
            self.owned.add(slot)
            self.taken += 1
            log.info("took slot %d (%d bridges)", slot, self.members)
            if self._gained is not None:
                await self._gained(slot)
            if len(self.owned) >= share:
                return

    async def while_leading(self, work: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        """Run ``work`` while this bridge leads; cancel it when leadership is lost."""
        while True:
            await self.leading.wait()
            task: asyncio.Task[None] = asyncio.create_task(work(), name=name)
            lost = asyncio.create_task(self._lost())
            try:
                await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when the bridge stops (this task cancelled): nothing left running
                for t in (task, lost):
                    t.cancel()
                for t in (task, lost):
                    with contextlib.suppress(asyncio.CancelledError):
                        await t

    async def _lost(self) -> None:
        await self.not_leading.wait()
