"""Reservations: lists read from SQL; every change is a command to the bridge (one write path,
one serializer), whose reply is mapped to HTTP (200, 404, 409 with the conflicting slot, 429).

Players see and cancel only their own; admins see all and approve, reject or cancel any.
``Idempotency-Key`` (optional) becomes the command's request id: the same key applies once
and gets the same answer again.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query
from sqlmodel import col, or_, select

from api import commands, idempotency
from api.problems import ApiError, responses
from api.schemas import (
    ExtendIn,
    MoveIn,
    PartyCreate,
    PartyPublic,
    ReservationCreate,
    ReservationPage,
    ReservationPublic,
)
from api.state import CurrentUser, Db, State
from plaza.messages import OnBehalfOf, Reply, ReservationRequest, VenueRequest
from plaza.messages import ReservationPublic as WireReservation
from plaza.tables import Reservation, User
from plaza.tables import as_utc as _aware

router = APIRouter(prefix="/reservations", tags=["reservations"])
Status = Literal[
    "pending",
    "approved",
    "checked_in",
    "completed",
    "cancelled",
    "rejected",
    "no_show",
    "held",
    "lapsed",
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="retry-safe key: the same key is applied once",
    ),
]
BRIDGE_ERRORS = (409, 422, 429, 502, 503, 504)


def _public(row: Reservation, *, private: bool) -> ReservationPublic:
    return ReservationPublic(
        id=row.id,
        device_id=row.device_id,
        user=row.player,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        status=row.status,
        code=row.code if private else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
        party_id=row.party_id,
        hold_until=row.hold_until,
    )


def _from_wire(
    r: WireReservation, fallback_user: str, row: Reservation | None
) -> ReservationPublic:
    """The bridge's answer, with the times of the row it wrote (the wire has none)."""
    return ReservationPublic(
        id=r.id,
        device_id=r.device_id,
        user=r.user or fallback_user,
        starts_at=datetime.fromtimestamp(r.starts_at, UTC),
        ends_at=datetime.fromtimestamp(r.ends_at, UTC),
        status=r.status,
        code=r.code,
        created_at=row.created_at if row else None,
        updated_at=row.updated_at if row else None,
        party_id=r.party_id,
        hold_until=datetime.fromtimestamp(r.hold_until, UTC) if r.hold_until else None,
    )


def _cursor(row: Reservation) -> str:
    raw = f"{row.starts_at.timestamp():.6f}|{row.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        ts, rid = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromtimestamp(float(ts), UTC), rid
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError) as exc:
        raise ApiError(422, "validation_error", "cursor: not a cursor from this api") from exc


