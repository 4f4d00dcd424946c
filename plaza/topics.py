"""Every MQTT topic of the venue is built and parsed here, and nowhere else.

Theory of operation
-------------------
A topic is a small frozen value. ``Topics(root)`` builds the concrete strings for one venue
(the root is configurable, default ``plaza``) and ``Topics.parse`` turns an incoming topic back
into a typed value, or raises :class:`TopicError`. Identifiers that appear as topic levels
(device ids, user names) are validated so that no caller can smuggle ``+``, ``#`` or ``/`` into
a topic, which would widen an ACL or a subscription.

    plaza/devices/{device}/presence          device birth / broker will (retained)
    plaza/devices/{device}/state             device state (retained)
    plaza/devices/{device}/cmd               bridge -> device commands
    plaza/devices/{device}/requests/{user}   reservation commands (user = MQTT username)
    plaza/users/{user}/replies               bridge -> user replies (MQTT 3.1.1 clients)
    plaza/users/{user}/notifications         bridge -> user notifications
    plaza/users/{user}/acks                  user -> bridge read receipts
    plaza/users/{user}/waitlist              bridge -> user: their waitlist entries (retained)
    plaza/venue/requests/{user}              venue-level commands: parties, the waitlist
                                             (user = MQTT username)
    plaza/board/{device}                     merged board entry (retained, versioned)
    plaza/events/reservations                ReservationEvent
    plaza/events/devices                     DeviceStatusEvent
    plaza/events/waitlist                    WaitlistEvent (a line changed; no identities)
    plaza/events/floor                       FloorEvent (api -> screens: the zones changed)
    plaza/admin/alerts                       operator alerts
    plaza/admin/requests                     api -> bridge admin commands (machines, notices)
    plaza/notices                            current system notice (retained)
    plaza/services/{service}/status          a service's presence: birth, heartbeat, will
                                             (retained; the bridge is ``bridge``)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,47}$")

#: Mosquitto's own statistics, outside any venue root (plaza.broker_stats reads them)
BROKER_SYS_PREFIX = "$SYS/broker/"
BROKER_SYS_TREE = f"{BROKER_SYS_PREFIX}#"


class TopicError(ValueError):
    """A topic or a topic level is not part of the contract."""


def valid_id(value: str, what: str = "identifier") -> str:
    """Return ``value`` if it is usable as one topic level, else raise :class:`TopicError`."""
    if not _ID.fullmatch(value):
        raise TopicError(
            f"invalid {what} {value!r}: use 1-48 of a-z 0-9 _ . - starting with a letter or digit"
        )
    return value


#: the service name of the bridge in ``services/{service}/status``
BRIDGE_SERVICE = "bridge"


class DeviceChannel(StrEnum):
    PRESENCE = "presence"
    STATE = "state"
    CMD = "cmd"


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    """``{root}/devices/{device}/{channel}``."""

    device: str
    channel: DeviceChannel


@dataclass(frozen=True, slots=True)
class RequestTopic:
    """``{root}/devices/{device}/requests/{user}``."""

    device: str
    user: str


@dataclass(frozen=True, slots=True)
class VenueRequestTopic:
    """``{root}/venue/requests/{user}``: commands that name no one machine."""

    user: str


@dataclass(frozen=True, slots=True)
class BoardTopic:
    """``{root}/board/{device}``."""

    device: str


@dataclass(frozen=True, slots=True)
class AdminRequestTopic:
    """``{root}/admin/requests``: the api's admin commands to the bridge."""


@dataclass(frozen=True, slots=True)
class UserTopic:
    """``{root}/users/{user}/{channel}``: ``replies``, ``notifications`` or ``acks``."""

    user: str
    channel: str


@dataclass(frozen=True, slots=True)
class ServiceStatusTopic:
    """``{root}/services/{service}/status``: a service's retained presence."""

    service: str


@dataclass(frozen=True, slots=True)
class BrokerSysTopic:
    """``$SYS/broker/{path}``: one of Mosquitto's own figures (outside the venue's root)."""

    path: str


