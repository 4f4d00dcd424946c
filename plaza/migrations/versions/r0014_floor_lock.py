"""The venue floor (issue 18): a reserved seat is kept free, and sessions end on time.

Reservations get three once-markers of the floor's clock (plaza/floor.py): ``locked_at`` (the
machine was locked for the slot, a walk-in warned), ``overrun_at`` (a walk-in still playing at
the slot's start was ended, or staff alerted) and ``ending_warned_at`` (the checked-in player
was warned before the end). Each is set in the transaction that sends what it marks, so a
restarted bridge sends none of them twice.

Revision 0014, after 0013.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

MARKERS = ("locked_at", "overrun_at", "ending_warned_at")


def upgrade() -> None:
    with op.batch_alter_table("reservation") as batch:
        for name in MARKERS:
            batch.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reservation") as batch:
        for name in reversed(MARKERS):
            batch.drop_column(name)
