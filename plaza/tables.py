"""SQLModel tables. Storage is not the wire: see plaza.messages for payloads.

Times are stored as timezone-aware UTC. SQLite hands back naive datetimes, so every datetime
column goes through :class:`UTCDateTime`, which re-attaches UTC on the way out.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

from plaza import rules


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(**kw: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kw)


# -- devices ---------------------------------------------------------------------------------
class DeviceBase(SQLModel):
    name: str = Field(max_length=80)
    kind: str = Field(default="pc", max_length=40)
    zone: str = Field(default="main", max_length=40)
    auto_approve: bool = False
    maintenance: bool = False
    #: False: a machine without an agent (a console, a cabinet, a VR rig): staff set its
    #: state and check its players in at the desk; it is never shown offline
    agent: bool = Field(default=True, sa_column_kwargs={"server_default": sa.true()})
    #: where it stands on the floor (metres from the floor's top left corner; None: not placed)
    x: float | None = None
    y: float | None = None


class Device(DeviceBase, table=True):
    """One game machine, with the bridge's last known view of it."""

    id: str = Field(primary_key=True, max_length=48)
    online: bool = False
    state: str = Field(default="idle", max_length=20)
    status: str = Field(default="offline", max_length=20)
    epoch: int = Field(default=-1, sa_type=sa.BigInteger)
    state_epoch: int = Field(default=-1, sa_type=sa.BigInteger)
    state_seq: int = Field(default=-1, sa_type=sa.BigInteger)
    session_json: str | None = None
    fault: str | None = Field(default=None, max_length=200)
    board_version: int = Field(default=0, sa_type=sa.BigInteger)
    since: datetime = _ts(default_factory=utcnow)
    last_seen: datetime | None = _ts(default=None)
    created_at: datetime = _ts(default_factory=utcnow)


