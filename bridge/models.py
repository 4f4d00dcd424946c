"""The messages the bridge's modules pass each other: :class:`Incoming` (one message from the
broker) and :class:`Outbound` (one message to send), shared by every reader and writer.

An :class:`Outbound` is sent at once (presence, boards, refusals) or stored in the outbox in
the transaction of the change it announces and sent after commit. Its outbox-row codec is
here too: :meth:`Outbound.row` and :meth:`Outbound.from_row`. A reply's MQTT 5 correlation
data is kept in the row's ``props_json`` as ``{"correlation_data": <base64>}``.

:meth:`Outbound.unsendable` says why the broker could not take a message (a packet over its
maximum size, a topic one cannot publish to), from the bytes MQTT 5 would put on the wire:
the bridge checks it before writing an outbox row and again before sending one, so no message
can make the broker drop the connection (see docs/operations.md, "Limits and abuse").
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message from the broker, as the router hands it to a handler."""

    topic: str
    payload: bytes
    #: MQTT 5 response topic and correlation data (requests)
    response_topic: str | None = None
    correlation: bytes | None = None
    #: the broker sent it from its retained store (on subscribing), not as it was published
    retained: bool = False


#: the most a topic (a UTF-8 string with a two-byte length) or binary property may hold
MQTT_MAX_STRING = 65_535


def _varint_size(n: int) -> int:
    """Bytes of MQTT's variable byte integer for ``n``."""
    return 1 if n < 128 else 2 if n < 16_384 else 3 if n < 2_097_152 else 4


def publish_size(topic: bytes, payload: int, qos: int, correlation: bytes | None) -> int:
    """The size of an MQTT 5 PUBLISH packet: fixed header, topic, packet id (QoS 1 and 2),
    properties (correlation data only, as the bridge sends) and ``payload`` bytes."""
    props = 0 if correlation is None else 1 + 2 + len(correlation)
    remaining = 2 + len(topic) + (2 if qos else 0) + _varint_size(props) + props + payload
    return 1 + _varint_size(remaining) + remaining


@dataclass(frozen=True, slots=True)
class Outbound:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    #: MQTT 5 correlation data of a reply (what the requester matches it by)
    correlation: bytes | None = None

    def properties(self) -> Properties | None:
        if self.correlation is None:
            return None
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.CorrelationData = self.correlation
        return props

    def size(self) -> int:
        """Bytes of the PUBLISH packet this message is sent as."""
        return publish_size(self.topic.encode(), len(self.payload), self.qos, self.correlation)

    def unsendable(self, max_packet: int) -> str | None:
        """Why the broker cannot take this message, as ``kind: detail`` (None: it can).
        ``max_packet`` is the broker's maximum packet size."""
        try:
            topic = self.topic.encode()
        except UnicodeEncodeError:
            return "invalid_topic: not UTF-8"
        if not topic or len(topic) > MQTT_MAX_STRING:
            return f"invalid_topic: {len(topic)} bytes"
        if "+" in self.topic or "#" in self.topic or "\0" in self.topic:
            return "invalid_topic: a wildcard or NUL in a topic to publish to"
        if self.correlation is not None and len(self.correlation) > MQTT_MAX_STRING:
            return f"invalid_property: {len(self.correlation)} bytes of correlation data"
        size = publish_size(topic, len(self.payload), self.qos, self.correlation)
        if size > max_packet:
            return f"too_large: {size} bytes, the broker takes at most {max_packet}"
        return None

    def props_json(self) -> str | None:
        """The outbox's ``props_json`` column for this message."""
        if self.correlation is None:
            return None
        return json.dumps({"correlation_data": base64.b64encode(self.correlation).decode()})

    def row(self, created_at: datetime, max_packet: int) -> dict[str, Any]:
        """An ``outbox`` table row (not yet published) for this message; one the broker
        could not take (see :meth:`unsendable`) is written dead-lettered."""
        dead = self.unsendable(max_packet)
        return {
            "topic": self.topic,
            "payload": self.payload,
            "qos": self.qos,
            "retain": self.retain,
            "props_json": self.props_json(),
            "created_at": created_at,
            "published_at": None,
            "dead_at": created_at if dead else None,
            "dead_reason": dead,
        }

    @classmethod
    def from_row(
        cls, topic: str, payload: bytes, qos: int, retain: bool, props_json: str | None
    ) -> Outbound:
        """The message an ``outbox`` row stores."""
        correlation = None
        if props_json:
            data = json.loads(props_json)
            if "correlation_data" in data:
                correlation = base64.b64decode(data["correlation_data"])
        return cls(topic, bytes(payload), qos, bool(retain), correlation)


#: an outbound message stored in the outbox, with the row id it is marked sent by
Stored = tuple[int, Outbound]
