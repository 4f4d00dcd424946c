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
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from bridge.models import Outbound, Stored
from bridge.sql.rows import DeviceRow, SlotRow
from plaza import rules


# The SQL below is assembled once, at import, from constants; values always go in as parameters.
def _in(column: str, parameter: str) -> str:
    return f"{column} IN (SELECT value FROM json_each(:{parameter}))"


# written as `status || ''` for the same reason as plaza.tables.is_active
_LIVE = "status || '' IN ({})".format(", ".join(f"'{s.value}'" for s in sorted(rules.ACTIVE)))
_SLOTS = "SELECT id, device_id, player, starts_at, ends_at, status, code FROM reservation"
_WINDOW = "ends_at > :after AND starts_at < :before"
_SQL_LOGGED = f"SELECT request_key, reply_json FROM command_log WHERE {_in('request_key', 'keys')}"
_SQL_DEVICES = f"SELECT id, name, maintenance, auto_approve FROM device WHERE {_in('id', 'ids')}"
_SQL_TARGETS = f"{_SLOTS} WHERE {_in('id', 'ids')}"
_SQL_BOARD = f"{_SLOTS} WHERE {_in('device_id', 'devices')} AND {_LIVE} AND {_WINDOW}"
_SQL_NEAR = (
    f"{_SQL_BOARD} UNION {_SLOTS} WHERE {_in('player', 'players')} AND {_LIVE} AND {_WINDOW}"
)
_SQL_HELD = (
    f"SELECT player, count(*) FROM reservation WHERE {_in('player', 'players')} AND {_LIVE}"
    " AND ends_at > :now GROUP BY player"
)
_RESERVATION_COLUMNS = (
    "id",
    "device_id",
    "player",
    "starts_at",
    "ends_at",
    "status",
    "code",
    "request_key",
    "created_at",
    "updated_at",
    "reminded_at",
)
_LOG_COLUMNS = ("request_key", "device_id", "op", "ok", "reply_json", "created_at")
_OUTBOX_COLUMNS = (
    "topic",
    "payload",
    "qos",
    "retain",
    "props_json",
    "created_at",
    "published_at",
    "dead_at",
    "dead_reason",
)


def _insert(table: str, columns: Sequence[str]) -> str:
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"
    )


_SQL_INSERT_RESERVATION = _insert("reservation", _RESERVATION_COLUMNS)
_SQL_INSERT_LOG = _insert("command_log", _LOG_COLUMNS)
_SQL_INSERT_OUTBOX = _insert("outbox", _OUTBOX_COLUMNS)


def sqlite_time(value: datetime | None) -> str | None:
    """A time as SQLAlchemy's SQLite dialect stores it (UTC, naive, microseconds)."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _slots(rows: Iterable[tuple[Any, ...]]) -> list[SlotRow]:
    return [SlotRow(i, d, p, _time(s), _time(e), st, c) for i, d, p, s, e, st, c in rows]


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


class SqliteBatchSql:
    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw

    def logged(self, keys: Collection[str]) -> list[tuple[str, str]]:
        return self.raw.execute(_SQL_LOGGED, {"keys": json.dumps(list(keys))}).fetchall()

    def devices(self, ids: Collection[str]) -> list[DeviceRow]:
        rows = self.raw.execute(_SQL_DEVICES, {"ids": json.dumps(list(ids))})
        return [DeviceRow(i, n, bool(m), bool(a)) for i, n, m, a in rows]

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
