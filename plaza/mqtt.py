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


class PlazaClient(aiomqtt.Client):
    """aiomqtt's client that keeps the broker's Maximum Packet Size (CONNACK), tells a
    publish the broker refused (:meth:`publish_acked`), and can hand a message over without
    waiting for its acknowledgement (:meth:`dispatch`).

    Written for aiomqtt 2.5 (pinned ``<3``): it overrides two of its paho callbacks, wraps
    the paho client's ``publish`` to forget a stale refusal of a reused packet id, and
    registers its own publishes in aiomqtt's pending-publish table (which aiomqtt's
    ``on_publish`` completes); every override calls through, so aiomqtt behaves as before
    (tests/integration/test_hostile_clients.py and test_bridge_link.py check them against a
    real broker)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: the broker's Maximum Packet Size from its last CONNACK (None: it gave none)
        self.broker_max_packet: int | None = None
        self._refused: dict[int, ReasonCode] = {}
        paho_publish = self._client.publish

        def publish(*a: Any, **kw: Any) -> paho.MQTTMessageInfo:
            info = paho_publish(*a, **kw)
            self._refused.pop(info.mid, None)  # a stale refusal of an earlier use of the id
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

    def shut(self) -> bool:
        """Shut the connection's socket down (both ways, without closing the descriptor,
        which paho owns): paho reads EOF and the connection ends as if the broker had
        closed it. False when there is no socket."""
        sock = self._client.socket()
        if not isinstance(sock, socket.socket):  # none yet (or a WebSocket wrapper)
            return False
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            return False
        return True

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
        of 0x80 or more), or None when it took the message (QoS 0: always None)."""
        return await self.dispatch(topic, payload, qos=qos, retain=retain, properties=properties)

    def dispatch(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> asyncio.Future[ReasonCode | None]:
        """Hand the message to paho now, and return a future of what :meth:`publish_acked`
        returns. Messages leave in the order of these calls, whichever task awaits their
        acknowledgements, so a caller may go on before the broker has acknowledged (the
        bridge's presence path: a PUBACK round trip per board entry capped it at about 20
        machines a second on a busy broker).

        A connection lost while the PUBACK is awaited fails the future at once with
        MqttError (aiomqtt would wait out its whole timeout, ``PLAZA_SERVICE_TIMEOUT``, for an
        acknowledgement that can no longer come); no PUBACK within that timeout fails it
        with MqttError too. Not connected, or a message paho refuses: MqttError raised here."""
        loop = asyncio.get_running_loop()
        gone = self._disconnected
        if gone.done():
            raise aiomqtt.MqttError("not connected: the connection was lost")
        info = self._client.publish(topic, payload, qos, retain, properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        mid = info.mid
        result: asyncio.Future[ReasonCode | None] = loop.create_future()
        if not qos or info.is_published():
            result.set_result(self._refused.pop(mid, None) if qos else None)
            return result
        confirmation = asyncio.Event()
        self._pending_publishes[mid] = confirmation  # set by aiomqtt's on_publish
        waiter = asyncio.ensure_future(confirmation.wait())

        def settle(_: object = None) -> None:
            if result.done():
                return
            timer.cancel()
            waiter.cancel()
            gone.remove_done_callback(settle)  # one per message: do not let them pile up
            self._pending_publishes.pop(mid, None)
            if confirmation.is_set():
                result.set_result(self._refused.pop(mid, None))
            elif gone.done():
                result.set_exception(
                    aiomqtt.MqttError("the connection was lost before the broker acknowledged it")
                )
            else:
                result.set_exception(aiomqtt.MqttError("Operation timed out"))

        timer = loop.call_later(self.timeout, settle)
        waiter.add_done_callback(settle)
        gone.add_done_callback(settle)
        # a caller that never awaits (it gave up) must not leave "never retrieved" behind
        result.add_done_callback(lambda f: f.cancelled() or f.exception())
        return result


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
        # paho lets 20 QoS 1 messages await their PUBACK and queues the rest, each one's
        # timeout running meanwhile; the broker's Receive Maximum (Mosquitto's
        # max_inflight_messages, 100 in broker-config/) is how many it takes at once
        max_inflight_messages=settings.mqtt_max_inflight,
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
