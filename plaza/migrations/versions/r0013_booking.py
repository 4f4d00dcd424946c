"""Booking as venues know it (issue 17): parties, waitlist holds and the no-show policy.
Branch booking's legacy step 11, made a revision at merge.

Reservations get ``party_id`` (indexed) and ``hold_until``; ``waitlist_entry`` and
``player_standing`` are new tables; the command log's ``op`` widens to 24 characters
(``move_waitlist_entry``). On PostgreSQL the exclusion constraints are redrawn: a held machine
(status ``held``) blocks like an approved one, and the seats of one party may share their slot
for their player.

Revision 0013, after 0012.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from plaza.migrations import baseline

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

#: written out (history): what the constraints became with this revision
EXCLUSIONS = {
    "reservation_no_overlap_device": "device_id WITH =",
    "reservation_no_overlap_player": "player WITH =, (COALESCE(party_id, id)) WITH <>",
}
HOLDING = ("approved", "checked_in", "held")


def upgrade() -> None:
    stamp = sa.DateTime(timezone=True)
    with op.batch_alter_table("reservation") as batch:
        batch.add_column(sa.Column("party_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("hold_until", stamp, nullable=True))
    op.create_index("ix_reservation_party_id", "reservation", ["party_id"])
    op.create_table(
        "waitlist_entry",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("player", sa.String(48), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("zone", sa.String(40), nullable=True),
        sa.Column("minutes", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Float(), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("offer_id", sa.String(32), nullable=True),
        sa.Column("request_key", sa.String(120), nullable=False, unique=True),
        sa.Column("created_at", stamp, nullable=False),
        sa.Column("updated_at", stamp, nullable=False),
    )
    op.create_index("ix_waitlist_entry_player", "waitlist_entry", ["player"])
    op.create_index("ix_waitlist_entry_offer_id", "waitlist_entry", ["offer_id"])
    op.create_index("ix_waitlist_entry_kind_status", "waitlist_entry", ["kind", "status"])
    op.create_table(
        "player_standing",
        sa.Column("player", sa.String(48), primary_key=True),
        sa.Column("suspended_until", stamp, nullable=True),
        sa.Column("strikes_since", stamp, nullable=True),
        sa.Column("updated_at", stamp, nullable=False),
    )
    # SQLite does not enforce VARCHAR lengths, but the declared type is the schema (batch
    # mode rebuilds the table there: a copy of the command log, kept 7 days by default)
    with op.batch_alter_table("command_log") as batch:
        batch.alter_column(
            "op", type_=sa.String(24), existing_type=sa.String(12), existing_nullable=False
        )
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        for name in EXCLUSIONS:
            op.execute(f"ALTER TABLE reservation DROP CONSTRAINT IF EXISTS {name}")
        baseline.exclusions(conn, EXCLUSIONS, HOLDING)


def downgrade() -> None:
    raise NotImplementedError("downgrades are not supported: restore the backup taken before")
