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

from fastapi import APIRouter, Header, Query
from sqlmodel import col, or_, select

from api import commands, idempotency
from api.problems import ApiError, responses
from api.schemas import ReservationCreate, ReservationPage, ReservationPublic
from api.state import CurrentUser, Db, State
from plaza.messages import OnBehalfOf, ReservationRequest
from plaza.messages import ReservationPublic as WireReservation
from plaza.tables import Reservation, User
from plaza.tables import as_utc as _aware

router = APIRouter(prefix="/reservations", tags=["reservations"])
Status = Literal[
    "pending", "approved", "checked_in", "completed", "cancelled", "rejected", "no_show"
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


async def _visible(session: Db, user: CurrentUser, reservation_id: str) -> Reservation:
    row = await session.get(Reservation, reservation_id)
    if row is None or (user.role != "admin" and row.player != user.username):
        raise ApiError(404, "not_found", f"no reservation {reservation_id!r}")
    return row


@router.get("/{reservation_id}", responses=responses(401, 404), summary="One reservation")
async def get_reservation(reservation_id: str, user: CurrentUser, session: Db) -> ReservationPublic:
    return _public(await _visible(session, user, reservation_id), private=True)


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
    behalf = OnBehalfOf(user=user.username, role="admin" if user.role == "admin" else "player")
    if body.user is not None and body.user != user.username:
        if user.role != "admin":
            raise ApiError(403, "forbidden", "players book for themselves only")
        if (await session.exec(select(User).where(User.username == body.user))).first() is None:
            raise ApiError(404, "not_found", f"no account {body.user!r}")
        # the player's rules (overlaps, cap) apply; the player hears of it as of any change
        # someone else made
        behalf = OnBehalfOf(user=body.user, role="player", by=user.username)
    request = ReservationRequest(
        request_id=commands.request_id(idempotency_key),
        op="reserve",
        starts_at=_aware(body.starts_at).timestamp(),
        ends_at=_aware(body.ends_at).timestamp(),
        on_behalf_of=behalf,
        replaces=body.replaces,
    )
    return await _send(state, session, user, idempotency_key, body.device_id, request)


async def _send(
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
    row = await _visible(session, user, reservation_id)
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
    return await _send(state, session, user, key, row.device_id, request)


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
