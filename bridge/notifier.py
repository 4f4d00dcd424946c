"""Notifications: persisted with a per-player sequence, rendered in the player's language,
published through the outbox, low priority batched into a digest.

Theory of operation
-------------------
Whoever decides that a player should hear something (the committer for reservation changes
and reminders, the admin desk for notices, the outage watch for a machine that went down)
adds a :class:`Note` to the transaction's writes. When the transaction is flushed,
:func:`write_notes` reads the players' locales and last sequence numbers, renders each note,
inserts a ``notification`` row (``seq`` = last + 1, unique per player) and, unless the note is
low priority, an outbox row for ``users/{user}/notifications``: the notification and the change
it announces commit together, and are published together after commit.

Priority routing (documented in docs/protocol.md):
- **high**: published at once; where staff should act too (a no-show, a machine down under a
  reservation) the same transaction writes an admin alert.
- **medium**: published at once.
- **low**: stored at once (so ``GET /me/notifications`` has it), published in a ``digest``
  every ``PLAZA_DIGEST_INTERVAL`` seconds: one message per player with every low-priority
  notification since the last digest.

Read receipts (``users/{user}/acks`` and ``POST /me/notifications/read``) set ``read_at``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bridge.context import BridgeContext
from bridge.models import Incoming, Outbound
from bridge.queues import next_batch
from bridge.ratelimit import TokenBucket
from bridge.sql.core import insert_outbox
from plaza.i18n import locale_of, render
from plaza.inbox import mark_read
from plaza.messages import (
    AlertSeverity,
    DigestItem,
    ExtendOffer,
    HelpCall,
    NotificationAck,
    NotificationEvent,
    NotificationType,
    PayloadError,
    RebookOffer,
    ReservationPublic,
    WaitlistOffer,
    decode,
)
from plaza.tables import Notification, NotificationSeq, User, as_utc, table_of
from plaza.topics import Topics, UserTopic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Note:
    """Something one player should hear; rendered and numbered at flush time."""

    user: str
    topic: str  # users/{user}/notifications of the venue's root
    type: NotificationType
    priority: AlertSeverity
    params: Mapping[str, object] = field(default_factory=dict)
    reservation: ReservationPublic | None = None
    offer: RebookOffer | None = None
    #: per-locale (title, message) given as is (a system notice written by staff)
    texts: Mapping[str, tuple[str, str]] | None = None
    #: a machine held for the player (a waitlist offer)
    waitlist_offer: WaitlistOffer | None = None
    #: a suspension: until when
    until: float | None = None
    #: a help call staff acknowledged or resolved
    help: HelpCall | None = None
    #: ``session_ending``: the extension on offer, or when the machine's next booking starts
    #: (``params`` carries both as local times, ``until`` and ``next``)
    extend: ExtendOffer | None = None
    next_starts_at: float | None = None


def _texts(note: Note, locale: str) -> tuple[str, str]:
    if note.texts is not None:
        return note.texts.get(locale) or note.texts["ko"]
    params = dict(note.params)
    if note.offer is not None:
        params["offer"] = render("offer", locale, {"alt": note.offer.name})[0]
    if note.type == "session_ending":
        then = "extend" if note.extend else "next" if note.next_starts_at else "none"
        params["then"] = render(f"session_then_{then}", locale, params)[1]
    return render(note.type, locale, params)


def reserve_seqs(conn: Connection, wanted: Mapping[str, int]) -> dict[str, int]:
    """Take ``wanted[user]`` seqs per player from their counter row; return, per player,
    the seq just before the first one taken (one upsert per player: a row lock on
    PostgreSQL, the write lock on SQLite)."""
    table = table_of(NotificationSeq)
    upsert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    before: dict[str, int] = {}
    for user, count in sorted(wanted.items()):  # a fixed order: no deadlock between bridges
        taken = (
            upsert(table)
            .values(user=user, last=count)
            .on_conflict_do_update(
                index_elements=[table.c.user], set_={"last": table.c.last + count}
            )
            .returning(table.c.last)
        )
        before[user] = int(conn.execute(taken).scalar_one()) - count
    return before


def write_notes(conn: Connection, notes: list[Note], now: datetime) -> list[Outbound]:
    """Insert the notification rows; return the messages of those published now."""
    if not notes:
        return []
    users_t, notes_t = table_of(User), table_of(Notification)
    wanted = {n.user for n in notes}
    query = sa.select(users_t.c.username, users_t.c.locale).where(users_t.c.username.in_(wanted))
    locales: dict[str, str] = {name: locale for name, locale in conn.execute(query)}  # noqa: C416
    last = reserve_seqs(conn, Counter(n.user for n in notes))
    rows: list[dict[str, Any]] = []
    outbox: list[Outbound] = []
    for note in notes:
        seq = last.get(note.user, 0) + 1
        last[note.user] = seq
        locale = locale_of(locales.get(note.user))
        title, message = _texts(note, locale)
        event = NotificationEvent(
            id=uuid.uuid4().hex,
            type=note.type,
            user_id=note.user,
            title=title,
            message=message,
            priority=note.priority,
            ts=now.timestamp(),
            seq=seq,
            reservation=note.reservation,
            offer=note.offer,
            waitlist_offer=note.waitlist_offer,
            until=note.until,
            help=note.help,
            extend=note.extend,
            next_starts_at=note.next_starts_at,
        )
        data: dict[str, Any] = {}
        if note.reservation is not None:
            data["reservation"] = note.reservation.model_dump(exclude_none=True)
        if note.offer is not None:
            data["offer"] = note.offer.model_dump()
        if note.waitlist_offer is not None:
            data["waitlist_offer"] = note.waitlist_offer.model_dump()
        if note.until is not None:
            data["until"] = note.until
        if note.help is not None:
            data["help"] = note.help.model_dump(exclude_none=True)
        if note.extend is not None:
            data["extend"] = note.extend.model_dump()
        if note.next_starts_at is not None:
            data["next_starts_at"] = note.next_starts_at
        rows.append(
            {
                "id": event.id,
                "user": note.user,
                "seq": seq,
                "type": note.type,
                "priority": note.priority.value,
                "title": title[:200],
                "message": message[:2000],
                "locale": locale,
                "reservation_id": note.reservation.id if note.reservation else None,
                "data_json": json.dumps(data) if data else None,
                "created_at": now,
                "read_at": None,
                "digested_at": None,
            }
        )
        if note.priority is not AlertSeverity.LOW:
            outbox.append(Outbound(note.topic, event.encode()))
    conn.execute(sa.insert(notes_t), rows)
    return outbox


def digest_rows(conn: Connection, topics: Topics, now: datetime) -> list[Outbound]:
    """One digest message per player with low-priority notifications not yet digested; the
    rows are marked digested in the same transaction."""
    table = table_of(Notification)
    pending = conn.execute(
        sa.select(table.c.id, table.c.user, table.c.seq, table.c.type, table.c.title)
        .add_columns(table.c.message, table.c.created_at, table.c.locale)
        .where(table.c.priority == AlertSeverity.LOW.value, table.c.digested_at.is_(None))
        .order_by(table.c.user, table.c.seq)
    ).all()
    if not pending:
        return []
    by_user: dict[str, list[Any]] = {}
    for row in pending:
        by_user.setdefault(row.user, []).append(row)
    outbox = []
    for user, rows in by_user.items():
        items = [
            DigestItem(
                seq=r.seq,
                type=r.type,
                title=r.title,
                message=r.message,
                ts=as_utc(r.created_at).timestamp(),
            )
            for r in rows
        ]
        title, message = render(
            "digest",
            rows[-1].locale,
            {"count": len(items), "titles": " · ".join(i.title for i in items)},
        )
        event = NotificationEvent(
            id=uuid.uuid4().hex,
            type="digest",
            user_id=user,
            title=title,
            message=message[:2000],
            priority=AlertSeverity.LOW,
            ts=now.timestamp(),
            seq=items[-1].seq,
            items=items,
        )
        outbox.append(Outbound(topics.notifications(user), event.encode()))
    conn.execute(
        sa.update(table).where(table.c.id.in_([r.id for r in pending])).values(digested_at=now)
    )
    return outbox


def _mark_all(conn: Connection, batch: list[tuple[str, NotificationAck]], now: datetime) -> None:
    for user, ack in batch:
        mark_read(conn, user, ack, now)


class Notifier:
    """The bridge's own notification work: digests on a timer, and read receipts."""

    def __init__(self, ctx: BridgeContext) -> None:
        self.topics = ctx.topics
        self._sessions = ctx.sessions
        self._gate = ctx.gate
        self._outbox = ctx.outbox
        self.interval = ctx.settings.digest_interval
        self.max_payload = ctx.settings.max_payload_bytes
        self.digests = 0
        self.acks = 0
        self._acks: asyncio.Queue[tuple[str, NotificationAck]] = asyncio.Queue()
        self._ack_budget = TokenBucket(rate_per_s=1.0, burst=20)

    async def run_digests(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.digest_once()
            except Exception:  # the database may be away: the next round picks them up
                log.exception("digest round failed")

    async def digest_once(self) -> int:
        now = datetime.now(UTC)
        async with self._gate, self._sessions() as session:
            conn = await session.connection()
            limit = self._outbox.max_packet
            rows = await conn.run_sync(
                lambda c: insert_outbox(c, digest_rows(c, self.topics, now), now, limit)
            )
            await session.commit()
        self._outbox.enqueue(rows)
        self.digests += len(rows)
        return len(rows)

    async def handle(self, where: UserTopic, message: Incoming) -> bool:
        """A message on a user topic: read receipts are ours, the rest is not read here."""
        if where.channel != "acks":
            return False
        self.ack(where.user, message.payload)
        return True

    def ack(self, user: str, payload: bytes) -> None:
        """Queue a read receipt (the MQTT loop never waits on the database for one); a
        player over their budget (a burst of 20, one a second after) is dropped and logged."""
        try:
            ack = decode(NotificationAck, payload, self.max_payload)
        except PayloadError as exc:
            log.warning("bad read receipt from %s: %s", user, exc, extra={"sender": user})
            return
        if not self._ack_budget.take(user, time.monotonic()):
            log.warning("read receipts from %s over budget: dropped", user, extra={"sender": user})
            return
        self._acks.put_nowait((user, ack))

    async def run_acks(self) -> None:
        """Apply queued read receipts, as many as have arrived, in one transaction."""
        while True:
            batch = await next_batch(self._acks, 500)
            try:
                async with self._gate, self._sessions() as session:
                    conn = await session.connection()
                    await conn.run_sync(_mark_all, batch, datetime.now(UTC))
                    await session.commit()
            except Exception:  # receipts are advisory: a failed batch is logged, not retried
                log.exception("%d read receipts not stored", len(batch))
                continue
            self.acks += len(batch)
