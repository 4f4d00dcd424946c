"""The demo fleet and the venue's generated secrets (service, machine and demo accounts)."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from plaza import acl
from plaza.dynsec import BrokerClient
from plaza.settings import INTAKE_SUFFIX, SERVICE_ID_PREFIX, Settings
from plaza.topics import Topics

# (kind, zone, share of the fleet): a PC-bang is mostly PCs, with a console corner and a few
# racing and VR rigs.
_MIX = (
    ("pc", "pc-zone", 0.6),
    ("console", "console-corner", 0.2),
    ("racing", "sim-bay", 0.1),
    ("vr", "sim-bay", 0.1),
)
_NAMES = {"pc": "PC", "console": "Console", "racing": "Racing rig", "vr": "VR booth"}

DEMO_PLAYERS = ("player1", "player2", "player3")
#: the simulator's players (``plaza up --players``): sim-player-001, ... (plaza_sim/arrivals.py)
SIM_PLAYER_PREFIX = acl.SIM_PLAYER_PREFIX
BRIDGE_USER = "bridge"
API_USER = acl.API_USER
OBSERVER_USER = "observer"
#: the observer's bound client id (services' ids come from settings: bridge_id, api_id)
OBSERVER_CLIENT_ID = f"{SERVICE_ID_PREFIX}observer"


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    id: str
    name: str
    kind: str
    zone: str
    #: False: no agent (staff set its state; the simulator starts none for it)
    agent: bool = True


def demo_fleet(count: int) -> list[DeviceSpec]:
    """``count`` machines, ids like ``pc-07``, in the proportions of ``_MIX``."""
    kinds: list[str] = []
    for kind, _zone, share in _MIX:
        kinds += [kind] * round(count * share)
    kinds = (kinds + ["pc"] * count)[:count]
    numbers: dict[str, int] = {}
    fleet = []
    width = max(2, len(str(count)))
    for kind in kinds:
        numbers[kind] = numbers.get(kind, 0) + 1
        zone = next(z for k, z, _ in _MIX if k == kind)
        n = numbers[kind]
        fleet.append(DeviceSpec(f"{kind}-{n:0{width}d}", f"{_NAMES[kind]} {n}", kind, zone))
    return fleet


def desk_consoles(count: int) -> list[DeviceSpec]:
    """The demo venue's machines without an agent: ``count`` consoles at the desk (ids
    ``desk-console-N``), whose state staff set and whose players staff check in."""
    return [
        DeviceSpec(f"desk-console-{n}", f"Desk console {n}", "console", "console-corner", False)
        for n in range(1, count + 1)
    ]


def bridge_accounts(username: str, password: str, bridge_id: str) -> list[BrokerClient]:
    """A bridge's two broker accounts: its own, bound to ``bridge_id``, and its intake
    connection's (``{username}-intake``, the same password), bound to ``{bridge_id}-intake``
    (docs/architecture.md, "Two broker connections")."""
    return [
        BrokerClient(username, password, (acl.BRIDGE_ROLE,), "bridge service", bridge_id),
        BrokerClient(
            f"{username}{INTAKE_SUFFIX}",
            password,
            (acl.INTAKE_ROLE,),
            "bridge intake",
            f"{bridge_id}{INTAKE_SUFFIX}",
        ),
    ]


def _pw() -> str:
    return secrets.token_urlsafe(18)


@dataclass
class VenueSecrets:
    """Everything secret that `plaza up` generates once per data directory."""

    bridge: str = field(default_factory=_pw)
    api: str = field(default_factory=_pw)
    observer: str = field(default_factory=_pw)
    admin: str = field(default_factory=_pw)
    players: dict[str, str] = field(default_factory=lambda: {p: _pw() for p in DEMO_PLAYERS})
    devices: dict[str, str] = field(default_factory=dict)
    #: the simulator's players (DIR/players.json): accounts like the demo players', played
    #: by `plaza sim --players`, never handed to people
    sim_players: dict[str, str] = field(default_factory=dict)
    #: the api's JWT signing key
    jwt: str = field(default_factory=lambda: secrets.token_urlsafe(48))

    def ensure_devices(self, device_ids: list[str]) -> None:
        for device in device_ids:
            self.devices.setdefault(device, _pw())

    def ensure_sim_players(self, count: int) -> list[str]:
        """At least ``count`` simulated players (new ones get new passwords); the first
        ``count`` names."""
        names = [f"{SIM_PLAYER_PREFIX}{n:03d}" for n in range(1, count + 1)]
        for name in names:
            self.sim_players.setdefault(name, _pw())
        return names

    def people(self) -> dict[str, str]:
        """Every player account: the demo players and the simulator's."""
        return {**self.players, **self.sim_players}

    def broker_clients(self, settings: Settings) -> list[BrokerClient]:
        """Every account, each bound to its client id: the services to the ids in
        ``settings``, the observer to :data:`OBSERVER_CLIENT_ID`, machines and demo players
        to their own names."""
        clients = [
            *bridge_accounts(BRIDGE_USER, self.bridge, settings.bridge_id),
            BrokerClient(API_USER, self.api, ("svc-api",), "api service", settings.api_id),
            BrokerClient(
                OBSERVER_USER, self.observer, ("observer",), "observer", OBSERVER_CLIENT_ID
            ),
        ]
        clients += [
            BrokerClient(d, pw, (acl.device_role_name(d),), f"machine {d}", d)
            for d, pw in self.devices.items()
        ]
        clients += [
            BrokerClient(u, pw, (acl.player_role_name(u),), f"player {u}", u)
            for u, pw in self.people().items()
        ]
        return clients

    def credentials(self) -> dict[str, Any]:
        """``credentials.json``: the accounts people and tools log in with. Broker accounts
        carry their bound ``client_id`` (any other id is refused); ``admin`` is a web login."""
        return {
            "observer": {
                "username": OBSERVER_USER,
                "password": self.observer,
                "client_id": OBSERVER_CLIENT_ID,
            },
            "admin": {"username": "admin", "password": self.admin},
            "players": [
                {"username": u, "password": p, "client_id": u} for u, p in self.players.items()
            ],
        }

    def roles(self, topics: Topics) -> list[acl.Role]:
        roles = [
            acl.bridge_role(topics),
            acl.intake_role(topics),
            acl.api_role(topics),
            acl.observer_role(topics),
        ]
        roles += [acl.device_role(topics, d) for d in self.devices]
        roles += [acl.player_role(topics, u) for u in self.people()]
        return roles

    def save(self, path: Path) -> None:
        write_private(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> VenueSecrets:
        return cls(**json.loads(path.read_text()))

    @classmethod
    def load_or_create(cls, path: Path) -> VenueSecrets:
        return cls.load(path) if path.exists() else cls()


def write_private(path: Path, data: object) -> None:
    """Write JSON readable by the owner only (secrets never sit world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a leftover temp file keeps its old mode through O_CREAT
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    tmp.replace(path)
