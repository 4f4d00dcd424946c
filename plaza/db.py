"""Engine and session factory; SQLite (default, WAL) or PostgreSQL, chosen by URL.

SQLite: WAL journal, ``synchronous=NORMAL``, a busy timeout, and the BEGIN IMMEDIATE recipe
(pysqlite's own transaction handling is switched off and every transaction takes the write
lock at BEGIN), so check-then-insert cannot interleave between two writers.

Schema: :func:`migrate` runs :mod:`plaza.migrations` (Alembic revisions, and the legacy steps
up to the baseline); its errors (:class:`DatabaseError`, :class:`SchemaTooNew`) are raised
from here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from plaza import migrations
from plaza.migrations import DatabaseError, SchemaTooNew

__all__ = ["DatabaseError", "SchemaTooNew", "make_engine", "make_sync_engine", "migrate"]


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, reader: bool = False, **kw: Any) -> AsyncEngine:
    """An engine for ``url``. ``reader=True`` (SQLite): transactions begin deferred, for
    read-only work, so readers never queue behind the write lock (WAL lets them run beside
    the one writer). Never write through a reader engine."""
    if is_sqlite(url):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kw)
        _sqlite_recipe(engine, immediate=not reader)
        return engine
    kw.setdefault("pool_size", 10)
    kw.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kw)


def make_sync_engine(url: str) -> Engine | None:
    """A synchronous engine on the same database, for work that runs whole in one worker
    thread (the committer's batches): on SQLite pysqlite with the same recipe; on PostgreSQL
    psycopg. A batch then makes its ~10 round trips without waiting for the event loop between
    them (through asyncpg each one did, and a busy loop made a batch take tens of ms).
    None for a URL whose driver has no synchronous twin here."""
    # Every use is one `engine.begin()` block, which commits or rolls back itself: the pool's
    # rollback on return (and, on PostgreSQL, a ping on checkout) would only add round trips;
    # a connection that died fails its batch, which the committer retries on a fresh one.
    if is_sqlite(url):
        engine = create_engine(
            url.replace("sqlite+aiosqlite:", "sqlite:", 1),
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_reset_on_return=None,
        )
        _sqlite_recipe(engine)
        return engine
    if url.startswith(("postgresql+asyncpg:", "postgresql:")) and "?" not in url:
        # (query options are driver-specific, e.g. asyncpg's ssl= is psycopg's sslmode=:
        # with any, the batch keeps to the async engine rather than guess a translation)
        from psycopg.pq import TransactionStatus  # only PostgreSQL needs the driver

        address = url.split("://", 1)[1]
        engine = create_engine(
            f"postgresql+psycopg://{address}", pool_size=2, pool_reset_on_return=None
        )

        @event.listens_for(engine, "checkin")
        def _transactions_again(dbapi_connection: Any, record: Any) -> None:
            # bridge.sql.postgres sends its own BEGIN in autocommit mode (saving psycopg's
            # round trip for it); the next user of the connection gets psycopg's again. One
            # that is not idle (its transaction neither committed nor rolled back: it broke)
            # is dropped rather than handed out in an unknown state.
            if dbapi_connection is None or not dbapi_connection.autocommit:
                return
            if dbapi_connection.info.transaction_status == TransactionStatus.IDLE:
                dbapi_connection.autocommit = False
            else:
                record.invalidate()

        return engine
    return None


def _sqlite_recipe(engine: AsyncEngine | Engine, *, immediate: bool = True) -> None:
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let BEGIN IMMEDIATE below own transactions
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


async def migrate(engine: AsyncEngine) -> str:
    """Create or upgrade the schema (:mod:`plaza.migrations`); return the Alembic revision now
    in force. Raises :class:`SchemaTooNew` for a database written by a newer release."""
    async with engine.begin() as conn:
        return await conn.run_sync(migrations.migrate)


def session_factory(engine: AsyncEngine) -> Callable[[], AsyncSession]:
    def _new() -> AsyncSession:
        return AsyncSession(engine, expire_on_commit=False)

    return _new
