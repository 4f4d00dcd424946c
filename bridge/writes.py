"""Writes: the rows of one write transaction, in order, and how they are flushed.

The reservation committer, the admin desk and the outage watch collect what their transaction
writes here: new and changed reservations, command-log rows, waitlist entries and players'
no-show standing, outbox messages, notifications
(numbered, rendered and, unless low priority, queued for publishing at flush:
:func:`bridge.notifier.write_notes`) and admin alerts. Rows are plain dicts written as Core
multi-row statements: building a SQLModel object costs more than a whole decision, and the
ORM's flush more again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel.ext.asyncio.session import AsyncSession

from bridge.alerts import alert_row
from bridge.help_rows import Follow, follow_rows
from bridge.models import Outbound, Stored
from bridge.notifier import Note, write_notes
from bridge.sql import BatchWrites, BoardAsk, SlotRow, batch_sql
from plaza.messages import AdminAlert
from plaza.tables import Alert, PlayerStanding, Reservation, WaitlistEntry, table_of

_RESERVATION, _ALERT = table_of(Reservation), table_of(Alert)
_ENTRY, _STANDING = table_of(WaitlistEntry), table_of(PlayerStanding)


@dataclass
class Writes:
    """Rows to write, in order; :meth:`flush` writes them and returns the outbox messages
    with their ids, in the order they were added."""

    new: list[dict[str, Any]] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[Outbound] = field(default_factory=list)
    #: notifications: numbered, rendered and (unless low priority) queued at flush
    notes: list[Note] = field(default_factory=list)
    #: admin alerts to store (their outbox message is added by whoever raises them)
    alerts: list[AdminAlert] = field(default_factory=list)
    #: waitlist entries, new and changed (``id`` and the changed columns)
    entries_new: list[dict[str, Any]] = field(default_factory=list)
    entries_changed: list[dict[str, Any]] = field(default_factory=list)
    #: players' no-show standing, upserted whole (``player`` and every column)
    standings: list[dict[str, Any]] = field(default_factory=list)
    #: players who checked in somewhere: their waiting help call follows them
    follows: list[Follow] = field(default_factory=list)

    def flush_sync(self, conn: Connection, max_packet: int) -> list[Stored]:
        """Write every row; an outbox message larger than ``max_packet`` (the broker's
        maximum packet size) or otherwise unsendable is written dead-lettered."""
        return self.flush_batch(conn, max_packet, None)[0]

    def flush_batch(
        self, conn: Connection, max_packet: int, board: BoardAsk | None, *, commit: bool = False
    ) -> tuple[list[Stored], list[SlotRow]]:
        """:meth:`flush_sync`, then read ``board`` as the writes leave it; the inserts and
        the read go together (:meth:`bridge.sql.BatchSql.write_batch`), with the COMMIT
        if ``commit`` (the caller commits right after)."""
        sql, now = batch_sql(conn), datetime.now(UTC)
        for row in self.changed:  # first: a cancel frees its slot for a booking in this batch
            values = {k: v for k, v in row.items() if k != "id"}
            conn.execute(
                update(_RESERVATION).where(_RESERVATION.c.id == row["id"]).values(**values)
            )
        if self.entries_new:
            conn.execute(insert(_ENTRY), self.entries_new)
        for row in self.entries_changed:
            values = {k: v for k, v in row.items() if k != "id"}
            conn.execute(update(_ENTRY).where(_ENTRY.c.id == row["id"]).values(**values))
        upsert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        for row in self.standings:
            values = {k: v for k, v in row.items() if k != "player"}
            conn.execute(
                upsert(_STANDING)
                .values(**row)
                .on_conflict_do_update(index_elements=[_STANDING.c.player], set_=values)
            )
        moved, moved_out = follow_rows(conn, self.follows, now) if self.follows else ([], [])
        if self.alerts or moved:
            conn.execute(insert(_ALERT), [alert_row(a) for a in (*self.alerts, *moved)])
        messages = self.outbox + moved_out + write_notes(conn, self.notes, now)
        writes = BatchWrites(self.new, self.logs, messages, now, max_packet, board)
        return sql.write_batch(writes, commit=commit)

    async def flush(self, session: AsyncSession, max_packet: int) -> list[Stored]:
        conn = await session.connection()
        return await conn.run_sync(self.flush_sync, max_packet)
