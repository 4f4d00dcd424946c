"""The waitlist: join a line for a kind of machine, see your place move, take or decline the
machine held for you, leave; staff see every line and move or remove entries.

Every change is a venue-level command to the bridge (``venue/requests/api`` with
``on_behalf_of``), like a player's MQTT client sends on ``venue/requests/{user}``; taking an
offer is a ``reserve`` with ``offer_id`` on the held machine. Lines are read from SQL
(:func:`plaza.lines.read_lines`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path

from api import commands
from api.problems import ApiError, responses
from api.routes.reservations import (
    BRIDGE_ERRORS,
    IdempotencyKey,
    act_for,
    send_device,
    send_venue,
    visible,
)
from api.schemas import (
    OfferOut,
    ReservationPublic,
    WaitlistEntryOut,
    WaitlistJoin,
    WaitlistMoveIn,
)
from api.state import AdminUser, CurrentUser, Db, State
from plaza.lines import Lines, read_lines
from plaza.messages import ReservationRequest, VenueRequest, WaitlistEntryPublic

router = APIRouter(prefix="/waitlist", tags=["waitlist"])
EntryId = Annotated[str, Path(pattern=r"^[a-z0-9]{1,32}$")]
CHANGES = responses(401, 403, 404, *BRIDGE_ERRORS)


def _out(entry: WaitlistEntryPublic) -> WaitlistEntryOut:
    def when(ts: float | None) -> datetime | None:
        return datetime.fromtimestamp(ts, UTC) if ts is not None else None

    offer = entry.offer
    return WaitlistEntryOut(
        id=entry.id,
        kind=entry.kind,
        zone=entry.zone,
        minutes=entry.minutes,
        status=entry.status,
        position=entry.position,
        expected_at=when(entry.expected_at),
        offer=(
            OfferOut(
                offer_id=offer.offer_id,
                device_id=offer.device_id,
                starts_at=datetime.fromtimestamp(offer.starts_at, UTC),
                ends_at=datetime.fromtimestamp(offer.ends_at, UTC),
                hold_until=datetime.fromtimestamp(offer.hold_until, UTC),
            )
            if offer
            else None
        ),
        user=entry.user,
    )


async def _lines(session: Db, players: list[str] | None) -> Lines:
    """Every line (``players`` None), or the lines ``players`` stand in."""
    await session.commit()  # a fresh snapshot: the bridge may have committed meanwhile
    conn = await session.connection()
    now = datetime.now(UTC)
    if players is None:
        return await conn.run_sync(lambda c: read_lines(c, now))
    return await conn.run_sync(lambda c: read_lines(c, now, kinds=(), players=players))


async def _after(session: Db, entry: WaitlistEntryPublic | None, owner: str) -> WaitlistEntryOut:
    """The entry the bridge answered with, with its place and expected turn as SQL has them
    now (the bridge's reply has no expected turn)."""
    if entry is None:
        raise ApiError(502, "bridge_error", "the bridge answered without the entry")
    lines = await _lines(session, [owner])
    current = next((e for e in lines.entries if e.id == entry.id), None)
    return _out(lines.public(current) if current is not None else entry)


@router.get("", responses=responses(401), summary="Your places in line (staff: every line)")
async def list_waitlist(user: CurrentUser, session: Db) -> list[WaitlistEntryOut]:
    """Live entries (waiting, offered), each line in order, with the place (1: the head),
    the expected turn (an estimate from the current reservations' ends) and a held offer."""
    admin = user.role == "admin"
    lines = await _lines(session, None if admin else [user.username])
    shown = lines.entries if admin else [e for e in lines.entries if e.user == user.username]
    return [_out(lines.public(e, with_user=admin)) for e in shown]


@router.post("", responses=CHANGES, summary="Join the line for a kind of machine")
async def join_waitlist(
    body: WaitlistJoin,
    user: CurrentUser,
    state: State,
    session: Db,
    idempotency_key: IdempotencyKey = None,
) -> WaitlistEntryOut:
    """When a machine of ``kind`` (and ``zone``) is free for ``minutes``, the head of the line
    gets a ``waitlist_offer`` notification and the machine is held for them for
    ``PLAZA_WAITLIST_HOLD``; ``POST /waitlist/offers/{offer_id}/take`` books it."""
    behalf = await act_for(session, user, body.user)
    request = VenueRequest(
        request_id=commands.request_id(idempotency_key),
        op="join_waitlist",
        kind=body.kind,
        zone=body.zone,
        minutes=body.minutes,
        on_behalf_of=behalf,
    )
    reply = await send_venue(state, user, idempotency_key, request)
    return await _after(session, reply.entry, behalf.user)


@router.delete("/{entry_id}", responses=CHANGES, summary="Leave the line (staff: remove anyone)")
async def leave_waitlist(
    entry_id: EntryId,
    user: CurrentUser,
    state: State,
    session: Db,
    idempotency_key: IdempotencyKey = None,
) -> WaitlistEntryOut:
    """A machine held for the entry is let go (the next in line gets it)."""
    request = VenueRequest(
        request_id=commands.request_id(idempotency_key),
        op="leave_waitlist",
        entry_id=entry_id,
        on_behalf_of=await act_for(session, user, None),
    )
    reply = await send_venue(state, user, idempotency_key, request)
    return await _after(session, reply.entry, user.username)


@router.post("/{entry_id}/move", responses=CHANGES, summary="Move an entry in its line (staff)")
async def move_waitlist_entry(
    entry_id: EntryId,
    body: WaitlistMoveIn,
    admin: AdminUser,
    state: State,
    session: Db,
    idempotency_key: IdempotencyKey = None,
) -> WaitlistEntryOut:
    request = VenueRequest(
        request_id=commands.request_id(idempotency_key),
        op="move_waitlist_entry",
        entry_id=entry_id,
        position=body.position,
        on_behalf_of=await act_for(session, admin, None),
    )
    reply = await send_venue(state, admin, idempotency_key, request)
    if reply.entry is None:
        raise ApiError(502, "bridge_error", "the bridge answered without the entry")
    lines = await _lines(session, None)
    current = next((e for e in lines.entries if e.id == entry_id), None)
    return _out(lines.public(current, with_user=True) if current else reply.entry)


@router.post(
    "/offers/{offer_id}/take",
    responses=CHANGES,
    summary="Book the machine held for you (a reserve with offer_id)",
)
async def take_offer(
    offer_id: EntryId,
    user: CurrentUser,
    state: State,
    session: Db,
    idempotency_key: IdempotencyKey = None,
) -> ReservationPublic:
    """Before ``hold_until`` (else 409 ``offer_expired``); the reservation is pending, or
    approved where the machine auto-approves."""
    row = await visible(session, user, offer_id)
    request = ReservationRequest(
        request_id=commands.request_id(idempotency_key),
        op="reserve",
        offer_id=row.id,
        on_behalf_of=await act_for(session, user, None),
    )
    return await send_device(state, session, user, idempotency_key, row.device_id, request)


@router.post(
    "/offers/{offer_id}/decline",
    responses=CHANGES,
    summary="Let the machine held for you go to the next in line",
)
async def decline_offer(
    offer_id: EntryId,
    user: CurrentUser,
    state: State,
    session: Db,
    idempotency_key: IdempotencyKey = None,
) -> WaitlistEntryOut:
    request = VenueRequest(
        request_id=commands.request_id(idempotency_key),
        op="decline_offer",
        offer_id=offer_id,
        on_behalf_of=await act_for(session, user, None),
    )
    reply = await send_venue(state, user, idempotency_key, request)
    return await _after(session, reply.entry, user.username)
