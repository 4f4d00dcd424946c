"""plaza.messages: strict wire payloads, and decode() errors that say what is wrong."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plaza.messages import (
    DEFAULT_MAX_PAYLOAD,
    AdminAlert,
    AlertSeverity,
    BoardEntry,
    BoardStatus,
    CommandName,
    DeviceCommand,
    DeviceState,
    DeviceStatusEvent,
    MachineState,
    PayloadError,
    Presence,
    Session,
    Slot,
    Wire,
    decode,
)

pytestmark = pytest.mark.unit


def js(obj: object) -> bytes:
    return json.dumps(obj).encode()


# -- refusals --------------------------------------------------------------------------------
def test_an_oversize_payload_is_refused_before_parsing_with_both_sizes_in_the_error() -> None:
    payload = b"x" * (DEFAULT_MAX_PAYLOAD + 1)  # not even JSON: the size check comes first
    with pytest.raises(PayloadError) as info:
        decode(Presence, payload)
    assert str(info.value) == (
        f"payload of {DEFAULT_MAX_PAYLOAD + 1} bytes exceeds the limit of "
        f"{DEFAULT_MAX_PAYLOAD} bytes"
    )


def test_a_payload_exactly_at_the_limit_is_decoded() -> None:
    body = js({"online": True, "epoch": 1})
    padded = body + b" " * (DEFAULT_MAX_PAYLOAD - len(body))
    assert len(padded) == DEFAULT_MAX_PAYLOAD
    assert decode(Presence, padded) == Presence(online=True, epoch=1)


def test_the_size_limit_is_a_parameter() -> None:
    body = js({"online": True, "epoch": 1})
    with pytest.raises(PayloadError, match=f"exceeds the limit of {len(body) - 1} bytes"):
        decode(Presence, body, max_bytes=len(body) - 1)
    assert decode(Presence, body, max_bytes=len(body)).epoch == 1


def test_a_str_payload_is_measured_in_utf8_bytes_against_the_limit() -> None:
    message = "가" * 6000  # 6,000 characters, 18,000 bytes in UTF-8
    payload = json.dumps(
        {"id": "a1", "type": "t", "severity": "high", "message": message, "timestamp": 1.0},
        ensure_ascii=False,
    )
    assert len(payload) < DEFAULT_MAX_PAYLOAD < len(payload.encode())
    with pytest.raises(PayloadError, match=f"payload of {len(payload.encode())} bytes exceeds"):
        decode(AdminAlert, payload)


def test_a_str_payload_within_the_limit_is_decoded_like_its_bytes() -> None:
    alert = AdminAlert(
        id="a1", type="t", severity=AlertSeverity.LOW, message="점검 중", timestamp=1.0
    )
    assert decode(AdminAlert, alert.encode().decode()) == alert


@pytest.mark.parametrize("empty", [b"", "", bytearray()])
def test_an_empty_payload_is_refused_as_empty(empty: bytes | str | bytearray) -> None:
    with pytest.raises(PayloadError, match=r"^empty payload$"):
        decode(Presence, empty)


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"{not json", r"^invalid Presence: payload: Invalid JSON"),
        (b"   ", r"^invalid Presence: payload: Invalid JSON"),
        (b"\xff\xfe", r"^invalid Presence: payload: "),
        (b"[]", r"^invalid Presence: payload: Input should be an object"),
        (b"null", r"^invalid Presence: payload: Input should be an object"),
        (b'"online"', r"^invalid Presence: payload: Input should be an object"),
    ],
)
def test_a_payload_that_is_not_a_json_object_is_refused_with_a_reason(
    payload: bytes, why: str
) -> None:
    with pytest.raises(PayloadError, match=why):
        decode(Presence, payload)


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"online": "yes", "epoch": 1}, r"online: Input should be a valid boolean"),
        ({"online": "true", "epoch": 1}, r"online: Input should be a valid boolean"),
        ({"online": 1, "epoch": 1}, r"online: Input should be a valid boolean"),
        ({"online": True, "epoch": "1"}, r"epoch: Input should be a valid integer"),
        ({"online": True, "epoch": 1.0}, r"epoch: Input should be a valid integer"),
        ({"online": True, "epoch": True}, r"epoch: Input should be a valid integer"),
        ({"online": True, "epoch": -1}, r"epoch: Input should be greater than or equal to 0"),
        ({"online": True, "epoch": 2**53 + 1}, r"epoch: Input should be less than or equal"),
        ({"online": True, "epoch": 1, "ts": "now"}, r"ts: Input should be a valid number"),
        ({"online": True, "epoch": 1, "fw": 7}, r"fw: Input should be a valid string"),
        ({"online": True, "epoch": 1, "fw": "v" * 65}, r"fw: String should have at most 64"),
        ({"online": True}, r"epoch: Field required"),
        ({"epoch": 1}, r"online: Field required"),
        ({"online": True, "epoch": 1, "surprise": 1}, r"surprise: Extra inputs are not permitted"),
    ],
)
def test_a_presence_with_a_wrong_type_or_unknown_field_is_refused_naming_the_field(
    fields: dict[str, object], why: str
) -> None:
    with pytest.raises(PayloadError, match=r"^invalid Presence: " + why):
        decode(Presence, js(fields))


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"state": "broken", "epoch": 1, "seq": 0, "ts": 1.0}, r"state: Input should be 'idle'"),
        ({"state": "IDLE", "epoch": 1, "seq": 0, "ts": 1.0}, r"state: Input should be 'idle'"),
        ({"state": "idle", "epoch": 1, "seq": -1, "ts": 1.0}, r"seq: Input should be greater"),
        ({"state": "idle", "epoch": 1, "seq": 0}, r"ts: Field required"),
        (
            {"state": "in_use", "epoch": 1, "seq": 0, "ts": 1.0, "session": {"id": ""}},
            r"session\.id: String should have at least 1 character",
        ),
        (
            {"state": "in_use", "epoch": 1, "seq": 0, "ts": 1.0, "session": {"id": "s"}},
            r"session\.started_at: Field required",
        ),
    ],
)
def test_a_device_state_that_breaks_the_schema_is_refused_naming_the_field(
    fields: dict[str, object], why: str
) -> None:
    with pytest.raises(PayloadError, match=r"^invalid DeviceState: " + why):
        decode(DeviceState, js(fields))


def test_a_payload_error_is_a_value_error_and_keeps_the_validation_error_as_cause() -> None:
    assert issubclass(PayloadError, ValueError)
    with pytest.raises(PayloadError) as info:
        decode(Presence, b"{}")
    assert info.value.__cause__ is not None


# -- acceptance and round trips --------------------------------------------------------------
def test_the_will_payload_online_false_with_only_an_epoch_decodes() -> None:
    will = decode(Presence, b'{"online": false, "epoch": 42}')
    assert will == Presence(online=False, epoch=42)
    assert (will.ts, will.fw) == (None, None)


def test_an_integer_timestamp_is_accepted_as_a_float() -> None:
    state = decode(DeviceState, js({"state": "idle", "epoch": 1, "seq": 0, "ts": 1700000000}))
    assert state.ts == 1700000000.0
    assert isinstance(state.ts, float)


def test_encode_leaves_out_unset_optional_fields() -> None:
    assert json.loads(Presence(online=False, epoch=3).encode()) == {"online": False, "epoch": 3}


def test_wire_models_are_frozen() -> None:
    presence = Presence(online=True, epoch=1)
    with pytest.raises(ValueError, match="frozen"):
        presence.online = False  # type: ignore[misc]


SESSION = Session(id="s-1", started_at=1.5, ends_at=3600.25, reservation_code="ABC123")
SLOT = Slot(reservation_id="r-1", starts_at=10.0, ends_at=20.0, status="approved")

EXAMPLES: list[Wire] = [
    Presence(online=True, epoch=7, ts=1.25, fw="1.2.3"),
    Presence(online=False, epoch=0),
    DeviceState(state=MachineState.IDLE, epoch=1, seq=0, ts=2.0),
    DeviceState(state=MachineState.IN_USE, epoch=3, seq=9, session=SESSION, ts=2.0),
    DeviceState(state=MachineState.FAULT, epoch=3, seq=10, fault="gpu overheated", ts=2.0),
    DeviceCommand(cmd=CommandName.START_SESSION, ts=3.0, session=SESSION),
    DeviceCommand(cmd=CommandName.LOCK, ts=3.0, reason="maintenance"),
    BoardEntry(
        device_id="pc-01",
        name="PC 1",
        kind="pc",
        zone="pc-zone",
        status=BoardStatus.RESERVED,
        online=True,
        state=MachineState.IDLE,
        epoch=4,
        version=2**32 + 5,
        current_slot=SLOT,
        next_slot=SLOT,
        since=1.0,
        ts=2.0,
    ),
    DeviceStatusEvent(
        type="device_online",
        device_id="pc-01",
        status=BoardStatus.AVAILABLE,
        timestamp=5.0,
        metadata={"epoch": 4, "previous": "offline", "flag": True, "ratio": 0.5},
    ),
    AdminAlert(
        id="a1",
        type="device_fault",
        severity=AlertSeverity.HIGH,
        device_id="pc-01",
        message="PC 1 (pc-01) reports a fault: 한국어 메시지",
        timestamp=6.0,
    ),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_wire_model_survives_an_encode_decode_round_trip(message: Wire) -> None:
    assert decode(type(message), message.encode()) == message


@given(
    online=st.booleans(),
    epoch=st.integers(min_value=0, max_value=2**53),
    ts=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    fw=st.none() | st.text(max_size=64),
)
def test_any_valid_presence_round_trips(
    online: bool, epoch: int, ts: float | None, fw: str | None
) -> None:
    presence = Presence(online=online, epoch=epoch, ts=ts, fw=fw)
    assert decode(Presence, presence.encode()) == presence


@given(
    state=st.sampled_from(MachineState),
    epoch=st.integers(min_value=0, max_value=2**53),
    seq=st.integers(min_value=0, max_value=2**53),
    ts=st.floats(allow_nan=False, allow_infinity=False),
)
def test_any_valid_device_state_round_trips(
    state: MachineState, epoch: int, seq: int, ts: float
) -> None:
    message = DeviceState(state=state, epoch=epoch, seq=seq, ts=ts)
    assert decode(DeviceState, message.encode()) == message


def test_a_board_entry_of_a_machine_that_never_connected_has_no_epoch_and_no_since() -> None:
    never = BoardEntry(
        device_id="vr-01",
        name="VR 1",
        kind="vr",
        zone="sim-bay",
        status=BoardStatus.OFFLINE,
        online=False,
        state=MachineState.IDLE,
        epoch=-1,  # the bridge's "never" for both
        version=1,
        since=0.0,
        ts=1795510000.0,
    )
    wire = json.loads(never.encode())
    assert "epoch" not in wire
    assert "since" not in wire
    assert decode(BoardEntry, never.encode()) == never
    seen = never.model_copy(update={"epoch": 0, "since": 1795510000.0})
    assert json.loads(seen.encode())["epoch"] == 0
