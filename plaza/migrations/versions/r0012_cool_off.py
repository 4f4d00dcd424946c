"""Flood control: players the bridge disabled in the broker for flooding, and when they are
enabled again (``cool_off``; issue 13, finding 3). Branch flood2's legacy step 11, made a
revision at merge.

Revision 0012, after 0011.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cool_off",
        sa.Column("user", sa.String(48), primary_key=True),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accounts_json", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_cool_off_until", "cool_off", ["until"])


def downgrade() -> None:
    raise NotImplementedError("downgrades are not supported: restore the backup taken before")
