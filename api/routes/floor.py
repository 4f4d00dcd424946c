"""The floor map (anyone logged in reads it; admins replace the zones) and the occupancy
report (admins).

Zones live only in SQL: every screen loads them with ``GET /floor`` when it starts and on
every reconnect, and a ``PUT /floor`` that commits is announced on ``events/floor`` with the
whole floor (``FloorEvent``), so open screens redraw it at once. An announcement that cannot
be sent (the api's broker link is down) is logged; screens then see the zones on their next
reconnect or reload, as SQL has them. A machine's place is part of its row
(``PATCH /devices/{id}`` with ``x``, ``y``) and reaches every screen live in its board entry
(``pos``), like any other change.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Response
from sqlalchemy import delete
from sqlmodel import col, select

from api.link import LinkDown
from api.problems import ApiError, responses, too_many
from api.schemas import (
    FloorIn,
    FloorPublic,
    FloorZonePublic,
    HeatCell,
    UtilizationPublic,
    ZoneHourPublic,
)
from api.state import AdminUser, CurrentUser, Db, State
from plaza import floormap, history, utilization
from plaza.messages import FloorEvent, FloorSnapshot
from plaza.tables import Device, FloorZone, from_timestamp

router = APIRouter()
log = logging.getLogger(__name__)


def _public(rows: list[FloorZone]) -> FloorPublic:
    return FloorPublic(
        size=floormap.FLOOR_SIZE,
        zones=[
            FloorZonePublic(
                id=r.id, name=r.name, outline=[(x, y) for x, y in json.loads(r.outline_json)]
            )
            for r in rows
        ],
    )


async def _zones(session: Db) -> list[FloorZone]:
    return list((await session.exec(select(FloorZone).order_by(col(FloorZone.id)))).all())


@router.get("/floor", tags=["floor"], responses=responses(401), summary="The floor map's zones")
async def get_floor(_user: CurrentUser, session: Db) -> FloorPublic:
    return _public(await _zones(session))


@router.put(
    "/floor",
    tags=["floor"],
    responses=responses(401, 403, 409, 422, 429),
    summary="Replace the floor map's zones (their outlines)",
)
async def put_floor(body: FloorIn, _admin: AdminUser, state: State) -> FloorPublic:
    """Announced on ``events/floor`` to every open screen once committed, so the venue has
    one budget of writes (``PLAZA_FLOOR_WRITES_BURST``, refilled at
    ``PLAZA_FLOOR_WRITES_PER_MINUTE``), charged for refused floors too: 429
    ``rate_limited`` past it."""
    wait = state.floor_budget.take("floor")
    if wait > 0:
        state.metrics.limited.labels("floor").inc()
        raise too_many("rate_limited", "too many floor changes", wait)
    try:
        zones = floormap.zones((z.id, z.name, z.outline) for z in body.zones)
    except floormap.FloorError as exc:
        raise ApiError(422, exc.code, exc.message) from exc
    async with state.floor_lock:
        async with state.write() as session:
            gone = {z.id for z in await _zones(session)} - {z.id for z in zones}
            used = sorted(
                (await session.exec(select(Device.zone).where(col(Device.zone).in_(gone)))).all()
            )
            if used:
                raise ApiError(
                    409,
                    "zone_in_use",
                    f"machines stand in {', '.join(sorted(set(used)))}: move them to another zone "
                    "before the zone goes",
                )
            await session.exec(delete(FloorZone))
            for zone in zones:
                session.add(
                    FloorZone(
                        id=zone.id,
                        name=zone.name,
                        outline_json=json.dumps([list(p) for p in zone.outline]),
                    )
                )
            await session.commit()
            public = _public(await _zones(session))
        snapshot = FloorSnapshot.model_validate_json(public.model_dump_json())
        try:
            await state.link.announce_floor(FloorEvent(floor=snapshot, timestamp=time.time()))
        except LinkDown as exc:
            log.warning("the new floor is saved but could not be announced: %s", exc)
    return public


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


@router.get(
    "/admin/utilization",
    tags=["admin"],
    response_model=UtilizationPublic,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
        **responses(401, 403, 422),
    },
    summary="Occupancy per zone and hour, the heatmap, sessions and the no-show rate",
)
async def get_utilization(
    _admin: AdminUser,
    state: State,
    session: Db,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    zone: Annotated[str | None, Query(min_length=1, max_length=40)] = None,
    format: Literal["json", "csv"] = "json",
) -> UtilizationPublic | Response:
    """``[from, to)`` (ISO 8601; default the last 7 days to the next full hour), cut into
    clock hours; at most ``MAX_DAYS`` long."""
    if end is None:
        end = _hour(datetime.now(UTC)) + timedelta(hours=1)
    if start is None:
        start = end - timedelta(days=7)
    for name, moment in (("from", start), ("to", end)):
        if moment.tzinfo is None:
            raise ApiError(422, "naive_time", f"{name} needs a time zone (e.g. Z or +09:00)")
    if end <= start:
        raise ApiError(422, "bad_range", "to must be after from")
    if end - start > timedelta(days=utilization.MAX_DAYS):
        raise ApiError(
            422, "range_too_long", f"a report covers at most {utilization.MAX_DAYS} days"
        )
    conn = await session.connection()
    figures = await history.read(
        conn,
        start=start,
        end=end,
        zone=zone,
        tz=ZoneInfo(state.settings.venue_timezone),
    )
    if format == "csv":
        return _csv(figures, start, end)
    return UtilizationPublic(
        start=start,
        end=end,
        zone=zone,
        hours=[
            ZoneHourPublic(
                zone=h.zone,
                start=from_timestamp(h.start),
                machines=h.machines,
                occupancy=round(h.occupancy, 4),
                in_use_minutes=round(h.in_use / 60, 2),
                booked_minutes=round(h.booked / 60, 2),
            )
            for h in figures.hours
        ],
        heatmap=[
            HeatCell(weekday=c.weekday, hour=c.hour, occupancy=round(c.occupancy, 4))
            for c in figures.heatmap
        ],
        sessions=figures.sessions,
        average_session_minutes=None
        if figures.average_session is None
        else round(figures.average_session / 60, 2),
        short_sessions=figures.short_sessions,
        reservations_decided=figures.decided,
        no_shows=figures.no_shows,
        no_show_rate=None if figures.no_show_rate is None else round(figures.no_show_rate, 4),
    )


def _csv(figures: utilization.Utilization, start: datetime, end: datetime) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["zone", "hour_start", "machines", "occupancy", "in_use_minutes", "booked_minutes"]
    )
    for h in figures.hours:
        writer.writerow(
            [
                h.zone,
                from_timestamp(h.start).isoformat(),
                h.machines,
                f"{h.occupancy:.4f}",
                f"{h.in_use / 60:.2f}",
                f"{h.booked / 60:.2f}",
            ]
        )
    name = f"utilization-{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
