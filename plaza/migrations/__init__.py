"""Schema migrations: Alembic revisions in ``versions/``, run in code (no alembic.ini).

How a database reaches this release's head (:func:`migrate`, one transaction, taken under a
lock so a bridge and an api starting together never migrate at once: an advisory lock on
PostgreSQL, SQLite's write lock from ``BEGIN IMMEDIATE``):

- **empty**: ``create_all`` of the models plus the PostgreSQL exclusion constraints, stamped
  at head (what a fresh database looks like is what the models say; the migration test holds
  every upgraded database to exactly that schema);
- **legacy** (a ``schema_version`` row and no ``alembic_version``: release 0.1, versions 1 to
  10): the legacy steps bring it to the baseline (:mod:`plaza.migrations.legacy`), it is
  stamped at the baseline revision ``0010``, then upgraded;
- **Alembic** (an ``alembic_version`` row): upgraded from its revision to head.

Revision ids are the legacy numbers carried on (``0010`` is the baseline, ``0011`` the first
revision after it), and the ``schema_version`` row follows the head (11, ...), so a release
from before Alembic, which refuses a ``schema_version`` above its own, refuses a newer
database instead of running on it. A revision this release does not know (a newer release
upgraded the database) is refused with :class:`SchemaTooNew`. Downgrades are not supported:
restore the backup taken before the upgrade (docs/operations.md, "Upgrading").

Errors::

    DatabaseError (RuntimeError)
     +-- SchemaTooNew     the database was written by a newer release
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from plaza import tables
from plaza.migrations import baseline, legacy

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
_VERSION = tables.table_of(tables.SchemaVersion)
#: an arbitrary 64-bit key for PostgreSQL's advisory lock around a migration
_LOCK_KEY = 0x706C617A615F6D67  # "plaza_mg"


class DatabaseError(RuntimeError):
    """The database cannot be used by this release."""


class SchemaTooNew(DatabaseError):
    pass


def config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for the revisions in this package, on ``connection``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("file_template", "r%%(rev)s_%%(slug)s")  # versions/r0012_cool_off.py
    cfg.attributes["connection"] = connection
    return cfg


@cache
def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head() -> str:
    """The newest revision this release knows."""
    found = scripts().get_current_head()
    assert found is not None, "no Alembic revisions in plaza/migrations/versions"
    return found


def current(conn: Connection) -> str | None:
    """The database's Alembic revision; None before Alembic (or on an empty database)."""
    return MigrationContext.configure(conn).get_current_revision()


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})


def _known(revision: str) -> bool:
    try:
        return scripts().get_revision(revision) is not None
    except Exception:  # alembic raises its own errors for an id it has never seen
        return False


def _legacy_version(conn: Connection) -> int | None:
    return conn.scalar(sa.select(_VERSION.c.version).where(_VERSION.c.id == 1))


def _mark(conn: Connection, revision: str) -> None:
    """Keep the legacy ``schema_version`` row in step with the Alembic revision."""
    values = {"version": int(revision), "applied_at": datetime.now(UTC)}
    if _legacy_version(conn) is None:
        conn.execute(sa.insert(_VERSION).values(id=1, **values))
    else:
        conn.execute(sa.update(_VERSION).where(_VERSION.c.id == 1).values(**values))


def create_current(conn: Connection) -> None:
    """The schema as this release's models define it: ``create_all`` and, on PostgreSQL, the
    reservation exclusion constraints. What every migrated database must equal."""
    SQLModel.metadata.create_all(conn)
    baseline.exclusions(conn, tables.RESERVATION_EXCLUSIONS, tables.RESERVATION_HOLDING)


def upgrade(conn: Connection, revision: str = "head") -> None:
    """Run the Alembic revisions from the database's revision to ``revision``."""
    command.upgrade(config(conn), revision)


def migrate(conn: Connection) -> str:
    """Create or upgrade the schema in ``conn``'s transaction; return the revision in force."""
    _lock(conn)
    target = head()
    names = set(sa.inspect(conn).get_table_names())
    if "alembic_version" in names and (found := current(conn)) is not None:
        if not _known(found):
            raise SchemaTooNew(
                f"database schema revision {found} is newer than this release (head {target}): "
                "run the release that upgraded it, or restore the backup taken before"
            )
        if found != target:
            log.info("upgrading the database schema from revision %s to %s", found, target)
            upgrade(conn)
    elif "schema_version" in names:
        version = _legacy_version(conn)
        if version is not None and version > baseline.VERSION:
            raise SchemaTooNew(
                f"database schema {version} is newer than this release's baseline "
                f"({baseline.VERSION}) and carries no Alembic revision"
            )
        # no row: release 0.1 stopped between create_all and writing it (all tables there)
        log.info("upgrading the database schema from version %s to revision %s", version, target)
        legacy.to_baseline(conn, baseline.VERSION if version is None else version)
        command.stamp(config(conn), baseline.REVISION)
        upgrade(conn)
    else:
        create_current(conn)
        command.stamp(config(conn), target)
    if _legacy_version(conn) != int(target):
        _mark(conn, target)
    return target
