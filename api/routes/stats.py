"""``GET /admin/stats``: the admin panel's live figures.

Machines online come from SQL; commands per minute from the command log (every decided
command is logged there); the p99 command latency from the bridge's own Prometheus histogram
(``plaza_bridge_command_seconds``), scraped on demand. The p99 is taken over the commands
between the oldest scrape of the last five minutes and now, so it moves with the venue rather
than averaging the bridge's whole life; ``null`` when the bridge's endpoint does not answer.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlmodel import col, func, select

from api.metrics import scrape_latency
from api.problems import responses
from api.state import AdminUser, Db, State
from plaza.tables import CommandLog, Device

log = logging.getLogger(__name__)
router = APIRouter(tags=["admin"])


class Stats(BaseModel):
    machines_online: int
    machines_total: int
    commands_per_minute: int = Field(description="commands decided in the last 60 s")
    command_p99_ms: float | None = Field(
        description="p99 command latency over the last ~5 minutes (bucket upper bound)"
    )
    p99_window_seconds: float | None


@router.get("/admin/stats", responses=responses(401, 403), summary="Live figures for the panel")
async def stats(_admin: AdminUser, state: State, session: Db) -> Stats:
    online = (
        await session.exec(select(func.count()).select_from(Device).where(col(Device.online)))
    ).one()
    total = (await session.exec(select(func.count()).select_from(Device))).one()
    since = datetime.now(UTC) - timedelta(seconds=60)
    per_minute = (
        await session.exec(
            select(func.count()).select_from(CommandLog).where(CommandLog.created_at >= since)
        )
    ).one()
    latency: float | None = None
    window: float | None = None
    port = state.settings.bridge_metrics_port
    if port:
        buckets = await scrape_latency(state.settings.http_host, port)
        if buckets is not None:
            found, window = state.latency.add(time.monotonic(), buckets)
            latency = found * 1000 if found is not None and found != float("inf") else None
    return Stats(
        machines_online=online,
        machines_total=total,
        commands_per_minute=per_minute,
        command_p99_ms=latency,
        p99_window_seconds=window,
    )
