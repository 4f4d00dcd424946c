"""``create_app(settings)``: the FastAPI application. Nothing is built at import time.

The lifespan opens the database engine and one MQTT connection (kept alive with jittered
reconnects) and stores both on ``app.state``. ``/healthz`` says the process serves;
``/readyz`` says the broker and the database are reachable now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api import commands, idempotency, problems
from api.bodylimit import BodyLimit
from api.headers import SecurityHeaders
from api.link import BrokerLink
from api.metrics import ApiMetrics
from api.routes import (
    accounts,
    devices,
    floor,
    help,
    notifications,
    operations,
    reservations,
    stats,
    waitlist,
)
from api.security import LoginGuard, Passwords, RateLimiter, Tokens
from api.state import AppState
from plaza.db import make_engine, migrate
from plaza.mqtt import stop_task
from plaza.settings import Settings
from plaza.tables import BrokerSession
from plaza.topics import Topics

log = logging.getLogger(__name__)
WEB_ROOT = Path(__file__).resolve().parent / "web"


class Health(BaseModel):
    status: Literal["ok"]


BridgeState = Literal["up", "down", "stale", "unknown"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    database: bool
    broker: bool
    #: from the bridge's retained status: ``unknown`` when none was ever published (a bridge
    #: of a release before it published one), which does not make the api unready
    bridge: BridgeState
    reason: str | None = Field(default=None, description="what is down, when not ready")


def bridge_state(state: AppState, now: float | None = None) -> tuple[BridgeState, str | None]:
    """The bridge as its retained status shows it, and why it counts as down."""
    status = state.link.bridge_status
    if status is None:
        return "unknown", None
    if not status.online:
        return "down", "the bridge is offline (its status says so: a will or a clean stop)"
    age = (now if now is not None else time.time()) - (status.ts or 0.0)
    limit = state.settings.bridge_stale_after
    if age > limit:
        return "stale", (
            f"no heartbeat from the bridge for {age:.0f} s (PLAZA_BRIDGE_STALE_AFTER {limit:g} s)"
        )
    return "up", None


async def database_ok(engine: AsyncEngine) -> bool:
    try:
        async with asyncio.timeout(2), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:  # any failure means not ready; the reason is logged
        log.warning("readiness: database unreachable", exc_info=True)
        return False
    return True


async def expire_credentials(state: AppState) -> int:
    """Delete the broker account of every expired browser session (the broker drops its
    connection; the browser asks for credentials again and resumes its session), at most
    ``PLAZA_MQTT_EXPIRY_BATCH`` per dynamic-security command list, ``PLAZA_MQTT_EXPIRY_PAUSE``
    apart. Return how many."""
    size = state.settings.mqtt_expiry_batch
    expired = 0
    while True:
        now = datetime.now(UTC)
        async with AsyncSession(state.reader) as session:
            query = (
                select(BrokerSession.client)
                .where(BrokerSession.expires_at <= now)
                .order_by(col(BrokerSession.expires_at))
                .limit(size)
            )
            batch = sorted((await session.exec(query)).all())
        if not batch:
            return expired
        async with contextlib.AsyncExitStack() as held:
            for client in batch:  # in order: never while the same session re-keys
                await held.enter_async_context(state.session_lock(client))
            still = (  # re-keyed meanwhile: not expired any more
                col(BrokerSession.client).in_(batch),
                col(BrokerSession.expires_at) <= now,
            )
            async with AsyncSession(state.reader) as session:
                due = list((await session.exec(select(BrokerSession.client).where(*still))).all())
            if due:  # the accounts first: an account never outlives its row
                await commands.revoke_accounts(state, due, None)
                async with state.write() as session:
                    await session.exec(delete(BrokerSession).where(*still))
                    await session.commit()
        for client in batch:
            state.session_locks.pop(client, None)
        expired += len(due)
        state.metrics.browser_sessions.labels("expired").inc(len(due))
        if len(batch) < size:
            return expired
        await asyncio.sleep(state.settings.mqtt_expiry_pause)  # let other traffic through


async def credential_sweeper(state: AppState) -> None:
    """Housekeeping: expired browser accounts; idempotency keys and revoked sessions past
    their time."""
    every = min(30.0, state.settings.mqtt_credential_ttl / 2)
    while True:
        await asyncio.sleep(every)
        try:
            await idempotency.prune(state)
            await accounts.prune_revoked(state)
        except Exception:  # the database may be away: next round
            log.exception("pruning idempotency keys or revoked sessions failed")
        if not state.link.connected.is_set():
            continue
        try:
            expired = await expire_credentials(state)
        except Exception:  # the broker or database may be away: next round
            log.exception("expiring broker credentials failed")
            continue
        if expired:
            log.info("%d browser broker passwords expired", expired)


def create_app(settings: Settings) -> FastAPI:
    if settings.jwt_secret is None:
        raise ValueError("PLAZA_JWT_SECRET is not set; the api cannot sign tokens without it")
    metrics = ApiMetrics()
    state = AppState(
        settings=settings,
        topics=Topics(settings.topic_root),
        engine=make_engine(settings.db_url),
        reader=make_engine(settings.db_url, reader=True),
        link=BrokerLink(settings, metrics.observe_bridge),
        tokens=Tokens(
            settings.jwt_secret.get_secret_value(), settings.jwt_ttl, settings.session_max_age
        ),
        passwords=Passwords(),
        logins=LoginGuard(settings.login_per_minute, settings.login_burst),
        registrations=RateLimiter(settings.login_per_minute, settings.login_burst),
        metrics=metrics,
        credentials_budget=RateLimiter(
            settings.mqtt_credentials_per_minute, settings.mqtt_credentials_burst
        ),
        floor_budget=RateLimiter(settings.floor_writes_per_minute, settings.floor_writes_burst),
    )
    metrics.broker_connected.set_function(lambda: float(state.link.connected.is_set()))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await migrate(state.engine)
        async with asyncio.TaskGroup() as tg:
            link = tg.create_task(state.link.run(), name="api-broker-link")
            sweeper = tg.create_task(credential_sweeper(state), name="api-credentials")
            try:
                yield
            finally:
                await stop_task(link)
                await stop_task(sweeper)
        await state.engine.dispose()
        await state.reader.dispose()

    app = FastAPI(
        title="GamePlaza API",
        version="0.2.0",
        summary="Admin and player REST API of the GamePlaza realtime backbone.",
        description=(
            "Errors are RFC 9457 problem details (application/problem+json) with a stable "
            "`code`; docs/protocol.md lists them. Reservation changes go to the bridge as "
            "MQTT requests; lists are read from SQL."
        ),
        lifespan=lifespan,
    )
    app.state.plaza = state
    problems.install(app)
    for router in (
        accounts.router,
        devices.router,
        floor.router,
        reservations.router,
        waitlist.router,
        help.router,
        operations.router,
        stats.router,
        notifications.router,
    ):
        app.include_router(router)

    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        metrics.requests.labels(request.method, template, str(response.status_code)).inc()
        metrics.latency.labels(template).observe(time.perf_counter() - started)
        return response

    # outermost: a body over the cap is refused before any other layer reads it
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        refused=metrics.limited.labels("body_size").inc,
    )
    # around even that, so a refusal carries the security headers too (it reads no body)
    app.add_middleware(SecurityHeaders, settings=settings)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Health:
        """The process is up and serving requests."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        tags=["ops"],
        response_model_exclude_none=True,
        responses={503: {"model": Readiness, "description": "database, broker or bridge down"}},
    )
    async def readyz(response: Response) -> Readiness:
        """Ready when the database answers, the broker connection is up and the bridge's
        status is neither offline nor stale."""
        db = await database_ok(state.engine)
        mqtt = state.link.connected.is_set()
        bridge, why = bridge_state(state)
        reasons = [
            *([] if db else ["the database does not answer"]),
            *([] if mqtt else ["the api is not connected to the broker"]),
            *([why] if why else []),
        ]
        if reasons:
            response.status_code = 503
        return Readiness(
            status="not_ready" if reasons else "ready",
            database=db,
            broker=mqtt,
            bridge=bridge,
            reason="; ".join(reasons) or None,
        )

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=PlainTextResponse,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    )
    async def prometheus() -> Response:
        """Prometheus exposition: requests, latencies, bridge round trips, logins."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    mount_web_client(app)  # last: "/" must not shadow any API route
    return app


class WebFiles(StaticFiles):
    """The web client's own files only: not its npm tree nor its package manifest."""

    PRIVATE = ("node_modules", "package.json", "package-lock.json")

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        if path.split("/", 1)[0] in self.PRIVATE:
            return "", None
        return super().lookup_path(path)


def mount_web_client(app: FastAPI, root: Path = WEB_ROOT) -> None:
    """Serve the venue web client (docs/web.md) at ``/`` and mqtt.js (the npm package, as
    installed by scripts/setup.sh) at ``/vendor/mqtt/``. Mounts are not in the OpenAPI
    schema. Without node_modules the API still serves; the page then cannot go live."""
    vendor = root / "node_modules" / "mqtt" / "dist"
    if vendor.is_dir():
        app.mount("/vendor/mqtt", StaticFiles(directory=vendor), name="vendor-mqtt")
    else:
        log.warning("%s is missing (run scripts/setup.sh): the web client has no mqtt.js", vendor)
    if (root / "index.html").is_file():
        app.mount("/", WebFiles(directory=root, html=True), name="web")
    else:
        log.warning("%s/index.html is missing: the web client is not served", root)