@router.get("", responses=responses(401, 403, 422), summary="Reservations, filtered and paged")
async def list_reservations(
    user: CurrentUser,
    session: Db,
    device_id: Annotated[str | None, Query(max_length=48)] = None,
    player: Annotated[str | None, Query(alias="user", max_length=48)] = None,
    status: Annotated[list[Status] | None, Query()] = None,
    start: Annotated[datetime | None, Query(description="overlapping [start, end)")] = None,
    end: Annotated[datetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ReservationPage:
    """Ordered by start time. Players get their own only (asking for another user is 403)."""
    admin = user.role == "admin"
    if not admin:
        if player is not None and player != user.username:
            raise ApiError(403, "forbidden", "players see their own reservations only")
        player = user.username
    query = select(Reservation)
    if device_id is not None:
        query = query.where(Reservation.device_id == device_id)
    if player is not None:
        query = query.where(Reservation.player == player)
    if status:
        query = query.where(col(Reservation.status).in_(status))
    if start is not None:
        query = query.where(Reservation.ends_at > _aware(start))
    if end is not None:
        query = query.where(Reservation.starts_at < _aware(end))
    if cursor is not None:
        after_ts, after_id = _parse_cursor(cursor)
        query = query.where(
            or_(
                col(Reservation.starts_at) > after_ts,
                (col(Reservation.starts_at) == after_ts) & (col(Reservation.id) > after_id),
            )
        )
    query = query.order_by(col(Reservation.starts_at), col(Reservation.id)).limit(limit + 1)
    rows = list((await session.exec(query)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return ReservationPage(
        items=[_public(r, private=True) for r in rows],
        next_cursor=_cursor(rows[-1]) if more and rows else None,
    )


async def act_for(session: Db, user: User, player: str | None) -> OnBehalfOf:
    """Whom a command acts for: the caller, or (admins only) the player named."""
    behalf = OnBehalfOf(user=user.username, role="admin" if user.role == "admin" else "player")
    if player is None or player == user.username:
        return behalf
    if user.role != "admin":
        raise ApiError(403, "forbidden", "players act for themselves only")
    if (await session.exec(select(User).where(User.username == player))).first() is None:
        raise ApiError(404, "not_found", f"no account {player!r}")
    # the player's rules (overlaps, cap) apply; the player hears of it as of any change
    # someone else made
    return OnBehalfOf(user=player, role="player", by=user.username)


async def send_venue(state: State, caller: User, key: str | None, request: VenueRequest) -> Reply:
    """A venue-level command to the bridge (its Idempotency-Key claimed first)."""
    if key is not None:
        await idempotency.claim(state, caller.username, key, "~venue", request)
    return await commands.venue(state, request)


async def party_of(session: Db, reply: Reply, fallback: str) -> PartyPublic:
    if reply.party_id is None or not reply.reservations:
        raise ApiError(502, "bridge_error", "the bridge answered without the party")
    await session.commit()  # a fresh snapshot: the bridge committed before it answered
    ids = [r.id for r in reply.reservations]
    found = await session.exec(select(Reservation).where(col(Reservation.id).in_(ids)))
    by_id = {row.id: row for row in found.all()}
    return PartyPublic(
        party_id=reply.party_id,
        reservations=[_from_wire(r, fallback, by_id.get(r.id)) for r in reply.reservations],
    )


@router.post(
    "/party",
    responses=responses(401, 403, 404, *BRIDGE_ERRORS),
    summary="Book several machines for one slot, all or nothing (a party)",
)
async def create_party(
    body: PartyCreate,
    user: CurrentUser,
    state: State,
    session: Db,
    idempotency_key: IdempotencyKey = None,
) -> PartyPublic:
    """``seats`` machines of ``kind`` picked in one zone next to each other where they can
    be, or exactly ``devices``; every seat gets its own check-in code. A refusal books
    nothing and names the seat that failed (``seat``). The party counts once under the
    player's cap; ``POST /reservations/party/{party_id}/cancel`` cancels it whole, and
    approving one pending seat approves all of it."""
    behalf = await act_for(session, user, body.user)
    request = VenueRequest(
        request_id=commands.request_id(idempotency_key),
        op="reserve_party",
        starts_at=body.starts_at.timestamp(),
        ends_at=body.ends_at.timestamp(),
        seats=body.seats,
        kind=body.kind,
        zone=body.zone,
        devices=body.devices,
        on_behalf_of=behalf,
    )
    reply = await send_venue(state, user, idempotency_key, request)
    return await party_of(session, reply, behalf.user)


@router.post(
    "/party/{party_id}/cancel",
    responses=responses(401, 403, 404, *BRIDGE_ERRORS),
    summary="Cancel every open seat of a party (own, or any as admin)",
)
async def cancel_party(
    party_id: Annotated[str, Path(pattern=r"^[a-z0-9]{1,32}$")],
    user: CurrentUser,
    state: State,
    session: Db,
    idempotency_key: IdempotencyKey = None,
) -> PartyPublic:
    request = VenueRequest(
        request_id=commands.request_id(idempotency_key),
        op="cancel_party",
        party_id=party_id,
        on_behalf_of=await act_for(session, user, None),
    )
    reply = await send_venue(state, user, idempotency_key, request)
    return await party_of(session, reply, user.username)


async def visible(session: Db, user: CurrentUser, reservation_id: str) -> Reservation:
    row = await session.get(Reservation, reservation_id)
    if row is None or (user.role != "admin" and row.player != user.username):
        raise ApiError(404, "not_found", f"no reservation {reservation_id!r}")
    return row


@router.get("/{reservation_id}", responses=responses(401, 404), summary="One reservation")
async def get_reservation(reservation_id: str, user: CurrentUser, session: Db) -> ReservationPublic:
    return _public(await visible(session, user, reservation_id), private=True)


@router.post(
    "",
    responses=responses(401, 403, 404, *BRIDGE_ERRORS),
    summary="Reserve a machine (through the bridge, like an MQTT request)",
)
async def create_reservation(
    body: ReservationCreate,
    user: CurrentUser,
    state: State,
    session: Db,
    idempotency_key: IdempotencyKey = None,
) -> ReservationPublic:
    """For players this is the same command their MQTT client sends; it is the fallback
    when the WebSocket is down. Admins may book for a player (``user``)."""
    behalf = await act_for(session, user, body.user)
    request = ReservationRequest(
        request_id=commands.request_id(idempotency_key),
        op="reserve",
        starts_at=_aware(body.starts_at).timestamp(),
        ends_at=_aware(body.ends_at).timestamp(),
        on_behalf_of=behalf,
        replaces=body.replaces,
    )
    return await send_device(state, session, user, idempotency_key, body.device_id, request)


async def send_device(
    state: State,
    session: Db,
    caller: User,
    key: str | None,
    device_id: str,
    request: ReservationRequest,
) -> ReservationPublic:
    if key is not None:
        await idempotency.claim(state, caller.username, key, device_id, request)
    reply = await commands.reservation(state, device_id, request)
    if reply.reservation is None:
        raise ApiError(502, "bridge_error", "the bridge answered without a reservation")
    await session.commit()  # a fresh snapshot: the bridge committed before it answered
    row = await session.get(Reservation, reply.reservation.id, populate_existing=True)
    person = request.on_behalf_of.user if request.on_behalf_of else caller.username
    return _from_wire(reply.reservation, person, row)


async def _act(
    op: Literal["approve", "reject", "cancel"],
    reservation_id: str,
    user: CurrentUser,
    state: State,
    session: Db,
    key: str | None,
) -> ReservationPublic:
    row = await visible(session, user, reservation_id)
    if op != "cancel" and user.role != "admin":
        raise ApiError(403, "forbidden", f"only admins {op} reservations")
    request = ReservationRequest(
        request_id=commands.request_id(key),
        op=op,
        reservation_id=row.id,
        on_behalf_of=OnBehalfOf(
            user=user.username, role="admin" if user.role == "admin" else "player"
        ),
    )
    return await send_device(state, session, user, key, row.device_id, request)


ACTION: dict[str, Any] = {"responses": responses(401, 403, 404, *BRIDGE_ERRORS)}


@router.post("/{reservation_id}/approve", summary="Approve a pending reservation", **ACTION)
async def approve(
    reservation_id: str,
    user: CurrentUser,
    state: State,
    session: Db,
    idempotency_key: IdempotencyKey = None,
) -> ReservationPublic:
    """Re-checks conflicts: of two overlapping pending reservations only one can be approved
    (the second gets 409 with the first's slot)."""
    return await _act("approve", reservation_id, user, state, session, idempotency_key)


@router.post("/{reservation_id}/reject", summary="Reject a pending reservation", **ACTION)
async def reject(
    reservation_id: str,
    user: CurrentUser,
    state: State,
    session: Db,
    idempotency_key: IdempotencyKey = None,
) -> ReservationPublic:
    return await _act("reject", reservation_id, user, state, session, idempotency_key)


@router.post(
    "/{reservation_id}/cancel", summary="Cancel a reservation (own, or any as admin)", **ACTION
)
async def cancel(
    reservation_id: str,
    user: CurrentUser,
    state: State,
    session: Db,
    idempotency_key: IdempotencyKey = None,
) -> ReservationPublic:
    return await _act("cancel", reservation_id, user, state, session, idempotency_key)


@router.post(
    "/{reservation_id}/extend",
    summary="Lengthen a pending, approved or checked-in reservation (own, or any as admin)",
    **ACTION,
)
async def extend(
    reservation_id: str,
    body: ExtendIn,
    user: CurrentUser,
    state: State,
    session: Db,
    idempotency_key: IdempotencyKey = None,
) -> ReservationPublic:
    """If the machine is free until the new end; a checked-in session's machine is told the
    new end. Every rule applies: maximum length, opening hours, the player's own overlaps."""
    row = await visible(session, user, reservation_id)
    request = ReservationRequest(
        request_id=commands.request_id(idempotency_key),
        op="extend",
        reservation_id=row.id,
        ends_at=body.ends_at.timestamp(),
        on_behalf_of=await act_for(session, user, None),
    )
    return await send_device(state, session, user, idempotency_key, row.device_id, request)


@router.post(
    "/{reservation_id}/move",
    summary="Move a pending or approved reservation to another machine and/or slot",
    **ACTION,
)
async def move(
    reservation_id: str,
    body: MoveIn,
    user: CurrentUser,
    state: State,
    session: Db,
    idempotency_key: IdempotencyKey = None,
) -> ReservationPublic:
    """In one decision: on a conflict the original stays exactly as it was. A player's move
    of an approved reservation onto a machine that does not auto-approve is pending again."""
    row = await visible(session, user, reservation_id)
    request = ReservationRequest(
        request_id=commands.request_id(idempotency_key),
        op="move",
        reservation_id=row.id,
        device_id=body.device_id,
        starts_at=body.starts_at.timestamp() if body.starts_at else None,
        ends_at=body.ends_at.timestamp() if body.ends_at else None,
        on_behalf_of=await act_for(session, user, None),
    )
    return await send_device(state, session, user, idempotency_key, row.device_id, request)
