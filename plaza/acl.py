"""Broker roles of the venue, as literal ACL entries (pure; no I/O).

Mosquitto 2.0.11's dynamic-security plugin does not expand ``%u``/``%c``, so every machine and
every player gets a role of its own whose topics are literal. The default ACL denies
everything but unsubscribing; these roles are the only way in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from plaza.topics import BROKER_SYS_TREE, Topics

AclType = Literal[
    "publishClientSend",
    "publishClientReceive",
    "subscribeLiteral",
    "subscribePattern",
    "unsubscribePattern",
]

#: the api's broker account: the only one that may send a request ``on_behalf_of`` someone
API_USER = "api"
#: the simulator's players' names (``plaza up --players``: sim-player-001, ...): nobody else may
#: register one (the simulated staff desk approves their bookings)
SIM_PLAYER_PREFIX = "sim-player-"

DYNSEC_CONTROL = "$CONTROL/dynamic-security/#"
DYNSEC_COMMAND = "$CONTROL/dynamic-security/v1"
DYNSEC_RESPONSE = "$CONTROL/dynamic-security/v1/response"


@dataclass(frozen=True, slots=True)
class Acl:
    acltype: AclType
    topic: str
    allow: bool = True
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    acls: tuple[Acl, ...]


def _read(topic_filter: str) -> tuple[Acl, Acl]:
    return Acl("subscribePattern", topic_filter), Acl("publishClientReceive", topic_filter)


def _read_literal(topic: str) -> tuple[Acl, Acl]:
    return Acl("subscribeLiteral", topic), Acl("publishClientReceive", topic)


def device_role_name(device: str) -> str:
    return f"device-{device}"


def player_role_name(user: str) -> str:
    return f"player-{user}"


def device_role(topics: Topics, device: str) -> Role:
    """A machine writes its presence (birth and will) and state, reads its cmd topic and its
    own presence (to notice a stale will and re-publish its birth)."""
    return Role(
        device_role_name(device),
        (
            Acl("publishClientSend", topics.presence(device)),
            Acl("publishClientSend", topics.state(device)),
            *_read_literal(topics.cmd(device)),
            *_read_literal(topics.presence(device)),
        ),
    )


def player_role(topics: Topics, user: str) -> Role:
    """A player reads the board, notices, events, the services' status (is the venue's
    bridge up: no one's identity in it) and their own topics, and writes only reservation
    requests in their own name: on a machine, or the venue's own (parties, the waitlist).

    An account made by an older release lacks the venue requests topic: ``plaza up`` writes
    the demo players' roles from code, and the api adds what a role lacks when it next hands
    out that player's broker credentials (``POST /auth/mqtt``)."""
    return Role(
        player_role_name(user),
        (
            *_read(topics.board_tree),
            *_read(topics.notices),
            *_read(topics.events_tree),
            *_read(topics.all_service_status),
            *_read(topics.user_tree(user)),
            Acl("publishClientSend", topics.requests_by(user)),
            Acl("publishClientSend", topics.venue_request(user)),
            Acl("publishClientSend", topics.acks(user)),
        ),
    )


def staff_role_name(user: str) -> str:
    return f"staff-{user}"


def staff_role(topics: Topics, user: str) -> Role:
    """An admin's browser: everything a player reads plus the alerts feed; it writes nothing
    (staff act through the REST api, which checks the admin token)."""
    return Role(
        staff_role_name(user),
        (
            *_read(topics.board_tree),
            *_read(topics.notices),
            *_read(topics.events_tree),
            *_read(topics.all_service_status),
            *_read(topics.admin_alerts),
            *_read(topics.user_tree(user)),
        ),
    )


BRIDGE_ROLE = "svc-bridge"
INTAKE_ROLE = "svc-bridge-intake"


def bridge_role(topics: Topics) -> Role:
    """The bridge is the only writer of board, events, replies, notifications and commands,
    and of its own status (birth, heartbeat, will): all under the root (clearing a retained
    request or read receipt a player left is a write there too). It also reads the broker's
    statistics (``$SYS/broker/#``) to export them (plaza.broker_stats), and sends
    dynamic-security commands: it disables a flooding player's accounts for the cooling-off
    and enables them again (``disableClient`` / ``enableClient``, docs/operations.md)."""
    return Role(
        BRIDGE_ROLE,
        (
            Acl("publishClientSend", topics.everything),
            Acl("publishClientSend", topics.all_service_status),
            *_read(topics.everything),
            *_read(BROKER_SYS_TREE),
            # several bridges share request handling (MQTT 5 shared subscription)
            Acl("subscribePattern", topics.shared("+", topics.everything)),
            Acl("publishClientSend", DYNSEC_COMMAND),
            *_read_literal(DYNSEC_RESPONSE),
        ),
    )


def intake_role(topics: Topics) -> Role:
    """The bridge's intake connection only reads what players and the api send it:
    reservation requests, machines' and the venue's own (also through a shared subscription),
    read receipts and the api's admin commands. It writes nothing."""
    return Role(
        INTAKE_ROLE,
        (
            *_read(topics.all_requests),
            *_read(topics.all_venue_requests),
            *_read(topics.all_acks),
            *_read_literal(topics.admin_requests),
            Acl("subscribePattern", topics.shared("+", topics.all_requests)),
            Acl("subscribePattern", topics.shared("+", topics.all_venue_requests)),
        ),
    )


def api_role(topics: Topics) -> Role:
    """The api reads everything of the venue (the bridge's status among it, for readiness),
    sends requests in its own name, announces a changed floor map (the zones live only in
    SQL, which the api writes), and manages broker identities through the dynamic-security
    control topic."""
    return Role(
        "svc-api",
        (
            *_read(topics.everything),
            *_read(topics.all_service_status),
            Acl("publishClientSend", topics.requests_by(API_USER)),
            Acl("publishClientSend", topics.venue_request(API_USER)),
            Acl("publishClientSend", topics.admin_requests),
            Acl("publishClientSend", topics.floor_events),
            Acl("publishClientSend", DYNSEC_COMMAND),
            *_read_literal(DYNSEC_RESPONSE),
        ),
    )


def observer_role(topics: Topics) -> Role:
    """Staff tools (``mosquitto_sub``) may read everything and write nothing."""
    return Role("observer", (*_read(topics.everything), *_read("$SYS/#")))
