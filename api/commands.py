"""The api's writes that go through the broker: reservation and admin commands to the bridge,
account commands to the dynamic-security plugin. Their failures become :class:`ApiError`
(translated at this boundary, ``raise ... from``)."""

from __future__ import annotations

import math
import secrets
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

from api.link import DynsecError, LinkDown, LinkError, LinkTimeout, refused
from api.problems import ApiError, ConflictOut
from api.state import AppState
from plaza import acl, dynsec
from plaza.messages import AdminCommand, NoticeBody, Reply, ReservationRequest, VenueRequest

#: the bridge's error codes (docs/protocol.md) as HTTP statuses
STATUS_FOR = {
    "not_found": 404,
    "conflict": 409,
    "invalid_transition": 409,
    "device_unavailable": 409,
    "limit_reached": 409,
    "forbidden": 403,
    "rate_limited": 429,
    "invalid": 422,
    "outside_hours": 422,
    "too_long": 422,
    "in_past": 422,
    "bad_code": 422,
    "too_early": 409,
    "suspended": 403,
    "offer_expired": 409,
    "too_many_help_calls": 429,
    "has_agent": 409,
}


def request_id(idempotency_key: str | None) -> str:
    return idempotency_key or uuid.uuid4().hex


async def _call(call: Awaitable[Reply]) -> Reply:
    try:
        return await call
    except LinkTimeout as exc:
        raise ApiError(504, "bridge_timeout", str(exc)) from exc
    except LinkDown as exc:
        raise ApiError(503, "broker_unavailable", str(exc)) from exc
    except LinkError as exc:
        raise ApiError(502, "bridge_error", str(exc)) from exc


def raise_for(reply: Reply) -> Reply:
    if reply.ok:
        return reply
    error = reply.error
    code = error.code if error else "error"
    conflict = None
    if error is not None and error.conflict is not None:
        c = error.conflict
        conflict = ConflictOut(
            reservation_id=c.reservation_id,
            starts_at=datetime.fromtimestamp(c.starts_at, UTC),
            ends_at=datetime.fromtimestamp(c.ends_at, UTC),
            status=c.status,
        )
    headers = {"Retry-After": "1"} if code == "rate_limited" else None
    if error is not None and error.retry_after is not None:
        headers = {"Retry-After": str(max(1, math.ceil(error.retry_after)))}
    until = error.until if error else None
    raise ApiError(
        STATUS_FOR.get(code, 400),
        code,
        error.message if error else "the bridge refused the command",
        headers=headers,
        conflict=conflict,
        seat=error.seat if error else None,
        until=datetime.fromtimestamp(until, UTC) if until is not None else None,
    )


async def reservation(state: AppState, device: str, request: ReservationRequest) -> Reply:
    return raise_for(await _call(state.link.reservation(device, request)))


async def venue(state: AppState, request: VenueRequest) -> Reply:
    """A venue-level command (a party, the waitlist, a suspension) to the bridge."""
    return raise_for(await _call(state.link.venue(request)))


async def admin(state: AppState, command: AdminCommand) -> Reply:
    """An admin command to the bridge (a help call's step, a machine's state)."""
    return raise_for(await _call(state.link.admin(command)))


async def sync_device(state: AppState, device: str) -> None:
    command = AdminCommand(request_id=uuid.uuid4().hex, op="sync_device", device_id=device)
    raise_for(await _call(state.link.admin(command)))


async def remove_device(state: AppState, device: str) -> None:
    command = AdminCommand(request_id=uuid.uuid4().hex, op="remove_device", device_id=device)
    reply = await _call(state.link.admin(command))
    if not reply.ok and (reply.error is None or reply.error.code != "not_found"):
        raise_for(reply)


async def notice(state: AppState, body: NoticeBody, author: str) -> str:
    """Have the bridge publish a notice; return its id (the row the bridge wrote)."""
    notice_id = uuid.uuid4().hex
    command = AdminCommand(
        request_id=notice_id, op="notice", notice=body, notice_id=notice_id, author=author
    )
    raise_for(await _call(state.link.admin(command)))
    return notice_id


# -- broker accounts -------------------------------------------------------------------------
async def _dynsec(state: AppState, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    try:
        return await state.link.dynsec(commands)
    except LinkTimeout as exc:
        raise ApiError(504, "broker_timeout", str(exc)) from exc
    except LinkDown as exc:
        raise ApiError(503, "broker_unavailable", str(exc)) from exc


def _check(responses: list[dict[str, Any]], tolerate: tuple[str, ...] = ()) -> None:
    try:
        refused(responses, tolerate=tolerate)
    except DynsecError as exc:
        raise ApiError(502, "broker_refused", f"the broker refused {exc}") from exc


async def _roles_of(state: AppState, username: str) -> list[str] | None:
    """The roles of broker account ``username``, or None when there is no such account."""
    response = (await _dynsec(state, [{"command": "getClient", "username": username}]))[0]
    if response.get("error"):
        if "not found" in str(response["error"]):
            return None
        _check([response])
    roles = response.get("data", {}).get("client", {}).get("roles", [])
    return [str(r.get("rolename")) for r in roles]


async def provision_account(
    state: AppState, username: str, role: acl.Role, password: str, client_id: str
) -> None:
    """Create broker account ``username`` holding exactly ``role``, bound to ``client_id``
    (the broker refuses it under any other id), or re-key it (and bind it, if an older
    release made it unbound). An existing account that holds any other role belongs to
    someone else: 409 ``broker_account_conflict`` (a player can never take over a machine's
    account, nor an admin a player's).

    Re-keying (setClientPassword) disconnects the account's live connection in Mosquitto
    2.0.11; that is why every browser session has an account of its own."""
    existing = await _roles_of(state, username)
    if existing is not None and existing != [role.name]:
        raise ApiError(
            409,
            "broker_account_conflict",
            f"the broker account {username!r} belongs to someone else",
        )
    responses = await _dynsec(state, [dynsec.create_role(role)])
    _check(responses, tolerate=("already exists",))
    if responses[0].get("error"):
        # An older release may have made the role with fewer rights: add what is missing
        # (an ACL it already has is refused, which is fine).
        await _dynsec(state, [dynsec.add_role_acl(role.name, acl) for acl in role.acls])
    if existing is None:
        client = dynsec.BrokerClient(username, password, (role.name,), client_id=client_id)
        _check(await _dynsec(state, [dynsec.create_client(client)]))
    else:
        rekey = [
            dynsec.set_client_id(username, client_id),
            dynsec.set_client_password(username, password),
        ]
        _check(await _dynsec(state, rekey))


async def revoke_accounts(state: AppState, usernames: list[str], role_name: str | None) -> None:
    """Delete broker accounts (the broker disconnects them) and, if given, their role."""
    commands: list[dict[str, Any]] = [dynsec.delete_client(u) for u in usernames]
    if role_name is not None:
        commands.append(dynsec.delete_role(role_name))
    if commands:
        _check(await _dynsec(state, commands), tolerate=("not found",))


def new_secret() -> str:
    return secrets.token_urlsafe(24)
