"""Schema upgrades on a real database (SQLite and PostgreSQL): a legacy database (version 4, or
the baseline 10) is brought to the Alembic head keeping its data, and ends with exactly the
schema a fresh database gets from the models: tables, columns, indexes, constraints and, on
PostgreSQL, the exclusion constraints."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from plaza import migrations
from plaza.db import SchemaTooNew, make_engine, migrate
from plaza.migrations import baseline

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

Schema = dict[str, Any]


def describe(conn: Connection) -> Schema:
    """Everything a schema comparison looks at, in a form that ignores column order."""
    insp = inspect(conn)
    out: Schema = {}
    for table in sorted(set(insp.get_table_names()) - {"alembic_version"}):
        columns = {
            c["name"]: (
                c["type"].compile(dialect=conn.dialect),
                c["nullable"],
                str(c.get("default")),
            )
            for c in insp.get_columns(table)
        }
        out[table] = {
            "columns": columns,
            "pk": insp.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in insp.get_indexes(table)
            ),
            "unique": sorted(
                (u["name"] or "", tuple(u["column_names"]))
                for u in insp.get_unique_constraints(table)
            ),
            "fks": sorted(
                (
                    tuple(f["constrained_columns"]),
                    f["referred_table"],
                    tuple(f["referred_columns"]),
                    str(f.get("options", {}).get("ondelete")),
                )
                for f in insp.get_foreign_keys(table)
            ),
            "checks": sorted(
                (c["name"] or "", c["sqltext"]) for c in insp.get_check_constraints(table)
            ),
        }
    if conn.dialect.name == "postgresql":
        out["(pg_constraint)"] = sorted(
            tuple(row)
            for row in conn.execute(
                text(
                    "SELECT cl.relname, co.conname, co.contype::text, pg_get_constraintdef(co.oid) "
                    "FROM pg_constraint co JOIN pg_class cl ON cl.oid = co.conrelid "
                    "JOIN pg_namespace n ON n.oid = cl.relnamespace "
                    "WHERE n.nspname = 'public' AND cl.relname <> 'alembic_version'"
                )
            )
        )
        out["(extensions)"] = sorted(
            conn.scalars(text("SELECT extname FROM pg_extension WHERE extname <> 'plpgsql'"))
        )
    return out


#: the fresh schema per dialect, built once per test session
_FRESH: dict[str, Schema] = {}


@pytest.fixture
def fresh_schema(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Schema]:
    """The schema a fresh database gets from the models (``create_all``), on ``db_url``'s
    dialect, read from a database of its own (once per dialect and session)."""
    dialect = db_url.split(":", 1)[0]
    if dialect in _FRESH:
        yield _FRESH[dialect]
        return
    if db_url.startswith("sqlite"):
        url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        admin_url = None
    else:
        admin_url = request.getfixturevalue("pg_admin_url")
        name = f"plaza_fresh_{uuid.uuid4().hex[:12]}"
        url = f"{db_url.rsplit('/', 1)[0]}/{name}"

    async def admin(sql: str) -> None:
        engine = create_async_engine(admin_url or "", isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    async def build() -> Schema:
        engine = make_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(migrations.create_current)
                return await conn.run_sync(describe)
        finally:
            await engine.dispose()

    if admin_url:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        _FRESH[dialect] = asyncio.run(build())
        yield _FRESH[dialect]
    finally:
        if admin_url:
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def legacy_database(conn: Connection, version: int) -> None:
    """A database as release 0.1 left it at legacy ``version`` (4 or 10), with no
    ``alembic_version``: the baseline's tables, taken back to what ``version`` had."""
    baseline.create_missing(conn)
    conn.execute(
        sa.insert(baseline.metadata.tables["schema_version"]).values(
            id=1, version=version, applied_at=datetime.now(UTC)
        )
    )
    if version >= 10:
        return
    for table in ("notification_seq", "broker_session", "idempotency_key", "revoked_session"):
        conn.execute(text(f"DROP TABLE {table}"))  # versions 5, 6 and 10 added them
    conn.execute(text("ALTER TABLE alert DROP COLUMN message_en"))  # version 7
    conn.execute(text("DROP INDEX ix_reservation_device_ends"))  # version 8
    conn.execute(text("DROP INDEX ix_reservation_player_ends"))
    conn.execute(text("CREATE INDEX ix_reservation_device_id ON reservation (device_id)"))
    conn.execute(text("CREATE INDEX ix_reservation_player ON reservation (player)"))
    conn.execute(text("ALTER TABLE outbox DROP COLUMN dead_at"))  # version 9
    conn.execute(text("ALTER TABLE outbox DROP COLUMN dead_reason"))
    conn.execute(text("DROP INDEX ix_command_log_created_at"))
    conn.execute(  # version 3's browser credentials, unread since version 6
        text(
            "CREATE TABLE broker_credential (username VARCHAR(48) NOT NULL PRIMARY KEY, "
            "expires_at TIMESTAMP WITH TIME ZONE NOT NULL)"
        )
    )


