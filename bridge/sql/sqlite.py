"""The batched path's statements as fixed strings on the ``sqlite3`` connection itself.

SQLAlchemy spends ~0.1 ms of Python per statement (cache key, parameters, result rows); a
one-job batch spent 1.3 ms in its database thread, ~85 % of it there. Here sqlite3 keeps each
statement prepared (its text never changes: lists go in as one JSON array read with
``json_each``), and the GIL is held for far less, which the event loop feels too. Times are
stored as SQLAlchemy's SQLite dialect stores them (naive UTC text with microseconds), so rows
written either way read back alike.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from bridge.models import Outbound, Stored
from bridge.sql.booking import BookingSql
from bridge.sql.rows import DeviceRow, InTurn, SlotRow
from bridge.sql.text import as_sqlalchemy_error, statements

_SQL = statements(
    lambda name: f":{name}",
    lambda column, name: f"{column} IN (SELECT value FROM json_each(:{name}))",  # noqa: S608
)


def sqlite_time(value: datetime | None) -> str | None:
    """A time as SQLAlchemy's SQLite dialect stores it (UTC, naive, microseconds)."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _slots(rows: Iterable[tuple[Any, ...]]) -> list[SlotRow]:
    return [
        SlotRow(i, d, p, _time(s), _time(e), st, c, party, _time(hold) if hold else None)
        for i, d, p, s, e, st, c, party, hold in rows
    ]


def _times(row: dict[str, Any]) -> dict[str, Any]:
    return {k: sqlite_time(v) if isinstance(v, datetime) else v for k, v in row.items()}


def _as_sqlalchemy_error(statement: str) -> AbstractContextManager[None]:
    return as_sqlalchemy_error(statement, sqlite3.IntegrityError)


class SqliteBatchSql(InTurn, BookingSql):
    """The hot path's statements on ``raw`` (the sqlite3 connection of ``conn``'s
    transaction); the booking statements run on ``conn`` itself (:class:`BookingSql`)."""

    def __init__(self, raw: sqlite3.Connection, conn: Connection) -> None:
        super().__init__(conn)
        self.raw = raw

    def logged(self, keys: Collection[str]) -> list[tuple[str, str]]:
        return self.raw.execute(_SQL.logged, {"keys": json.dumps(list(keys))}).fetchall()

    def devices(self, ids: Collection[str]) -> list[DeviceRow]:
        rows = self.raw.execute(_SQL.devices, {"ids": json.dumps(list(ids))})
        return [DeviceRow(i, n, bool(m), bool(a), k, z, x, y) for i, n, m, a, k, z, x, y in rows]

    def targets(self, ids: Collection[str]) -> list[SlotRow]:
        return _slots(self.raw.execute(_SQL.targets, {"ids": json.dumps(list(ids))}))

    def near(
        self,
        devices: Collection[str],
        players: Collection[str],
        after: datetime,
        before: datetime,
    ) -> list[SlotRow]:
        params = {
            "devices": json.dumps(list(devices)),
            "players": json.dumps(list(players)),
            "after": sqlite_time(after),
            "before": sqlite_time(before),
        }
        return _slots(self.raw.execute(_SQL.near, params))

    def held(self, players: Collection[str], now: datetime) -> list[tuple[str, int]]:
        params = {"players": json.dumps(list(players)), "now": sqlite_time(now)}
        return self.raw.execute(_SQL.held, params).fetchall()

    def check_in_rows(self, device: str, early: datetime, now: datetime) -> list[SlotRow]:
        params = {"device": device, "early": sqlite_time(early), "now": sqlite_time(now)}
        return _slots(self.raw.execute(_SQL.check_in, params))

    def board_rows(
        self, devices: Collection[str], now: datetime, horizon: datetime
    ) -> list[SlotRow]:
        params = {
            "devices": json.dumps(list(devices)),
            "after": sqlite_time(now),
            "before": sqlite_time(horizon),
        }
        return _slots(self.raw.execute(_SQL.board, params))

    def insert_reservations(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            with _as_sqlalchemy_error(_SQL.insert_reservation):
                self.raw.executemany(_SQL.insert_reservation, [_times(r) for r in rows])

    def insert_logs(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            with _as_sqlalchemy_error(_SQL.insert_log):
                self.raw.executemany(_SQL.insert_log, [_times(r) for r in rows])

    def insert_outbox(
        self, messages: list[Outbound], now: datetime, max_packet: int
    ) -> list[Stored]:
        out: list[Stored] = []
        cursor = self.raw.cursor()
        try:
            with _as_sqlalchemy_error(_SQL.insert_outbox):
                for m in messages:
                    cursor.execute(_SQL.insert_outbox, _times(m.row(now, max_packet)))
                    assert cursor.lastrowid is not None
                    out.append((cursor.lastrowid, m))
        finally:
            cursor.close()
        return out
