"""Mosquitto dynamic-security documents and control commands (pure; no I/O).

``document()`` writes the plugin's JSON file directly, so a broker starts already configured
(no window in which it runs without accounts). Passwords are hashed as the plugin does:
PBKDF2-HMAC-SHA512 over the decoded salt, base64 encoded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from plaza.acl import Acl, Role

ITERATIONS = 101
#: a browser session's broker account is ``{user}~{session}`` (no user or machine name has it)
SESSION_SEPARATOR = "~"
#: Everything denied by default except unsubscribing.
DEFAULT_ACL_ACCESS = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": True,
}


@dataclass(frozen=True, slots=True)
class BrokerClient:
    """A broker account. ``client_id`` binds it: the plugin refuses any other client id at
    CONNECT (checked on 2.0.11), so nobody can take over another connection's session."""

    username: str
    password: str
    roles: tuple[str, ...]
    textname: str = field(default="")
    client_id: str | None = None


def hash_password(password: str, salt: bytes | None = None) -> dict[str, Any]:
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": ITERATIONS,
    }


def _acl_json(acl: Acl) -> dict[str, Any]:
    return {
        "acltype": acl.acltype,
        "topic": acl.topic,
        "allow": acl.allow,
        "priority": acl.priority,
    }


def role_json(role: Role) -> dict[str, Any]:
    return {"rolename": role.name, "acls": [_acl_json(a) for a in role.acls]}


def document(clients: Iterable[BrokerClient], roles: Iterable[Role]) -> dict[str, Any]:
    """The plugin's whole configuration file."""
    return {
        "defaultACLAccess": dict(DEFAULT_ACL_ACCESS),
        "clients": [
            {
                "username": c.username,
                "textName": c.textname or c.username,
                **({"clientid": c.client_id} if c.client_id else {}),
                **hash_password(c.password),
                "roles": [{"rolename": r} for r in c.roles],
            }
            for c in clients
        ],
        "groups": [],
        "roles": [role_json(r) for r in roles],
    }


# -- control commands (sent to $CONTROL/dynamic-security/v1 by the api) ----------------------
def create_role(role: Role) -> dict[str, Any]:
    return {"command": "createRole", **role_json(role)}


def add_role_acl(role: str, acl: Acl) -> dict[str, Any]:
    return {"command": "addRoleACL", "rolename": role, **_acl_json(acl)}


def delete_role(name: str) -> dict[str, Any]:
    return {"command": "deleteRole", "rolename": name}


def create_client(client: BrokerClient) -> dict[str, Any]:
    return {
        "command": "createClient",
        "username": client.username,
        "password": client.password,
        "textname": client.textname or client.username,
        **({"clientid": client.client_id} if client.client_id else {}),
        "roles": [{"rolename": r} for r in client.roles],
    }


def set_client_id(username: str, client_id: str) -> dict[str, Any]:
    """Bind an existing account (one made before accounts were bound) to ``client_id``."""
    return {"command": "setClientId", "username": username, "clientid": client_id}


def delete_client(username: str) -> dict[str, Any]:
    return {"command": "deleteClient", "username": username}


def disable_client(username: str) -> dict[str, Any]:
    """The broker refuses the account at CONNECT and disconnects it if connected."""
    return {"command": "disableClient", "username": username}


def enable_client(username: str) -> dict[str, Any]:
    return {"command": "enableClient", "username": username}


def set_client_password(username: str, password: str) -> dict[str, Any]:
    return {"command": "setClientPassword", "username": username, "password": password}


def batch(commands: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {"commands": list(commands)}


def tagged(commands: Iterable[Mapping[str, Any]], ids: Iterable[str]) -> bytes:
    """A command list whose commands carry ``correlationData`` (what their responses are
    matched by), encoded for ``$CONTROL/dynamic-security/v1``."""
    body = batch({**c, "correlationData": i} for c, i in zip(commands, ids, strict=True))
    return json.dumps(body).encode()


def responses(payload: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(correlationData, response) of each response in a message the plugin published on
    its response topic; ValueError when it cannot be read."""
    try:
        found = json.loads(payload).get("responses", [])
    except (ValueError, AttributeError) as exc:
        raise ValueError("unreadable dynamic-security response") from exc
    return [(str(r.get("correlationData", "")), r) for r in found if isinstance(r, dict)]
