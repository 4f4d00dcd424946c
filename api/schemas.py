"""REST request and response bodies. REST speaks ISO 8601 times; MQTT payloads use Unix
seconds (plaza.messages). One family per entity, as in full-stack-fastapi-template."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic import Strict as PydanticStrict

from plaza import floormap
from plaza.messages import MAX_PARTY_DEVICES, AlertSeverity
from plaza.settings import SERVICE_ID_PREFIX

USERNAME = r"^[a-z0-9][a-z0-9_.-]{2,47}$"
DEVICE_ID = r"^[a-z0-9][a-z0-9_.-]{0,47}$"
Locale = Literal["ko", "en"]
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2096, 1, 1, tzinfo=UTC)  # plaza.messages.UnixTime's bound
#: browser sessions' client ids start with this (services' with SERVICE_ID_PREFIX); a
#: machine's client id is its id, so machine ids may start with neither
BROWSER_ID_PREFIX = "web-"


class Strict(BaseModel):
    """A request body: unknown fields refused, and no coercion (``"yes"`` is not ``true``,
    ``"3"`` not ``3``), as strict as an MQTT payload. JSON has no time or enum type, so
    those fields say ``strict=False`` and take their ISO 8601 / string forms; integers are
    JSON Schema's (see :data:`Seq`)."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _a_json_number(value: object) -> object:
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON number, not a string or a boolean")
    return value


#: A notification seq, an integer as JSON Schema (and so the OpenAPI document) defines one:
#: a number without a fraction, so ``3.0`` is 3; a string or a boolean is refused, as is
#: ``3.5``. (The bounds come before the validator, so the schema shows them.)
Seq = Annotated[
    int,
    Field(ge=0, le=2**53),
    PydanticStrict(strict=False),
    BeforeValidator(_a_json_number),
]


# -- accounts --------------------------------------------------------------------------------
class RegisterIn(Strict):
    username: str = Field(pattern=USERNAME, description="3-48 of a-z 0-9 _ . -")
    password: str = Field(min_length=8, max_length=128)
    locale: Locale = "ko"


class LoginIn(Strict):
    username: str = Field(min_length=1, max_length=48)
    password: str = Field(min_length=1, max_length=128)


class UserPublic(BaseModel):
    username: str
    role: Literal["player", "admin"]
    locale: Locale
    created_at: datetime
    #: the no-show policy (``GET /me`` and the users list): strikes that count now, and
    #: until when self-service booking is suspended (absent: it is not)
    strikes: int | None = None
    suspended_until: datetime | None = None


class MeUpdate(Strict):
    locale: Locale


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int
    expires_at: float
    user: UserPublic


class MqttSessionIn(Strict):
    session: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]{4,16}$",
        description="this browser session's key (from an earlier answer): re-key its account",
    )


class LogoutIn(Strict):
    session: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]{4,16}$",
        description="this browser's broker session key: its account is deleted too",
    )


class MqttCredentials(BaseModel):
    """Broker credentials of one browser session for MQTT over WebSocket. ``username`` is the
    session's own broker account; topics use ``user``. At ``expires_at`` the account is deleted
    and its connection dropped: ask again (with ``session``) and reconnect with ``client_id``
    and a persistent session, which the broker resumes."""

    username: str = Field(description="the broker login: {user}~{session}")
    password: str
    user: str = Field(description="the account name, as used in topics")
    session: str
    ws_url: str
    client_id: str = Field(description="a client id for this session (persistent sessions)")
    expires_at: float
    topic_root: str


# -- devices ---------------------------------------------------------------------------------
class DeviceCreate(Strict):
    id: str = Field(pattern=DEVICE_ID, description="1-48 of a-z 0-9 _ . -; also its MQTT username")
    name: str = Field(min_length=1, max_length=80)
    kind: str = Field(default="pc", min_length=1, max_length=40)
    zone: str = Field(default="main", min_length=1, max_length=40)
    auto_approve: bool = False
    maintenance: bool = False
    agent: bool = Field(
        default=True,
        description="false: no agent (a console, a cabinet); staff set its state and "
        "check its players in at the desk",
    )

    @field_validator("id")
    @classmethod
    def _not_a_reserved_client_id(cls, value: str) -> str:
        if value.startswith((SERVICE_ID_PREFIX, BROWSER_ID_PREFIX)):
            raise ValueError(
                f"{SERVICE_ID_PREFIX!r} and {BROWSER_ID_PREFIX!r} are reserved client ids"
            )
        return value


class DeviceUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=80)
    kind: str | None = Field(default=None, min_length=1, max_length=40)
    zone: str | None = Field(default=None, min_length=1, max_length=40)
    auto_approve: bool | None = None
    maintenance: bool | None = None
    agent: bool | None = None
    #: its place on the floor map, metres (both or neither; plaza.floormap checks the bounds)
    x: float | None = None
    y: float | None = None

    @model_validator(mode="after")
    def _both_coordinates_or_neither(self) -> DeviceUpdate:
        if (self.x is None) != (self.y is None):
            raise ValueError("x and y go together")
        return self


class DevicePublic(BaseModel):
    id: str
    name: str
    kind: str
    zone: str
    auto_approve: bool
    maintenance: bool
    agent: bool
    online: bool
    status: str
    since: datetime
    last_seen: datetime | None
    x: float | None = None
    y: float | None = None


class DeviceSecret(BaseModel):
    """A machine's broker credentials: shown once, at provisioning or rotation."""

    username: str
    password: str
    mqtt_host: str
    mqtt_port: int


class ProvisionedDevice(BaseModel):
    device: DevicePublic
    credentials: DeviceSecret


# -- reservations ----------------------------------------------------------------------------
class ReservationCreate(Strict):
    device_id: str = Field(pattern=DEVICE_ID)
    starts_at: datetime = Field(strict=False, description="ISO 8601; without an offset it is UTC")
    ends_at: datetime = Field(strict=False)
    user: str | None = Field(
        default=None, pattern=USERNAME, description="admins only: book for this player"
    )
    replaces: str | None = Field(
        default=None,
        max_length=32,
        description="your own reservation this one replaces (a rebook offer): released at once",
    )

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _plausible(cls, value: datetime) -> datetime:
        return plausible(value)


def plausible(value: datetime) -> datetime:
    """An ISO 8601 time as UTC (an offset-less one is UTC), between 1970 and 2096."""
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    if not EARLIEST <= value <= LATEST:
        raise ValueError("must lie between 1970 and 2096")
    return value


When = Annotated[datetime, Field(strict=False), AfterValidator(plausible)]
Kind = Annotated[str, Field(min_length=1, max_length=40)]


class ReservationPublic(BaseModel):
    id: str
    device_id: str
    user: str
    starts_at: datetime
    ends_at: datetime
    status: str
    code: str | None = Field(default=None, description="check-in code (owner and admins)")
    created_at: datetime | None = None
    updated_at: datetime | None = None
    party_id: str | None = Field(default=None, description="the party this seat belongs to")
    hold_until: datetime | None = Field(
        default=None, description="a held machine (a waitlist offer): take it before this"
    )


class ExtendIn(Strict):
    ends_at: When = Field(description="the new end, after the current one")


class MoveIn(Strict):
    """Any of: another machine, another start (the length stays unless ``ends_at`` is given)."""

    device_id: str | None = Field(default=None, pattern=DEVICE_ID)
    starts_at: When | None = None
    ends_at: When | None = None


class PartyCreate(Strict):
    """``seats`` machines of ``kind`` (and ``zone``) picked for you, or exactly ``devices``."""

    starts_at: When
    ends_at: When
    seats: int | None = Field(default=None, ge=1, le=MAX_PARTY_DEVICES)
    kind: Kind | None = None
    zone: Kind | None = None
    devices: list[Annotated[str, Field(pattern=DEVICE_ID)]] | None = Field(
        default=None, min_length=1, max_length=MAX_PARTY_DEVICES
    )
    user: str | None = Field(
        default=None, pattern=USERNAME, description="admins only: book for this player"
    )


class PartyPublic(BaseModel):
    party_id: str
    reservations: list[ReservationPublic]


