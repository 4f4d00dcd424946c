"""The hand-rolled steps that brought a database from legacy version 1 to 10 (the baseline).

Before Alembic, a ``schema_version`` row said which of these a database had; release 0.1
applied the missing ones at start-up after ``create_all``. They stay as the only way up to
the baseline: :func:`to_baseline` creates what an old database lacks in the baseline's shape
(:mod:`plaza.migrations.baseline`), then runs the steps after the version it was at. Each step
is idempotent (``IF NOT EXISTS``, or a look at the columns first), so a step interrupted by a
crash runs again whole.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from plaza.migrations import baseline


def _columns(conn: Connection, table: str) -> set[str]:
    return {col["name"] for col in inspect(conn).get_columns(table)}


def _nothing(conn: Connection) -> None:
    """Versions 2, 3, 4, 6 and 10 only added tables (reservations, the command log and the
    outbox; broker credentials and notices; notifications; browser sessions' broker accounts;
    idempotency keys and revoked sessions): :func:`to_baseline` creates them."""


def _v5_notification_seq(conn: Connection) -> None:
    """Version 5 numbers notifications from a per-player counter row, seeded from what
    version 4 already numbered."""
    conn.execute(
        text(
            'INSERT INTO notification_seq ("user", last) '
            'SELECT "user", MAX(seq) FROM notification GROUP BY "user"'
        )
    )


def _v7_alert_english(conn: Connection) -> None:
    """Version 7: alerts carry their English text beside the Korean one."""
    if "message_en" not in _columns(conn, "alert"):
        conn.execute(text("ALTER TABLE alert ADD COLUMN message_en VARCHAR(500)"))


def _v8_reservation_indexes(conn: Connection) -> None:
    """Version 8: a machine's and a player's reservations are found by ``(device_id, ends_at)``
    and ``(player, ends_at)`` instead of one-column indexes."""
    conn.execute(text("DROP INDEX IF EXISTS ix_reservation_device_id"))
    conn.execute(text("DROP INDEX IF EXISTS ix_reservation_player"))
    conn.execute(
        text(
            "CREATE INDEX IF NOT EXISTS ix_reservation_device_ends"
            " ON reservation (device_id, ends_at)"
        )
    )
    conn.execute(
        text(
            "CREATE INDEX IF NOT EXISTS ix_reservation_player_ends ON reservation (player, ends_at)"
        )
    )


def _v9_dead_letters(conn: Connection) -> None:
    """Version 9: outbox rows the broker cannot take are set aside (``dead_at``,
    ``dead_reason``); the command log is pruned by age (an index on ``created_at``)."""
    columns = _columns(conn, "outbox")
    stamp = "TIMESTAMP WITH TIME ZONE" if conn.dialect.name == "postgresql" else "DATETIME"
    if "dead_at" not in columns:
        conn.execute(text(f"ALTER TABLE outbox ADD COLUMN dead_at {stamp}"))
    if "dead_reason" not in columns:
        conn.execute(text("ALTER TABLE outbox ADD COLUMN dead_reason VARCHAR(200)"))
    conn.execute(
        text("CREATE INDEX IF NOT EXISTS ix_command_log_created_at ON command_log (created_at)")
    )


STEPS: dict[int, Callable[[Connection], None]] = {
    2: _nothing,
    3: _nothing,
    4: _nothing,
    5: _v5_notification_seq,
    6: _nothing,
    7: _v7_alert_english,
    8: _v8_reservation_indexes,
    9: _v9_dead_letters,
    10: _nothing,
}


def to_baseline(conn: Connection, found: int) -> None:
    """Bring a database at legacy version ``found`` (1..10) to the baseline, in ``conn``'s
    transaction."""
    baseline.create_missing(conn)
    for version in range(found + 1, baseline.VERSION + 1):
        STEPS[version](conn)
