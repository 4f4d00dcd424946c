"""Wire requests as the rules' commands: what a request on a machine's topic or on the
venue's own topic asks for, as a :class:`plaza.rules.Command` (pure; no I/O).

A ``reserve`` carrying ``offer_id`` takes a waitlist offer (:data:`plaza.rules.Op.TAKE` on the
held reservation); a ``move`` names its destination machine in ``device_id``. Venue requests
name no machine: their command's ``device_id`` is empty.
"""

from __future__ import annotations

import json

from plaza import rules
from plaza.messages import OnBehalfOf, ReservationRequest, VenueRequest
from plaza.tables import from_timestamp


def device_command(request: ReservationRequest, actor: rules.Actor, device: str) -> rules.Command:
    """The command of a request on ``devices/{device}/requests/{user}``."""
    take = request.op == "reserve" and request.offer_id is not None
    return rules.Command(
        op=rules.Op.TAKE if take else rules.Op(request.op),
        actor=actor,
        device_id=device,
        reservation_id=request.offer_id if take else request.reservation_id,
        starts_at=from_timestamp(request.starts_at) if request.starts_at is not None else None,
        ends_at=from_timestamp(request.ends_at) if request.ends_at is not None else None,
        code=request.code,
        replaces=request.replaces,
        to_device=request.device_id if request.op == "move" else None,
        initiated_by=_by(request.on_behalf_of),
    )


def venue_command(request: VenueRequest, actor: rules.Actor) -> rules.Command:
    """The command of a request on ``venue/requests/{user}``."""
    return rules.Command(
        op=rules.Op(request.op),
        actor=actor,
        device_id="",
        reservation_id=request.offer_id,
        starts_at=from_timestamp(request.starts_at) if request.starts_at is not None else None,
        ends_at=from_timestamp(request.ends_at) if request.ends_at is not None else None,
        seats=request.seats,
        devices=tuple(request.devices or ()),
        kind=request.kind,
        zone=request.zone,
        minutes=request.minutes,
        party_id=request.party_id,
        entry_id=request.entry_id,
        position=request.position,
        subject=request.user,
        initiated_by=_by(request.on_behalf_of),
    )


def _by(behalf: OnBehalfOf | None) -> str | None:
    return behalf.by if behalf is not None else None


def request_key(user: str, request_id: str, behalf: OnBehalfOf | None) -> str:
    """The idempotency key: per requester, and per person the api acts for."""
    if behalf is not None and behalf.by:
        return f"{user}:{behalf.by}>{behalf.user}:{request_id}"
    if behalf is not None:
        return f"{user}:{behalf.user}:{request_id}"
    return f"{user}:{request_id}"


def peek_request_id(payload: bytes, max_bytes: int) -> str | None:
    """The request id of a payload that failed validation, if it has a usable one."""
    if len(payload) > max_bytes:
        return None
    try:
        data = json.loads(payload)
    except Exception:  # not JSON, too deep (RecursionError), bad UTF-8: no id to answer to
        return None
    rid = data.get("request_id") if isinstance(data, dict) else None
    return rid if isinstance(rid, str) and 0 < len(rid) <= 64 else None