def fill(conn: Connection) -> None:
    """A machine, a reservation, three notifications of one player and an unsent outbox row,
    written with SQL that every legacy version accepts."""
    now = datetime.now(UTC)
    meta = baseline.metadata.tables
    conn.execute(
        sa.insert(meta["device"]).values(
            id="pc-01",
            name="PC 01",
            kind="pc",
            zone="main",
            auto_approve=False,
            maintenance=False,
            online=False,
            state="idle",
            status="offline",
            epoch=3,
            state_epoch=-1,
            state_seq=-1,
            board_version=7,
            since=now,
            created_at=now,
        )
    )
    conn.execute(
        sa.insert(meta["reservation"]).values(
            id="r1",
            device_id="pc-01",
            player="ana",
            starts_at=now,
            ends_at=now,
            status="approved",
            code="1234",
            request_key="ana:q1",
            created_at=now,
            updated_at=now,
        )
    )
    conn.execute(
        sa.insert(meta["notification"]),
        [
            {
                "id": f"n{seq}",
                "user": "ana",
                "seq": seq,
                "type": "system_notice",
                "priority": "low",
                "title": "t",
                "message": "m",
                "locale": "ko",
                "created_at": now,
            }
            for seq in (1, 2, 3)
        ],
    )
    conn.execute(
        text(
            "INSERT INTO outbox (topic, payload, qos, retain, created_at) "
            "VALUES ('plaza/events/reservations', :p, 1, false, CURRENT_TIMESTAMP)"
        ),
        {"p": b"{}"},
    )


async def upgraded(db_url: str, version: int) -> tuple[str, Schema, dict[str, Any]]:
    """Build a legacy database at ``version`` with data, migrate it; return the revision,
    the schema and what became of the data."""
    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(legacy_database, version)
            await conn.run_sync(fill)
        revision = await migrate(engine)
        assert await migrate(engine) == revision, "a second start changes nothing"
        async with engine.connect() as conn:
            schema = await conn.run_sync(describe)
            data = {
                "seq": await conn.scalar(
                    text("SELECT last FROM notification_seq WHERE \"user\" = 'ana'")
                ),
                "outbox": [
                    tuple(r)
                    for r in await conn.execute(
                        text("SELECT topic, published_at, dead_at, dead_reason FROM outbox")
                    )
                ],
                "reservation": (
                    await conn.execute(text("SELECT device_id, status, code FROM reservation"))
                ).all(),
                "notifications": await conn.scalar(text("SELECT count(*) FROM notification")),
                "device": (
                    await conn.execute(text("SELECT epoch, board_version FROM device"))
                ).all(),
                "alembic": await conn.scalar(text("SELECT version_num FROM alembic_version")),
                "schema_version": await conn.scalar(text("SELECT version FROM schema_version")),
            }
        return revision, schema, data
    finally:
        await engine.dispose()


def assert_same_schema(migrated: Schema, fresh: Schema) -> None:
    assert set(migrated) == set(fresh)
    for table in fresh:
        assert migrated[table] == fresh[table], table


