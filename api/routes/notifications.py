"""A player's notifications from SQL: the backlog after a seq (for a client that lost its
session, and the seed's "backup polling") and read receipts. The same rows the bridge
published; nobody reads anyone else's."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlmodel import col, func, select

from api.problems import responses
from api.schemas import Seq, Strict
from api.state import CurrentUser, Db, State
from plaza.inbox import mark_read
from plaza.messages import NotificationAck
from plaza.tables import Notification

router = APIRouter(prefix="/me/notifications", tags=["notifications"])


class NotificationPublic(BaseModel):
    seq: int
    id: str
    type: str
    title: str
    message: str
    priority: str
    created_at: datetime
    read_at: datetime | None
    reservation: dict[str, Any] | None = None
    offer: dict[str, Any] | None = None
    #: ``waitlist_offer``: the held machine; ``booking_suspended``: until when (Unix seconds)
    waitlist_offer: dict[str, Any] | None = None
    until: float | None = None
    #: ``session_ending``: the extension on offer ``{reservation_id, until}``, or when the
    #: machine's next booking starts (Unix seconds)
    extend: dict[str, Any] | None = None
    next_starts_at: float | None = None


class NotificationPage(BaseModel):
    items: list[NotificationPublic]
    unread: int
    last_seq: int = Field(description="the highest seq the player has (0: none yet)")


class ReadIn(Strict):
    """``up_to``, ``seqs`` or both; a receipt with neither marks nothing."""

    up_to: Seq | None = Field(default=None, description="mark seq <= up_to read")
    seqs: list[Seq] | None = Field(default=None, min_length=1, max_length=500)


class ReadOut(BaseModel):
    marked: int
    unread: int


def _public(row: Notification) -> NotificationPublic:
    data = json.loads(row.data_json) if row.data_json else {}
    return NotificationPublic(
        seq=row.seq,
        id=row.id,
        type=row.type,
        title=row.title,
        message=row.message,
        priority=row.priority,
        created_at=row.created_at,
        read_at=row.read_at,
        reservation=data.get("reservation"),
        offer=data.get("offer"),
        waitlist_offer=data.get("waitlist_offer"),
        until=data.get("until"),
        extend=data.get("extend"),
        next_starts_at=data.get("next_starts_at"),
    )


async def _unread(session: Db, user: str) -> int:
    query = (
        select(func.count())
        .select_from(Notification)
        .where(Notification.user == user, col(Notification.read_at).is_(None))
    )
    return (await session.exec(query)).one()


@router.get("", responses=responses(401, 422), summary="My notifications after a seq")
async def backlog(
    user: CurrentUser,
    session: Db,
    after: Annotated[
        int | None,
        Query(ge=0, le=2**53, description="the last seq you have; without it: the latest"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> NotificationPage:
    """In seq order: those after ``after`` (page on with the last seq of a full page), or,
    without ``after``, the latest ``limit`` (a page that holds nothing yet)."""
    query = select(Notification).where(Notification.user == user.username)
    if after is not None:
        query = query.where(Notification.seq > after).order_by(col(Notification.seq))
        rows = list((await session.exec(query.limit(limit))).all())
    else:
        query = query.order_by(col(Notification.seq).desc())
        rows = list(reversed((await session.exec(query.limit(limit))).all()))
    last = (
        await session.exec(
            select(func.max(Notification.seq)).where(Notification.user == user.username)
        )
    ).one()
    return NotificationPage(
        items=[_public(r) for r in rows],
        unread=await _unread(session, user.username),
        last_seq=last or 0,
    )


@router.post("/read", responses=responses(401, 422), summary="Mark notifications read")
async def read(body: ReadIn, user: CurrentUser, state: State, session: Db) -> ReadOut:
    ack = NotificationAck(up_to=body.up_to, seqs=body.seqs)
    now = datetime.now(UTC)
    async with state.write() as write:
        conn = await write.connection()
        marked = await conn.run_sync(lambda c: mark_read(c, user.username, ack, now))
        await write.commit()
    return ReadOut(marked=marked, unread=await _unread(session, user.username))
