"""A pre-filter on a client's incoming PUBLISH packets, decided from the raw topic.

A flood is shed where it costs least: before paho decodes the packet (its topic, MQTT 5
properties, payload, an ``MQTTMessage``) and before aiomqtt builds its ``Message``. Measured
here on a burst of 60,000 ``{}`` QoS 0 messages from one player (wall time per message): read
and queued by aiomqtt, 44-58 µs; dropped in ``on_message``, 25 µs; dropped from the raw
packet, 7 µs, as fast as Mosquitto forwards them, so another player's message waited at most
tens of milliseconds behind the burst instead of seconds (docs/benchmarks.md, "Abuse"). The
socket is also read 64 KiB at a time instead of paho's three reads per packet (CPU per
dropped message 6.7-8.3 µs -> 5.2-5.4 µs), and every whole packet read is handled before
the event loop runs again.

:func:`install` puts ``decide(topic, retained, empty)`` in front of one client: ``topic`` is
the raw topic bytes, ``retained`` the RETAIN flag as published (subscribe with
retain-as-published), ``empty`` whether a retained message has no payload (what clearing a
retained topic sends). False drops the message: a QoS 1 one is still acknowledged (PUBACK),
so the broker forgets it, and nothing else happens. It is a vendor patch, made explicit: on
the paho release it was written for (:data:`TESTED_VERSION`) it wraps the client's
``_handle_publish``; on any other it falls back to wrapping ``on_message`` (same decisions,
after paho's decoding).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
from paho import mqtt as paho_package
from paho.mqtt.enums import MQTTErrorCode

#: decide(topic, retained, empty) -> keep the message
Decide = Callable[[bytes, bool, bool], bool]
#: the paho-mqtt release whose packet reader :func:`install` was written and checked against
TESTED_VERSION = "2.2.0"
#: bytes read from the socket at a time (paho reads 1 byte, the length, then the rest)
READ_SIZE = 65536


def install(
    client: aiomqtt.Client, decide: Decide, *, version: str | None = None, buffered: bool = True
) -> str:
    """Filter ``client``'s incoming PUBLISH packets through ``decide``; return the hook used:
    ``"packet"`` (the raw packet, paho :data:`TESTED_VERSION`) or ``"message"`` (paho's
    ``on_message``). ``version`` stands in for the installed paho's (tests)."""
    inner: mqtt.Client = client._client
    if (version or paho_package.__version__) == TESTED_VERSION and hasattr(inner, "_in_packet"):
        _filter_packets(inner, decide)
        if buffered:
            _buffer_reads(inner)
        return "packet"
    _filter_messages(inner, decide)
    return "message"


def _filter_packets(inner: mqtt.Client, decide: Decide) -> None:
    handle = inner._handle_publish
    v5 = inner._protocol == mqtt.MQTTv5

    def handle_publish() -> MQTTErrorCode:
        command: int = inner._in_packet["command"]
        packet: bytes | bytearray = inner._in_packet["packet"]
        size = len(packet)
        if size < 2:
            return handle()  # malformed: paho says so
        end = 2 + ((packet[0] << 8) | packet[1])
        qos = (command >> 1) & 3
        if end + (2 if qos else 0) > size or qos == 2:
            return handle()  # malformed, or QoS 2 (never subscribed): paho's own path
        retained = bool(command & 1)
        empty = retained and _payload_empty(packet, end + (2 if qos else 0), v5)
        if decide(bytes(packet[2:end]), retained, empty):
            return handle()
        if qos == 1:  # acknowledged, so the broker forgets it; nothing else is sent
            return inner._send_puback((packet[end] << 8) | packet[end + 1])
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    inner._handle_publish = handle_publish  # type: ignore[method-assign]


def _buffer_reads(inner: mqtt.Client) -> None:
    """Read the socket 64 KiB at a time instead of paho's three reads per packet, and handle
    every whole packet read before going back to the event loop."""
    buffered = bytearray()
    sock_recv = inner._sock_recv
    loop_read = inner.loop_read

    def recv(size: int) -> bytes:
        if not buffered:
            data = sock_recv(READ_SIZE)
            if len(data) <= size:
                return data
            buffered.extend(data)
        out = bytes(buffered[:size])
        del buffered[:size]
        return out

    def read(max_packets: int = 1) -> MQTTErrorCode:
        rc = loop_read(max_packets)
        while buffered and rc == MQTTErrorCode.MQTT_ERR_SUCCESS and inner._sock is not None:
            rc = loop_read(max_packets)
        return rc

    inner._sock_recv = recv  # type: ignore[method-assign,assignment]
    inner.loop_read = read  # type: ignore[method-assign]


def _payload_empty(packet: bytes | bytearray, pos: int, v5: bool) -> bool:
    """Whether the PUBLISH whose variable header continues at ``pos`` (after topic and
    packet id) carries no payload: skip the MQTT 5 properties, see what is left."""
    if v5:
        length, shift = 0, 0
        while pos < len(packet):
            byte = packet[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        pos += length
    return pos >= len(packet)


def _filter_messages(inner: mqtt.Client, decide: Decide) -> None:
    on_message = inner.on_message

    def filtered(c: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        topic: bytes = message._topic
        if decide(topic, bool(message.retain), not message.payload) and on_message:
            on_message(c, userdata, message)

    inner.on_message = filtered
