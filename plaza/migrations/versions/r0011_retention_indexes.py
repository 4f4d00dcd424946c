"""Retention: notifications are pruned by age (an index on ``created_at``); the
``broker_credential`` table of version 3, unread since version 6, is dropped.

Revision 0011, after the baseline 0010.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_notification_created_at", "notification", ["created_at"])
    op.execute("DROP TABLE IF EXISTS broker_credential")


def downgrade() -> None:
    raise NotImplementedError("downgrades are not supported: restore the backup taken before")
