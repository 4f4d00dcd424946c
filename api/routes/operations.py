"""Notices (published by the bridge, retained, and sent to every player) and the alerts feed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, status
from sqlmodel import col, func, select

from api import commands
from api.problems import ApiError, responses
from api.schemas import AlertPage, AlertPublic, NoticeIn, NoticePublic
from api.state import AdminUser, CurrentUser, Db, State
from plaza.messages import NoticeBody
from plaza.tables import Alert, NoticeRow

router = APIRouter()


def _notice(row: NoticeRow) -> NoticePublic:
    return NoticePublic.model_validate(row, from_attributes=True)


@router.post(
    "/notices",
    tags=["notices"],
    status_code=status.HTTP_201_CREATED,
    responses=responses(401, 403, 422, 502, 503, 504),
    summary="Broadcast a system notice (retained on the notices topic; every player notified)",
)
async def post_notice(body: NoticeIn, admin: AdminUser, state: State, session: Db) -> NoticePublic:
    notice_id = await commands.notice(state, NoticeBody(**body.model_dump()), admin.username)
    row = await session.get(NoticeRow, notice_id)
    if row is None:
        raise ApiError(502, "bridge_error", "the bridge confirmed the notice but did not store it")
    return _notice(row)


@router.get("/notices", tags=["notices"], responses=responses(401, 422), summary="Recent notices")
async def list_notices(
    _user: CurrentUser, session: Db, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> list[NoticePublic]:
    rows = (
        await session.exec(
            select(NoticeRow).order_by(col(NoticeRow.created_at).desc()).limit(limit)
        )
    ).all()
    return [_notice(r) for r in rows]


@router.get("/alerts", tags=["admin"], responses=responses(401, 403, 422), summary="Alerts feed")
async def list_alerts(
    _admin: AdminUser,
    session: Db,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    unacknowledged: bool = False,
) -> AlertPage:
    query = select(Alert)
    count = select(func.count()).select_from(Alert)
    if unacknowledged:
        query = query.where(col(Alert.acknowledged_at).is_(None))
        count = count.where(col(Alert.acknowledged_at).is_(None))
    rows = (
        await session.exec(
            query.order_by(col(Alert.created_at).desc(), col(Alert.id)).offset(offset).limit(limit)
        )
    ).all()
    total = (await session.exec(count)).one()
    return AlertPage(
        items=[AlertPublic.model_validate(r, from_attributes=True) for r in rows], total=total
    )


@router.post(
    "/alerts/{alert_id}/ack",
    tags=["admin"],
    responses=responses(401, 403, 404),
    summary="Acknowledge an alert",
)
async def ack_alert(alert_id: str, _admin: AdminUser, state: State) -> AlertPublic:
    async with state.write() as session:
        row = await session.get(Alert, alert_id)
        if row is None:
            raise ApiError(404, "not_found", f"no alert {alert_id!r}")
        if row.acknowledged_at is None:
            row.acknowledged_at = datetime.now(UTC)
            session.add(row)
            await session.commit()
        return AlertPublic.model_validate(row, from_attributes=True)
