"""The venue floor (issue 18): players call staff; staff acknowledge and resolve the calls,
set the state of machines without an agent, and check players in at the desk.

A call is a venue-level ``call_staff`` command to the bridge (``venue/requests/api`` with
``on_behalf_of``), like a player's MQTT client sends on ``venue/requests/{user}``; staff's
steps and a machine's state are admin commands (``admin/requests``). A check-in at the desk
is the ``check_in`` a machine sends, for the approved reservation the code names.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from sqlmodel import col, select

from api import commands
from api.problems import ApiError, responses
from api.routes.reservations import (
    BRIDGE_ERRORS,
    IdempotencyKey,
    send_device,
    send_venue,
)
from api.schemas import DEVICE_ID, ReservationPublic, Strict
from api.state import AdminUser, CurrentUser, Db, State
from plaza.help import WAITING
from plaza.help_calls import call_public
from plaza.messages import (
    HELP_MESSAGE_MAX,
    AdminCommand,
    HelpCall,
    HelpTopic,
    ManagedState,
    OnBehalfOf,
    ReservationRequest,
    VenueRequest,
)
from plaza.tables import Device, HelpCallRow, Reservation

router = APIRouter(tags=["help"])
HelpId = Annotated[str, Path(pattern=r"^[a-f0-9]{1,32}$")]
CHANGES = responses(401, 403, 404, *BRIDGE_ERRORS)
#: the most calls one list returns (newest first)
LIST_LIMIT = 200


class HelpIn(Strict):
    device_id: str = Field(pattern=DEVICE_ID, description="the machine the player is at")
    topic: HelpTopic
    message: str | None = Field(default=None, max_length=HELP_MESSAGE_MAX)


class HelpOut(BaseModel):
    id: str
    user: str
    device_id: str
    topic: str
    message: str | None
    status: str
    created_at: datetime
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None


class StateIn(Strict):
    state: ManagedState
    fault: str | None = Field(default=None, max_length=200, description="state fault: what")


class DeskCheckIn(Strict):
    device_id: str = Field(pattern=DEVICE_ID)
    code: str = Field(pattern=r"^[0-9A-Za-z]{1,16}$", description="the reservation's code")


def _out(call: HelpCall) -> HelpOut:
    def when(ts: float | None) -> datetime | None:
        return datetime.fromtimestamp(ts, UTC) if ts is not None else None

    return HelpOut(
        id=call.id,
        user=call.user,
        device_id=call.device_id,
        topic=call.topic,
        message=call.message,
        status=call.status,
        created_at=datetime.fromtimestamp(call.created_at, UTC),
        acknowledged_at=when(call.acknowledged_at),
        acknowledged_by=call.acknowledged_by,
        resolved_at=when(call.resolved_at),
        resolved_by=call.resolved_by,
    )


async def _calls(session: Db, player: str | None, waiting: bool) -> list[HelpOut]:
    await session.commit()  # a fresh snapshot: the bridge may have committed meanwhile
    query = select(HelpCallRow)
    if player is not None:
        query = query.where(HelpCallRow.player == player)
    if waiting:
        query = query.where(col(HelpCallRow.status).in_([s.value for s in WAITING]))
    query = query.order_by(col(HelpCallRow.created_at).desc()).limit(LIST_LIMIT)
    return [_out(call_public(r)) for r in (await session.exec(query)).all()]


@router.post(
    "/help",
    responses=responses(401, 403, 404, 409, 422, 429, 502, 503, 504),
    summary="Call staff to a machine (one open call at a time; a second returns it)",
)
async def call_staff(
    body: HelpIn, user: CurrentUser, state: State, idempotency_key: IdempotencyKey = None
) -> HelpOut:
    """Staff get a ``help_requested`` alert. While the call is open, calling again returns
    it (no second alert); past ``PLAZA_HELP_PER_HOUR`` calls an hour: 429
    ``too_many_help_calls`` with ``Retry-After``."""
    if user.role != "player":
        raise ApiError(403, "forbidden", "staff do not call staff")
    request = VenueRequest(
        request_id=commands.request_id(idempotency_key),
        op="call_staff",
        device_id=body.device_id,
        topic=body.topic,
        message=body.message,
        on_behalf_of=OnBehalfOf(user=user.username, role="player"),
    )
    reply = await send_venue(state, user, idempotency_key, request)
    if reply.help is None:
        raise ApiError(502, "bridge_error", "the bridge answered without the call")
    return _out(reply.help)


@router.get("/help", responses=responses(401), summary="My help calls, newest first")
async def my_calls(user: CurrentUser, session: Db) -> list[HelpOut]:
    return await _calls(session, user.username, waiting=False)


@router.get(
    "/admin/help",
    tags=["admin"],
    responses=responses(401, 403, 422),
    summary="Help calls: waiting ones (open or acknowledged), or all",
)
async def list_calls(
    _admin: AdminUser,
    session: Db,
    status: Annotated[Literal["waiting", "all"], Query()] = "waiting",
) -> list[HelpOut]:
    return await _calls(session, None, waiting=status == "waiting")


async def _step(
    op: Literal["help_ack", "help_resolve"], help_id: str, admin: AdminUser, state: State
) -> HelpOut:
    command = AdminCommand(
        request_id=uuid.uuid4().hex, op=op, help_id=help_id, author=admin.username
    )
    reply = await commands.admin(state, command)
    if reply.help is None:
        raise ApiError(502, "bridge_error", "the bridge answered without the call")
    return _out(reply.help)


@router.post(
    "/admin/help/{help_id}/ack",
    tags=["admin"],
    responses=CHANGES,
    summary="Acknowledge a call: the player is told someone is on the way",
)
async def acknowledge(help_id: HelpId, admin: AdminUser, state: State) -> HelpOut:
    return await _step("help_ack", help_id, admin, state)


@router.post(
    "/admin/help/{help_id}/resolve",
    tags=["admin"],
    responses=CHANGES,
    summary="Resolve a call: the player is told",
)
async def resolve(help_id: HelpId, admin: AdminUser, state: State) -> HelpOut:
    return await _step("help_resolve", help_id, admin, state)


@router.put(
    "/admin/devices/{device_id}/state",
    tags=["admin"],
    responses=responses(401, 403, 404, 409, 422, 502, 503, 504),
    summary="Set the state of a machine without an agent (idle, in use, fault)",
)
async def set_state(
    device_id: Annotated[str, Path(pattern=DEVICE_ID)],
    body: StateIn,
    admin: AdminUser,
    state: State,
) -> dict[str, str]:
    """Through the bridge, like every change: every board shows it at once. A machine with an
    agent reports its own state: 409 ``has_agent``."""
    command = AdminCommand(
        request_id=uuid.uuid4().hex,
        op="device_state",
        device_id=device_id,
        state=body.state,
        fault=body.fault,
        author=admin.username,
    )
    await commands.admin(state, command)
    return {"device_id": device_id, "state": body.state}


@router.post(
    "/admin/reservations/check-in",
    tags=["admin"],
    responses=responses(401, 403, 404, 409, 422, *BRIDGE_ERRORS),
    summary="Check a player in at the desk by their reservation's code",
)
async def desk_check_in(
    body: DeskCheckIn,
    admin: AdminUser,
    state: State,
    session: Db,
    idempotency_key: IdempotencyKey = None,
) -> ReservationPublic:
    """The same check-in a machine makes when the player types the code on it, for machines
    without an agent (and any other): a wrong code is 422 ``bad_code``; too early 409
    ``too_early``, as on the machine."""
    await session.commit()  # a fresh snapshot
    if await session.get(Device, body.device_id) is None:
        raise ApiError(404, "not_found", f"no machine {body.device_id!r}")
    row = (
        await session.exec(
            select(Reservation).where(
                Reservation.device_id == body.device_id,
                Reservation.code == body.code,
                Reservation.status == "approved",
            )
        )
    ).first()
    if row is None:
        raise ApiError(422, "bad_code", "no approved reservation of this machine has this code")
    request = ReservationRequest(
        request_id=commands.request_id(idempotency_key),
        op="check_in",
        reservation_id=row.id,
        code=body.code,
        on_behalf_of=OnBehalfOf(user=admin.username, role="admin"),
    )
    return await send_device(state, session, admin, idempotency_key, body.device_id, request)
