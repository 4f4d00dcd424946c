"""FloorClock: the venue floor's timers (plaza/floor.py) as SQL queries and their renderings.

Three jobs, each once per reservation, found by a query on every tick (so they survive a
restart) and marked in the transaction that sends what they say:

- ``lock`` (``locked_at``): ``pre_slot_lock`` before an approved slot, ``lock`` with reason
  ``reservation`` to the machine; a machine in a walk-in session also gets ``session_warning``
  with the minutes left before the slot;
- ``overrun`` (``overrun_at``): a walk-in still playing at the slot's start (the presence
  tracker's live view says so): ``end_session`` with reason ``reservation`` under ``strict``,
  a ``walk_in_overrun`` admin alert under ``soft``;
- ``ending`` (``ending_warned_at``): ``session_end_warning`` before the end of a checked-in
  slot, ``session_ending`` to the player (with an extension on offer when the machine is free
  after it) and ``session_warning`` to the machine.

:meth:`FloorClock.due` is run by :class:`~bridge.reservations.timers.Timers` (whose jobs
only the leader submits); :meth:`FloorClock.render` by the committer's careful path, which
re-reads the row, so a job that is no longer due (or already done) does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import get_args

from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bridge.alerts import make_alert
from bridge.models import Outbound
from bridge.notifier import Note
from bridge.reservations.actors import Job, Outcome, TimerOp
from bridge.reservations.effects import ReservationEffects
from bridge.reservations.slots import public, slot_of
from bridge.writes import Writes
from plaza import floor, rules
from plaza.messages import RESERVATION_LOCK, AlertSeverity, CommandName, ExtendOffer
from plaza.settings import Settings
from plaza.tables import Device, Reservation, is_active
from plaza.topics import Topics

#: the floor's timer jobs
FLOOR_TIMERS = frozenset({"lock", "overrun", "ending"})
assert set(get_args(TimerOp)) >= FLOOR_TIMERS
#: the reason on the machine's ``session_warning`` before its checked-in slot ends
SLOT_ENDING = "slot_ending"


class FloorClock:
    def __init__(self, settings: Settings, topics: Topics, effects: ReservationEffects) -> None:
        self.lead = timedelta(seconds=settings.pre_slot_lock)
        self.warning = timedelta(seconds=settings.session_end_warning)
        self.offer = timedelta(seconds=settings.extension_offer)
        self.policies = settings.walkin_policies
        self.topics = topics
        self.effects = effects
        self.policy = effects.policy

    # -- what is due (the timers' query, every tick) ----------------------------------------------
    async def due(
        self, session: AsyncSession, now: datetime, walk_ins: Callable[[], set[str]]
    ) -> list[Job]:
        approved = rules.Status.APPROVED.value
        jobs: list[Job] = []
        playing = walk_ins()
        lock = (
            await session.exec(
                select(Reservation.id, Reservation.device_id).where(
                    Reservation.status == approved,
                    col(Reservation.locked_at).is_(None),
                    Reservation.starts_at <= now + self.lead,
                    Reservation.ends_at > now,
                )
            )
        ).all()
        jobs += [self._job("lock", rid, device, walk_in=device in playing) for rid, device in lock]
        if playing:
            overrun = (
                await session.exec(
                    select(Reservation.id, Reservation.device_id).where(
                        Reservation.status == approved,
                        col(Reservation.overrun_at).is_(None),
                        Reservation.starts_at <= now,
                        Reservation.ends_at > now,
                        col(Reservation.device_id).in_(sorted(playing)),
                    )
                )
            ).all()
            jobs += [self._job("overrun", rid, device) for rid, device in overrun]
        ending = (
            await session.exec(
                select(Reservation.id, Reservation.device_id).where(
                    Reservation.status == rules.Status.CHECKED_IN.value,
                    col(Reservation.ending_warned_at).is_(None),
                    Reservation.ends_at <= now + self.warning,
                    Reservation.ends_at > now,
                )
            )
        ).all()
        jobs += [self._job("ending", rid, device) for rid, device in ending]
        return jobs

    @staticmethod
    def _job(timer: TimerOp, rid: str, device: str, *, walk_in: bool = False) -> Job:
        return Job(
            device_id=device,
            command=None,
            timer=timer,
            reservation_id=rid,
            clock=True,
            walk_in=walk_in,
        )

    # -- what a due job does (the committer's careful path) ---------------------------------------
    async def render(
        self, session: AsyncSession, job: Job, now: datetime, writes: Writes
    ) -> Outcome:
        assert job.reservation_id is not None
        row = await session.get(Reservation, job.reservation_id)
        if row is None or row.device_id != job.device_id or row.ends_at <= now:
            return Outcome(None)
        device = await session.get(Device, row.device_id)
        if job.timer == "lock":
            return self._lock(row, device, job, now, writes)
        if job.timer == "overrun":
            return self._overrun(row, device, now, writes)
        return await self._ending(session, row, device, now, writes)

    def _lock(
        self, row: Reservation, device: Device | None, job: Job, now: datetime, writes: Writes
    ) -> Outcome:
        if row.status != rules.Status.APPROVED.value or row.locked_at is not None:
            return Outcome(None)  # done already, or no longer approved: nothing twice
        if row.starts_at - self.lead > now:
            return Outcome(None)
        writes.changed.append({"id": row.id, "locked_at": now})
        if device is not None and not device.agent:
            return Outcome(None, touched=True)  # no agent to lock or warn: its board says it
        if device is None or not device.maintenance:  # maintenance locked it already
            writes.outbox.append(self._cmd(row, CommandName.LOCK, now, RESERVATION_LOCK))
        if job.walk_in:
            minutes = floor.minutes_left(row.starts_at, now)
            writes.outbox.append(
                self._cmd(row, CommandName.SESSION_WARNING, now, RESERVATION_LOCK, minutes)
            )
        return Outcome(None, touched=True)  # its board now shows it locked

    def _overrun(
        self, row: Reservation, device: Device | None, now: datetime, writes: Writes
    ) -> Outcome:
        if row.status != rules.Status.APPROVED.value or row.overrun_at is not None:
            return Outcome(None)
        if row.starts_at > now:
            return Outcome(None)
        writes.changed.append({"id": row.id, "overrun_at": now})
        kind = device.kind if device else "pc"
        staff = device is not None and not device.agent  # nothing there to end the session
        if not staff and floor.at_slot_start(self.policies.of(kind)) == "end_session":
            writes.outbox.append(self._cmd(row, CommandName.END_SESSION, now, RESERVATION_LOCK))
            return Outcome(None)
        start = row.starts_at.astimezone(self.policy.tz).strftime("%H:%M")
        name = device.name if device else row.device_id
        alert = make_alert(
            "walk_in_overrun",
            AlertSeverity.HIGH,
            now.timestamp(),
            row.device_id,
            name=name,
            start=start,
            why="직원 관리 기기, 직접 자리를 비워 주세요"
            if staff
            else "soft 정책, 세션 종료 안 함",
            why_en="a staff-managed machine: free it by hand"
            if staff
            else "soft policy: not ended",
        )
        writes.alerts.append(alert)
        writes.outbox.append(Outbound(self.topics.admin_alerts, alert.encode()))
        return Outcome(None)

    async def _ending(
        self,
        session: AsyncSession,
        row: Reservation,
        device: Device | None,
        now: datetime,
        writes: Writes,
    ) -> Outcome:
        if row.status != rules.Status.CHECKED_IN.value or row.ending_warned_at is not None:
            return Outcome(None)
        if row.ends_at - self.warning > now:
            return Outcome(None)
        writes.changed.append({"id": row.id, "ending_warned_at": now})
        # the next booking of the machine, or of the player anywhere (but the seats of the
        # player's own party, which share the slot): an extension stops there
        rows = (
            await session.exec(
                select(Reservation.starts_at, Reservation.device_id, Reservation.party_id)
                .where(
                    or_(Reservation.device_id == row.device_id, Reservation.player == row.player),
                    is_active(Reservation.status, rules.ACTIVE),
                    Reservation.id != row.id,
                    Reservation.ends_at > row.ends_at,
                )
                .order_by(col(Reservation.starts_at))
            )
        ).all()
        party = row.party_id
        after = [(s, d) for s, d, p in rows if d == row.device_id or not party or p != party]
        next_start = min((s for s, _d in after), default=None)
        next_here = min((s for s, d in after if d == row.device_id), default=None)
        slot = slot_of(row)
        until = None
        if device is None or not device.maintenance:
            until = floor.extension_until(slot, next_start, self.policy, horizon=self.offer)
        minutes = floor.minutes_left(row.ends_at, now)
        tz = self.policy.tz
        params: dict[str, object] = {
            "name": device.name if device else row.device_id,
            "minutes": minutes,
            "until": until.astimezone(tz).strftime("%H:%M") if until else "",
            "next": next_here.astimezone(tz).strftime("%H:%M") if next_here else "",
        }
        writes.notes.append(
            Note(
                user=row.player,
                topic=self.topics.notifications(row.player),
                type="session_ending",
                priority=AlertSeverity.HIGH,
                params=params,
                reservation=public(slot, private=True),
                extend=(
                    ExtendOffer(reservation_id=row.id, until=until.timestamp()) if until else None
                ),
                next_starts_at=next_here.timestamp() if next_here and not until else None,
            )
        )
        writes.outbox.append(self._cmd(row, CommandName.SESSION_WARNING, now, SLOT_ENDING, minutes))
        return Outcome(None)

    def _cmd(
        self,
        row: Reservation,
        name: CommandName,
        now: datetime,
        reason: str,
        minutes: int | None = None,
    ) -> Outbound:
        """A command to the reservation's machine, naming the reservation."""
        return self.effects.device_cmd(
            row.device_id, name, now, reason=reason, minutes=minutes, reservation_id=row.id
        )
