"""How the venue's services open MQTT connections (aiomqtt, MQTT 5, TCP_NODELAY).

Every service client sets TCP_NODELAY (without it a small request waits on Nagle, ~40 ms per
round trip) and speaks MQTT 5. Persistent sessions pass ``clean_start=False`` and a session
expiry explicitly: aiomqtt's default silently starts clean on every reconnect.

:class:`PlazaClient` is aiomqtt's client plus what aiomqtt 2.5 drops on the floor: the
broker's Maximum Packet Size from CONNACK, and the reason code of each PUBACK (Mosquitto 2.0
answers a QoS 1 publish its ACL refuses with PUBACK 0x87 Not authorized, which aiomqtt reports
as success).
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

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


#: the packet id paho gave the last publish of this task (read back by publish_acked)
_LAST_MID: contextvars.ContextVar[int] = contextvars.ContextVar("plaza_last_mid", default=0)


class PlazaClient(aiomqtt.Client):
    """aiomqtt's client that keeps the broker's Maximum Packet Size (CONNACK) and tells a
    publish the broker refused (:meth:`publish_acked`).

    Written for aiomqtt 2.5 (pinned ``<3``): it overrides two of its paho callbacks and
    wraps the paho client's ``publish`` to learn each message's packet id; every override
    calls through, so aiomqtt behaves as before (tests/integration/test_hostile_clients.py
    checks both against a real broker)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: the broker's Maximum Packet Size from its last CONNACK (None: it gave none)
        self.broker_max_packet: int | None = None
        self._refused: dict[int, ReasonCode] = {}
        paho_publish = self._client.publish

        def publish(*a: Any, **kw: Any) -> paho.MQTTMessageInfo:
            info = paho_publish(*a, **kw)
            self._refused.pop(info.mid, None)  # a stale refusal of an earlier use of the id
            _LAST_MID.set(info.mid)
            return info

        self._client.publish = publish  # type: ignore[method-assign]

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        size = getattr(properties, "MaximumPacketSize", None)
        if isinstance(size, int) and size > 0:
            self.broker_max_packet = size
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        if reason_code.is_failure:
            self._refused[mid] = reason_code
        super()._on_publish(client, userdata, mid, reason_code, properties)

    def settle(self) -> BaseException | None:
        """The reason this client's connection ended, read once it is done with (aiomqtt
        keeps it on a future; left unread, asyncio reports it as never retrieved)."""
        gone = self._disconnected
        if gone.done() and not gone.cancelled():
            return gone.exception()
        return None

    def publish_now(self, topic: str, payload: bytes, *, qos: int, retain: bool = False) -> bool:
        """Queue a publish without waiting for it (nor for its PUBACK): what goes out just
        before a DISCONNECT (a clean stop's last status), or from inside a packet reader.
        False when paho refused it (not connected)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == paho.MQTT_ERR_SUCCESS

    async def publish_acked(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> ReasonCode | None:
        """Publish like :meth:`publish`; return the broker's refusal (a PUBACK reason code
        of 0x80 or more), or None when it took the message (QoS 0: always None).

        A connection lost while the PUBACK is awaited raises MqttError at once: aiomqtt
        would wait out its whole timeout (``PLAZA_SERVICE_TIMEOUT``) for an acknowledgement
        that can no longer come, holding its caller (the bridge's main loop, behind a board
        publish, for 10 s after every broker restart)."""
        gone = self._disconnected
        if gone.done():
            raise aiomqtt.MqttError("not connected: the connection was lost")

        async def sent() -> int:  # the packet id, read in the task that published it
            await self.publish(topic, payload, qos=qos, retain=retain, properties=properties)
            return _LAST_MID.get()

        send = asyncio.ensure_future(sent())
        waiting: set[asyncio.Future[Any]] = {send, gone}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost = not send.done()
            if lost:
                send.cancel()
        if lost:
            raise aiomqtt.MqttError("the connection was lost before the broker acknowledged it")
        mid = send.result()
        return self._refused.pop(mid, None) if qos else None


def service_client(
    settings: Settings,
    identifier: str,
    *,
    persistent: bool,
    keepalive: int | None = None,
    max_queued_incoming: int = 0,
    username: str | None = None,
    will: aiomqtt.Will | None = None,
    queue_type: type[asyncio.Queue[aiomqtt.Message]] | None = None,
) -> PlazaClient:
    """A client for the bridge or the api, authenticated with the service's account (or
    ``username``'s, with the same password: the bridge's intake connection).

    Build one for every connection attempt: aiomqtt 2.5.1's ``__aexit__`` keeps the client's
    reuse lock when its disconnect wait times out, and a client reused after that fails every
    reconnect with "reusable, but not reentrant"."""
    return PlazaClient(
        settings.mqtt_host,
        settings.mqtt_port,
        username=username or settings.mqtt_username,
        password=settings.mqtt_password_value(),
        identifier=identifier,
        clean_start=not persistent,
        properties=connect_properties(settings.bridge_session_expiry if persistent else 0),
        keepalive=keepalive or settings.service_keepalive,
        max_queued_incoming_messages=max_queued_incoming or None,
        timeout=settings.service_timeout,
        will=will,
        queue_type=queue_type,
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
