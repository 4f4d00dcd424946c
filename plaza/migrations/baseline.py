"""The schema as release 0.1 left it at legacy version 10: Alembic's baseline (``0010``).

Frozen on purpose: these definitions are history, not the models. They are what a database
at the baseline holds, so the legacy path (:mod:`plaza.migrations.legacy`) creates any table
an older database lacks in *this* shape, and every Alembic revision after the baseline starts
from it. Never edit them to follow ``plaza/tables.py``; write a revision instead (see
docs/architecture.md, "Schema and migrations").
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

#: the legacy ``schema_version`` the baseline equals, and the baseline's Alembic revision
VERSION = 10
REVISION = "0010"

metadata = sa.MetaData()


def _ts(name: str, nullable: bool = False, index: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, index=index)


def _s(name: str, length: int | None, nullable: bool = False, **kw: object) -> sa.Column[object]:
    kind = sa.String(length) if length else sa.String()
    return sa.Column(name, kind, nullable=nullable, **kw)  # type: ignore[arg-type]


sa.Table(
    "device",
    metadata,
    _s("name", 80),
    _s("kind", 40),
    _s("zone", 40),
    sa.Column("auto_approve", sa.Boolean(), nullable=False),
    sa.Column("maintenance", sa.Boolean(), nullable=False),
    _s("id", 48, primary_key=True),
    sa.Column("online", sa.Boolean(), nullable=False),
    _s("state", 20),
    _s("status", 20),
    sa.Column("epoch", sa.BigInteger(), nullable=False),
    sa.Column("state_epoch", sa.BigInteger(), nullable=False),
    sa.Column("state_seq", sa.BigInteger(), nullable=False),
    _s("session_json", None, nullable=True),
    _s("fault", 200, nullable=True),
    sa.Column("board_version", sa.BigInteger(), nullable=False),
    _ts("since"),
    _ts("last_seen", nullable=True),
    _ts("created_at"),
)
sa.Table(
    "device_status_change",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column(
        "device_id",
        sa.String(48),
        sa.ForeignKey("device.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    _s("status", 20),
    sa.Column("online", sa.Boolean(), nullable=False),
    _s("state", 20),
    sa.Column("epoch", sa.BigInteger(), nullable=False),
    _ts("at", index=True),
)
sa.Table(
    "alert",
    metadata,
    _s("id", 32, primary_key=True),
    _s("type", 40),
    _s("severity", 10),
    _s("device_id", 48, nullable=True, index=True),
    _s("message", 500),
    _s("message_en", 500, nullable=True),
    _ts("created_at", index=True),
    _ts("acknowledged_at", nullable=True),
)
sa.Table(
    "reservation",
    metadata,
    _s("id", 32, primary_key=True),
    sa.Column(
        "device_id", sa.String(48), sa.ForeignKey("device.id", ondelete="CASCADE"), nullable=False
    ),
    _s("player", 48),
    _ts("starts_at", index=True),
    _ts("ends_at", index=True),
    _s("status", 12, index=True),
    _s("code", 8),
    _s("request_key", 120, unique=True),
    _ts("created_at"),
    _ts("updated_at"),
    _ts("reminded_at", nullable=True),
    sa.Index("ix_reservation_device_ends", "device_id", "ends_at"),
    sa.Index("ix_reservation_player_ends", "player", "ends_at"),
)
sa.Table(
    "command_log",
    metadata,
    _s("request_key", 120, primary_key=True),
    _s("device_id", 48),
    _s("op", 12),
    sa.Column("ok", sa.Boolean(), nullable=False),
    _s("reply_json", None),
    _ts("created_at", index=True),
)
sa.Table(
    "idempotency_key",
    metadata,
    _s("key", 120, primary_key=True),
    _s("fingerprint", 64),
    _ts("created_at", index=True),
)
sa.Table(
    "revoked_session",
    metadata,
    _s("sid", 32, primary_key=True),
    _ts("until", index=True),
)
sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    _s("topic", 200),
    sa.Column("payload", sa.LargeBinary(), nullable=False),
    sa.Column("qos", sa.Integer(), nullable=False),
    sa.Column("retain", sa.Boolean(), nullable=False),
    _s("props_json", None, nullable=True),
    _ts("created_at"),
    _ts("published_at", nullable=True, index=True),
    _ts("dead_at", nullable=True),
    _s("dead_reason", 200, nullable=True),
)
sa.Table(
    "user",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    _s("username", 48, unique=True, index=True),
    _s("password_hash", 200),
    _s("role", 10),
    _s("locale", 5),
    _ts("created_at"),
)
sa.Table(
    "notification",
    metadata,
    _s("id", 32, primary_key=True),
    _s("user", 48, index=True),
    sa.Column("seq", sa.BigInteger(), nullable=False),
    _s("type", 40),
    _s("priority", 10),
    _s("title", 200),
    _s("message", 2000),
    _s("locale", 5),
    _s("reservation_id", 32, nullable=True, index=True),
    _s("data_json", None, nullable=True),
    _ts("created_at"),
    _ts("read_at", nullable=True),
    _ts("digested_at", nullable=True),
    sa.UniqueConstraint("user", "seq", name="notification_user_seq"),
)
sa.Table(
    "notification_seq",
    metadata,
    _s("user", 48, primary_key=True),
    sa.Column("last", sa.BigInteger(), nullable=False),
)
sa.Table(
    "broker_session",
    metadata,
    _s("client", 72, primary_key=True),
    _s("owner", 48, index=True),
    _ts("expires_at", index=True),
)
sa.Table(
    "notice",
    metadata,
    _s("id", 32, primary_key=True),
    _s("title", 120),
    _s("message", 2000),
    _s("title_en", 120, nullable=True),
    _s("message_en", 2000, nullable=True),
    _s("priority", 10),
    _s("created_by", 48),
    _ts("created_at", index=True),
)
sa.Table(
    "schema_version",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),  # always row 1
    sa.Column("version", sa.Integer(), nullable=False),
    _ts("applied_at"),
)
sa.Table(
    "bridge_meta",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),  # always row 1
    sa.Column("generation", sa.BigInteger(), nullable=False),
)

#: PostgreSQL at the baseline: no two holding reservations overlap on one machine or for one
#: player (half-open ranges)
PG_EXCLUSIONS = {
    "reservation_no_overlap_device": "device_id WITH =",
    "reservation_no_overlap_player": "player WITH =",
}


def exclusions(
    conn: Connection,
    constraints: dict[str, str],
    statuses: tuple[str, ...] = ("approved", "checked_in"),
) -> None:
    """PostgreSQL: add each ``name: key`` exclusion constraint the reservation table lacks,
    over its reservations in ``statuses`` (the baseline's: approved, checked in)."""
    if conn.dialect.name != "postgresql":
        return
    conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS btree_gist"))
    held = ", ".join(f"'{s}'" for s in statuses)
    for name, key in constraints.items():
        exists = conn.scalar(sa.text("SELECT 1 FROM pg_constraint WHERE conname = :n"), {"n": name})
        if not exists:
            conn.execute(
                sa.text(
                    f"ALTER TABLE reservation ADD CONSTRAINT {name} EXCLUDE USING gist "
                    f"({key}, tstzrange(starts_at, ends_at, '[)') WITH &&) "
                    f"WHERE (status IN ({held}))"
                )
            )


def create_missing(conn: Connection) -> None:
    """Create every baseline table ``conn``'s database lacks (in its baseline shape) and the
    baseline's PostgreSQL constraints."""
    metadata.create_all(conn)
    exclusions(conn, PG_EXCLUSIONS)
