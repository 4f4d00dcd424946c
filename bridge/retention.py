"""Retention: how long the bridge keeps what it writes, and the job that deletes the rest.

The command log (``command_log``: every decided command and its reply, by idempotency key)
is what answers a retry with the reply it got the first time. A row is needed as long as a
client can still send the same request again: the api retries within ``PLAZA_BRIDGE_TIMEOUT``
(5 s), the web client's live link three times 3 s apart, and a booking whose outcome it never
learned again every 30 s for as long as its tab stays open, which can be days. So rows are
kept ``PLAZA_COMMAND_LOG_RETENTION`` (7 days) and then deleted by :class:`Retention`, every
``PLAZA_PRUNE_INTERVAL`` (10 min). A retry that arrives later is decided anew: a booking
retried after its slot has passed is refused (``in_past``), and one still to come meets the
reservation it made (``conflict``); nothing is applied twice.

Deleting is done by :func:`delete_in_chunks`: at most :data:`CHUNK` rows per transaction,
each under the write gate, so one pass after a busy week never holds the write lock long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from plaza.tables import CommandLog, table_of

log = logging.getLogger(__name__)

#: rows deleted per transaction
CHUNK = 1000

_LOG = table_of(CommandLog)


async def delete_in_chunks(
    sessions: Callable[[], AsyncSession],
    gate: asyncio.Lock,
    key: sa.Column[Any],
    where: sa.ColumnElement[bool],
    *,
    chunk: int = CHUNK,
) -> int:
    """Delete the rows of ``key``'s table that match ``where``, ``chunk`` at a time, each
    chunk its own transaction under ``gate``; return how many were deleted."""
    table = key.table
    total = 0
    while True:
        doomed = sa.select(key).where(where).limit(chunk)
        async with gate, sessions() as session:
            result = await session.exec(sa.delete(table).where(key.in_(doomed)))
            await session.commit()
        deleted = int(result.rowcount or 0)
        total += deleted
        if deleted < chunk:
            return total
        await asyncio.sleep(0)  # let the other writers take the gate between chunks


class Retention:
    """Deletes command-log rows older than ``keep_commands`` seconds, every ``every``."""

    def __init__(
        self,
        sessions: Callable[[], AsyncSession],
        gate: asyncio.Lock,
        *,
        keep_commands: float,
        every: float = 600.0,
        chunk: int = CHUNK,
    ) -> None:
        self._sessions = sessions
        self._gate = gate
        self.keep_commands = timedelta(seconds=keep_commands)
        self.every = every
        self.chunk = chunk
        #: rows deleted so far
        self.pruned = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.prune()
            except Exception:  # the database may be away: the next round deletes them
                log.exception("command-log pruning failed")

    async def prune(self, now: datetime | None = None) -> int:
        """One pass: delete every command-log row older than the retention."""
        cutoff = (now or datetime.now(UTC)) - self.keep_commands
        deleted = await delete_in_chunks(
            self._sessions,
            self._gate,
            _LOG.c.request_key,
            _LOG.c.created_at < cutoff,
            chunk=self.chunk,
        )
        self.pruned += deleted
        if deleted:
            log.info("pruned %d command-log rows older than %s", deleted, cutoff.isoformat())
        return deleted
