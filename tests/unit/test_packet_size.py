# paho's Client internals are untyped
# mypy: disable-error-code="no-untyped-call"
"""What the bridge computes of a PUBLISH before sending it (``Outbound.size`` and
``Outbound.unsendable``) is what paho writes on the wire, byte for byte."""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as paho
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from bridge.models import Outbound, publish_size

pytestmark = pytest.mark.unit


class _NoSocket:
    def close(self) -> None:
        pass


def wire_bytes(message: Outbound) -> bytes:
    """The PUBLISH packet paho 2 builds for ``message`` (MQTT 5), taken from its send queue."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    sent: list[bytes] = []

    def queue(_command: int, packet: bytes | bytearray, *_rest: Any) -> MQTTErrorCode:
        sent.append(bytes(packet))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    client._sock = _NoSocket()  # type: ignore[assignment]  # "connected": it checks for None
    client._packet_queue = queue  # type: ignore[method-assign,assignment]
    try:
        client._send_publish(
            1,
            message.topic.encode(),
            message.payload,
            message.qos,
            message.retain,
            False,
            None,
            message.properties(),
        )
    finally:
        client._sock = None
    (packet,) = sent
    return packet


# sizes around the points where MQTT's variable byte integers grow a byte
EDGES = [0, 1, 100, 127, 128, 16_383, 16_384, 65_400, 65_536, 2_097_151, 2_097_152]


@pytest.mark.parametrize("payload", EDGES)
@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("correlation", [None, b"", b"c" * 16, b"P" * 65_423])
def test_the_computed_size_is_the_size_paho_sends(
    payload: int, qos: int, correlation: bytes | None
) -> None:
    message = Outbound("plaza/users/player1/replies", b"x" * payload, qos, False, correlation)
    assert message.size() == len(wire_bytes(message))


@given(
    topic=st.text(
        st.characters(exclude_categories=["Cs"], exclude_characters="+#\0"),
        min_size=1,
        max_size=300,
    ),
    payload=st.integers(0, 20_000),
    qos=st.sampled_from([0, 1]),
    correlation=st.none() | st.binary(max_size=300),
)
def test_any_topic_payload_and_correlation_is_sized_as_paho_sends_it(
    topic: str, payload: int, qos: int, correlation: bytes | None
) -> None:
    message = Outbound(topic, b"x" * payload, qos, False, correlation)
    assert message.size() == len(wire_bytes(message))


def test_the_attacker_s_reply_is_over_the_broker_s_maximum_by_a_few_bytes() -> None:
    # issue #13, finding 1: 65,423 bytes of correlation data echoed on a short error reply
    reply = b'{"request_id":"p","ok":false,"error":{"code":"not_found","message":"no zz"}}'
    size = publish_size(b"plaza/users/player1/replies", len(reply), 1, b"P" * 65_423)
    assert 65_536 < size < 65_536 + 200


def test_a_message_of_exactly_the_maximum_is_sendable_and_one_byte_more_is_not() -> None:
    topic = "plaza/events/reservations"
    fill = 65_536 - Outbound(topic, b"x" * 60_000).size() + 60_000  # same header sizes
    exact = Outbound(topic, b"x" * fill)
    over = Outbound(topic, b"x" * (fill + 1))
    assert exact.size() == 65_536
    assert exact.unsendable(65_536) is None
    reason = over.unsendable(65_536)
    assert reason == "too_large: 65537 bytes, the broker takes at most 65536"


@pytest.mark.parametrize(
    ("topic", "kind"),
    [
        ("", "invalid_topic"),
        ("plaza/users/+/replies", "invalid_topic"),
        ("plaza/users/#", "invalid_topic"),
        ("plaza/users/a\0b/replies", "invalid_topic"),
        ("plaza/\ud800", "invalid_topic"),  # a lone surrogate: not UTF-8
        ("t" * 65_536, "invalid_topic"),
    ],
)
def test_a_topic_nobody_can_publish_to_is_unsendable(topic: str, kind: str) -> None:
    reason = Outbound(topic, b"{}").unsendable(10**9)
    assert reason is not None
    assert reason.split(":")[0] == kind


def test_correlation_data_over_what_mqtt_can_carry_is_unsendable() -> None:
    message = Outbound("plaza/users/a/replies", b"{}", correlation=b"c" * 65_536)
    reason = message.unsendable(10**9)
    assert reason is not None
    assert reason.startswith("invalid_property:")


def test_an_unsendable_message_is_written_as_a_dead_letter_row() -> None:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    ok = Outbound("plaza/events/reservations", b"{}").row(now, 65_536)
    big = Outbound("plaza/events/reservations", b"x" * 70_000).row(now, 65_536)
    assert (ok["dead_at"], ok["dead_reason"]) == (None, None)
    assert big["dead_at"] == now
    assert str(big["dead_reason"]).startswith("too_large:")
