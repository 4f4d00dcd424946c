# paho's Properties is untyped
# mypy: disable-error-code="no-untyped-call"
"""paho's Properties with shared tables (plaza.paho_tables) pack, unpack and validate exactly
as paho's own code does, on the properties the venue sends and receives; the patch is applied
only by install(), only on the paho it was written for."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import paho.mqtt
import pytest
from paho.mqtt.exception import MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from plaza import paho_tables
from plaza.paho_tables import ORIGINAL as _PAHO_ORIGINAL


@pytest.fixture(autouse=True)
def shared_tables() -> Iterator[None]:
    """Each test starts with the patch installed (as tests/conftest.py installs it) and leaves
    it installed."""
    paho_tables.install()
    yield
    paho_tables.install()


def original(packet_type: int) -> Properties:
    """A Properties built and driven by paho's own methods."""

    class Original(Properties):
        pass

    for name, function in _PAHO_ORIGINAL.items():
        setattr(Original, name, function)
    return Original(packet_type)


def fill(props: Properties, values: dict[str, Any]) -> Properties:
    for name, value in values.items():
        setattr(props, name, value)
    return props


PUBLISH = {
    "ResponseTopic": "plaza/users/ana/replies/tab-1",
    "CorrelationData": b"\x00\x01corr",
    "UserProperty": [("a", "1"), ("b", "2")],
    "MessageExpiryInterval": 30,
}


def test_the_tables_are_shared_on_this_paho() -> None:
    assert paho.mqtt.__version__ == paho_tables.TESTED_VERSION
    assert paho_tables.install()
    a, b = Properties(PacketTypes.PUBLISH), Properties(PacketTypes.PUBACK)
    assert a.names is b.names
    assert a.properties is b.properties


@pytest.mark.parametrize(
    ("packet_type", "values"),
    [
        (PacketTypes.PUBLISH, PUBLISH),
        (PacketTypes.PUBLISH, {}),
        (PacketTypes.PUBACK, {"ReasonString": "quota"}),
        (PacketTypes.CONNECT, {"SessionExpiryInterval": 3600, "ReceiveMaximum": 100}),
    ],
)
def test_packing_and_unpacking_match_paho(packet_type: int, values: dict[str, Any]) -> None:
    ours, theirs = fill(Properties(packet_type), values), fill(original(packet_type), values)
    assert ours.pack() == theirs.pack()
    assert ours.isEmpty() == theirs.isEmpty() == (not values)
    read_ours, n_ours = Properties(packet_type).unpack(ours.pack())
    read_theirs, n_theirs = original(packet_type).unpack(theirs.pack())
    assert n_ours == n_theirs
    assert read_ours.json() == read_theirs.json()
    read_ours.clear()
    assert read_ours.isEmpty()


def test_lookups_and_refusals_match_paho() -> None:
    ours, theirs = Properties(PacketTypes.PUBLISH), original(PacketTypes.PUBLISH)
    for ident in (*ours.names.values(), 99):
        assert ours.getNameFromIdent(ident) == theirs.getNameFromIdent(ident)
    for name in ("ResponseTopic", "CorrelationData", "NoSuchThing"):
        assert ours.getIdentFromName(name) == theirs.getIdentFromName(name)
    with pytest.raises(MQTTException):
        ours.NoSuchThing = 1
    with pytest.raises(MQTTException):  # a CONNACK property on a PUBLISH
        ours.ServerKeepAlive = 10


def test_importing_the_services_patches_nothing() -> None:
    check = (
        "import plaza.mqtt, bridge.service, api.app, plaza_sim.machine\n"
        "from plaza import paho_tables\n"
        "assert not paho_tables.installed()\n"
        "assert paho_tables.install() and paho_tables.installed()\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True, timeout=60)


def test_another_paho_version_is_left_alone() -> None:
    paho_tables.uninstall()
    assert not paho_tables.installed()
    assert not paho_tables.install(version="2.3.0")
    assert not paho_tables.installed()
    a, b = Properties(PacketTypes.PUBLISH), Properties(PacketTypes.PUBLISH)
    assert a.names is not b.names, "paho's own: a table per instance"
    assert paho_tables.install()
    assert Properties(PacketTypes.PUBLISH).names is Properties(PacketTypes.PUBACK).names
