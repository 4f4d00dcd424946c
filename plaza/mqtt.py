"""How the venue's services open MQTT connections (aiomqtt, MQTT 5, TCP_NODELAY).

Every service client sets TCP_NODELAY (without it a small request waits on Nagle, ~40 ms per
round trip) and speaks MQTT 5. Persistent sessions pass ``clean_start=False`` and a session
expiry explicitly: aiomqtt's default silently starts clean on every reconnect.
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
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


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """How the venue's services verify the broker: TLS 1.3 only, the host name checked,
    against ``settings.tls_ca`` (the venue CA) or the system's trust store. None: plain TCP."""
    if not settings.mqtt_tls:
        return None
    ca = str(settings.tls_ca) if settings.tls_ca else None
    context = ssl.create_default_context(cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def client_options(settings: Settings) -> dict[str, Any]:
    """The connection options every service client shares: MQTT 5, TCP_NODELAY, TLS."""
    return {
        "protocol": aiomqtt.ProtocolVersion.V5,
        "socket_options": NODELAY,
        "tls_context": tls_context(settings),
    }


def service_client(
    settings: Settings,
    identifier: str,
    *,
    persistent: bool,
    keepalive: int = 30,
    max_queued_incoming: int = 0,
) -> aiomqtt.Client:
    """A client for the bridge or the api, authenticated with the service's account."""
    return aiomqtt.Client(
        settings.mqtt_host,
        settings.mqtt_port,
        username=settings.mqtt_username,
        password=settings.mqtt_password_value(),
        identifier=identifier,
        clean_start=not persistent,
        properties=connect_properties(settings.bridge_session_expiry if persistent else 0),
        keepalive=keepalive,
        max_queued_incoming_messages=max_queued_incoming or None,
        timeout=10,
        **client_options(settings),
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
