"""The messages the bridge's modules pass each other: :class:`Incoming` (one message from the
broker) and :class:`Outbound` (one message to send), shared by every reader and writer.

An :class:`Outbound` is sent at once (presence, boards, refusals) or stored in the outbox in
the transaction of the change it announces and sent after commit. Its outbox-row codec is
here too: :meth:`Outbound.row` and :meth:`Outbound.from_row`. A reply's MQTT 5 correlation
data is kept in the row's ``props_json`` as ``{"correlation_data": <base64>}``.
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

    def props_json(self) -> str | None:
        """The outbox's ``props_json`` column for this message."""
        if self.correlation is None:
            return None
        return json.dumps({"correlation_data": base64.b64encode(self.correlation).decode()})

    def row(self, created_at: datetime) -> dict[str, Any]:
        """An ``outbox`` table row (not yet published) for this message."""
        return {
            "topic": self.topic,
            "payload": self.payload,
            "qos": self.qos,
            "retain": self.retain,
            "props_json": self.props_json(),
            "created_at": created_at,
            "published_at": None,
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
