"""Retention: how long the bridge keeps what it writes, and the job that deletes the rest.

Every ``PLAZA_PRUNE_INTERVAL`` (10 min) one pass deletes, by age:

=============================  ==================================  ====================
rows                           setting (default)                   kept for
=============================  ==================================  ====================
``command_log``                ``COMMAND_LOG_RETENTION`` (7 d)     a retry's first reply
``device_status_change``       ``STATUS_HISTORY_RETENTION`` (400)  occupancy, heatmap
``notification``               ``NOTIFICATION_RETENTION`` (90 d)   a player's backlog
``alert``                      ``ALERT_RETENTION`` (90 d)          what staff were told
resolved ``help_call`` rows    ``ALERT_RETENTION`` (90 d)          the calls behind them
sent ``outbox`` rows           ``OUTBOX_SENT_RETENTION`` (1 d)     incident inspection
dead-lettered ``outbox`` rows  ``DEAD_LETTER_RETENTION`` (7 d)     resending by hand
=============================  ==================================  ====================

(each setting has the prefix ``PLAZA_``; docs/operations.md, "Retention").

The command log is needed as long as a client can still send the same request again: the api
retries within ``PLAZA_BRIDGE_TIMEOUT`` (5 s), the web client's live link three times 3 s
apart, and a booking whose outcome it never learned again every 30 s for as long as its tab
stays open, which can be days; the api's REST idempotency keys (``PLAZA_IDEMPOTENCY_TTL``) are
kept at least as long. A retry that arrives later is decided anew: a booking retried after its
slot has passed is refused (``in_past``), and one still to come meets the reservation it made
(``conflict``); nothing is applied twice. Each machine's newest status change is kept however
old, so its status at the start of any window stays known. Unsent outbox rows are never
deleted. Notification numbering survives the pruning (``notification_seq`` keeps the count).

Deleting is done by :func:`delete_in_chunks`: at most :data:`CHUNK` rows per transaction,
each under the write gate, so one pass after a busy week never holds the write lock long.
With several bridges on one PostgreSQL, a pass runs on whichever bridge takes a transaction
advisory lock first; the others skip that round (:meth:`Retention.turn`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from plaza.settings import Settings
from plaza.tables import (
    Alert,
    CommandLog,
    DeviceStatusChange,
    HelpCallRow,
    Notification,
    Outbox,
    table_of,
)

log = logging.getLogger(__name__)

#: rows deleted per transaction
CHUNK = 1000
#: PostgreSQL advisory lock key of a pruning pass ("plaza_pr")
_LOCK_KEY = 0x706C617A615F7072

_LOG = table_of(CommandLog)
_HISTORY = table_of(DeviceStatusChange)
_NOTE = table_of(Notification)
_ALERT = table_of(Alert)
_OUTBOX = table_of(Outbox)
_HELP = table_of(HelpCallRow)


@dataclass(frozen=True, slots=True)
class Keep:
    """How long each kind of row is kept."""

    commands: timedelta
    status_history: timedelta
    notifications: timedelta
    alerts: timedelta
    sent_outbox: timedelta
    dead_letters: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> Keep:
        return cls(
            commands=timedelta(seconds=settings.command_log_retention),
            status_history=timedelta(seconds=settings.status_history_retention),
            notifications=timedelta(seconds=settings.notification_retention),
            alerts=timedelta(seconds=settings.alert_retention),
            sent_outbox=timedelta(seconds=settings.outbox_sent_retention),
            dead_letters=timedelta(seconds=settings.dead_letter_retention),
        )


def doomed(keep: Keep, now: datetime) -> dict[str, tuple[sa.Column[Any], sa.ColumnElement[bool]]]:
    """Per kind of row: the key to delete by, and which rows are past their retention."""
    newer = _HISTORY.alias("newer")
    has_newer = (
        sa.select(newer.c.id)
        .where(newer.c.device_id == _HISTORY.c.device_id, newer.c.id > _HISTORY.c.id)
        .exists()
    )
    return {
        "command_log": (_LOG.c.request_key, _LOG.c.created_at < now - keep.commands),
        "status_history": (
            _HISTORY.c.id,
            sa.and_(_HISTORY.c.at < now - keep.status_history, has_newer),
        ),
        "notifications": (_NOTE.c.id, _NOTE.c.created_at < now - keep.notifications),
        "alerts": (_ALERT.c.id, _ALERT.c.created_at < now - keep.alerts),
        # a call still waiting is kept however old (staff have yet to close it)
        "help_calls": (
            _HELP.c.id,
            sa.and_(_HELP.c.status == "resolved", _HELP.c.resolved_at < now - keep.alerts),
        ),
        "outbox": (
            _OUTBOX.c.id,
            sa.or_(
                _OUTBOX.c.published_at < now - keep.sent_outbox,
                _OUTBOX.c.dead_at < now - keep.dead_letters,
            ),
        ),
    }


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
    """Deletes what is past its retention (:class:`Keep`), every ``every`` seconds."""

    def __init__(
        self,
        sessions: Callable[[], AsyncSession],
        gate: asyncio.Lock,
        keep: Keep,
        *,
        every: float = 600.0,
        chunk: int = CHUNK,
    ) -> None:
        self._sessions = sessions
        self._gate = gate
        self.keep = keep
        self.every = every
        self.chunk = chunk
        #: rows deleted so far, per kind
        self.pruned: dict[str, int] = {}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                async with self.turn() as mine:
                    if mine:
                        await self.prune()
            except Exception:  # the database may be away: the next round deletes them
                log.exception("pruning failed")

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[bool]:
        """True when this bridge runs the pass: always on SQLite (one bridge); on PostgreSQL
        when it holds the pass's transaction advisory lock, released when the block ends."""
        async with self._sessions() as session:
            if session.bind is None or session.bind.dialect.name != "postgresql":
                yield True  # (no connection: on SQLite it would take the write lock)
                return
            conn = await session.connection()
            mine = await conn.scalar(
                sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _LOCK_KEY}
            )
            yield bool(mine)

    async def prune(self, now: datetime | None = None) -> int:
        """One pass: delete every row past its retention; return how many."""
        moment = now or datetime.now(UTC)
        total = 0
        for kind, (key, where) in doomed(self.keep, moment).items():
            deleted = await delete_in_chunks(
                self._sessions, self._gate, key, where, chunk=self.chunk
            )
            self.pruned[kind] = self.pruned.get(kind, 0) + deleted
            total += deleted
            if deleted:
                log.info("pruned %d %s rows past their retention", deleted, kind)
        return total