@pytest.mark.parametrize("version", [4, 10], ids=["version-4", "baseline"])
async def test_a_legacy_database_reaches_head_with_its_data_and_a_fresh_databases_schema(
    db_url: str, fresh_schema: Schema, version: int
) -> None:
    revision, schema, data = await upgraded(db_url, version)
    assert revision == migrations.head()
    assert data["alembic"] == revision
    assert data["schema_version"] == int(revision), "a release before Alembic refuses it"
    assert data["seq"] == (3 if version < 5 else None)  # version 5 seeded the counters
    assert data["outbox"] == [("plaza/events/reservations", None, None, None)]
    assert [tuple(r) for r in data["reservation"]] == [("pc-01", "approved", "1234")]
    assert data["notifications"] == 3
    assert [tuple(r) for r in data["device"]] == [(3, 7)]
    assert_same_schema(schema, fresh_schema)


async def test_a_fresh_database_is_stamped_at_head(db_url: str, fresh_schema: Schema) -> None:
    engine = make_engine(db_url)
    try:
        assert await migrate(engine) == migrations.head()
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT version_num FROM alembic_version")) == (
                migrations.head()
            )
            assert_same_schema(await conn.run_sync(describe), fresh_schema)
    finally:
        await engine.dispose()


async def test_a_database_from_a_newer_release_is_refused_and_left_as_it_is(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        await migrate(engine)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
        with pytest.raises(SchemaTooNew, match="revision 0099 is newer than this release"):
            await migrate(engine)
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT version_num FROM alembic_version")) == "0099"
    finally:
        await engine.dispose()


def test_plaza_up_refuses_a_database_from_a_newer_release_and_starts_nothing(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    async def newer() -> None:
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'plaza.db'}")
        try:
            await migrate(engine)
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
        finally:
            await engine.dispose()

    asyncio.run(newer())
    done = subprocess.run(
        [sys.executable, "-m", "venue.cli", "up", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "error: database schema revision 0099 is newer than this release" in done.stderr
    assert "nothing was started" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_bridge_and_an_api_starting_together_migrate_once_and_both_start(
    db_url: str,
) -> None:
    engines = [make_engine(db_url), make_engine(db_url)]
    try:
        async with engines[0].begin() as conn:
            await conn.run_sync(legacy_database, 4)
        revisions = await asyncio.gather(*(migrate(e) for e in engines))
        assert revisions == [migrations.head()] * 2
    finally:
        for engine in engines:
            await engine.dispose()


async def test_a_version_10_database_gets_parties_holds_and_the_no_show_standing(
    db_url: str,
) -> None:
    engine = make_engine(db_url)
    postgres = db_url.startswith("postgresql")
    try:
        async with engine.begin() as conn:  # what version 10 looked like, with two machines
            await conn.run_sync(legacy_database, 10)
            for device in ("pc-01", "pc-02"):
                await conn.execute(
                    text(
                        "INSERT INTO device (id, name, kind, zone, auto_approve, maintenance, "
                        "online, state, status, epoch, state_epoch, state_seq, board_version, "
                        "since, created_at) VALUES (:id, :id, 'pc', 'main', false, false, false, "
                        "'idle', 'offline', -1, -1, -1, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                    ),
                    {"id": device},
                )
        assert await migrate(engine) == migrations.head()
        async with engine.connect() as conn:
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("reservation")}
            )
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert {"party_id", "hold_until"} <= columns
        assert {"waitlist_entry", "player_standing"} <= tables
        if not postgres:
            return
        seat = (
            "INSERT INTO reservation (id, device_id, player, starts_at, ends_at, status, code, "
            "request_key, created_at, updated_at, party_id) VALUES (:id, :device, 'ana', "
            "now(), now() + interval '1 hour', :status, '1', :id, now(), now(), :party)"
        )

        async def insert(rid: str, device: str, status: str, party: str | None) -> None:
            params = {"id": rid, "device": device, "status": status, "party": party}
            async with engine.begin() as conn:
                await conn.execute(text(seat), params)

        await insert("s1", "pc-01", "approved", "p1")  # two seats of one party share a slot
        await insert("s2", "pc-02", "approved", "p1")
        with pytest.raises(IntegrityError):  # a held machine blocks like an approved one
            await insert("h1", "pc-01", "held", None)
        async with engine.begin() as conn:
            op = await conn.scalar(
                text(
                    "SELECT character_maximum_length FROM information_schema.columns "
                    "WHERE table_name = 'command_log' AND column_name = 'op'"
                )
            )
        assert op == 24
    finally:
        await engine.dispose()
