"""Alembic's environment, run by :mod:`plaza.migrations` on the connection it is handed
(``config.attributes["connection"]``), inside that connection's transaction. There is no
offline (SQL script) mode and no alembic.ini: ``plaza`` runs every migration itself."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from plaza import tables

assert tables.Device.__tablename__ == "device"  # the models are loaded into the metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("plaza's migrations run through plaza.migrations.migrate(), not offline")
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    # SQLite changes a column by copying its table: autogenerate writes batch operations
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
