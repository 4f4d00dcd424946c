"""The booking statements (parties, the waitlist, no-show standing) as Core statements.

They run far less often than the hot path's few (a party, a waitlist change, an offer, a
no-show), so one implementation on a Core connection serves every database: the sqlite3 path
hands them its transaction's Core connection.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection

from bridge.sql.rows import DeviceRow, EntryRow, SlotRow, StandingRow
from plaza import rules
from plaza.standing import standings
from plaza.tables import Device, Reservation, WaitlistEntry, table_of

_RES, _DEV = table_of(Reservation), table_of(Device)
_ENTRY = table_of(WaitlistEntry)
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
        return [
            StandingRow(s.player, s.suspended_until, s.strikes)
            for s in standings(self.conn, players, window_start)
        ]
