"""Schema upgrades on a real database: a database left at an older version is brought to the
current one, keeping its data (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from plaza.db import make_engine, migrate
from plaza.tables import SCHEMA_VERSION

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_a_version_4_database_gets_seq_counters_and_english_alerts(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert await migrate(engine) == SCHEMA_VERSION
        async with engine.begin() as conn:  # what version 4 looked like, with data
            await conn.execute(text("DROP TABLE notification_seq"))
            await conn.execute(text("ALTER TABLE alert DROP COLUMN message_en"))
            for seq in (1, 2, 3):
                await conn.execute(
                    text(
                        'INSERT INTO notification (id, "user", seq, type, priority, title, '
                        "message, locale, created_at) VALUES (:id, 'ana', :seq, 'system_notice', "
                        "'low', 't', 'm', 'ko', CURRENT_TIMESTAMP)"
                    ),
                    {"id": f"n{seq}", "seq": seq},
                )
            await conn.execute(text("UPDATE schema_version SET version = 4"))
        assert await migrate(engine) == SCHEMA_VERSION
        async with engine.connect() as conn:
            last = await conn.scalar(
                text("SELECT last FROM notification_seq WHERE \"user\" = 'ana'")
            )
            version = await conn.scalar(text("SELECT version FROM schema_version"))
            await conn.execute(text("SELECT message_en FROM alert"))
        assert (last, version) == (3, SCHEMA_VERSION)
    finally:
        await engine.dispose()


async def test_a_version_7_database_finds_reservations_by_machine_and_player_ends(
    db_url: str,
) -> None:
    engine = make_engine(db_url)
    try:
        assert await migrate(engine) == SCHEMA_VERSION
        async with engine.begin() as conn:  # version 7's one-column indexes
            await conn.execute(text("DROP INDEX ix_reservation_device_ends"))
            await conn.execute(text("DROP INDEX ix_reservation_player_ends"))
            await conn.execute(
                text("CREATE INDEX ix_reservation_device_id ON reservation (device_id)")
            )
            await conn.execute(text("CREATE INDEX ix_reservation_player ON reservation (player)"))
            await conn.execute(text("UPDATE schema_version SET version = 7"))
        assert await migrate(engine) == SCHEMA_VERSION
        async with engine.connect() as conn:
            indexes = await conn.run_sync(
                lambda c: {
                    i["name"]: i["column_names"] for i in inspect(c).get_indexes("reservation")
                }
            )
        assert indexes.get("ix_reservation_device_ends") == ["device_id", "ends_at"]
        assert indexes.get("ix_reservation_player_ends") == ["player", "ends_at"]
        assert "ix_reservation_device_id" not in indexes
        assert "ix_reservation_player" not in indexes
    finally:
        await engine.dispose()


async def test_a_version_8_database_keeps_its_unsent_outbox_rows_and_finds_old_commands_by_age(
    db_url: str,
) -> None:
    engine = make_engine(db_url)
    try:
        assert await migrate(engine) == SCHEMA_VERSION
        async with engine.begin() as conn:  # version 8's outbox had no dead-letter columns
            await conn.execute(text("ALTER TABLE outbox DROP COLUMN dead_at"))
            await conn.execute(text("ALTER TABLE outbox DROP COLUMN dead_reason"))
            await conn.execute(text("DROP INDEX ix_command_log_created_at"))
            await conn.execute(
                text(
                    "INSERT INTO outbox (topic, payload, qos, retain, created_at) "
                    "VALUES ('plaza/events/reservations', :p, 1, false, CURRENT_TIMESTAMP)"
                ),
                {"p": b"{}"},
            )
            await conn.execute(text("UPDATE schema_version SET version = 8"))
        assert await migrate(engine) == SCHEMA_VERSION
        async with engine.connect() as conn:
            query = text("SELECT topic, published_at, dead_at, dead_reason FROM outbox")
            rows = (await conn.execute(query)).all()
            indexes = await conn.run_sync(
                lambda c: {
                    i["name"]: i["column_names"] for i in inspect(c).get_indexes("command_log")
                }
            )
        assert [tuple(r) for r in rows] == [("plaza/events/reservations", None, None, None)]
        assert indexes.get("ix_command_log_created_at") == ["created_at"]
    finally:
        await engine.dispose()


async def test_a_version_10_database_gets_parties_holds_and_the_no_show_standing(
    db_url: str,
) -> None:
    engine = make_engine(db_url)
    postgres = db_url.startswith("postgresql")
    old_where = "WHERE (status IN ('approved', 'checked_in'))"
    try:
        assert await migrate(engine) == SCHEMA_VERSION
        async with engine.begin() as conn:  # what version 10 looked like, with a booking
            if postgres:
                for name, key in (("device", "device_id"), ("player", "player")):
                    await conn.execute(
                        text(
                            f"ALTER TABLE reservation DROP CONSTRAINT reservation_no_overlap_{name}"
                        )
                    )
                    await conn.execute(
                        text(
                            f"ALTER TABLE reservation ADD CONSTRAINT reservation_no_overlap_{name}"
                            f" EXCLUDE USING gist ({key} WITH =,"
                            f" tstzrange(starts_at, ends_at, '[)') WITH &&) {old_where}"
                        )
                    )
                await conn.execute(text("ALTER TABLE command_log ALTER COLUMN op TYPE VARCHAR(12)"))
            await conn.execute(text("DROP INDEX ix_reservation_party_id"))
            await conn.execute(text("ALTER TABLE reservation DROP COLUMN party_id"))
            await conn.execute(text("ALTER TABLE reservation DROP COLUMN hold_until"))
            await conn.execute(text("DROP TABLE waitlist_entry"))
            await conn.execute(text("DROP TABLE player_standing"))
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
            await conn.execute(text("UPDATE schema_version SET version = 10"))
        assert await migrate(engine) == SCHEMA_VERSION
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
