"""The venue floor, part one (issue 18): players call staff (``help_call``) and machines
without an agent (``device.agent``: consoles, cabinets and VR rigs whose state staff set).

Every machine already known has an agent (``agent`` true); a help call is one row, its
device following the player, looked up by player and age (the hourly cap).

Revision 0015, after 0014.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    stamp = sa.DateTime(timezone=True)
    # a plain ADD COLUMN, also on SQLite: batch mode would rebuild the device table, and
    # dropping it cascades to every reservation (ON DELETE CASCADE)
    op.add_column(
        "device", sa.Column("agent", sa.Boolean(), nullable=False, server_default=sa.true())
    )
    op.create_table(
        "help_call",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("player", sa.String(48), nullable=False),
        sa.Column("device_id", sa.String(48), nullable=False),
        sa.Column("topic", sa.String(20), nullable=False),
        sa.Column("message", sa.String(280), nullable=True),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("request_key", sa.String(120), nullable=False, unique=True),
        sa.Column("created_at", stamp, nullable=False),
        sa.Column("acknowledged_at", stamp, nullable=True),
        sa.Column("acknowledged_by", sa.String(48), nullable=True),
        sa.Column("resolved_at", stamp, nullable=True),
        sa.Column("resolved_by", sa.String(48), nullable=True),
    )
    op.create_index("ix_help_call_player_created", "help_call", ["player", "created_at"])
    op.create_index("ix_help_call_status", "help_call", ["status"])


def downgrade() -> None:
    raise NotImplementedError("downgrades are not supported: restore the backup taken before")
