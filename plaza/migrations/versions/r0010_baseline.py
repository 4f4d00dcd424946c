"""Baseline: the schema at legacy version 10 (plaza/migrations/baseline.py).

A database made by Alembic from nothing gets it here; in practice an empty database is
created from the models and stamped at head, and a legacy one is brought here by the legacy
steps and stamped, so this revision's upgrade only runs for a database stamped at nothing.
"""

from __future__ import annotations

from alembic import op

from plaza.migrations import baseline

revision = "0010"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    baseline.create_missing(op.get_bind())


def downgrade() -> None:
    raise NotImplementedError("downgrades are not supported: restore the backup taken before")
