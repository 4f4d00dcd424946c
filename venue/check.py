"""`plaza check`: the venue's invariants, checked over SQL and the retained topics.

An operator runs it against a live venue (``plaza check --data-dir var``, or
``--database-url ... --mqtt-host ... --mqtt-port ...``); the chaos scenarios run it at their
end. It reads, never writes: SQL through a deferred (non-locking) transaction, the broker as
the read-only ``observer`` account. Exit 0 when every invariant holds, 1 with a list of
problems, 2 when it could not read one of the two.

Invariants (each problem names its invariant, its subject and what is wrong):

- ``double_booking``: no two active (pending, approved, checked-in, held) reservations overlap
  on one machine, nor for one player on any machines (the seats of one party share their slot).
- ``command_effect``: every acknowledged command in the command log has exactly one effect. A
  successful ``reserve`` has its reservation (same request key, same slot), and no other log
  entry claims that reservation; a refused ``reserve`` created nothing; a successful transition
  left its reservation in the status it answered, or one reachable from it; every reservation
  made by a request has its log entry (a party's seats after the first carry its key and
  ``#n``; venue-level commands are logged under the venue's actor, ``~venue``).
- ``outbox``: no committed outbox row (reply, event, notification, machine command) is still
  unsent after the grace period.
- ``notification``: every notification row was published: a high or medium one through its own
  outbox row (sent), a low one in a sent digest, once the grace (plus the digest interval) has
  passed.
- ``board``: every retained ``board/{device}`` agrees with the machine's retained presence
  (epoch, online) and state, with SQL (the machine exists, its name, kind, zone, maintenance,
  its current and next reservation, its place on the floor map: ``pos`` is SQL's ``x``/``y``,
  or absent when the machine has none; a version no older than SQL's) and with the status
  these imply. The board and SQL move while the check reads them, so board problems are read again
  after ``--settle`` seconds and only those found both times are reported.

The checks are pure functions of two snapshots (:class:`SqlFacts`, :class:`Retained`), so
each one is tested by breaking one invariant on purpose.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import sqlalchemy as sa
from pydantic import ValidationError

from bridge.presence.board import DeviceView
from bridge.reservations.actors import VENUE_QUEUE
from bridge.reservations.board_rows import BOARD_HORIZON, current_and_next
from plaza import rules
from plaza.db import make_engine
from plaza.messages import BoardEntry, DeviceState, Presence, Reply, Slot
from plaza.mqtt import NODELAY
from plaza.settings import Settings
from plaza.tables import (
    CommandLog,
    Device,
    Notification,
    Outbox,
    Reservation,
    is_active,
    table_of,
)
from plaza.topics import BoardTopic, DeviceChannel, DeviceTopic, TopicError, Topics
from venue.accounts import OBSERVER_CLIENT_ID, OBSERVER_USER, VenueSecrets


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    invariant: str
    subject: str
    message: str

    def line(self) -> str:
        return f"{self.invariant}: {self.subject}: {self.message}"


# -- snapshots -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DeviceRow:
    id: str
    name: str
    kind: str
    zone: str
    maintenance: bool
    board_version: int
    #: False: a machine without an agent (staff-managed: no presence, never offline)
    agent: bool = True
    #: its place on the floor map (metres); both None while it has none
    x: float | None = None
    y: float | None = None


@dataclass(frozen=True, slots=True)
class ReservationRow:
    id: str
    device_id: str
    player: str
    starts_at: datetime
    ends_at: datetime
    status: str
    request_key: str
    created_at: datetime
    #: the party this seat belongs to: its seats share their slot for their player
    party_id: str | None = None


@dataclass(frozen=True, slots=True)
class LogRow:
    request_key: str
    device_id: str
    op: str
    ok: bool
    reply_json: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NotificationRow:
    id: str
    user: str
    seq: int
    priority: str
    created_at: datetime
    digested_at: datetime | None


@dataclass(frozen=True, slots=True)
class OutboxRowFacts:
    id: int
    topic: str
    created_at: datetime
    published_at: datetime | None


@dataclass
class SqlFacts:
    """What the check reads from SQL, in one read transaction."""

    now: datetime
    devices: dict[str, DeviceRow] = field(default_factory=dict)
    #: every active reservation (pending, approved, checked-in)
    active: list[ReservationRow] = field(default_factory=list)
    #: command-log entries created since the window's start
    logs: list[LogRow] = field(default_factory=list)
    #: reservations the logs name (by request key or by the reply's reservation id), and those
    #: created since the window's start, any status
    reservations: dict[str, ReservationRow] = field(default_factory=dict)
    #: request keys of every log entry of the reservations created in the window
    logged_keys: set[str] = field(default_factory=set)
    window_start: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: outbox rows not sent, created before ``now - grace``
    unsent: list[OutboxRowFacts] = field(default_factory=list)
    #: notifications created in the notification window, before ``now - grace``
    notifications: list[NotificationRow] = field(default_factory=list)
    #: notification id -> was its outbox row sent (from the payloads of notification topics)
    notification_sent: dict[str, bool] = field(default_factory=dict)
    #: (user, seq) of low-priority items carried by a sent digest
    digested: set[tuple[str, int]] = field(default_factory=set)


@dataclass
class Retained:
    """The retained board, presence and state topics, as the observer reads them."""

    board: dict[str, BoardEntry] = field(default_factory=dict)
    presence: dict[str, Presence] = field(default_factory=dict)
    state: dict[str, DeviceState] = field(default_factory=dict)
    #: topics whose payload could not be decoded: (topic, reason)
    unreadable: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CheckOptions:
    database_url: str
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    username: str = OBSERVER_USER
    #: the account's bound client id (every broker account is bound to one)
    client_id: str = OBSERVER_CLIENT_ID
    password: str | None = None
    topic_root: str = "plaza"
    #: outbox rows and notifications younger than this are still on their way
    grace: float = 30.0
    #: low-priority notifications wait this long for their digest (PLAZA_DIGEST_INTERVAL)
    digest_interval: float = 60.0
    #: command-log entries (and reservations) created this far back are checked
    since: timedelta = timedelta(hours=24)
    #: notifications are checked against their outbox rows this far back: an hour less than
    #: sent rows are kept (PLAZA_OUTBOX_SENT_RETENTION, bridge/retention.py)
    notification_window: timedelta = timedelta(hours=23)
    #: board problems are read again after this many seconds (0: report the first reading)
    settle: float = 2.0
    #: the retained set is complete when no message arrived for this long
    quiet: float = 0.5
    read_timeout: float = 30.0
    #: PLAZA_PRE_SLOT_LOCK: a board shows a machine locked (and reserved) this long before an
    #: approved slot
    pre_slot_lock: float = 600.0


# -- the invariants (pure) -------------------------------------------------------------------
def _parties_as_one(rows: Iterable[ReservationRow]) -> list[ReservationRow]:
    """The rows with each party's seats as one (their span): a party's seats share their
    slot for their player."""
    alone = [r for r in rows if not r.party_id]
    seats: dict[str, list[ReservationRow]] = {}
    for row in rows:
        if row.party_id:
            seats.setdefault(row.party_id, []).append(row)
    for party in seats.values():
        first = min(party, key=lambda r: (r.starts_at, r.id))
        end = max(r.ends_at for r in party)
        alone.append(dataclasses.replace(first, ends_at=end))
    return alone


def double_bookings(active: Iterable[ReservationRow]) -> list[Problem]:
    """Active reservations that overlap on one machine, or for one player (but the seats of
    one party)."""
    problems: list[Problem] = []
    active = list(active)
    for what, key in (("machine", "device_id"), ("player", "player")):
        groups: dict[str, list[ReservationRow]] = {}
        for row in active if key == "device_id" else _parties_as_one(active):
            groups.setdefault(getattr(row, key), []).append(row)
        for subject, rows in sorted(groups.items()):
            rows.sort(key=lambda r: (r.starts_at, r.id))
            latest: ReservationRow | None = None  # the row reaching furthest so far
            for row in rows:
                if latest is not None and row.starts_at < latest.ends_at:
                    problems.append(
                        Problem(
                            "double_booking",
                            f"{what} {subject}",
                            f"active reservations {latest.id} ({latest.status}, "
                            f"{_span(latest)}) and {row.id} ({row.status}, {_span(row)}) overlap",
                        )
                    )
                if latest is None or row.ends_at > latest.ends_at:
                    latest = row
    return problems


def _span(row: ReservationRow) -> str:
    return f"{row.starts_at:%Y-%m-%d %H:%M}-{row.ends_at:%H:%M} UTC"


def _reachable(status: str) -> set[str]:
    """``status`` and every status the transition table can lead to from it."""
    seen, todo = {status}, [status]
    while todo:
        try:
            current = rules.Status(todo.pop())
        except ValueError:
            continue
        for nxt in rules.TRANSITIONS.get(current, {}).values():
            if nxt.value not in seen:
                seen.add(nxt.value)
                todo.append(nxt.value)
    return seen


def command_effects(facts: SqlFacts) -> list[Problem]:
    """Every acknowledged command has exactly one effect (see the module docstring)."""
    problems: list[Problem] = []
    by_key = {r.request_key: r for r in facts.reservations.values()}
    claimed: dict[str, str] = {}  # reservation id -> the reserve log entry that made it
    for log in facts.logs:
        if log.device_id not in facts.devices and log.device_id != VENUE_QUEUE:
            continue  # the machine was removed, and its reservations with it
        subject = f"command {log.request_key} ({log.op})"
        for message in _effect_problems(log, facts, by_key.get(log.request_key), claimed):
            problems.append(Problem("command_effect", subject, message))
    for row in facts.reservations.values():
        if row.created_at < facts.window_start or row.request_key.startswith("system:"):
            continue
        made_by = row.request_key.split("#", 1)[0]  # a party's other seats: key#n
        if row.device_id in facts.devices and made_by not in facts.logged_keys:
            problems.append(
                Problem(
                    "command_effect",
                    f"reservation {row.id}",
                    f"made by request {row.request_key} which has no command-log entry "
                    "(an effect no command acknowledged)",
                )
            )
    return problems


def _effect_problems(
    log: LogRow, facts: SqlFacts, made: ReservationRow | None, claimed: dict[str, str]
) -> Iterator[str]:
    try:
        reply = Reply.model_validate_json(log.reply_json)
    except ValidationError as exc:
        yield f"stored reply unreadable: {str(exc).splitlines()[0]}"
        return
    answered = reply.reservation
    if log.op == rules.Op.RESERVE.value and not log.ok:
        if made is not None:
            code = reply.error.code if reply.error else "?"
            yield f"was refused ({code}) but reservation {made.id} carries its request key"
        return
    if not log.ok:
        return  # a refused transition changed nothing; nothing in SQL could show otherwise
    if answered is None:
        if log.op == rules.Op.RESERVE.value:
            yield "ok reply names no reservation"
        return
    row = facts.reservations.get(answered.id)
    if row is None:
        yield f"acknowledged reservation {answered.id} does not exist (effect lost)"
        return
    if log.op != rules.Op.RESERVE.value:
        if row.status not in _reachable(answered.status):
            yield (
                f"answered {answered.status} but reservation {row.id} is {row.status}, "
                f"which cannot follow {answered.status} (effect lost or undone)"
            )
        return
    if row.request_key != log.request_key:
        yield f"reservation {row.id} carries request key {row.request_key!r}, not this command's"
    elif (
        abs(row.starts_at.timestamp() - answered.starts_at) > 0.001
        or abs(row.ends_at.timestamp() - answered.ends_at) > 0.001
        or row.device_id != answered.device_id
    ):
        yield f"reservation {row.id} is not the slot the reply acknowledged"
    if answered.id in claimed:
        yield (
            f"reservation {answered.id} was also acknowledged to {claimed[answered.id]} "
            "(one effect, two commands)"
        )
    claimed[answered.id] = log.request_key


def outbox_problems(facts: SqlFacts, grace: float) -> list[Problem]:
    if not facts.unsent:
        return []
    oldest = min(facts.unsent, key=lambda r: r.created_at)
    topics = sorted({r.topic for r in facts.unsent})
    shown = ", ".join(topics[:5]) + (f" and {len(topics) - 5} more" if len(topics) > 5 else "")
    age = (facts.now - oldest.created_at).total_seconds()
    return [
        Problem(
            "outbox",
            f"{len(facts.unsent)} rows",
            f"committed but not sent after {grace:g}s (oldest id {oldest.id}, {age:.0f}s old); "
            f"topics: {shown}",
        )
    ]


def notification_problems(facts: SqlFacts, digest_interval: float) -> list[Problem]:
    problems = []
    digest_due = facts.now - timedelta(seconds=digest_interval)
    for note in facts.notifications:
        subject = f"notification {note.user}#{note.seq}"
        if note.priority == "low":
            if note.digested_at is None:
                if note.created_at < digest_due:
                    problems.append(
                        Problem("notification", subject, "low priority, never digested")
                    )
            elif (note.user, note.seq) not in facts.digested:
                problems.append(
                    Problem("notification", subject, "marked digested but no sent digest has it")
                )
            continue
        sent = facts.notification_sent.get(note.id)
        if sent is None:
            problems.append(Problem("notification", subject, f"{note.priority}: no outbox row"))
        elif not sent:
            problems.append(Problem("notification", subject, f"{note.priority}: not sent"))
    return problems


def _slot_differs(shown: Slot | None, expected: Slot | None) -> bool:
    if shown is None or expected is None:
        return shown is not expected
    return (
        shown.reservation_id != expected.reservation_id
        or shown.status != expected.status
        or abs(shown.starts_at - expected.starts_at) > 0.001
        or abs(shown.ends_at - expected.ends_at) > 0.001
    )


def _place_differs(shown: tuple[float, float] | None, sql: tuple[float, float] | None) -> bool:
    if shown is None or sql is None:
        return shown is not sql
    return any(abs(a - b) > 0.001 for a, b in zip(shown, sql, strict=True))


def _place_text(place: tuple[float, float] | None) -> str:
    return "none" if place is None else f"x={place[0]:g}, y={place[1]:g}"


def _slot_text(slot: Slot | None) -> str:
    return "none" if slot is None else f"{slot.reservation_id} ({slot.status})"


def board_problems(
    facts: SqlFacts, retained: Retained, pre_slot_lock: float = 600.0
) -> list[Problem]:
    """The retained board against the machines' retained presence and state, and SQL
    (``pre_slot_lock``: the bridge's PLAZA_PRE_SLOT_LOCK, for the lock a board shows)."""
    problems = [
        Problem("board", topic, f"unreadable retained payload: {why}")
        for topic, why in retained.unreadable
    ]
    horizon = facts.now + BOARD_HORIZON
    live: dict[str, list[ReservationRow]] = {}
    for row in facts.active:
        if row.ends_at > facts.now and row.starts_at < horizon:
            live.setdefault(row.device_id, []).append(row)
    for device_id in sorted(set(retained.board) - set(facts.devices)):
        problems.append(Problem("board", device_id, "board entry for a machine SQL does not know"))
    for device_id, device in sorted(facts.devices.items()):
        entry = retained.board.get(device_id)
        presence = retained.presence.get(device_id)
        state = retained.state.get(device_id)
        current, nxt = current_and_next(live.get(device_id, []), facts.now)
        if entry is None:
            if presence is not None or state is not None or current or nxt:
                problems.append(
                    Problem("board", device_id, "no board entry, but the machine has reported")
                )
            continue
        expected = DeviceView(
            id=device.id,
            name=device.name,
            kind=device.kind,
            zone=device.zone,
            maintenance=device.maintenance,
            online=entry.online,
            state=entry.state,
            current_slot=current,
            next_slot=nxt,
            lock_lead=pre_slot_lock,
            agent=device.agent,
        )
        expected = replace(expected, locked=expected.derive_lock(facts.now.timestamp()))
        found = _entry_problems(entry, device, presence, state, expected)
        problems += [Problem("board", device_id, message) for message in found]
    return problems


def _entry_problems(
    entry: BoardEntry,
    device: DeviceRow,
    presence: Presence | None,
    state: DeviceState | None,
    view: DeviceView,
) -> Iterator[str]:
    """What is wrong with one board entry; ``view``: the machine as the board should show it
    (SQL's slots and the entry's own presence and state)."""
    current, nxt = view.current_slot, view.next_slot
    if not device.agent:  # staff set its state: no presence or state of its own to compare
        if entry.managed != "staff" or not entry.online:
            yield "a machine without an agent not shown as staff-managed and online"
    elif presence is not None:
        # a machine that never connected shows no epoch on the board (null)
        seen = -1 if entry.epoch is None else entry.epoch
        if presence.epoch > seen:
            yield (
                f"board at epoch {entry.epoch} but the machine's presence is at epoch "
                f"{presence.epoch} (online={presence.online})"
            )
        elif presence.epoch == seen and presence.online != entry.online:
            yield (
                f"board says online={entry.online} but presence (epoch {presence.epoch}) says "
                f"online={presence.online}"
            )
        elif presence.epoch < seen:
            yield (
                f"retained presence (epoch {presence.epoch}, online={presence.online}) is older "
                f"than the board's epoch {entry.epoch}: the machine has not re-published its birth"
            )
    elif entry.online:
        yield "board says online but the machine has no retained presence"
    if device.agent and state is not None and state.state is not entry.state:
        yield f"board says state {entry.state.value} but the machine reports {state.state.value}"
    for name in ("name", "kind", "zone"):
        if getattr(entry, name) != getattr(device, name):
            yield f"board {name} {getattr(entry, name)!r} but SQL has {getattr(device, name)!r}"
    shown = None if entry.pos is None else (entry.pos.x, entry.pos.y)
    placed = None if device.x is None or device.y is None else (device.x, device.y)
    if _place_differs(shown, placed):
        yield f"board pos {_place_text(shown)} but SQL has {_place_text(placed)}"
    if entry.version < device.board_version:
        yield f"board version {entry.version} is older than SQL's {device.board_version}"
    if _slot_differs(entry.current_slot, current):
        yield (
            f"board current slot {_slot_text(entry.current_slot)} but SQL has {_slot_text(current)}"
        )
    if _slot_differs(entry.next_slot, nxt):
        yield f"board next slot {_slot_text(entry.next_slot)} but SQL has {_slot_text(nxt)}"
    expected = view.derive_status()
    if entry.status is not expected:
        yield (
            f"board status {entry.status.value}, but online={entry.online}, state "
            f"{entry.state.value}, maintenance={device.maintenance} and SQL's slots make it "
            f"{expected.value}"
        )
    if entry.locked != view.locked:
        yield f"board says locked={entry.locked} but SQL's slots make it locked={view.locked}"


def find_problems(facts: SqlFacts, retained: Retained, options: CheckOptions) -> list[Problem]:
    return [
        *double_bookings(facts.active),
        *command_effects(facts),
        *outbox_problems(facts, options.grace),
        *notification_problems(facts, options.digest_interval),
        *board_problems(facts, retained, options.pre_slot_lock),
    ]


# -- reading SQL -----------------------------------------------------------------------------
_RES, _LOG, _DEV = table_of(Reservation), table_of(CommandLog), table_of(Device)
_OUT, _NOTE = table_of(Outbox), table_of(Notification)
_RES_COLUMNS = (
    _RES.c.id,
    _RES.c.device_id,
    _RES.c.player,
    _RES.c.starts_at,
    _RES.c.ends_at,
    _RES.c.status,
    _RES.c.request_key,
    _RES.c.created_at,
    _RES.c.party_id,
)
_CHUNK = 500
#: a payload that is not the JSON the bridge writes is skipped (and so reported as missing by
#: the invariant that needed it)
_BAD_JSON = (ValueError, TypeError, KeyError, AttributeError)


def _chunks(values: Iterable[str]) -> Iterator[list[str]]:
    items = sorted(set(values))
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


async def read_sql(options: CheckOptions, topics: Topics) -> SqlFacts:
    now = datetime.now(UTC)
    facts = SqlFacts(now=now, window_start=now - options.since)
    cutoff = now - timedelta(seconds=options.grace)
    engine = make_engine(options.database_url, reader=True)
    try:
        async with engine.connect() as conn:
            for row in await conn.execute(
                sa.select(
                    _DEV.c.id,
                    _DEV.c.name,
                    _DEV.c.kind,
                    _DEV.c.zone,
                    _DEV.c.maintenance,
                    _DEV.c.board_version,
                    _DEV.c.agent,
                    _DEV.c.x,
                    _DEV.c.y,
                )
            ):
                facts.devices[row.id] = DeviceRow(*row)
            facts.active = [
                ReservationRow(*r)
                for r in await conn.execute(
                    sa.select(*_RES_COLUMNS).where(is_active(_RES.c.status))
                )
            ]
            facts.logs = [
                LogRow(*r)
                for r in await conn.execute(
                    sa.select(
                        _LOG.c.request_key,
                        _LOG.c.device_id,
                        _LOG.c.op,
                        _LOG.c.ok,
                        _LOG.c.reply_json,
                        _LOG.c.created_at,
                    ).where(_LOG.c.created_at >= facts.window_start)
                )
            ]
            wanted_ids = set()
            for log in facts.logs:
                with contextlib.suppress(*_BAD_JSON):
                    reservation = json.loads(log.reply_json).get("reservation") or {}
                    if isinstance(reservation.get("id"), str):
                        wanted_ids.add(reservation["id"])
            rows = [
                *await conn.execute(
                    sa.select(*_RES_COLUMNS).where(_RES.c.created_at >= facts.window_start)
                )
            ]
            for ids in _chunks(wanted_ids):
                rows += await conn.execute(sa.select(*_RES_COLUMNS).where(_RES.c.id.in_(ids)))
            for ids in _chunks(log.request_key for log in facts.logs):
                rows += await conn.execute(
                    sa.select(*_RES_COLUMNS).where(_RES.c.request_key.in_(ids))
                )
            facts.reservations = {r.id: ReservationRow(*r) for r in rows}
            keys = {r.request_key.split("#", 1)[0] for r in facts.reservations.values()}
            facts.logged_keys = {log.request_key for log in facts.logs} & keys
            for ids in _chunks(keys - facts.logged_keys):
                facts.logged_keys |= set(
                    (
                        await conn.execute(
                            sa.select(_LOG.c.request_key).where(_LOG.c.request_key.in_(ids))
                        )
                    ).scalars()
                )
            facts.unsent = [
                OutboxRowFacts(*r)
                for r in await conn.execute(
                    sa.select(_OUT.c.id, _OUT.c.topic, _OUT.c.created_at, _OUT.c.published_at)
                    .where(_OUT.c.published_at.is_(None), _OUT.c.created_at < cutoff)
                    .order_by(_OUT.c.id)
                )
            ]
            note_start = max(facts.window_start, now - options.notification_window)
            facts.notifications = [
                NotificationRow(*r)
                for r in await conn.execute(
                    sa.select(
                        _NOTE.c.id,
                        _NOTE.c.user,
                        _NOTE.c.seq,
                        _NOTE.c.priority,
                        _NOTE.c.created_at,
                        _NOTE.c.digested_at,
                    ).where(_NOTE.c.created_at >= note_start, _NOTE.c.created_at < cutoff)
                )
            ]
            notification_topic = re.compile(
                rf"^{re.escape(topics.root)}/users/[^/]+/notifications$"
            )
            for topic, payload, published_at in await conn.execute(
                sa.select(_OUT.c.topic, _OUT.c.payload, _OUT.c.published_at).where(
                    _OUT.c.topic.like(f"{topics.root}/users/%/notifications"),
                    _OUT.c.created_at >= note_start - timedelta(minutes=1),
                )
            ):
                if not notification_topic.match(topic):
                    continue
                with contextlib.suppress(*_BAD_JSON):
                    event = json.loads(payload)
                    sent = published_at is not None
                    facts.notification_sent[str(event.get("id"))] = sent
                    if sent and event.get("type") == "digest":
                        user = str(event.get("user_id"))
                        facts.digested |= {(user, int(i["seq"])) for i in event.get("items") or []}
    finally:
        await engine.dispose()
    return facts


# -- reading the retained topics -------------------------------------------------------------
async def read_retained(options: CheckOptions, topics: Topics) -> Retained:
    """Subscribe as the observer and take what arrives until ``quiet`` seconds pass with
    nothing new (the retained set first, then any live update, the newest kept)."""
    retained = Retained()
    client = aiomqtt.Client(
        options.mqtt_host,
        options.mqtt_port,
        username=options.username,
        password=options.password,
        identifier=options.client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=NODELAY,
        timeout=10,
    )
    async with client:
        await client.subscribe(
            [(topics.all_board, 1), (topics.all_presence, 1), (topics.all_state, 1)]
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + options.read_timeout
        while loop.time() < deadline:
            try:
                message = await asyncio.wait_for(client.messages.__anext__(), options.quiet)
            except TimeoutError:
                break
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if payload:
                _take(retained, topics, message.topic.value, payload)
    return retained


def _take(retained: Retained, topics: Topics, topic: str, payload: bytes) -> None:
    try:
        parsed = topics.parse(topic)
        if isinstance(parsed, BoardTopic):
            entry = BoardEntry.model_validate_json(payload)
            old = retained.board.get(parsed.device)
            if old is None or entry.version >= old.version:
                retained.board[parsed.device] = entry
        elif isinstance(parsed, DeviceTopic) and parsed.channel is DeviceChannel.PRESENCE:
            retained.presence[parsed.device] = Presence.model_validate_json(payload)
        elif isinstance(parsed, DeviceTopic) and parsed.channel is DeviceChannel.STATE:
            retained.state[parsed.device] = DeviceState.model_validate_json(payload)
    except (TopicError, ValidationError) as exc:
        retained.unreadable.append((topic, str(exc).splitlines()[0]))


# -- running it ------------------------------------------------------------------------------
@dataclass
class Report:
    problems: list[Problem]
    facts: SqlFacts
    retained: Retained

    def summary(self) -> str:
        f, r = self.facts, self.retained
        online = sum(1 for e in r.board.values() if e.online)
        reach = (
            f"{len(f.devices)} machines in SQL, {len(r.board)} board entries ({online} online), "
            f"{len(f.active)} active reservations, {len(f.logs)} commands and "
            f"{len(f.notifications)} notifications checked"
        )
        if not self.problems:
            return f"plaza check: OK: {reach}"
        lines = [f"plaza check: {len(self.problems)} problem(s) ({reach}):"]
        lines += [f"  - {p.line()}" for p in self.problems]
        return "\n".join(lines)


async def check(options: CheckOptions) -> Report:
    topics = Topics(options.topic_root)
    facts, retained = await asyncio.gather(
        read_sql(options, topics), read_retained(options, topics)
    )
    problems = find_problems(facts, retained, options)
    board = {(p.invariant, p.subject) for p in problems if p.invariant == "board"}
    if board and options.settle > 0:
        await asyncio.sleep(options.settle)
        facts, retained = await asyncio.gather(
            read_sql(options, topics), read_retained(options, topics)
        )
        again = board_problems(facts, retained, options.pre_slot_lock)
        problems = [p for p in problems if p.invariant != "board"]
        problems += [p for p in again if (p.invariant, p.subject) in board]
    return Report(sorted(problems), facts, retained)


def broker_port_of(data_dir: Path) -> int | None:
    """The MQTT port of the broker `plaza up` rendered in ``data_dir`` (its first listener)."""
    conf = data_dir / "broker" / "mosquitto.conf"
    if not conf.exists():
        return None
    for line in conf.read_text().splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "listener":
            return int(words[1])
    return None


def options_from(args: argparse.Namespace, settings: Settings) -> CheckOptions:
    password = args.mqtt_password or os.environ.get("PLAZA_CHECK_MQTT_PASSWORD")
    secrets_file = settings.data_dir / "secrets.json"
    if password is None and args.mqtt_username == OBSERVER_USER and secrets_file.exists():
        password = VenueSecrets.load(secrets_file).observer
    port = settings.mqtt_port
    if getattr(args, "mqtt_port", None) is None:
        port = broker_port_of(settings.data_dir) or port
    return CheckOptions(
        database_url=settings.db_url,
        mqtt_host=settings.mqtt_host,
        mqtt_port=port,
        username=args.mqtt_username,
        password=password,
        topic_root=settings.topic_root,
        grace=args.grace,
        digest_interval=settings.digest_interval,
        since=timedelta(hours=args.since),
        notification_window=timedelta(seconds=settings.outbox_sent_retention - 3600),
        settle=args.settle,
        pre_slot_lock=settings.pre_slot_lock,
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    options = options_from(args, settings)
    try:
        report = asyncio.run(check(options))
    except (aiomqtt.MqttError, OSError, sa.exc.SQLAlchemyError) as exc:
        print(f"plaza check: could not read the venue: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 1 if report.problems else 0
