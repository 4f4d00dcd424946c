"""OutboxPublisher: publishes committed outbox rows in commit order and marks them sent.

Rows are written in the same transaction as the change they announce (:mod:`bridge.writes`).
After the commit the writer hands them here; at start-up every row not yet marked is loaded
and sent first. So a crash between commit and publish loses nothing; a crash between publish
and mark sends a row twice (at-least-once: replies carry their request id and clients drop
duplicates).

Dead letters. A row the broker cannot take never blocks the rows behind it. It is *set aside*
(``dead_at``, ``dead_reason`` in SQL; never loaded or sent again), counted
(``plaza_bridge_dead_letters_total``) and raised as an ``outbox_dead_letter`` admin alert (at
most one per ``PLAZA_ALERT_COOLDOWN``, with the count since the last one). What makes a row
dead:

- ``too_large`` / ``invalid_topic`` / ``invalid_property``: :meth:`Outbound.unsendable`, checked
  when the row is written and again before each send (the broker's CONNACK may lower the limit);
- ``refused``: the broker answered its PUBACK with an error (Mosquitto's ACL: 0x87);
- ``client_error``: the MQTT client raised something other than a lost connection for it;
- ``dropped_connection``: the connection was lost :data:`ATTEMPTS_BEFORE_DEAD` times in a row
  while the row was being sent alone (after a batch loses the connection, its unconfirmed rows
  are retried one at a time, so a row that gets the bridge dropped is found; a publish left
  unconfirmed on a connection that stays up is only retried).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import aiomqtt
from sqlalchemy import Connection, bindparam, insert, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bridge.alerts import alert_row, make_alert
from bridge.link import Link
from bridge.metrics import BridgeMetrics
from bridge.models import Outbound, Stored
from bridge.queues import next_batch
from bridge.sql.core import insert_outbox
from plaza.messages import AdminAlert, AlertSeverity
from plaza.mqtt import PlazaClient
from plaza.tables import Alert, Outbox, table_of
from plaza.topics import Topics

log = logging.getLogger(__name__)
SWEEP_SECONDS = 5.0
#: a row sent alone that loses the connection this many times in a row is set aside
ATTEMPTS_BEFORE_DEAD = 3

_OUTBOX, _ALERT = table_of(Outbox), table_of(Alert)
#: Core, not the ORM: an ORM bulk UPDATE of a few hundred ids cost ~18 ms of the event loop
_MARK_SENT = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id.in_(bindparam("ids", expanding=True)))
    .values(published_at=bindparam("at"))
)
_MARK_DEAD = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("row_id"), _OUTBOX.c.dead_at.is_(None))
    .values(dead_at=bindparam("at"), dead_reason=bindparam("reason"))
)


def _stored(row: Outbox) -> Stored:
    assert row.id is not None
    return row.id, Outbound.from_row(row.topic, row.payload, row.qos, row.retain, row.props_json)


class OutboxPublisher:
    def __init__(
        self,
        sessions: Callable[[], AsyncSession],
        link: Link,
        write_gate: asyncio.Lock,
        *,
        metrics: BridgeMetrics,
        topics: Topics,
        alert_cooldown: float = 300.0,
    ) -> None:
        self._sessions = sessions
        self._gate = write_gate
        self._link = link
        self._metrics = metrics
        self._topics = topics
        self._cooldown = alert_cooldown
        self._queue: asyncio.Queue[Stored] = asyncio.Queue()
        self._sent: list[int] = []
        self._known: set[int] = set()  # queued or sent, not yet marked in SQL
        self._soon: asyncio.Task[None] | None = None
        self.published = 0
        #: dead letters to mark in SQL: (row id, reason)
        self._dead: list[tuple[int, str]] = []
        #: dead letters not told in an alert yet, the latest one, and when staff last heard
        self._untold = 0
        self._latest: tuple[str, str] = ("", "")
        self._told_at: float | None = None
        #: connections lost in a row while a row was being sent alone, by row id
        self._attempts: dict[int, int] = {}

    @property
    def max_packet(self) -> int:
        """The largest packet the broker takes: writers dead-letter bigger rows at once."""
        return self._link.max_packet

    def enqueue(self, rows: list[Stored]) -> None:
        for row in rows:
            if row[0] not in self._known:
                self._known.add(row[0])
                self._queue.put_nowait(row)

    async def load_unsent(self, older_than: float = 0.0) -> int:
        """Queue every committed row not marked as sent that this run does not know of: at
        start, what a previous run left; later, what a commit that reported an error (but
        did commit) left behind."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        async with self._sessions() as session:
            rows = (
                await session.exec(
                    select(Outbox)
                    .where(
                        col(Outbox.published_at).is_(None),
                        col(Outbox.dead_at).is_(None),
                        col(Outbox.created_at) <= cutoff,
                    )
                    .order_by(col(Outbox.id))
                )
            ).all()
        fresh = [_stored(r) for r in rows if r.id not in self._known]
        self.enqueue(fresh)
        return len(fresh)

    def sweep_soon(self, after: float = 1.0) -> None:
        """Queue, ``after`` seconds from now, the committed rows nobody queued that are at
        least that old: another bridge's, when this one takes over its slots (a bridge killed
        between committing and publishing left them), without waiting for the periodic
        sweep (up to twice SWEEP_SECONDS). Several calls at once make one sweep."""
        if self._soon is not None and not self._soon.done():
            return

        async def sweep() -> None:
            await asyncio.sleep(after)
            try:
                found = await self.load_unsent(older_than=after)
            except Exception:  # the database may be down: the periodic sweep comes anyway
                log.exception("outbox sweep after a takeover failed")
                return
            if found:
                log.info("outbox: %d committed rows of another bridge queued", found)

        self._soon = asyncio.ensure_future(sweep())

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._mark_loop())
            tg.create_task(self._sweep_loop())
            while True:
                await self._send(await next_batch(self._queue, 500))

    async def _send(self, batch: list[Stored]) -> None:
        """Publish ``batch`` (in order, concurrently); rows the broker cannot take are set
        aside. Rows whose publish the lost connection left unconfirmed are sent again after
        the reconnect, one at a time, so one that gets the bridge dropped is found."""
        pending = batch
        alone = False
        while pending:
            await self._link.connected.wait()
            client = self._link.client
            if client is None:
                await asyncio.sleep(0.05)
                continue
            limit = self._link.max_packet  # this connection's: checked before every send
            sendable = []
            for row in pending:
                reason = row[1].unsendable(limit)
                if reason is None:
                    sendable.append(row)
                else:
                    self._set_aside(row, reason)
            step = sendable[:1] if alone else sendable
            connection = self._link.connections
            lost = await self._publish(client, step)
            # unconfirmed on a connection that is still up (a slow broker): just retry
            dropped = self._link.connections != connection or not self._link.connected.is_set()
            if lost and alone and dropped:
                row_id = lost[0][0]
                self._attempts[row_id] = self._attempts.get(row_id, 0) + 1
                if self._attempts[row_id] >= ATTEMPTS_BEFORE_DEAD:
                    self._set_aside(
                        lost[0],
                        f"dropped_connection: the connection was lost on each of "
                        f"{ATTEMPTS_BEFORE_DEAD} attempts to send it",
                    )
                    lost = []
            elif not lost:
                for row_id, _ in step:
                    self._attempts.pop(row_id, None)
            pending = lost + sendable[len(step) :]
            if lost:
                alone = True
                log.warning(
                    "outbox: %d messages unconfirmed when the connection was lost; "
                    "sending them one at a time after the reconnect",
                    len(lost),
                )
                await asyncio.sleep(0.1)

    async def _publish(self, client: PlazaClient, rows: list[Stored]) -> list[Stored]:
        """Publish ``rows`` at once; return those the lost connection left unconfirmed."""
        results = await asyncio.gather(
            *(
                client.publish_acked(
                    m.topic, m.payload, qos=m.qos, retain=m.retain, properties=m.properties()
                )
                for _, m in rows
            ),
            return_exceptions=True,
        )
        lost = []
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, aiomqtt.MqttError):
                lost.append(row)
            elif isinstance(result, Exception):  # the client will not send it, ever
                self._set_aside(row, f"client_error: {type(result).__name__}: {result}")
            elif isinstance(result, BaseException):
                raise result  # cancelled: the bridge is stopping
            elif result is not None:
                self._set_aside(row, f"refused: {result.getName()} (0x{result.value:02x})")
            else:
                self.published += 1
                self._sent.append(row[0])
        return lost

    def _set_aside(self, row: Stored, reason: str) -> None:
        """A row the broker cannot take: never sent again (marked in SQL by the mark loop),
        counted, logged, told to staff."""
        row_id, message = row
        self._metrics.dead_letters += 1
        self._attempts.pop(row_id, None)
        self._dead.append((row_id, reason[:200]))
        rid = _request_id(message)
        log.warning(
            "outbox row %d to %s set aside as a dead letter: %s",
            row_id,
            message.topic,
            reason,
            extra={"request_id": rid, "sender": "outbox"} if rid else {"sender": "outbox"},
        )
        if message.topic != self._topics.admin_alerts:  # an alert about an alert: no loop
            self._untold += 1
            self._latest = (message.topic, reason)

    async def _sweep_loop(self) -> None:
        """Queue committed rows nobody queued (sent and dead rows are pruned by
        bridge/retention.py)."""
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                found = await self.load_unsent(older_than=SWEEP_SECONDS)
            except Exception:  # the database may be down: sweep again later
                log.exception("outbox sweep failed")
                continue
            if found:
                log.warning("outbox sweep found %d committed rows nobody queued", found)

    async def _mark_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            if self._sent:
                await self._mark_sent()
            if self._dead or self._alert_due(time.monotonic()):
                await self._mark_dead()

    async def _mark_sent(self) -> None:
        ids, self._sent = self._sent, []
        try:
            async with self._gate, self._sessions() as session:
                conn = await session.connection()
                await conn.execute(_MARK_SENT, {"ids": ids, "at": datetime.now(UTC)})
                await session.commit()
        except Exception:  # the database may be busy or down: try again next round
            log.exception("could not mark %d outbox rows as sent", len(ids))
            self._sent.extend(ids)
            return
        self._known.difference_update(ids)

    def _alert_due(self, now: float) -> bool:
        return self._untold > 0 and (self._told_at is None or now - self._told_at >= self._cooldown)

    async def _mark_dead(self) -> None:
        """Mark the dead letters in SQL and, when due, store and queue the staff alert in the
        same transaction."""
        dead, self._dead = self._dead, []
        now = time.monotonic()
        due = self._alert_due(now)
        alert = None
        if due:
            topic, reason = self._latest
            alert = make_alert(
                "outbox_dead_letter",
                AlertSeverity.HIGH,
                time.time(),
                None,
                count=self._untold,
                topic=topic[:120],
                reason=reason[:120],
            )
        limit = self.max_packet
        try:
            async with self._gate, self._sessions() as session:
                conn = await session.connection()
                rows = await conn.run_sync(lambda c: self._write_dead(c, dead, alert, limit))
                await session.commit()
        except Exception:  # the database may be busy or down: try again next round
            log.exception("could not set aside %d outbox rows", len(dead))
            self._dead.extend(dead)
            return
        self._known.difference_update(i for i, _ in dead)
        if due:
            self._told_at, self._untold = now, 0
            self.enqueue(rows)

    def _write_dead(
        self, conn: Connection, dead: list[tuple[int, str]], alert: AdminAlert | None, limit: int
    ) -> list[Stored]:
        at = datetime.now(UTC)
        if dead:
            conn.execute(_MARK_DEAD, [{"row_id": i, "reason": r, "at": at} for i, r in dead])
        if alert is None:
            return []
        conn.execute(insert(_ALERT), [alert_row(alert)])
        return insert_outbox(conn, [Outbound(self._topics.admin_alerts, alert.encode())], at, limit)


def _request_id(message: Outbound) -> str | None:
    """The request id of a reply (for the log), if the message is one."""
    if not message.topic.endswith("/replies") and "/replies/" not in message.topic:
        return None
    try:
        rid = json.loads(message.payload[:4096]).get("request_id")
    except (ValueError, AttributeError):
        return None
    return rid if isinstance(rid, str) else None
