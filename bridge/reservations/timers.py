"""Timers: what SQL says is due becomes a job, every tick.

The rules name what the clock does (:data:`plaza.rules.REMINDER` and :data:`plaza.rules.TIMED`:
no-show release, expiry of a pending request whose start is long past, the end of a
checked-in slot, a waitlist hold that lapsed); here each becomes a query, run on every tick,
so timers survive a restart. So do the waitlist's offers: each tick, the free machines of a
kind somebody waits for (the presence tracker's live view: available means online, idle, not
in maintenance, nothing under way) each become an ``offer`` job, and the rules pick who in
line, if anyone, it is held for. Each
becomes a job on the machine's actor like any other command, and the committer re-checks its
condition inside the transaction, so nothing is sent twice. Machines whose current or next
slot changed because time passed get their boards refreshed. With several bridges
(bridge/partitions.py) only the leader submits due jobs (marked ``clock``: the committer
fences them against the machine's owner); every bridge refreshes the boards it owns.
The venue floor's timers (keeping a reserved seat free, the warning before a session ends)
are :class:`FloorClock`'s queries, run here beside the rest; a slot's lock window opening is
a boundary too (its board shows it locked).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bridge.context import BridgeContext
from bridge.reservations.actors import Job
from bridge.reservations.floor_clock import FloorClock
from plaza import rules
from plaza.tables import Reservation, WaitlistEntry

log = logging.getLogger(__name__)


class Timers:
    def __init__(
        self,
        ctx: BridgeContext,
        *,
        submit: Callable[[Job], None],
        refresh_boards: Callable[[set[str]], None],
        free: Callable[[], list[tuple[str, str, float | None]]] = list,
        floor: FloorClock | None = None,
        walk_ins: Callable[[], set[str]] = set,
    ) -> None:
        self.settings = ctx.settings
        self._reads = ctx.reads
        self._leading = ctx.ownership.leading
        self._submit = submit
        self._refresh_boards = refresh_boards
        #: the machines free right now (the presence tracker's live view): id, kind, and when
        #: their next reservation starts; the waitlist's offers are made on them
        self._free = free
        #: the venue floor's jobs (lock before a slot, a walk-in's overrun, the end warning),
        #: and the machines in a walk-in session right now (the presence tracker's view)
        self._floor = floor
        self._walk_ins = walk_ins
        self._in_flight: set[tuple[str, str]] = set()
        #: timer jobs submitted
        self.submitted = 0

    async def run(self) -> None:
        """Every tick, turn what SQL says is due into jobs, and refresh boards whose current
        or next slot changed because time passed."""
        last = datetime.now(UTC)
        while True:
            await asyncio.sleep(self.settings.timer_tick)
            now = datetime.now(UTC)
            try:
                due, boundaries = await self._due(last, now)
            except Exception:  # the database may be down: try again next tick
                log.exception("timer query failed")
                continue
            last = now
            # due jobs: the leader's alone; boundaries: every bridge, for the boards it owns
            for job in due if self._leading.is_set() else ():
                self._submit_once(job)
            if boundaries:
                self._refresh_boards(boundaries)

    def _submit_once(self, job: Job) -> None:
        """Submit a due timer unless the same one is still on its way (ticks repeat)."""
        what = job.timer or (job.command.op.value if job.command else "")
        key = (what, job.reservation_id or job.device_id)
        if key in self._in_flight:
            return
        self._in_flight.add(key)
        job.future.add_done_callback(lambda _f: self._in_flight.discard(key))
        self.submitted += 1
        self._submit(job)

    async def _due(self, last: datetime, now: datetime) -> tuple[list[Job], set[str]]:
        lead = timedelta(seconds=self.settings.reminder_lead)
        grace = timedelta(seconds=self.settings.no_show_grace)
        system = rules.Actor("system", rules.Role.SYSTEM)
        jobs: list[Job] = []
        async with self._reads() as session:
            remind = (
                await session.exec(
                    select(Reservation).where(
                        col(Reservation.status).in_(
                            sorted(s.value for s in rules.REMINDER.statuses)
                        ),
                        col(Reservation.reminded_at).is_(None),
                        Reservation.starts_at <= now + lead,
                        Reservation.starts_at > now,
                    )
                )
            ).all()
            jobs += [
                Job(
                    device_id=r.device_id,
                    command=None,
                    timer="remind",
                    reservation_id=r.id,
                    clock=True,
                )
                for r in remind
            ]
            for timed in rules.TIMED:
                since = col(getattr(Reservation, timed.since))
                rows = (
                    await session.exec(
                        select(Reservation).where(
                            Reservation.status == timed.status.value,
                            since <= (now - grace if timed.grace else now),
                        )
                    )
                ).all()
                jobs += [
                    Job(
                        device_id=r.device_id,
                        command=rules.Command(timed.op, system, r.device_id, reservation_id=r.id),
                        reservation_id=r.id,
                        clock=True,
                    )
                    for r in rows
                ]
            crossed = list(
                (
                    await session.exec(
                        select(Reservation.device_id).where(
                            col(Reservation.status).in_(sorted(s.value for s in rules.ACTIVE)),
                            (
                                (col(Reservation.starts_at) > last)
                                & (col(Reservation.starts_at) <= now)
                            )
                            | (
                                (col(Reservation.ends_at) > last)
                                & (col(Reservation.ends_at) <= now)
                            ),
                        )
                    )
                ).all()
            )
            jobs += await self._offers(session, now, system)
            if self._floor is not None:
                jobs += await self._floor.due(session, now, self._walk_ins)
                # an approved slot's lock window opened: its board shows it locked
                lead = self._floor.lead
                crossed += (
                    await session.exec(
                        select(Reservation.device_id).where(
                            Reservation.status == rules.Status.APPROVED.value,
                            col(Reservation.starts_at) > last + lead,
                            col(Reservation.starts_at) <= now + lead,
                        )
                    )
                ).all()
        return jobs, set(crossed)

    async def _offers(self, session: AsyncSession, now: datetime, system: rules.Actor) -> list[Job]:
        """An ``offer`` job for free machines of kinds people wait for: up to as many per
        kind as wait, on machines whose next reservation leaves the shortest wish room (the
        rules decide who, if anyone, gets which)."""
        waiting = (
            await session.exec(
                select(WaitlistEntry.kind, func.count(), func.min(WaitlistEntry.minutes))
                .where(WaitlistEntry.status == rules.EntryStatus.WAITING.value)
                .group_by(col(WaitlistEntry.kind))
            )
        ).all()
        if not waiting:
            return []
        wanted = {kind: (int(count), int(shortest)) for kind, count, shortest in waiting}
        jobs: list[Job] = []
        offered: dict[str, int] = {}
        for device, kind, next_start in sorted(self._free()):
            if kind not in wanted:
                continue
            count, shortest = wanted[kind]
            if offered.get(kind, 0) >= count:
                continue
            if next_start is not None and next_start < now.timestamp() + shortest * 60:
                continue
            offered[kind] = offered.get(kind, 0) + 1
            jobs.append(  # the leader's, like every timer job (bridge/partitions.py)
                Job(
                    device_id=device,
                    command=rules.Command(rules.Op.OFFER, system, device),
                    clock=True,
                )
            )
        return jobs
