"""Wire payloads of the venue (JSON, snake_case). The wire format is not the table format.

Every payload is a frozen pydantic model that forbids unknown fields, so a typo on a device
shows up as a clear error instead of a silently ignored value. Times on the wire are Unix
seconds as floats (``ts``), which JavaScript and MQTT tools read without a date parser.

Errors::

    PayloadError (ValueError)
     +-- raised by decode() for oversize, non-JSON or schema-violating payloads
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_MAX_PAYLOAD = 16 * 1024


class PayloadError(ValueError):
    """A payload could not be decoded into its wire model."""


class Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    def encode(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


W = TypeVar("W", bound=Wire)


def decode(
    model: type[W], payload: bytes | bytearray | str, max_bytes: int = DEFAULT_MAX_PAYLOAD
) -> W:
    """Decode ``payload`` into ``model`` or raise :class:`PayloadError` saying why."""
    if isinstance(payload, str):
        payload = payload.encode()
    size = len(payload)
    if size > max_bytes:
        raise PayloadError(f"payload of {size} bytes exceeds the limit of {max_bytes} bytes")
    if size == 0:
        raise PayloadError("empty payload")
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise PayloadError(f"invalid {model.__name__}: {where}: {first['msg']}") from exc


def now() -> float:
    return round(time.time(), 6)


Epoch = Annotated[int, Field(ge=0, le=2**53)]


# -- device -> broker ------------------------------------------------------------------------
class Presence(Wire):
    """``devices/{d}/presence``: the birth ``{online: true, epoch, ts, fw}`` or the will
    ``{online: false, epoch}``. ``epoch`` grows on every connection of the machine."""

    online: bool
    epoch: Epoch
    ts: float | None = None
    fw: str | None = Field(default=None, max_length=64)


class MachineState(StrEnum):
    IDLE = "idle"
    IN_USE = "in_use"
    FAULT = "fault"
    MAINTENANCE = "maintenance"


class Session(Wire):
    """A play session on a machine."""

    id: str = Field(min_length=1, max_length=64)
    started_at: float
    ends_at: float | None = None
    reservation_code: str | None = Field(default=None, max_length=16)


class DeviceState(Wire):
    """``devices/{d}/state``: ``seq`` grows within one epoch, so (epoch, seq) orders states."""

    state: MachineState
    epoch: Epoch
    seq: Annotated[int, Field(ge=0, le=2**53)]
    session: Session | None = None
    fault: str | None = Field(default=None, max_length=200)
    ts: float


# -- bridge -> device ------------------------------------------------------------------------
class CommandName(StrEnum):
    REBIRTH = "rebirth"
    LOCK = "lock"
    UNLOCK = "unlock"
    START_SESSION = "start_session"
    END_SESSION = "end_session"
    #: the session's reservation was extended: ``session.ends_at`` is the new end
    EXTEND_SESSION = "extend_session"
    #: the session has ``minutes`` left: a walk-in before a reserved slot (reason
    #: ``reservation``), or a checked-in slot about to end (reason ``slot_ending``)
    SESSION_WARNING = "session_warning"


#: the reason on a reservation's ``lock`` and ``unlock``, and on the ``end_session`` of a
#: walk-in that overran into a reserved slot (docs/protocol.md, "Commands to a machine")
RESERVATION_LOCK = "reservation"
#: the reason on staff's maintenance ``lock``
MAINTENANCE_LOCK = "maintenance"


class DeviceCommand(Wire):
    """``devices/{d}/cmd``."""

    cmd: CommandName
    ts: float
    session: Session | None = None
    reason: str | None = Field(default=None, max_length=200)
    #: ``session_warning``: whole minutes left
    minutes: Annotated[int, Field(ge=0, le=1440)] | None = None
    #: the venue floor's commands: the reservation concerned (a ``lock`` keeps the machine for
    #: it, and its ``unlock`` lifts that lock only: two back-to-back slots may each hold one)
    reservation_id: str | None = Field(default=None, max_length=32)


# -- bridge -> everyone ----------------------------------------------------------------------
class BoardStatus(StrEnum):
    """What a tile shows; derived from presence, state and reservations."""

    AVAILABLE = "available"
    IN_USE = "in_use"
    RESERVED = "reserved"
    OFFLINE = "offline"
    FAULT = "fault"
    MAINTENANCE = "maintenance"
    #: held for a player on the waitlist until they take the offer or it lapses
    HELD = "held"


class Slot(Wire):
    reservation_id: str
    starts_at: float
    ends_at: float
    status: str


class Position(Wire):
    """Where a machine stands on the floor map: metres from the top left corner (plaza.floormap)."""

    x: float
    y: float


class BoardEntry(Wire):
    """``board/{d}`` (retained): the merged view of one machine. Clients keep the highest
    ``version`` they have seen and ignore anything lower."""

    device_id: str
    name: str
    kind: str
    zone: str
    status: BoardStatus
    online: bool
    state: MachineState
    #: absent until the machine first connects (its connection epoch; ``-1`` means never)
    epoch: int | None = None
    version: int
    session: Session | None = None
    current_slot: Slot | None = None
    next_slot: Slot | None = None
    #: when ``status`` last changed; absent until it first has (``0`` means never)
    since: float | None = None
    #: its place on the floor map; absent while it has none
    pos: Position | None = None
    ts: float
    #: ``"staff"``: a machine without an agent (a console, a cabinet); staff set its state and
    #: it is never offline (``online`` is then always true). Absent for machines with an agent.
    managed: Literal["staff"] | None = None
    #: the machine is locked: ``reservation`` (kept free for the next slot, no walk-in may
    #: start) or ``maintenance``; absent when it is not
    locked: Literal["reservation", "maintenance"] | None = None

    @field_validator("epoch", mode="before")
    @classmethod
    def _never_connected_has_no_epoch(cls, value: object) -> object:
        return None if isinstance(value, int) and value < 0 else value

    @field_validator("since", mode="before")
    @classmethod
    def _never_changed_has_no_since(cls, value: object) -> object:
        return None if isinstance(value, int | float) and value <= 0 else value


DeviceEventType = Literal[
    "device_online",
    "device_offline",
    "device_in_use",
    "device_available",
    "device_fault",
    "device_maintenance",
    "device_held",
]


class DeviceStatusEvent(Wire):
    """``events/devices``: one per status change of a machine (the seed's DeviceStatusEvent)."""

    type: DeviceEventType
    device_id: str
    status: BoardStatus
    timestamp: float
    metadata: dict[str, str | int | float | bool | None] = Field(default_factory=dict)


class AlertSeverity(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class AdminAlert(Wire):
    """``admin/alerts``: something staff should look at."""

    id: str
    type: str
    severity: AlertSeverity
    device_id: str | None = None
    #: in Korean (the venue's language); ``message_en`` in English
    message: str
    timestamp: float
    message_en: str | None = None
    #: ``help_*`` alerts: the call (GET /admin/help lists it)
    help_id: str | None = None


#: a point in time on the wire: finite, from 1970 to 2096 (anything else is refused, not crashed on)
UnixTime = Annotated[float, Field(ge=0, le=4e9, allow_inf_nan=False)]


# -- reservations ----------------------------------------------------------------------------
RequestId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
ReservationOp = Literal[
    "reserve", "cancel", "approve", "reject", "check_in", "complete", "extend", "move"
]
#: ops on the venue's own request topic (``venue/requests/{user}``): they name no one machine
VenueOp = Literal[
    "reserve_party",
    "cancel_party",
    "join_waitlist",
    "leave_waitlist",
    "decline_offer",
    "move_waitlist_entry",
    "lift_suspension",
    "call_staff",
]
#: call_staff: what the player needs help with (docs/protocol.md, "Calling staff")
HelpTopic = Literal["hardware", "software", "payment", "other"]
#: call_staff: the longest message a player may add
HELP_MESSAGE_MAX = 280
#: a reservation, party, waitlist entry or offer id as the bridge makes them
ItemId = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z0-9]+$")]
TopicLevel = Annotated[str, Field(min_length=1, max_length=48, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
#: a machine kind or zone (as the devices' configuration names them)
Category = Annotated[str, Field(min_length=1, max_length=40)]
#: the most machines one party request may name (the bookable count is PLAZA_MAX_PARTY_SEATS)
MAX_PARTY_DEVICES = 32


class OnBehalfOf(Wire):
    """Set by the api only: the person it acts for (the bridge ignores it from anyone else)."""

    user: str = Field(min_length=1, max_length=48)
    role: Literal["player", "admin"]
    #: an admin who made the change for ``user`` (a booking made for a player): the player
    #: is then notified, as of any change someone else made
    by: str | None = Field(default=None, min_length=1, max_length=48)


class ReservationRequest(Wire):
    """``devices/{d}/requests/{user}``: one reservation command. ``request_id`` is the
    idempotency key: the same id from the same user is applied once and answered again."""

    request_id: RequestId
    op: ReservationOp
    reservation_id: str | None = Field(default=None, max_length=32)
    starts_at: UnixTime | None = None
    ends_at: UnixTime | None = None
    code: str | None = Field(default=None, max_length=16)
    on_behalf_of: OnBehalfOf | None = None
    #: reserve only: your own reservation this one replaces (released in the same decision)
    replaces: str | None = Field(default=None, max_length=32)
    #: reserve only: take this waitlist offer (the held reservation's id)
    offer_id: str | None = Field(default=None, max_length=32)
    #: move only: the machine to move to (absent: the same machine)
    device_id: TopicLevel | None = None


class VenueRequest(Wire):
    """``venue/requests/{user}``: a command that names no one machine (a party, the
    waitlist, a suspension). ``request_id`` is the idempotency key, as for a reservation."""

    request_id: RequestId
    op: VenueOp
    on_behalf_of: OnBehalfOf | None = None
    #: reserve_party: the slot, and how many seats (or exactly which ``devices``)
    starts_at: UnixTime | None = None
    ends_at: UnixTime | None = None
    seats: Annotated[int, Field(ge=1, le=MAX_PARTY_DEVICES)] | None = None
    devices: list[TopicLevel] | None = Field(default=None, max_length=MAX_PARTY_DEVICES)
    #: reserve_party and join_waitlist: the kind of machine, and optionally its zone
    kind: Category | None = None
    zone: Category | None = None
    #: join_waitlist: how long the player wants to play
    minutes: Annotated[int, Field(ge=1, le=24 * 60)] | None = None
    #: cancel_party
    party_id: ItemId | None = None
    #: leave_waitlist and move_waitlist_entry
    entry_id: ItemId | None = None
    #: move_waitlist_entry: the entry's new place in its line (1 is the head)
    position: Annotated[int, Field(ge=1, le=100_000)] | None = None
    #: decline_offer
    offer_id: ItemId | None = None
    #: lift_suspension (staff): whose
    user: TopicLevel | None = None
    #: call_staff: the machine the player is at, what about, and an optional message
    device_id: TopicLevel | None = None
    topic: HelpTopic | None = None
    message: str | None = Field(default=None, max_length=HELP_MESSAGE_MAX)


class ReservationPublic(Wire):
    id: str
    device_id: str
    starts_at: float
    ends_at: float
    status: str
    #: the check-in code and the owner: only in replies and notifications to that player/admin
    code: str | None = None
    user: str | None = None
    #: the party this seat belongs to (a party booking)
    party_id: str | None = None
    #: a held machine (a waitlist offer): take it before this moment
    hold_until: float | None = None


class WaitlistOffer(Wire):
    """A machine held for the head of a waitlist line: take it with a ``reserve`` carrying
    ``offer_id`` (on ``devices/{device_id}/requests/{user}``) before ``hold_until``."""

    offer_id: str
    device_id: str
    starts_at: float
    ends_at: float
    hold_until: float


class WaitlistEntryPublic(Wire):
    """One player's place in a waitlist line. ``position`` counts from 1 (the head) among the
    live entries of the line's kind; ``expected_at`` is an estimate from the current
    reservations' ends."""

    id: str
    kind: str
    zone: str | None = None
    minutes: int
    status: str
    position: int | None = None
    expected_at: float | None = None
    offer: WaitlistOffer | None = None
    user: str | None = None


class WaitlistState(Wire):
    """``users/{user}/waitlist`` (retained): the player's live waitlist entries, republished
    whenever their line changes."""

    entries: list[WaitlistEntryPublic]
    ts: float


class WaitlistEvent(Wire):
    """``events/waitlist``: a line changed (no one's identity): staff views refetch it."""

    type: Literal["waitlist_changed"] = "waitlist_changed"
    kind: str
    waiting: int
    timestamp: float


class ZoneOutline(Wire):
    """A zone of the floor map: ``id`` is the ``zone`` machines name; its outline in metres."""

    id: str
    name: str
    outline: list[tuple[float, float]]


class FloorLimits(Wire):
    """What ``PUT /floor`` accepts (plaza.floormap): editors keep to it before asking."""

    zones: int
    min_points: int
    max_points: int


class FloorSnapshot(Wire):
    """The floor map's zones as ``GET /floor`` answers them."""

    size: float
    zones: list[ZoneOutline]
    limits: FloorLimits


class FloorEvent(Wire):
    """``events/floor``: staff changed the zones (``PUT /floor``); the api publishes the whole
    floor after it commits, so open screens redraw it without asking. Not retained: a screen
    loads ``GET /floor`` when it starts and on every reconnect."""

    type: Literal["floor_changed"] = "floor_changed"
    floor: FloorSnapshot
    timestamp: float


class ConflictSlot(Wire):
    reservation_id: str
    starts_at: float
    ends_at: float
    status: str


class ErrorBody(Wire):
    code: str
    message: str
    conflict: ConflictSlot | None = None
    #: a party booking: the machine (seat) that could not be booked
    seat: str | None = None
    #: ``suspended``: self-service booking is suspended until this moment
    until: float | None = None
    #: ``too_many_help_calls``: seconds until another call is accepted
    retry_after: float | None = None


HelpStatus = Literal["open", "acknowledged", "resolved"]


class HelpCall(Wire):
    """A player's call for staff (``call_staff``), as the player's reply and staff's list
    show it."""

    id: str
    user: str
    device_id: str
    topic: HelpTopic
    message: str | None = None
    status: HelpStatus
    created_at: float
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    resolved_at: float | None = None
    resolved_by: str | None = None


class Reply(Wire):
    """``users/{user}/replies`` (or the MQTT 5 response topic): the outcome of a request."""

    request_id: str | None = None
    ok: bool
    reservation: ReservationPublic | None = None
    error: ErrorBody | None = None
    #: a party: every seat, each with its own check-in code
    reservations: list[ReservationPublic] | None = None
    party_id: str | None = None
    #: a waitlist command: the entry, with its position
    entry: WaitlistEntryPublic | None = None
    #: call_staff, help_ack, help_resolve: the call as it now is
    help: HelpCall | None = None


ReservationEventType = Literal[
    "reservation_created",
    "reservation_approved",
    "reservation_rejected",
    "reservation_cancelled",
    "reservation_checked_in",
    "reservation_completed",
    "reservation_no_show",
    "reservation_held",
    "reservation_lapsed",
    "reservation_extended",
    "reservation_moved",
]


class ReservationEvent(Wire):
    """``events/reservations``: broadcast to every screen, so it names no player."""

    type: ReservationEventType
    reservation_id: str
    device_id: str
    timestamp: float
    data: dict[str, str | float | None] = Field(default_factory=dict)


NotificationType = Literal[
    "reservation_approved",
    "reservation_rejected",
    "reservation_cancelled",
    "reservation_reminder",
    "no_show_released",
    "device_offline_during_reservation",
    "system_notice",
    "reservation_created",
    "reservation_checked_in",
    "reservation_completed",
    "digest",
    "reservation_extended",
    "reservation_moved",
    "waitlist_offer",
    "waitlist_offer_lapsed",
    "waitlist_removed",
    "booking_suspended",
    "suspension_lifted",
    "help_acknowledged",
    "help_resolved",
    "session_ending",
]


class ExtendOffer(Wire):
    """``session_ending``: the slot may be extended (the ``extend`` op) up to ``until``."""

    reservation_id: str
    until: float


class RebookOffer(Wire):
    """An equivalent free machine for the slot of a reservation whose machine went down: the
    client books it with an ordinary ``reserve`` request (and may cancel ``replaces``)."""

    device_id: str
    name: str
    starts_at: float
    ends_at: float
    replaces: str


class DigestItem(Wire):
    seq: int
    type: NotificationType
    title: str
    message: str
    ts: float


class NotificationEvent(Wire):
    """``users/{user}/notifications``: something one player should know. ``seq`` grows by one
    per player; a client that has seen seq N asks ``GET /me/notifications?after=N`` for what
    it missed. Low-priority notifications arrive bundled in a ``digest`` (``items``)."""

    id: str
    type: NotificationType
    user_id: str
    title: str
    message: str
    priority: AlertSeverity
    ts: float
    seq: int | None = None
    reservation: ReservationPublic | None = None
    offer: RebookOffer | None = None
    items: list[DigestItem] | None = None
    #: ``waitlist_offer``: the held machine
    waitlist_offer: WaitlistOffer | None = None
    #: ``booking_suspended``: until when
    until: float | None = None
    #: ``help_acknowledged``, ``help_resolved``: the call
    help: HelpCall | None = None
    #: ``session_ending``: an extension on offer (the machine is free after the slot), or,
    #: when it is not, when the machine's next booking starts
    extend: ExtendOffer | None = None
    next_starts_at: float | None = None


class NotificationAck(Wire):
    """``users/{user}/acks`` (the player): read receipts, up to a seq or for listed seqs."""

    up_to: Annotated[int, Field(ge=0, le=2**53)] | None = None
    seqs: list[Annotated[int, Field(ge=0, le=2**53)]] | None = Field(default=None, max_length=500)


# -- api -> bridge: admin commands -------------------------------------------------------------
class NoticeBody(Wire):
    """A system notice as staff write it: Korean first (the venue's language), English optional."""

    title: str = Field(min_length=1, max_length=120)
    message: str = Field(min_length=1, max_length=2000)
    priority: AlertSeverity = AlertSeverity.MEDIUM
    title_en: str | None = Field(default=None, max_length=120)
    message_en: str | None = Field(default=None, max_length=2000)


class Notice(Wire):
    """``notices`` (retained): the current system notice."""

    id: str
    title: str
    message: str
    priority: AlertSeverity
    ts: float
    title_en: str | None = None
    message_en: str | None = None


AdminOp = Literal[
    "sync_device", "remove_device", "notice", "help_ack", "help_resolve", "device_state"
]
#: what staff may set a machine without an agent to (``device_state``)
ManagedState = Literal["idle", "in_use", "fault"]


class AdminCommand(Wire):
    """``admin/requests`` (the api only): ``sync_device`` re-reads a machine's configuration
    from SQL and republishes its board entry; ``remove_device`` forgets it and clears its
    retained topics; ``notice`` publishes a system notice and notifies every player."""

    request_id: RequestId
    op: AdminOp
    device_id: str | None = Field(default=None, max_length=48)
    notice: NoticeBody | None = None
    #: for ``notice``: its id (a retry with the same id publishes nothing twice) and author
    notice_id: str | None = Field(default=None, pattern=r"^[a-f0-9]{32}$")
    author: str | None = Field(default=None, max_length=48)
    #: help_ack and help_resolve: the call
    help_id: str | None = Field(default=None, pattern=r"^[a-f0-9]{1,32}$")
    #: device_state (a machine without an agent): its new state, and a fault's description
    state: ManagedState | None = None
    fault: str | None = Field(default=None, max_length=200)


class ServiceStatus(Wire):
    """``services/{service}/status`` (retained): a service's own presence, like a machine's.
    The bridge publishes ``online: true`` with ``ts`` when it connects and every
    ``PLAZA_BRIDGE_HEARTBEAT`` after; its will (and a clean stop) is ``online: false``.
    Readers call a status older than ``PLAZA_BRIDGE_STALE_AFTER`` stale."""

    online: bool
    #: when this status was published (absent in a will, which is set at connect time)
    ts: UnixTime | None = None
    #: which process (the bridge's ``PLAZA_BRIDGE_ID``)
    id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
