# ruff: noqa: S608  (SQL text built from constants at import; see below)
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
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.exc import IntegrityError

from bridge.models import Outbound, Stored
from bridge.sql.booking import BookingSql
from bridge.sql.rows import DeviceRow, SlotRow
from plaza import rules
from plaza.tables import CommandLog, Device, Outbox, Reservation, table_of


# The SQL below is assembled once, at import, from constants and the Core tables' names;
# values always go in as parameters.
def _in(column: str, parameter: str) -> str:
    return f"{column} IN (SELECT value FROM json_each(:{parameter}))"


def _columns(table: Table, names: Iterable[str] | None = None) -> tuple[str, ...]:
    """Column names of ``table`` (those in ``names``, in that order; else every column that is
    not a generated key), as the Core table defines them."""
    if names is not None:
        return tuple(table.c[name].name for name in names)
    return tuple(c.name for c in table.columns if c is not table.autoincrement_column)


_RES, _LOG, _DEV, _OUTBOX = (
    table_of(Reservation),
    table_of(CommandLog),
    table_of(Device),
    table_of(Outbox),
)
# written as `status || ''` for the same reason as plaza.tables.is_active
_LIVE = "status || '' IN ({})".format(", ".join(f"'{s.value}'" for s in sorted(rules.ACTIVE)))
_SLOTS = f"SELECT {', '.join(_columns(_RES, SlotRow._fields))} FROM {_RES.name}"
_WINDOW = "ends_at > :after AND starts_at < :before"
_SQL_LOGGED = f"SELECT request_key, reply_json FROM {_LOG.name} WHERE {_in('request_key', 'keys')}"
_SQL_DEVICES = (
    f"SELECT {', '.join(_columns(_DEV, DeviceRow._fields))} FROM {_DEV.name}"
    f" WHERE {_in('id', 'ids')}"
)
_SQL_TARGETS = f"{_SLOTS} WHERE {_in('id', 'ids')}"
_SQL_BOARD = f"{_SLOTS} WHERE {_in('device_id', 'devices')} AND {_LIVE} AND {_WINDOW}"
_SQL_NEAR = (
    f"{_SQL_BOARD} UNION {_SLOTS} WHERE {_in('player', 'players')} AND {_LIVE} AND {_WINDOW}"
)
_SQL_CHECK_IN = (
    f"{_SLOTS} WHERE device_id = :device AND status || '' = '{rules.Status.APPROVED.value}'"
    " AND starts_at <= :early AND ends_at > :now ORDER BY starts_at"
)
_SQL_HELD = (
    f"SELECT player, count(DISTINCT coalesce(party_id, id)) FROM {_RES.name}"
    f" WHERE {_in('player', 'players')} AND {_LIVE} AND ends_at > :now GROUP BY player"
)


def _insert(table: Table) -> str:
    """An INSERT of every column of ``table`` but a generated key, values by name."""
    columns = _columns(table)
    return (
        f"INSERT INTO {table.name} ({', '.join(columns)})"
        f" VALUES ({', '.join(':' + c for c in columns)})"
    )


_SQL_INSERT_RESERVATION = _insert(_RES)
_SQL_INSERT_LOG = _insert(_LOG)
_SQL_INSERT_OUTBOX = _insert(_OUTBOX)


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


@contextmanager
def _as_sqlalchemy_error(statement: str) -> Iterator[None]:
    """A broken constraint raises what it raises through SQLAlchemy, so the committer's
    handling (the careful path for the loser of a race) is the same either way."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise IntegrityError(statement, None, exc) from exc


class SqliteBatchSql(BookingSql):
    """The hot path's statements on ``raw`` (the sqlite3 connection of ``conn``'s
    transaction); the booking statements run on ``conn`` itself (:class:`BookingSql`)."""

    def __init__(self, raw: sqlite3.Connection, conn: Connection) -> None:
        super().__init__(conn)
        self.raw = raw

    def logged(self, keys: Collection[str]) -> list[tuple[str, str]]:
        return self.raw.execute(_SQL_LOGGED, {"keys": json.dumps(list(keys))}).fetchall()

    def devices(self, ids: Collection[str]) -> list[DeviceRow]:
        rows = self.raw.execute(_SQL_DEVICES, {"ids": json.dumps(list(ids))})
        return [DeviceRow(i, n, bool(m), bool(a), k, z) for i, n, m, a, k, z in rows]

    def targets(self, ids: Collection[str]) -> list[SlotRow]:
        return _slots(self.raw.execute(_SQL_TARGETS, {"ids": json.dumps(list(ids))}))

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
        return _slots(self.raw.execute(_SQL_NEAR, params))

    def held(self, players: Collection[str], now: datetime) -> list[tuple[str, int]]:
        params = {"players": json.dumps(list(players)), "now": sqlite_time(now)}
        return self.raw.execute(_SQL_HELD, params).fetchall()

    def check_in_rows(self, device: str, early: datetime, now: datetime) -> list[SlotRow]:
        params = {"device": device, "early": sqlite_time(early), "now": sqlite_time(now)}
        return _slots(self.raw.execute(_SQL_CHECK_IN, params))

    def board_rows(
        self, devices: Collection[str], now: datetime, horizon: datetime
    ) -> list[SlotRow]:
        params = {
            "devices": json.dumps(list(devices)),
            "after": sqlite_time(now),
            "before": sqlite_time(horizon),
        }
        return _slots(self.raw.execute(_SQL_BOARD, params))

    def insert_reservations(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            with _as_sqlalchemy_error(_SQL_INSERT_RESERVATION):
                self.raw.executemany(_SQL_INSERT_RESERVATION, [_times(r) for r in rows])

    def insert_logs(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            with _as_sqlalchemy_error(_SQL_INSERT_LOG):
                self.raw.executemany(_SQL_INSERT_LOG, [_times(r) for r in rows])

    def insert_outbox(
        self, messages: list[Outbound], now: datetime, max_packet: int
    ) -> list[Stored]:
        out: list[Stored] = []
        cursor = self.raw.cursor()
        try:
            with _as_sqlalchemy_error(_SQL_INSERT_OUTBOX):
                for m in messages:
                    cursor.execute(_SQL_INSERT_OUTBOX, _times(m.row(now, max_packet)))
                    assert cursor.lastrowid is not None
                    out.append((cursor.lastrowid, m))
        finally:
            cursor.close()
        return out
