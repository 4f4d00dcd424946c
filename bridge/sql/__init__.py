"""The batched path's statements: one interface (:class:`BatchSql`), three ways to run them.

The reservation committer's batched path runs the same handful of statements for every batch:
which request keys are logged, the machines' facts, the target reservations, the live
reservations near the batch's slots, each player's count of active ones, the changed
machines' board rows, and the inserts of reservations, command-log rows and outbox rows
(:class:`bridge.writes.Writes` flushes through them). A batch asks for them in two phases,
:meth:`BatchSql.facts` (the reads) and :meth:`BatchSql.write_batch` (the inserts, then the
board rows).

- :class:`~bridge.sql.core.CoreBatchSql` runs them as prebuilt SQLAlchemy Core statements (any
  database; the careful path's async sessions, and SQLite when the connection is not a plain
  ``sqlite3`` one).
- :class:`~bridge.sql.sqlite.SqliteBatchSql` runs the same SQL as fixed strings on the
  ``sqlite3`` connection of the same transaction (see that module for why).
- :class:`~bridge.sql.postgres.PostgresBatchSql` runs it as fixed strings on the ``psycopg``
  connection, each phase as one pipeline: two server round trips a batch.

- The booking statements (party seats, machines of a kind, waitlist entries, no-show
  standing) run less often: all three use :class:`~bridge.sql.booking.BookingSql` (Core).

The fixed SQL of the last two is written once, in :mod:`bridge.sql.text`. All return plain
rows with the same fields (tests/integration/test_batch_sql.py holds each to the same rows);
every reservation scenario in the tests runs on SQLite and PostgreSQL, and
tests/integration/test_query_plans.py checks both SQLite variants seek the
(device_id, ends_at) / (player, ends_at) indexes.
"""

from __future__ import annotations

import sqlite3

import psycopg
from sqlalchemy import Connection

from bridge.sql.core import CoreBatchSql
from bridge.sql.postgres import PostgresBatchSql
from bridge.sql.rows import (
    BatchSql,
    BatchWrites,
    BoardAsk,
    DeviceRow,
    EntryRow,
    Facts,
    FactsAsk,
    SlotRow,
    StandingRow,
)
from bridge.sql.sqlite import SqliteBatchSql

__all__ = [
    "BatchSql",
    "BatchWrites",
    "BoardAsk",
    "DeviceRow",
    "EntryRow",
    "Facts",
    "FactsAsk",
    "SlotRow",
    "StandingRow",
    "batch_sql",
]


def batch_sql(conn: Connection) -> BatchSql:
    """The fastest way to run the batch's statements on ``conn``'s transaction."""
    raw = conn.connection.driver_connection
    if isinstance(raw, sqlite3.Connection):
        return SqliteBatchSql(raw, conn)
    if isinstance(raw, psycopg.Connection):
        return PostgresBatchSql(raw, conn)
    return CoreBatchSql(conn)
