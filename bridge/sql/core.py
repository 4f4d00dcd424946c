"""The batched path's statements as prebuilt SQLAlchemy Core statements (any database)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, func, insert

from bridge.models import Outbound, Stored
from bridge.sql.booking import BookingSql
from bridge.sql.rows import DeviceRow, InTurn, SlotRow
from plaza import rules
from plaza.tables import CommandLog, Device, Outbox, Reservation, is_active, table_of

_RES, _LOG, _DEV, _OUTBOX = (
    table_of(Reservation),
    table_of(CommandLog),
    table_of(Device),
    table_of(Outbox),
)
_SLOT_COLUMNS = tuple(_RES.c[name] for name in SlotRow._fields)
_DEVICE_COLUMNS = tuple(_DEV.c[name] for name in DeviceRow._fields)


def _live(column: sa.ColumnElement[str], name: str) -> sa.Select[Any]:
    return sa.select(*_SLOT_COLUMNS).where(
        column.in_(sa.bindparam(name, expanding=True)),
        is_active(_RES.c.status),
        _RES.c.ends_at > sa.bindparam("after"),
        _RES.c.starts_at < sa.bindparam("before"),
    )


_LOGGED = sa.select(_LOG.c.request_key, _LOG.c.reply_json).where(
    _LOG.c.request_key.in_(sa.bindparam("keys", expanding=True))
)
_DEVICES = sa.select(*_DEVICE_COLUMNS).where(_DEV.c.id.in_(sa.bindparam("ids", expanding=True)))
_TARGETS = sa.select(*_SLOT_COLUMNS).where(_RES.c.id.in_(sa.bindparam("ids", expanding=True)))
#: live reservations in the window, on the batch's machines or of its players
_NEAR = sa.union(_live(_RES.c.device_id, "devices"), _live(_RES.c.player, "players"))
#: live reservations each player holds that have not ended (the cap)
_HELD = (
    sa.select(_RES.c.player, func.count(sa.distinct(func.coalesce(_RES.c.party_id, _RES.c.id))))
    .where(
        _RES.c.player.in_(sa.bindparam("players", expanding=True)),
        is_active(_RES.c.status),
        _RES.c.ends_at > sa.bindparam("now"),
    )
    .group_by(_RES.c.player)
)
#: a machine's approved reservations open for check-in
_CHECK_IN = (
    sa.select(*_SLOT_COLUMNS)
    .where(
        _RES.c.device_id == sa.bindparam("device"),
        is_active(_RES.c.status, [rules.Status.APPROVED]),
        _RES.c.starts_at <= sa.bindparam("early"),
        _RES.c.ends_at > sa.bindparam("now"),
    )
    .order_by(_RES.c.starts_at)
)
#: a machine's live reservations from now to the board's horizon
_BOARD = _live(_RES.c.device_id, "devices")
_INSERT_RESERVATIONS = insert(_RES)
_INSERT_LOGS = insert(_LOG)
_INSERT_OUTBOX = insert(_OUTBOX).returning(_OUTBOX.c.id, sort_by_parameter_order=True)


def insert_outbox(
    conn: Connection, messages: list[Outbound], now: datetime, max_packet: int
) -> list[Stored]:
    """Insert ``messages`` in order; return them with their ids (the publishing order).
    One larger than ``max_packet`` (or otherwise unsendable) is written dead-lettered."""
    if not messages:
        return []
    result = conn.execute(_INSERT_OUTBOX, [m.row(now, max_packet) for m in messages])
    return list(zip(result.scalars().all(), messages, strict=True))


class CoreBatchSql(InTurn, BookingSql):
    def logged(self, keys: Collection[str]) -> list[tuple[str, str]]:
        return [(k, t) for k, t in self.conn.execute(_LOGGED, {"keys": list(keys)})]

    def devices(self, ids: Collection[str]) -> list[DeviceRow]:
        return [DeviceRow(*row) for row in self.conn.execute(_DEVICES, {"ids": list(ids)})]

    def targets(self, ids: Collection[str]) -> list[SlotRow]:
        return [SlotRow(*row) for row in self.conn.execute(_TARGETS, {"ids": list(ids)})]

    def near(
        self,
        devices: Collection[str],
        players: Collection[str],
        after: datetime,
        before: datetime,
    ) -> list[SlotRow]:
        params = {"devices": list(devices), "players": list(players)}
        rows = self.conn.execute(_NEAR, {**params, "after": after, "before": before})
        return [SlotRow(*row) for row in rows]

    def held(self, players: Collection[str], now: datetime) -> list[tuple[str, int]]:
        rows = self.conn.execute(_HELD, {"players": list(players), "now": now})
        return [(p, int(n)) for p, n in rows]

    def check_in_rows(self, device: str, early: datetime, now: datetime) -> list[SlotRow]:
        params = {"device": device, "early": early, "now": now}
        return [SlotRow(*row) for row in self.conn.execute(_CHECK_IN, params)]

    def board_rows(
        self, devices: Collection[str], now: datetime, horizon: datetime
    ) -> list[SlotRow]:
        params = {"devices": list(devices), "after": now, "before": horizon}
        return [SlotRow(*row) for row in self.conn.execute(_BOARD, params)]

    def insert_reservations(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.conn.execute(_INSERT_RESERVATIONS, rows)

    def insert_logs(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.conn.execute(_INSERT_LOGS, rows)

    def insert_outbox(
        self, messages: list[Outbound], now: datetime, max_packet: int
    ) -> list[Stored]:
        return insert_outbox(self.conn, messages, now, max_packet)
