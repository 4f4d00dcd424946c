"""The waitlist's lines as their players see them, read from SQL: entries, places in line,
expected turns and held offers.

The bridge reads them in the transaction of a change to publish each affected player's
retained state (:mod:`bridge.reservations.waitlist_rows`); the api reads them for
``GET /waitlist``. The arithmetic is :mod:`plaza.waitlist`'s; a machine is free at the end of
the active reservation under way on it (now, if none), machines in maintenance not counted.
Only the bridge writes ``waitlist_entry``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from plaza import rules
from plaza.messages import WaitlistEntryPublic, WaitlistOffer, WaitlistState
from plaza.tables import Device, Reservation, WaitlistEntry, as_utc, is_active, table_of
from plaza.waitlist import expected_turns, positions

_ENTRY, _DEV, _RES = table_of(WaitlistEntry), table_of(Device), table_of(Reservation)
_LIVE = sorted(s.value for s in rules.LIVE_ENTRIES)


def entry_of(row: Any) -> rules.Entry:
    """A waitlist entry row (ORM object or Core row) as the rules see it."""
    return rules.Entry(
        row.id,
        row.player,
        row.kind,
        row.zone,
        int(row.minutes),
        float(row.rank),
        rules.EntryStatus(row.status),
        row.offer_id or "",
    )


def offer_of(slot: rules.Slot) -> WaitlistOffer:
    """A held reservation as the offer its player gets."""
    assert slot.hold_until is not None
    return WaitlistOffer(
        offer_id=slot.id,
        device_id=slot.device_id,
        starts_at=slot.starts_at.timestamp(),
        ends_at=slot.ends_at.timestamp(),
        hold_until=slot.hold_until.timestamp(),
    )


def entry_public(
    entry: rules.Entry,
    position: int | None = None,
    offer: WaitlistOffer | None = None,
    expected_at: float | None = None,
    *,
    with_user: bool = False,
) -> WaitlistEntryPublic:
    """A waitlist entry as its player (``with_user``: staff) sees it."""
    live = entry.status in rules.LIVE_ENTRIES
    return WaitlistEntryPublic(
        id=entry.id,
        kind=entry.kind,
        zone=entry.zone,
        minutes=entry.minutes,
        status=entry.status.value,
        position=position if live else None,
        expected_at=expected_at if live else None,
        offer=offer,
        user=entry.user if with_user else None,
    )


@dataclass
class Lines:
    """Live entries of some lines, with their places, expected turns and offers."""

    now: datetime
    entries: list[rules.Entry] = field(default_factory=list)
    places: dict[str, int] = field(default_factory=dict)
    turns: dict[str, datetime | None] = field(default_factory=dict)
    offers: dict[str, WaitlistOffer] = field(default_factory=dict)

    def public(self, entry: rules.Entry, *, with_user: bool = False) -> WaitlistEntryPublic:
        turn = self.turns.get(entry.id)
        return entry_public(
            entry,
            self.places.get(entry.id),
            self.offers.get(entry.id),
            turn.timestamp() if turn else None,
            with_user=with_user,
        )

    def state_of(self, player: str) -> WaitlistState:
        mine = [e for e in self.entries if e.user == player]
        return WaitlistState(entries=[self.public(e) for e in mine], ts=self.now.timestamp())

    def waiting(self, kind: str) -> int:
        return sum(
            1 for e in self.entries if e.kind == kind and e.status is rules.EntryStatus.WAITING
        )


def read_lines(
    conn: Connection,
    now: datetime,
    *,
    kinds: Collection[str] | None = None,
    players: Collection[str] = (),
) -> Lines:
    """The live entries of ``kinds``' lines (None: every line) and of ``players``, with every
    line those are in, in order."""
    where: list[sa.ColumnElement[bool]] = [_ENTRY.c.status.in_(_LIVE)]
    if kinds is not None:
        where.append(sa.or_(_ENTRY.c.kind.in_(list(kinds)), _ENTRY.c.player.in_(list(players))))
    rows = list(conn.execute(sa.select(_ENTRY).where(*where)))
    more = {r.kind for r in rows} - set(kinds or ())
    if kinds is not None and more:  # the players' other lines, for their places there
        known = {r.id for r in rows}
        extra = sa.select(_ENTRY).where(_ENTRY.c.status.in_(_LIVE), _ENTRY.c.kind.in_(more))
        rows += [r for r in conn.execute(extra) if r.id not in known]
    entries = sorted((entry_of(r) for r in rows), key=lambda e: (e.kind, e.rank, e.id))
    lines = Lines(now, entries, positions(entries))
    all_kinds = {e.kind for e in entries}
    if not all_kinds:
        return lines
    machines = list(
        conn.execute(
            sa.select(_DEV.c.id, _DEV.c.kind).where(
                _DEV.c.kind.in_(all_kinds), _DEV.c.maintenance.is_(False)
            )
        )
    )
    busy = conn.execute(
        sa.select(_RES.c.device_id, _RES.c.ends_at).where(
            _RES.c.device_id.in_([m.id for m in machines]),
            is_active(_RES.c.status),
            _RES.c.ends_at > now,
            _RES.c.starts_at <= now + timedelta(microseconds=1),
        )
    )
    ends: dict[str, datetime] = {}
    for device_id, end in busy:
        ends[device_id] = max(ends.get(device_id, now), as_utc(end))
    free_at: dict[str, list[datetime]] = {}
    for m in machines:
        free_at.setdefault(m.kind, []).append(ends.get(m.id, now))
    lines.turns = expected_turns(entries, free_at, now)
    offered = {e.offer_id: e.id for e in entries if e.offer_id}
    if offered:
        holds = conn.execute(
            sa.select(_RES).where(
                _RES.c.id.in_(list(offered)), _RES.c.status == rules.Status.HELD.value
            )
        )
        for h in holds:
            lines.offers[offered[h.id]] = WaitlistOffer(
                offer_id=h.id,
                device_id=h.device_id,
                starts_at=as_utc(h.starts_at).timestamp(),
                ends_at=as_utc(h.ends_at).timestamp(),
                hold_until=as_utc(h.hold_until).timestamp(),
            )
    return lines
