"""The booking statements (parties, the waitlist, no-show standing) as Core statements.

They run far less often than the hot path's few (a party, a waitlist change, an offer, a
no-show), so one implementation on a Core connection serves every database: the sqlite3 path
hands them its transaction's Core connection.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection, func

from bridge.sql.rows import DeviceRow, EntryRow, SlotRow, StandingRow
from plaza import rules
from plaza.tables import (
    Device,
    PlayerStanding,
    Reservation,
    WaitlistEntry,
    as_utc,
    is_active,
    table_of,
)

_RES, _DEV = table_of(Reservation), table_of(Device)
_ENTRY, _STANDING = table_of(WaitlistEntry), table_of(PlayerStanding)
_SLOT_COLUMNS = tuple(_RES.c[name] for name in SlotRow._fields)
_DEVICE_COLUMNS = tuple(_DEV.c[name] for name in DeviceRow._fields)
_ENTRY_COLUMNS = tuple(_ENTRY.c[name] for name in EntryRow._fields)

_PARTY_SEATS = sa.select(*_SLOT_COLUMNS).where(
    _RES.c.party_id.in_(sa.bindparam("parties", expanding=True))
)
_KIND_DEVICES = sa.select(*_DEVICE_COLUMNS).where(
    _DEV.c.kind.in_(sa.bindparam("kinds", expanding=True))
)
_ENTRIES = sa.select(*_ENTRY_COLUMNS).where(
    sa.or_(
        _ENTRY.c.id.in_(sa.bindparam("ids", expanding=True)),
        _ENTRY.c.offer_id.in_(sa.bindparam("offers", expanding=True)),
    )
)
_LIVE_ENTRIES = sa.select(*_ENTRY_COLUMNS).where(
    sa.or_(
        _ENTRY.c.kind.in_(sa.bindparam("kinds", expanding=True)),
        _ENTRY.c.player.in_(sa.bindparam("players", expanding=True)),
    ),
    _ENTRY.c.status.in_(sorted(s.value for s in rules.LIVE_ENTRIES)),
)
_SUSPENSIONS = sa.select(_STANDING.c.player, _STANDING.c.suspended_until).where(
    _STANDING.c.player.in_(sa.bindparam("players", expanding=True))
)
#: no-shows since the window's start and since the player's strikes were last reset
_STRIKES = (
    sa.select(_RES.c.player, func.count())
    .select_from(_RES.outerjoin(_STANDING, _STANDING.c.player == _RES.c.player))
    .where(
        _RES.c.player.in_(sa.bindparam("players", expanding=True)),
        is_active(_RES.c.status, [rules.Status.NO_SHOW]),
        _RES.c.updated_at >= sa.bindparam("window_start"),
        sa.or_(_STANDING.c.strikes_since.is_(None), _RES.c.updated_at > _STANDING.c.strikes_since),
    )
    .group_by(_RES.c.player)
)


class BookingSql:
    """The booking statements on a Core connection: both databases (and the sqlite3 path,
    which hands them its transaction's Core connection) run them this way."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def party_seats(self, parties: Collection[str]) -> list[SlotRow]:
        if not parties:
            return []
        rows = self.conn.execute(_PARTY_SEATS, {"parties": list(parties)})
        return [SlotRow(*row) for row in rows]

    def kind_devices(self, kinds: Collection[str]) -> list[DeviceRow]:
        if not kinds:
            return []
        return [DeviceRow(*row) for row in self.conn.execute(_KIND_DEVICES, {"kinds": list(kinds)})]

    def entries(self, ids: Collection[str], offers: Collection[str]) -> list[EntryRow]:
        if not ids and not offers:
            return []
        rows = self.conn.execute(_ENTRIES, {"ids": list(ids), "offers": list(offers)})
        return [EntryRow(*row) for row in rows]

    def live_entries(self, kinds: Collection[str], players: Collection[str]) -> list[EntryRow]:
        if not kinds and not players:
            return []
        rows = self.conn.execute(_LIVE_ENTRIES, {"kinds": list(kinds), "players": list(players)})
        return [EntryRow(*row) for row in rows]

    def standing(self, players: Collection[str], window_start: datetime) -> list[StandingRow]:
        if not players:
            return []
        params = {"players": list(players)}
        until = {p: as_utc(u) if u else None for p, u in self.conn.execute(_SUSPENSIONS, params)}
        strikes: dict[str, int] = dict(
            self.conn.execute(_STRIKES, {**params, "window_start": window_start}).all()
        )
        return [
            StandingRow(p, until.get(p), int(strikes.get(p, 0)))
            for p in sorted(set(until) | set(strikes))
        ]
