"""paho's MQTT 5 property tables, built once: a vendor patch, installed explicitly.

paho-mqtt 2.x builds two dicts of ~27 entries in every ``Properties()`` and finds names by
linear scans with ``str.replace``. It makes one for every received PUBLISH and every PUBACK:
about a sixth of the CPU an MQTT 5 request/response costs here. The tables never change, so
every instance can share one copy, and lookups can be dict lookups. Behaviour is the same
(tests/unit/test_paho_properties.py compares both on the packets we send and receive).

Nothing is patched on import. The entry points (``plaza`` commands: the bridge, the api, the
simulator, the benchmarks) call :func:`install`, which patches only the paho version it was
written and tested for (:data:`TESTED_VERSION`) and leaves any other alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import paho.mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

#: the paho-mqtt release this patch was written for and checked against
TESTED_VERSION = "2.2.0"
#: paho's own methods, as imported (what :func:`uninstall` puts back)
ORIGINAL: dict[str, Callable[..., Any]] = {
    name: getattr(Properties, name)
    for name in ("__init__", "clear", "isEmpty", "getIdentFromName", "getNameFromIdent")
}


def installed() -> bool:
    """Whether :class:`Properties` runs the shared-table methods now."""
    return any(getattr(Properties, n) is not f for n, f in ORIGINAL.items())


def install(version: str | None = None) -> bool:
    """Share the property tables if paho is :data:`TESTED_VERSION` (``version`` stands in for
    the installed one, for tests); return whether the patch is in place. Calling it again
    changes nothing."""
    if installed():
        return True
    if (version or paho.mqtt.__version__) != TESTED_VERSION:
        return False
    proto = object.__new__(Properties)
    ORIGINAL["__init__"](proto, PacketTypes.PUBLISH)
    names, properties, types = proto.names, proto.properties, proto.types
    if set(vars(proto)) != {"packetType", "names", "properties", "types"}:
        return False  # not the paho this was written for after all: leave it alone
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


def uninstall() -> None:
    """Put paho's own methods back (tests)."""
    for name, function in ORIGINAL.items():
        setattr(Properties, name, function)
