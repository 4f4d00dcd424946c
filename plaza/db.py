"""Engine and session factory; SQLite (default, WAL) or PostgreSQL, chosen by URL.

SQLite: WAL journal, ``synchronous=NORMAL``, a busy timeout, and the BEGIN IMMEDIATE recipe
(pysqlite's own transaction handling is switched off and every transaction takes the write
lock at BEGIN), so check-then-insert cannot interleave between two writers.

Schema: ``create_all`` plus a ``schema_version`` row. A database written by a newer schema is
refused; an older one is upgraded by the steps in ``_UPGRADES``, one per version after the
first, applied in order. We chose this over Alembic for now because the schema is young and
both dialects must stay in lockstep; the first change to an existing column is the moment to
add Alembic (see docs/operations.md).

Errors::

    DatabaseError (RuntimeError)
     +-- SchemaTooNew     the database was written by a newer release
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlmodel import SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from plaza import rules, tables
from plaza.tables import SCHEMA_VERSION, SchemaVersion


class DatabaseError(RuntimeError):
    """The database cannot be used by this release."""


class SchemaTooNew(DatabaseError):
    pass


async def _v2_reservations(conn: AsyncConnection) -> None:
    """Version 2 adds reservations, the command log and the outbox (created by create_all);
    the PostgreSQL constraints are added by :func:`_constraints`."""


async def _v3_identity(conn: AsyncConnection) -> None:
    """Version 3 adds broker credentials and notices (new tables, created by create_all)."""


async def _v4_notifications(conn: AsyncConnection) -> None:
    """Version 4 adds persisted notifications (a new table, created by create_all)."""


async def _v5_notification_seq(conn: AsyncConnection) -> None:
    """Version 5 numbers notifications from a per-player counter row (created by
    create_all), seeded from what version 4 already numbered."""
    await conn.execute(
        text(
            'INSERT INTO notification_seq ("user", last) '
            'SELECT "user", MAX(seq) FROM notification GROUP BY "user"'
        )
    )


async def _v6_broker_sessions(conn: AsyncConnection) -> None:
    """Version 6 gives every browser session a broker account of its own (``broker_session``,
    created by create_all); version 3's ``broker_credential`` is no longer read."""


async def _v7_alert_english(conn: AsyncConnection) -> None:
    """Version 7: alerts carry their English text beside the Korean one."""
    columns = await conn.run_sync(
        lambda c: {col["name"] for col in inspect(c).get_columns("alert")}
    )
    if "message_en" not in columns:
        await conn.execute(text("ALTER TABLE alert ADD COLUMN message_en VARCHAR(500)"))


async def _v8_reservation_indexes(conn: AsyncConnection) -> None:
    """Version 8: a machine's and a player's reservations are found by ``(device_id, ends_at)``
    and ``(player, ends_at)`` instead of one-column indexes (see ``tables.is_active``)."""
    await conn.execute(text("DROP INDEX IF EXISTS ix_reservation_device_id"))
    await conn.execute(text("DROP INDEX IF EXISTS ix_reservation_player"))
    await conn.execute(
        text(
            "CREATE INDEX IF NOT EXISTS ix_reservation_device_ends"
            " ON reservation (device_id, ends_at)"
        )
    )
    await conn.execute(
        text(
            "CREATE INDEX IF NOT EXISTS ix_reservation_player_ends ON reservation (player, ends_at)"
        )
    )


async def _v9_dead_letters(conn: AsyncConnection) -> None:
    """Version 9: outbox rows the broker cannot take are set aside (``dead_at``,
    ``dead_reason``) instead of being retried at the head of the queue; the command log is
    pruned by age (an index on ``created_at``)."""
    columns = await conn.run_sync(
        lambda c: {col["name"] for col in inspect(c).get_columns("outbox")}
    )
    stamp = "TIMESTAMP WITH TIME ZONE" if conn.dialect.name == "postgresql" else "DATETIME"
    if "dead_at" not in columns:
        await conn.execute(text(f"ALTER TABLE outbox ADD COLUMN dead_at {stamp}"))
    if "dead_reason" not in columns:
        await conn.execute(text("ALTER TABLE outbox ADD COLUMN dead_reason VARCHAR(200)"))
    await conn.execute(
        text("CREATE INDEX IF NOT EXISTS ix_command_log_created_at ON command_log (created_at)")
    )


async def _v10_idempotency_keys(conn: AsyncConnection) -> None:
    """Version 10: REST idempotency keys remember what they were first used for
    (``idempotency_key``), and logged-out sessions are kept (``revoked_session``); both
    tables are created by create_all."""