class WaitlistJoin(Strict):
    kind: Kind
    zone: Kind | None = None
    minutes: int = Field(ge=1, le=24 * 60, description="how long you want to play")
    user: str | None = Field(
        default=None, pattern=USERNAME, description="admins only: put this player in line"
    )


class OfferOut(BaseModel):
    offer_id: str
    device_id: str
    starts_at: datetime
    ends_at: datetime
    hold_until: datetime


class WaitlistEntryOut(BaseModel):
    id: str
    kind: str
    zone: str | None = None
    minutes: int
    status: str
    position: int | None = Field(default=None, description="1: the head of the line")
    expected_at: datetime | None = Field(default=None, description="an estimate")
    offer: OfferOut | None = None
    user: str | None = Field(default=None, description="whose (staff see every entry)")


class WaitlistMoveIn(Strict):
    position: int = Field(ge=1, le=100_000, description="the entry's new place (1: the head)")


class ReservationPage(BaseModel):
    items: list[ReservationPublic]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: last")


# -- notices and alerts ----------------------------------------------------------------------
class NoticeIn(Strict):
    title: str = Field(min_length=1, max_length=120)
    message: str = Field(min_length=1, max_length=2000)
    priority: AlertSeverity = Field(default=AlertSeverity.MEDIUM, strict=False)
    title_en: str | None = Field(default=None, min_length=1, max_length=120)
    message_en: str | None = Field(default=None, min_length=1, max_length=2000)


class NoticePublic(BaseModel):
    id: str
    title: str
    message: str
    title_en: str | None
    message_en: str | None
    priority: str
    created_by: str
    created_at: datetime


class AlertPublic(BaseModel):
    id: str
    type: str
    severity: str
    device_id: str | None
    message: str
    message_en: str | None = None
    created_at: datetime
    acknowledged_at: datetime | None


class AlertPage(BaseModel):
    items: list[AlertPublic]
    total: int


# -- the floor map and utilization -------------------------------------------------------------
class FloorZoneIn(Strict):
    id: str = Field(min_length=1, max_length=40, description="the zone machines name")
    name: str = Field(min_length=1, max_length=80)
    #: its outline, ``[x, y]`` points in metres (plaza.floormap checks points and bounds)
    outline: list[list[float]] = Field(max_length=floormap.MAX_OUTLINE_POINTS)


class FloorIn(Strict):
    zones: list[FloorZoneIn] = Field(max_length=floormap.MAX_ZONES)


class FloorZonePublic(BaseModel):
    id: str
    name: str
    outline: list[tuple[float, float]]


class FloorLimitsPublic(BaseModel):
    """What ``PUT /floor`` accepts, for editors to keep to before they ask."""

    zones: int = Field(description="zones on a floor, at most")
    min_points: int = Field(description="corners of an outline, at least")
    max_points: int = Field(description="corners of an outline, at most")


class FloorPublic(BaseModel):
    """The floor map's zones; machines carry their own place (``x``, ``y`` here in
    ``GET /devices``, live as ``pos`` in their board entry)."""

    size: float = Field(description="the floor is size x size metres")
    zones: list[FloorZonePublic]
    limits: FloorLimitsPublic = FloorLimitsPublic(
        zones=floormap.MAX_ZONES,
        min_points=floormap.MIN_OUTLINE_POINTS,
        max_points=floormap.MAX_OUTLINE_POINTS,
    )


class ZoneHourPublic(BaseModel):
    zone: str
    start: datetime
    machines: int
    occupancy: float = Field(description="in-use machine time over capacity, 0..1")
    in_use_minutes: float
    booked_minutes: float


class HeatCell(BaseModel):
    weekday: int = Field(description="0 Monday .. 6 Sunday, venue time")
    hour: int = Field(description="0..23, venue time")
    occupancy: float


class UtilizationPublic(BaseModel):
    start: datetime
    end: datetime
    zone: str | None
    hours: list[ZoneHourPublic]
    heatmap: list[HeatCell]
    sessions: int
    average_session_minutes: float | None
    short_sessions: int = Field(description="sessions under 10 minutes")
    reservations_decided: int
    no_shows: int
    no_show_rate: float | None
