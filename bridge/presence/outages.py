"""Reservation-aware presence: a machine that is down while someone holds it.

Every tick, machines that have been offline or faulty for longer than ``outage_grace`` (the
hysteresis: a brief flap pages nobody) and that were seen at least once are checked against
SQL for active reservations that are current or start within ``outage_horizon``. For each one
not yet told about this outage (no ``device_offline_during_reservation`` notification since the
machine went down, which also holds across a bridge restart), one transaction writes:

- a high-priority notification to the player, with a rebook offer when a machine of the same
  kind is online, available and free for the (remaining) slot;
- an admin alert (stored and published).

The player takes the offer with an ordinary ``reserve`` request; nothing is booked for them.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy import Connection

from bridge.alerts import make_alert
from bridge.context import BridgeContext
from bridge.models import Outbound
from bridge.notifier import Note
from bridge.presence.board import DeviceView
from bridge.presence.tracker import PresenceTracker
from bridge.reservations.slots import public, slot_of
from bridge.writes import Writes
from plaza import rules
from plaza.messages import (
    AlertSeverity,
    BoardStatus,
    NotificationType,
    RebookOffer,
)
from plaza.tables import Notification, Reservation, is_active, table_of

log = logging.getLogger(__name__)
KIND: NotificationType = "device_offline_during_reservation"
DOWN = (BoardStatus.OFFLINE, BoardStatus.FAULT)


class OutageWatch:
    def __init__(self, ctx: BridgeContext, *, tracker: PresenceTracker) -> None:
        self.settings = ctx.settings
        self.topics = ctx.topics
        self.tracker = tracker
        self._sessions = ctx.sessions
        self._gate = ctx.gate
        self._outbox = ctx.outbox
        self._tz = ZoneInfo(ctx.settings.venue_timezone)
        self.told = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.timer_tick)
            try:
                await self.check(datetime.now(UTC))
            except Exception:  # the database may be away: the next tick tries again
                log.exception("outage check failed")

    def down_long_enough(self, now: datetime) -> dict[str, DeviceView]:
        cutoff = now.timestamp() - self.settings.outage_grace
        return {
            device: view
            for device, view in self.tracker.views.items()
            # a machine without an agent is never offline, and its faults are staff's own word
            if view.status in DOWN and view.agent and view.epoch >= 0 and view.since <= cutoff
        }

    async def check(self, now: datetime) -> int:
        down = self.down_long_enough(now)
        if not down:
            return 0
        available = {
            d: v for d, v in self.tracker.views.items() if v.status is BoardStatus.AVAILABLE
        }
        async with self._gate, self._sessions() as session:
            conn = await session.connection()
            writes = await conn.run_sync(lambda c: self._decide(c, down, available, now))
            if writes is None:
                return 0
            rows = await writes.flush(session, self._outbox.max_packet)
            await session.commit()
        self._outbox.enqueue(rows)
        self.told += len(writes.notes)
        return len(writes.notes)

    def _decide(
        self,
        conn: Connection,
        down: dict[str, DeviceView],
        available: dict[str, DeviceView],
        now: datetime,
    ) -> Writes | None:
        res, notes = table_of(Reservation), table_of(Notification)
        horizon = now + timedelta(seconds=self.settings.outage_horizon)
        held = conn.execute(
            sa.select(res).where(
                res.c.device_id.in_(down),
                is_active(res.c.status),
                res.c.starts_at <= horizon,
                res.c.ends_at > now,
            )
        ).all()
        writes = Writes()
        for row in held:
            view = down[row.device_id]
            since = datetime.fromtimestamp(view.since, UTC)
            told = conn.execute(
                sa.select(notes.c.id)
                .where(
                    notes.c.reservation_id == row.id,
                    notes.c.type == KIND,
                    notes.c.created_at >= since,
                )
                .limit(1)
            ).first()
            if told is not None:
                continue
            slot = slot_of(row)
            offer = self._offer(conn, slot, view, available, now)
            local = slot.starts_at.astimezone(self._tz).strftime("%m/%d %H:%M")
            writes.notes.append(
                Note(
                    user=slot.user,
                    topic=self.topics.notifications(slot.user),
                    type=KIND,
                    priority=AlertSeverity.HIGH,
                    params={"name": view.name, "start": local},
                    reservation=public(slot, private=True),
                    offer=offer,
                )
            )
            alert = make_alert(
                "device_down_reserved",
                AlertSeverity.HIGH,
                now.timestamp(),
                slot.device_id,
                name=view.name,
                status=view.status.value,
                start=local,
                alternative_ko=f"{offer.device_id} 대체 예약을 제안했습니다."
                if offer
                else "제안할 빈 기기가 없습니다.",
                alternative_en=f"offered {offer.device_id}"
                if offer
                else "no free machine to offer",
            )
            writes.alerts.append(alert)
            writes.outbox.append(Outbound(self.topics.admin_alerts, alert.encode()))
        return writes if writes.notes else None

    def _offer(
        self,
        conn: Connection,
        slot: rules.Slot,
        view: DeviceView,
        available: dict[str, DeviceView],
        now: datetime,
    ) -> RebookOffer | None:
        """The first available machine of the same kind that is free for the rest of the slot."""
        start = max(slot.starts_at, _next_minute(now))
        if start >= slot.ends_at:
            return None
        candidates = sorted(d for d, v in available.items() if v.kind == view.kind)
        if not candidates:
            return None
        res = table_of(Reservation)
        busy = {
            device
            for (device,) in conn.execute(
                sa.select(res.c.device_id).where(
                    res.c.device_id.in_(candidates),
                    is_active(res.c.status),
                    res.c.starts_at < slot.ends_at,
                    res.c.ends_at > start,
                )
            )
        }
        for device in candidates:
            if device not in busy:
                return RebookOffer(
                    device_id=device,
                    name=available[device].name,
                    starts_at=start.timestamp(),
                    ends_at=slot.ends_at.timestamp(),
                    replaces=slot.id,
                )
        return None


def _next_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
