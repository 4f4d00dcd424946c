# ruff: noqa: S608  (SQL text built from constants at import; see the sqlite3 section)
"""The batched path's statements: one interface, two ways to run them.

The committer's batched path (:class:`bridge.committer.BatchDecision`) runs the same handful of
statements for every batch: which request keys are logged, the machines' facts, the target
reservations, the live reservations near the batch's slots, each player's count of active ones,
the changed machines' board rows, and the inserts of reservations, command-log rows and outbox
rows.

- :class:`CoreBatchSql` runs them as prebuilt SQLAlchemy Core statements (any database; the
  PostgreSQL path, and SQLite when the connection is not a plain ``sqlite3`` one).
- :class:`SqliteBatchSql` runs the same SQL as fixed strings on the ``sqlite3`` connection of the
  same transaction. SQLAlchemy spends ~0.1 ms of Python per statement (cache key, parameters,
  result rows); a one-job batch spent 1.3 ms in its database thread, ~85 % of it there. Here
  sqlite3 keeps each statement prepared (its text never changes: lists go in as one JSON array
  read with ``json_each``), and the GIL is held for far less, which the event loop feels too.

Both return plain rows with the same fields; every reservation scenario in the tests runs on
SQLite and PostgreSQL, and tests/integration/test_query_plans.py checks both SQLite variants
seek the (device_id, ends_at) / (player, ends_at) indexes. Times are stored as SQLAlchemy's
SQLite dialect stores them (naive UTC text with microseconds), so rows written either way read
back alike.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import sqlalchemy as sa
from sqlalchemy import Connection, Table, func, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from bridge.outbox import OutboxRow, insert_outbox
from plaza import rules
from plaza.tables import CommandLog, Device, Reservation, is_active


class SlotRow(NamedTuple):
    id: str
    device_id: str
    player: str
    starts_at: datetime
    ends_at: datetime
    status: str
    code: str


class DeviceRow(NamedTuple):
    id: str
    name: str
    maintenance: bool
    auto_approve: bool


class BatchSql(Protocol):
    def logged(self, keys: Collection[str]) -> list[tuple[str, str]]: ...
    def devices(self, ids: Collection[str]) -> list[DeviceRow]: ...
    def targets(self, ids: Collection[str]) -> list[SlotRow]: ...
    def near(
        self,
        devices: Collection[str],
        players: Collection[str],
        after: datetime,
        before: datetime,
    ) -> list[SlotRow]: ...
    def held(self, players: Collection[str], now: datetime) -> list[tuple[str, int]]: ...
    def board_rows(
        self, devices: Collection[str], now: datetime, horizon: datetime
    ) -> list[SlotRow]: ...
    def insert_reservations(self, rows: list[dict[str, Any]]) -> None: ...
    def insert_logs(self, rows: list[dict[str, Any]]) -> None: ...
    def insert_outbox(self, messages: list[dict[str, Any]]) -> list[OutboxRow]: ...


def batch_sql(conn: Connection) -> BatchSql:
    """The fastest way to run the batch's statements on ``conn``'s transaction."""
    raw = conn.connection.driver_connection
    if isinstance(raw, sqlite3.Connection):
        return SqliteBatchSql(raw)
    return CoreBatchSql(conn)


# -- SQLAlchemy Core ---------------------------------------------------------------------------
def table_of(model: type[SQLModel]) -> Table:
    """The Core table of a SQLModel table class."""
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


_RES, _LOG, _DEV = table_of(Reservation), table_of(CommandLog), table_of(Device)
_SLOT_COLUMNS = (
    _RES.c.id,
    _RES.c.device_id,
    _RES.c.player,
    _RES.c.starts_at,
    _RES.c.ends_at,
    _RES.c.status,
    _RES.c.code,
)


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
_DEVICES = sa.select(_DEV.c.id, _DEV.c.name, _DEV.c.maintenance, _DEV.c.auto_approve).where(
    _DEV.c.id.in_(sa.bindparam("ids", expanding=True))
)
_TARGETS = sa.select(*_SLOT_COLUMNS).where(_RES.c.id.in_(sa.bindparam("ids", expanding=True)))
#: live reservations in the window, on the batch's machines or of its players
_NEAR = sa.union(_live(_RES.c.device_id, "devices"), _live(_RES.c.player, "players"))
#: live reservations each player holds that have not ended (the cap)
_HELD = (
    sa.select(_RES.c.player, func.count())
    .where(
        _RES.c.player.in_(sa.bindparam("players", expanding=True)),
        is_active(_RES.c.status),
        _RES.c.ends_at > sa.bindparam("now"),
    )
    .group_by(_RES.c.player)
)
#: a machine's live reservations from now to the board's horizon
_BOARD = _live(_RES.c.device_id, "devices")
_INSERT_RESERVATIONS = insert(_RES)
_INSERT_LOGS = insert(_LOG)


class CoreBatchSql:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

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

    def insert_outbox(self, messages: list[dict[str, Any]]) -> list[OutboxRow]:
        return insert_outbox(self.conn, messages)


# -- sqlite3 -----------------------------------------------------------------------------------
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
_OUTBOX_COLUMNS = ("topic", "payload", "qos", "retain", "props_json", "created_at", "published_at")


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

    def insert_outbox(self, messages: list[dict[str, Any]]) -> list[OutboxRow]:
        out = []
        cursor = self.raw.cursor()
        try:
            with _as_sqlalchemy_error(_SQL_INSERT_OUTBOX):
                for m in messages:
                    cursor.execute(_SQL_INSERT_OUTBOX, _times(m))
                    assert cursor.lastrowid is not None
                    out.append(
                        OutboxRow(
                            cursor.lastrowid,
                            m["topic"],
                            m["payload"],
                            m["qos"],
                            m["retain"],
                            m["props_json"],
                        )
                    )
        finally:
            cursor.close()
        return out