async def _v11_booking(conn: AsyncConnection) -> None:
    """Version 11 (issue 17, booking): parties, waitlist holds and the no-show policy.
    Reservations get ``party_id`` (indexed) and ``hold_until``; ``waitlist_entry`` and
    ``player_standing`` are new tables (created by create_all). On PostgreSQL the exclusion
    constraints are redrawn: a held machine (status ``held``) blocks like an approved one, and
    the seats of one party may share their slot for their player; the command log's ``op``
    widens to 24 characters (``move_waitlist_entry``)."""
    columns = await conn.run_sync(
        lambda c: {col["name"] for col in inspect(c).get_columns("reservation")}
    )
    stamp = "TIMESTAMP WITH TIME ZONE" if conn.dialect.name == "postgresql" else "DATETIME"
    if "party_id" not in columns:
        await conn.execute(text("ALTER TABLE reservation ADD COLUMN party_id VARCHAR(32)"))
    if "hold_until" not in columns:
        await conn.execute(text(f"ALTER TABLE reservation ADD COLUMN hold_until {stamp}"))
    await conn.execute(
        text("CREATE INDEX IF NOT EXISTS ix_reservation_party_id ON reservation (party_id)")
    )
    if conn.dialect.name == "postgresql":  # (SQLite does not enforce VARCHAR lengths)
        await conn.execute(text("ALTER TABLE command_log ALTER COLUMN op TYPE VARCHAR(24)"))
        for name in _PG_CONSTRAINTS:
            await conn.execute(text(f"ALTER TABLE reservation DROP CONSTRAINT IF EXISTS {name}"))
        await _constraints(conn)


_UPGRADES: dict[int, Callable[[AsyncConnection], Awaitable[None]]] = {
    2: _v2_reservations,
    3: _v3_identity,
    4: _v4_notifications,
    5: _v5_notification_seq,
    6: _v6_broker_sessions,
    7: _v7_alert_english,
    8: _v8_reservation_indexes,
    9: _v9_dead_letters,
    10: _v10_idempotency_keys,
    11: _v11_booking,
}

#: PostgreSQL: no two *holding* reservations (approved, checked in, held) overlap on one
#: machine or for one player, but for the seats of one party (its id, else the reservation's
#: own: btree_gist's ``<>``). Half-open ranges, so back-to-back slots are fine.
_PG_CONSTRAINTS = {
    "reservation_no_overlap_device": "device_id WITH =",
    "reservation_no_overlap_player": "player WITH =, (COALESCE(party_id, id)) WITH <>",
}
_HOLDING_SQL = ", ".join(f"'{s.value}'" for s in sorted(rules.HOLDING))


async def _constraints(conn: AsyncConnection) -> None:
    if conn.dialect.name != "postgresql":
        return
    await conn.execute(text("CREATE EXTENSION IF NOT EXISTS btree_gist"))
    for name, key in _PG_CONSTRAINTS.items():
        exists = await conn.scalar(
            text("SELECT 1 FROM pg_constraint WHERE conname = :n"), {"n": name}
        )
        if not exists:
            await conn.execute(
                text(
                    f"ALTER TABLE reservation ADD CONSTRAINT {name} EXCLUDE USING gist "
                    f"({key}, tstzrange(starts_at, ends_at, '[)') WITH &&) "
                    f"WHERE (status IN ({_HOLDING_SQL}))"
                )
            )


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
        address = url.split("://", 1)[1]
        return create_engine(
            f"postgresql+psycopg://{address}", pool_size=2, pool_reset_on_return=None
        )
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


async def migrate(engine: AsyncEngine) -> int:
    """Create or upgrade the schema; return the schema version now in force."""
    assert tables.Device.__tablename__ == "device"
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all)
        await _constraints(conn)
    async with AsyncSession(engine, expire_on_commit=False) as session:
        row = (await session.exec(select(SchemaVersion))).first()
        if row is None:
            session.add(SchemaVersion(version=SCHEMA_VERSION))
            await session.commit()
            return SCHEMA_VERSION
        if row.version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"database schema {row.version} is newer than this release ({SCHEMA_VERSION})"
            )
        found = row.version
    for version in range(found + 1, SCHEMA_VERSION + 1):
        async with engine.begin() as conn:
            await _UPGRADES[version](conn)
            await conn.execute(
                text("UPDATE schema_version SET version = :v WHERE id = 1"), {"v": version}
            )
    return SCHEMA_VERSION


def session_factory(engine: AsyncEngine) -> Callable[[], AsyncSession]:
    def _new() -> AsyncSession:
        return AsyncSession(engine, expire_on_commit=False)

    return _new
