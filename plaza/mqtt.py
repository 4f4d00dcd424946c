"""How the venue's services open MQTT connections (aiomqtt, MQTT 5, TCP_NODELAY).

Every service client sets TCP_NODELAY (without it a small request waits on Nagle, ~40 ms per
round trip) and speaks MQTT 5. Persistent sessions pass ``clean_start=False`` and a session
expiry explicitly: aiomqtt's default silently starts clean on every reconnect.
"""

from __future__ import annotations

import asyncio
import random
import socket
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from plaza.settings import Settings

NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


def connect_properties(session_expiry: int) -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = session_expiry
    return props


def service_client(
    settings: Settings,
    identifier: str,
    *,
    persistent: bool,
    keepalive: int | None = None,
    max_queued_incoming: int = 0,
) -> aiomqtt.Client:
    """A client for the bridge or the api, authenticated with the service's account.

    Build one for every connection attempt: aiomqtt 2.5.1's ``__aexit__`` keeps the client's
    reuse lock when its disconnect wait times out, and a client reused after that fails every
    reconnect with "reusable, but not reentrant"."""
    return aiomqtt.Client(
        settings.mqtt_host,
        settings.mqtt_port,
        username=settings.mqtt_username,
        password=settings.mqtt_password_value(),
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=not persistent,
        properties=connect_properties(settings.bridge_session_expiry if persistent else 0),
        keepalive=keepalive or settings.service_keepalive,
        socket_options=NODELAY,
        max_queued_incoming_messages=max_queued_incoming or None,
        timeout=settings.service_timeout,
    )


@dataclass
class Backoff:
    """Exponential backoff with full jitter, so a broker restart brings no reconnect storm."""

    base: float
    cap: float
    attempt: int = field(default=0)

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2**self.attempt))
        self.attempt += 1
        return random.uniform(self.base / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


async def stop_task(task: asyncio.Task[Any], *, every: float = 0.1) -> None:
    """Cancel ``task`` until it has ended, and wait for it.

    One ``cancel()`` is not always enough on Python 3.11: ``asyncio.wait_for``, which aiomqtt
    awaits on connect and on every call, swallows a cancellation that arrives just as the
    awaited future completes (CPython gh-86296, fixed in 3.12). The task then runs on, and a
    service that was told to stop hangs. Cancelling again until it ends is harmless."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every)
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


# -- paho's MQTT 5 property tables, built once --------------------------------------------------
# paho-mqtt 2.x builds two dicts of ~27 entries in every Properties() and finds names by
# linear scans with str.replace. It makes one for every received PUBLISH and every PUBACK:
# about a sixth of the CPU an MQTT 5 request/response costs here. The tables never change,
# so every instance can share one copy, and lookups can be dict lookups. Behaviour is the
# same (tests/unit/test_paho_properties.py compares both on the packets we send and receive).
_PAHO_ORIGINAL = {
    name: getattr(Properties, name)
    for name in ("__init__", "clear", "isEmpty", "getIdentFromName", "getNameFromIdent")
}


def _share_paho_property_tables() -> bool:
    proto = object.__new__(Properties)
    _PAHO_ORIGINAL["__init__"](proto, PacketTypes.PUBLISH)
    names, properties, types = proto.names, proto.properties, proto.types
    if set(vars(proto)) != {"packetType", "names", "properties", "types"}:
        return False  # not the paho this was written for: leave it alone
    compressed = {name.replace(" ", ""): ident for name, ident in names.items()}
    by_ident = {ident: name for name, ident in names.items()}

    def __init__(self: Properties, packetType: int) -> None:
        object.__setattr__(self, "packetType", packetType)
        object.__setattr__(self, "types", types)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "properties", properties)

    def clear(self: Properties) -> None:
        for attribute in [a for a in vars(self) if a in compressed]:
            delattr(self, attribute)

    def isEmpty(self: Properties) -> bool:
        return not any(a in compressed for a in vars(self))

    def getIdentFromName(self: Properties, compressedName: str) -> int:
        return compressed.get(compressedName, -1)

    def getNameFromIdent(self: Properties, identifier: int) -> str | None:
        return by_ident.get(identifier)

    for function in (__init__, clear, isEmpty, getIdentFromName, getNameFromIdent):
        setattr(Properties, function.__name__, function)
    return True


PAHO_TABLES_SHARED = _share_paho_property_tables()
