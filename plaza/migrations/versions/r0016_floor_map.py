"""The floor map and the occupancy figures (issue 18).

Machines get a position on the floor (``x``, ``y`` in metres, nullable: a machine not placed
yet); ``floor_zone`` is new (a zone's id, as in ``device.zone``, its name and its outline, a
JSON list of ``[x, y]`` points). ``device_status_change`` gets two indexes for the
utilization report (plaza.history): ``(device_id, at)`` finds a machine's last change before
a window, and ``(at, device_id, status)`` covers the window's changes.

Revision 0016, after 0015.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN, never batch mode on ``device``: on SQLite a batch rebuild of the table
    # would delete every reservation through its foreign key's cascade (see 0015)
    op.add_column("device", sa.Column("x", sa.Float(), nullable=True))
    op.add_column("device", sa.Column("y", sa.Float(), nullable=True))
    op.create_table(
        "floor_zone",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("outline_json", sa.String(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_device_status_change_device_at", "device_status_change", ["device_id", "at"]
    )
    op.create_index(
        "ix_device_status_change_window", "device_status_change", ["at", "device_id", "status"]
    )


def downgrade() -> None:
    raise NotImplementedError("downgrades are not supported: restore the backup taken before")
