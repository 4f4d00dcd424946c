"""The batched path's statements: one interface (:class:`BatchSql`), two ways to run them.

The reservation committer's batched path runs the same handful of statements for every batch:
which request keys are logged, the machines' facts, the target reservations, the live
reservations near the batch's slots, each player's count of active ones, the changed
machines' board rows, and the inserts of reservations, command-log rows and outbox rows
(:class:`bridge.writes.Writes` flushes through them).

- :class:`~bridge.sql.core.CoreBatchSql` runs them as prebuilt SQLAlchemy Core statements (any
  database; the PostgreSQL path, and SQLite when the connection is not a plain ``sqlite3``
  one).
- :class:`~bridge.sql.sqlite.SqliteBatchSql` runs the same SQL as fixed strings on the
  ``sqlite3`` connection of the same transaction (see that module for why).
- The booking statements (party seats, machines of a kind, waitlist entries, no-show
  standing) run less often: both use :class:`~bridge.sql.booking.BookingSql` (Core).

Both return plain rows with the same fields; every reservation scenario in the tests runs on
SQLite and PostgreSQL, and tests/integration/test_query_plans.py checks both SQLite variants
seek the (device_id, ends_at) / (player, ends_at) indexes.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import Connection

from bridge.sql.core import CoreBatchSql
from bridge.sql.rows import BatchSql, DeviceRow, EntryRow, SlotRow, StandingRow
from bridge.sql.sqlite import SqliteBatchSql

__all__ = ["BatchSql", "DeviceRow", "EntryRow", "SlotRow", "StandingRow", "batch_sql"]


def batch_sql(conn: Connection) -> BatchSql:
    """The fastest way to run the batch's statements on ``conn``'s transaction."""
    raw = conn.connection.driver_connection
    if isinstance(raw, sqlite3.Connection):
        return SqliteBatchSql(raw, conn)
    return CoreBatchSql(conn)