ParsedTopic = (
    DeviceTopic
    | RequestTopic
    | VenueRequestTopic
    | BoardTopic
    | UserTopic
    | AdminRequestTopic
    | ServiceStatusTopic
    | BrokerSysTopic
)

#: the user channels (``users/{user}/{channel}``)
USER_CHANNELS = ("replies", "notifications", "acks", "waitlist")


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic builders and the parser for one venue root."""

    root: str = "plaza"

    def __post_init__(self) -> None:
        valid_id(self.root, "topic root")

    # -- devices ----------------------------------------------------------------------------
    def presence(self, device: str) -> str:
        return f"{self.root}/devices/{valid_id(device, 'device id')}/presence"

    def state(self, device: str) -> str:
        return f"{self.root}/devices/{valid_id(device, 'device id')}/state"

    def cmd(self, device: str) -> str:
        return f"{self.root}/devices/{valid_id(device, 'device id')}/cmd"

    def request(self, device: str, user: str) -> str:
        return (
            f"{self.root}/devices/{valid_id(device, 'device id')}"
            f"/requests/{valid_id(user, 'user name')}"
        )

    def venue_request(self, user: str) -> str:
        """``{root}/venue/requests/{user}``: a venue-level command (a party, the waitlist)."""
        return f"{self.root}/venue/requests/{valid_id(user, 'user name')}"

    # -- users ------------------------------------------------------------------------------
    def replies(self, user: str) -> str:
        return f"{self.root}/users/{valid_id(user, 'user name')}/replies"

    def acks(self, user: str) -> str:
        return f"{self.root}/users/{valid_id(user, 'user name')}/acks"

    def inbox(self, user: str, instance: str) -> str:
        """``{root}/users/{user}/replies/{instance}``: an MQTT 5 response topic of one process
        (or browser tab) of ``user``; it lies inside the user's own tree."""
        return f"{self.replies(user)}/{valid_id(instance, 'inbox id')}"

    def notifications(self, user: str) -> str:
        return f"{self.root}/users/{valid_id(user, 'user name')}/notifications"

    def waitlist(self, user: str) -> str:
        """``{root}/users/{user}/waitlist`` (retained): the player's waitlist entries."""
        return f"{self.root}/users/{valid_id(user, 'user name')}/waitlist"

    # -- broadcast --------------------------------------------------------------------------
    def board(self, device: str) -> str:
        return f"{self.root}/board/{valid_id(device, 'device id')}"

    @property
    def reservation_events(self) -> str:
        return f"{self.root}/events/reservations"

    @property
    def device_events(self) -> str:
        return f"{self.root}/events/devices"

    @property
    def waitlist_events(self) -> str:
        return f"{self.root}/events/waitlist"

    @property
    def floor_events(self) -> str:
        """``{root}/events/floor``: the floor map's zones changed (the api writes it)."""
        return f"{self.root}/events/floor"

    @property
    def admin_alerts(self) -> str:
        return f"{self.root}/admin/alerts"

    @property
    def admin_requests(self) -> str:
        return f"{self.root}/admin/requests"

    @property
    def notices(self) -> str:
        return f"{self.root}/notices"

    def board_sync_marker(self, client_id: str) -> str:
        """``{root}/services/{client_id}/board-sync``: the bridge's own end-of-read marker
        when it reads the retained board back after connecting (bridge.presence.board_sync);
        only that connection subscribes to it."""
        return f"{self.root}/services/{valid_id(client_id, 'client id')}/board-sync"

    def service_status(self, service: str) -> str:
        """``{root}/services/{service}/status`` (retained): birth and heartbeats say online,
        the will (or a clean stop) offline."""
        return f"{self.root}/services/{valid_id(service, 'service name')}/status"

    @property
    def bench_echo(self) -> str:
        """Used only by `plaza bench` as the raw broker round-trip reference."""
        return f"{self.root}/bench/echo"

    # -- subscription filters (only the bridge, api and observers use wildcards) ------------
    @property
    def all_presence(self) -> str:
        return f"{self.root}/devices/+/presence"

    @property
    def all_state(self) -> str:
        return f"{self.root}/devices/+/state"

    @property
    def all_requests(self) -> str:
        return f"{self.root}/devices/+/requests/+"

    @property
    def all_venue_requests(self) -> str:
        return f"{self.root}/venue/requests/+"

    @property
    def all_acks(self) -> str:
        return f"{self.root}/users/+/acks"

    @property
    def all_board(self) -> str:
        return f"{self.root}/board/+"

    @property
    def all_service_status(self) -> str:
        return f"{self.root}/services/+/status"

    @property
    def everything(self) -> str:
        return f"{self.root}/#"

    @property
    def board_tree(self) -> str:
        return f"{self.root}/board/#"

    @property
    def events_tree(self) -> str:
        return f"{self.root}/events/#"

    def user_tree(self, user: str) -> str:
        """``{root}/users/{user}/#``: everything addressed to one user."""
        return f"{self.root}/users/{valid_id(user, 'user name')}/#"

    def requests_by(self, user: str) -> str:
        """``{root}/devices/+/requests/{user}``: the requests one user may send."""
        return f"{self.root}/devices/+/requests/{valid_id(user, 'user name')}"

    @staticmethod
    def shared(group: str, topic_filter: str) -> str:
        """An MQTT 5 shared subscription: each message goes to one member of ``group``."""
        group = group if group == "+" else valid_id(group, "share group")
        return f"$share/{group}/{topic_filter}"

    # -- parsing ----------------------------------------------------------------------------
    @staticmethod
    def sender_of(topic: bytes) -> bytes | None:
        """Who sent a message on a request or read-receipt topic, read from the raw topic
        without decoding it: the user level of ``{root}/devices/{d}/requests/{user}``, of
        ``{root}/venue/requests/{user}`` and of ``{root}/users/{user}/acks`` (the ACL lets each
        account publish only under its own name). None for anything else, e.g.
        ``{root}/admin/requests`` (the api's).

        The bridge's flood budget charges a message to its sender before anything else is
        spent on it, so this is kept to a split and two comparisons (no validation: a topic
        here has passed the broker's ACL)."""
        levels = topic.split(b"/")
        if len(levels) == 5 and levels[3] == b"requests":
            return levels[4]
        if len(levels) == 4:
            if levels[1] == b"users" and levels[3] == b"acks":
                return levels[2]
            if levels[1] == b"venue" and levels[2] == b"requests":
                return levels[3]
        return None

    def parse(self, topic: str) -> ParsedTopic:
        """Parse a concrete topic of this venue; raise :class:`TopicError` for anything else."""
        if topic.startswith(BROKER_SYS_PREFIX) and len(topic) > len(BROKER_SYS_PREFIX):
            return BrokerSysTopic(topic.removeprefix(BROKER_SYS_PREFIX))
        levels = topic.split("/")
        if len(levels) < 3 or levels[0] != self.root:
            raise TopicError(f"unknown topic {topic!r}")
        kind, rest = levels[1], levels[2:]
        try:
            if kind == "devices" and len(rest) == 2:
                return DeviceTopic(valid_id(rest[0], "device id"), DeviceChannel(rest[1]))
            if kind == "devices" and len(rest) == 3 and rest[1] == "requests":
                return RequestTopic(valid_id(rest[0], "device id"), valid_id(rest[2], "user name"))
            if kind == "admin" and rest == ["requests"]:
                return AdminRequestTopic()
            if kind == "venue" and len(rest) == 2 and rest[0] == "requests":
                return VenueRequestTopic(valid_id(rest[1], "user name"))
            if kind == "board" and len(rest) == 1:
                return BoardTopic(valid_id(rest[0], "device id"))
            if kind == "services" and len(rest) == 2 and rest[1] == "status":
                return ServiceStatusTopic(valid_id(rest[0], "service name"))
            if kind == "users" and len(rest) == 2 and rest[1] in USER_CHANNELS:
                return UserTopic(valid_id(rest[0], "user name"), rest[1])
        except ValueError as exc:
            raise TopicError(f"unknown topic {topic!r}: {exc}") from exc
        raise TopicError(f"unknown topic {topic!r}")