class DeviceStatusChange(SQLModel, table=True):
    """Append-only history of a machine's board status."""

    __tablename__ = "device_status_change"
    #: a machine's history in a window, and its last change before it (utilization)
    __table_args__ = (
        sa.Index("ix_device_status_change_device_at", "device_id", "at"),
        sa.Index("ix_device_status_change_window", "at", "device_id", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(foreign_key="device.id", index=True, max_length=48, ondelete="CASCADE")
    status: str = Field(max_length=20)
    online: bool
    state: str = Field(max_length=20)
    epoch: int = Field(sa_type=sa.BigInteger)
    at: datetime = _ts(default_factory=utcnow, index=True)


class FloorZone(SQLModel, table=True):
    """A zone of the floor map: ``id`` is the ``zone`` machines name, ``outline_json`` its
    outline (a JSON list of ``[x, y]`` points, metres; plaza.floormap checks it)."""

    __tablename__ = "floor_zone"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=80)
    outline_json: str
    updated_at: datetime = _ts(default_factory=utcnow)


class Alert(SQLModel, table=True):
    """An operator alert, as published on ``admin/alerts``."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, primary_key=True, max_length=32)
    type: str = Field(max_length=40)
    severity: str = Field(max_length=10)
    device_id: str | None = Field(default=None, index=True, max_length=48)
    message: str = Field(max_length=500)
    message_en: str | None = Field(default=None, max_length=500)
    created_at: datetime = _ts(default_factory=utcnow, index=True)
    acknowledged_at: datetime | None = _ts(default=None)


# -- reservations ----------------------------------------------------------------------------
class Reservation(SQLModel, table=True):
    """One booking of one machine by one player, half-open ``[starts_at, ends_at)``.

    ``request_key`` (``user:request_id``) is unique: the request that created it is its
    idempotency key. PostgreSQL also carries exclusion constraints
    (:data:`RESERVATION_EXCLUSIONS`).

    The hot lookups (a machine's or a player's reservations that end after some moment) use
    the ``(device_id, ends_at)`` and ``(player, ends_at)`` indexes, so their cost follows what
    the machine or player holds, not the size of the table; see :func:`is_active`."""

    __table_args__ = (
        sa.Index("ix_reservation_device_ends", "device_id", "ends_at"),
        sa.Index("ix_reservation_player_ends", "player", "ends_at"),
    )

    id: str = Field(primary_key=True, max_length=32)
    device_id: str = Field(foreign_key="device.id", max_length=48, ondelete="CASCADE")
    player: str = Field(max_length=48)
    starts_at: datetime = _ts(index=True)
    ends_at: datetime = _ts(index=True)
    status: str = Field(index=True, max_length=12)
    code: str = Field(max_length=8)
    request_key: str = Field(unique=True, max_length=120)
    created_at: datetime = _ts(default_factory=utcnow)
    updated_at: datetime = _ts(default_factory=utcnow)
    reminded_at: datetime | None = _ts(default=None)
    #: the party this seat belongs to (a party booking: several machines, one slot)
    party_id: str | None = Field(default=None, index=True, max_length=32)
    #: a held machine (``status`` held: a waitlist offer) lapses at this moment
    hold_until: datetime | None = _ts(default=None)
    #: the venue floor's once-markers (plaza/floor.py): the machine was locked for the slot
    #: (and a walk-in warned), a walk-in still playing at the start was ended or staff
    #: alerted, the checked-in player was warned before the end
    locked_at: datetime | None = _ts(default=None)
    overrun_at: datetime | None = _ts(default=None)
    ending_warned_at: datetime | None = _ts(default=None)


#: PostgreSQL: no two *holding* reservations (:data:`RESERVATION_HOLDING`: approved, checked
#: in, held) overlap on one machine or for one player, but for the seats of one party (its id,
#: else the reservation's own: btree_gist's ``<>``); half-open ranges, so back-to-back slots
#: are fine. Each is ``EXCLUDE USING gist (KEY, tstzrange(starts_at, ends_at, '[)') WITH &&)
#: WHERE (status IN (...holding...))`` (btree_gist); added by plaza.migrations with the tables.
RESERVATION_EXCLUSIONS = {
    "reservation_no_overlap_device": "device_id WITH =",
    "reservation_no_overlap_player": "player WITH =, (COALESCE(party_id, id)) WITH <>",
}
RESERVATION_HOLDING = tuple(sorted(s.value for s in rules.HOLDING))


def is_active(
    status: Any, statuses: Iterable[rules.Status] = rules.ACTIVE
) -> sa.ColumnElement[bool]:
    """``status IN (...)`` (by default the active ones), written as ``status || ''`` so no
    index on ``status`` can serve it. A status index looks selective to SQLite's planner
    (without ANALYZE every key is assumed rare) but every live reservation shares three
    values: the planner would scan all of them per query instead of seeking the
    ``(device_id, ends_at)`` or ``(player, ends_at)`` index. Pair it with a device or player
    condition and an ``ends_at`` bound."""
    return sa.ColumnElement.concat(status, "").in_(sorted(s.value for s in statuses))


class WaitlistEntry(SQLModel, table=True):
    """A player's place in the waitlist line of a machine kind (and zone: None means any).
    The line is the live entries (``waiting``, ``offered``) of a kind in ``rank`` order;
    ``offer_id`` is the held reservation of an offered one. ``request_key`` (the join's
    ``user:request_id``) is unique, like a reservation's. Only the bridge writes it."""

    __tablename__ = "waitlist_entry"
    __table_args__ = (sa.Index("ix_waitlist_entry_kind_status", "kind", "status"),)

    id: str = Field(primary_key=True, max_length=32)
    player: str = Field(index=True, max_length=48)
    kind: str = Field(max_length=40)
    zone: str | None = Field(default=None, max_length=40)
    minutes: int
    rank: float
    status: str = Field(max_length=12)
    offer_id: str | None = Field(default=None, index=True, max_length=32)
    request_key: str = Field(unique=True, max_length=120)
    created_at: datetime = _ts(default_factory=utcnow)
    updated_at: datetime = _ts(default_factory=utcnow)


class PlayerStanding(SQLModel, table=True):
    """The no-show policy's memory of one player: self-service booking is suspended until
    ``suspended_until``; strikes (no-show reservations within ``PLAZA_NO_SHOW_WINDOW``) are
    counted from ``strikes_since`` on (set when a suspension starts and when staff lift it).
    Only the bridge writes it."""

    __tablename__ = "player_standing"

    player: str = Field(primary_key=True, max_length=48)
    suspended_until: datetime | None = _ts(default=None)
    strikes_since: datetime | None = _ts(default=None)
    updated_at: datetime = _ts(default_factory=utcnow)


class CommandLog(SQLModel, table=True):
    """Every decided command and the reply it got: a retry with the same key gets it again.
    Kept ``PLAZA_COMMAND_LOG_RETENTION``, then deleted by age (``created_at`` index)."""

    __tablename__ = "command_log"

    request_key: str = Field(primary_key=True, max_length=120)
    device_id: str = Field(max_length=48)
    op: str = Field(max_length=24)
    ok: bool
    reply_json: str
    created_at: datetime = _ts(default_factory=utcnow, index=True)


class IdempotencyKey(SQLModel, table=True):
    """A REST ``Idempotency-Key`` and a fingerprint of the command it was first used for:
    reusing the key for another command is refused instead of answered with the first one's
    result. Keyed ``{caller}:{key}`` (a key is its caller's own); pruned by the api."""

    __tablename__ = "idempotency_key"

    key: str = Field(primary_key=True, max_length=120)
    fingerprint: str = Field(max_length=64)
    created_at: datetime = _ts(default_factory=utcnow, index=True)


class RevokedSession(SQLModel, table=True):
    """A login session ended by ``POST /auth/logout``: its tokens are refused. Kept until the
    session would have ended anyway (``auth_time + PLAZA_SESSION_MAX_AGE``), then pruned."""

    __tablename__ = "revoked_session"

    sid: str = Field(primary_key=True, max_length=32)
    until: datetime = _ts(index=True)


class Outbox(SQLModel, table=True):
    """Messages written in the same transaction as the change they announce; a publisher
    sends them in id order after commit and marks them, so a crash in between loses none.

    A message the broker cannot take (too large, a topic it refuses) is *dead-lettered*:
    ``dead_at`` and ``dead_reason`` are set, it is never sent again, and the rows behind it
    go on (docs/operations.md, "Limits and abuse")."""

    id: int | None = Field(default=None, primary_key=True)
    topic: str = Field(max_length=200)
    payload: bytes = Field(sa_type=sa.LargeBinary)
    qos: int = 1
    retain: bool = False
    props_json: str | None = None
    created_at: datetime = _ts(default_factory=utcnow)
    published_at: datetime | None = _ts(default=None, index=True)
    dead_at: datetime | None = _ts(default=None)
    dead_reason: str | None = Field(default=None, max_length=200)


class HelpCallRow(SQLModel, table=True):
    """A player's call for staff: ``open`` until someone acknowledges it (on the way), then
    ``resolved``. ``device_id`` follows the player when they check in elsewhere. At most one
    call per player is open or acknowledged (the bridge's rule, plaza.help)."""

    __tablename__ = "help_call"
    __table_args__ = (sa.Index("ix_help_call_player_created", "player", "created_at"),)

    id: str = Field(primary_key=True, max_length=32)
    player: str = Field(max_length=48)
    device_id: str = Field(max_length=48)
    topic: str = Field(max_length=20)
    message: str | None = Field(default=None, max_length=280)
    status: str = Field(index=True, max_length=12)
    request_key: str = Field(unique=True, max_length=120)
    created_at: datetime = _ts(default_factory=utcnow)
    acknowledged_at: datetime | None = _ts(default=None)
    acknowledged_by: str | None = Field(default=None, max_length=48)
    resolved_at: datetime | None = _ts(default=None)
    resolved_by: str | None = Field(default=None, max_length=48)


# -- people ----------------------------------------------------------------------------------
class User(SQLModel, table=True):
    """A player or an admin. Passwords are argon2 hashes."""

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(unique=True, index=True, max_length=48)
    password_hash: str = Field(max_length=200)
    role: str = Field(default="player", max_length=10)
    locale: str = Field(default="ko", max_length=5)
    created_at: datetime = _ts(default_factory=utcnow)


class Notification(SQLModel, table=True):
    """A notification as sent to one player: ``seq`` grows by one per player (unique), so a
    client asks for what it missed after the last seq it saw. Rendered in the player's locale
    when created. Low priority ones wait for the digest (``digested_at``)."""

    __table_args__ = (sa.UniqueConstraint("user", "seq", name="notification_user_seq"),)

    id: str = Field(primary_key=True, max_length=32)
    user: str = Field(index=True, max_length=48)
    seq: int = Field(sa_type=sa.BigInteger)
    type: str = Field(max_length=40)
    priority: str = Field(max_length=10)
    title: str = Field(max_length=200)
    message: str = Field(max_length=2000)
    locale: str = Field(default="ko", max_length=5)
    reservation_id: str | None = Field(default=None, index=True, max_length=32)
    #: the reservation and rebook offer as sent (JSON), for the backlog
    data_json: str | None = None
    #: indexed: notifications are pruned by age (PLAZA_NOTIFICATION_RETENTION)
    created_at: datetime = _ts(default_factory=utcnow, index=True)
    read_at: datetime | None = _ts(default=None)
    digested_at: datetime | None = _ts(default=None)


class NotificationSeq(SQLModel, table=True):
    """The last notification seq handed out per player: taken with one upsert per player and
    transaction, which row-locks on PostgreSQL, so several bridges never hand out one seq
    twice."""

    __tablename__ = "notification_seq"

    user: str = Field(primary_key=True, max_length=48)
    last: int = Field(default=0, sa_type=sa.BigInteger)


class BrokerSession(SQLModel, table=True):
    """A browser's broker account (``{user}~{session}``), made by ``POST /auth/mqtt`` with the
    user's role. One per browser session, so re-keying one never disconnects another; deleted
    (and its connection dropped) when it expires."""

    __tablename__ = "broker_session"

    client: str = Field(primary_key=True, max_length=72)
    owner: str = Field(index=True, max_length=48)
    expires_at: datetime = _ts(index=True)


class CoolOff(SQLModel, table=True):
    """A player the bridge disabled in the broker for flooding: every broker account of
    theirs it disabled (their own and their browser sessions', JSON list) is enabled again
    at ``until``, also by a bridge started after a crash. While the row exists the api
    refuses the player new broker credentials (429 ``cooling_off``)."""

    __tablename__ = "cool_off"

    user: str = Field(primary_key=True, max_length=48)
    until: datetime = _ts(index=True)
    #: the broker accounts disabled (JSON list of usernames)
    accounts_json: str = Field(default="[]")
    created_at: datetime = _ts(default_factory=utcnow)


class NoticeRow(SQLModel, table=True):
    """A system notice, as published (retained) on ``notices``."""

    __tablename__ = "notice"

    id: str = Field(primary_key=True, max_length=32)
    title: str = Field(max_length=120)
    message: str = Field(max_length=2000)
    title_en: str | None = Field(default=None, max_length=120)
    message_en: str | None = Field(default=None, max_length=2000)
    priority: str = Field(max_length=10)
    created_by: str = Field(max_length=48)
    created_at: datetime = _ts(default_factory=utcnow, index=True)


class SchemaVersion(SQLModel, table=True):
    __tablename__ = "schema_version"

    id: int = Field(default=1, primary_key=True)
    version: int
    applied_at: datetime = _ts(default_factory=utcnow)


class BridgeMeta(SQLModel, table=True):
    """Bridge bookkeeping: ``generation`` is bumped at each bridge start (board versions)."""

    __tablename__ = "bridge_meta"

    id: int = Field(default=1, primary_key=True)
    generation: int = Field(default=0, sa_type=sa.BigInteger)


# -- helpers shared by every writer --------------------------------------------------------------
def table_of(model: type[SQLModel]) -> sa.Table:
    """The Core table of a SQLModel table class."""
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, sa.Table)
    return table


def from_timestamp(ts: float) -> datetime:
    """A wire time (seconds since the epoch) as an aware UTC datetime."""
    return datetime.fromtimestamp(ts, UTC)


def as_utc(moment: datetime) -> datetime:
    """``moment`` with UTC attached if a driver handed it back naive (SQLite via Core)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
