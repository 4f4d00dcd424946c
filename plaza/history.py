"""The utilization report's reads: a window of status history and reservations, for
plaza.utilization (which computes; this module only reads).

Four statements, each bounded by what the window holds:

- the machines (of one zone, or all);
- each machine's last status change before the window (scalar subqueries per machine, each
  one probe of the ``(device_id, at)`` index);
- the changes inside ``[start, end)``: a range of the covering ``(at, device_id, status)``
  index, never the table (history is kept 400 days: a month is a small part of it), in
  ``at`` order (the index's), so no sort is needed anywhere;
- the reservations overlapping the window that held or decided a slot (a range of the
  ``ends_at`` index; never the status index, see plaza.tables.is_active).

Times come back as seconds since the epoch, computed by the database (SQLite ``julianday``,
PostgreSQL ``extract(epoch ...)``): a month of 300 machines is some 150,000 changes, and
parsing that many datetimes in Python would be most of the report's time
(`plaza bench utilization`). tests/integration/test_query_plans.py checks on SQLite that no
statement scans the history.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from plaza import rules, utilization
from plaza.tables import Device, DeviceStatusChange, Reservation, is_active, table_of

_DEV = table_of(Device)
_HIST = table_of(DeviceStatusChange)
_RES = table_of(Reservation)
_INNER = _HIST.alias("earlier")
_UNIX_EPOCH_JULIAN = 2440587.5


def epoch(column: sa.ColumnElement[Any], dialect: str) -> sa.ColumnElement[float]:
    """``column`` (a UTC timestamp) as seconds since the epoch, computed in SQL (SQLite's
    julianday is a float of days: rounded to the millisecond, so 10:00 is not 09:59:59.9999)."""
    if dialect == "sqlite":
        return sa.func.round((sa.func.julianday(column) - _UNIX_EPOCH_JULIAN) * 86400.0, 3)
    return sa.cast(sa.extract("epoch", column), sa.Float)


@functools.cache
def statements(dialect: str, zoned: bool) -> tuple[sa.Select[Any], ...]:
    """(machines, last change before, changes inside, reservations) for ``dialect``;
    ``zoned``: of the ``zone`` bound."""
    in_zone = (_DEV.c.zone == sa.bindparam("zone"),) if zoned else ()
    machines = sa.select(_DEV.c.id, _DEV.c.zone).where(*in_zone)

    def last_before(column: sa.ColumnElement[Any]) -> sa.ScalarSelect[Any]:
        return (
            sa.select(column)
            .where(_INNER.c.device_id == _DEV.c.id, _INNER.c.at < sa.bindparam("start"))
            .order_by(_INNER.c.at.desc())
            .limit(1)
            .scalar_subquery()
        )

    before = sa.select(
        _DEV.c.id, last_before(epoch(_INNER.c.at, dialect)), last_before(_INNER.c.status)
    ).where(*in_zone)
    inside = (
        sa.select(_HIST.c.device_id, epoch(_HIST.c.at, dialect), _HIST.c.status)
        .where(_HIST.c.at >= sa.bindparam("start"), _HIST.c.at < sa.bindparam("end"))
        .order_by(_HIST.c.at)
    )
    bookings = sa.select(
        _RES.c.device_id,
        epoch(_RES.c.starts_at, dialect).label("starts_at"),
        epoch(_RES.c.ends_at, dialect).label("ends_at"),
        _RES.c.status,
    ).where(
        # seek ``ends_at > start`` (the window and later); ``starts_at < end`` holds for every
        # reservation ever made before it, so it is kept out of the index's reach
        sa.func.coalesce(_RES.c.starts_at, _RES.c.starts_at) < sa.bindparam("end"),
        _RES.c.ends_at > sa.bindparam("start"),
        # not the status index: every reservation ever completed shares a few values
        is_active(
            _RES.c.status, [rules.Status(s) for s in utilization.BOOKED | utilization.DECIDED]
        ),
    )
    return machines, before, inside, bookings


def driver_statement(
    statement: sa.Select[Any], dialect: sa.Dialect, bound: dict[str, Any]
) -> tuple[str, list[Any]]:
    """``statement`` as the SQL text and positional parameters its driver takes: sqlite3
    gets times as SQLAlchemy stores them there (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC),
    asyncpg aware datetimes."""
    compiled = statement.compile(dialect=dialect)
    values = compiled.construct_params(bound)
    params = [values[name] for name in compiled.positiontup or []]
    if dialect.name == "sqlite":
        params = [
            v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime) else v
            for v in params
        ]
    return str(compiled), params


async def _driver_rows(
    conn: AsyncConnection, statement: sa.Select[Any], bound: dict[str, Any]
) -> Sequence[Any]:
    """The window's rows straight from the driver (aiosqlite or asyncpg), in this
    connection's transaction: for 140,000 rows SQLAlchemy's result rows cost as much as the
    database itself. Any other driver goes through SQLAlchemy."""
    driver: Any = (await conn.get_raw_connection()).driver_connection
    text, params = driver_statement(statement, conn.dialect, bound)
    if conn.dialect.driver == "aiosqlite":
        rows: Sequence[Any] = await driver.execute_fetchall(text, params)
        return rows
    if conn.dialect.driver == "asyncpg":
        rows = await driver.fetch(text, *params)
        return rows
    rest: Sequence[Any] = (await conn.execute(statement, bound)).all()
    return rest


async def read(
    conn: AsyncConnection, *, start: datetime, end: datetime, zone: str | None, tz: tzinfo
) -> utilization.Utilization:
    """The figures of ``[start, end)`` (of ``zone``'s machines, or every machine)."""
    machines, before, inside, bookings = statements(conn.dialect.name, zone is not None)
    bound: dict[str, Any] = {"start": start, "end": end}
    if zone is not None:
        bound["zone"] = zone
    zones: dict[str, str] = dict((await conn.execute(machines, bound)).all())
    # in time order: every change before the window, then the window's (the index's order)
    earlier = [row for row in await conn.execute(before, bound) if row[1] is not None]
    inside_rows = await _driver_rows(conn, inside, bound)
    held = (await conn.execute(bookings, bound)).all()
    # a month is some 150,000 changes: folded off the event loop (the api serves meanwhile)
    return await asyncio.to_thread(
        functools.partial(
            utilization.compute,
            start=start.timestamp(),
            end=end.timestamp(),
            zones=zones,
            changes=itertools.chain(earlier, inside_rows),
            bookings=held,
            tz=tz,
        )
    )
