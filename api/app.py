"""``create_app(settings)``: the FastAPI application. Nothing is built at import time.

The lifespan opens the database engine and one MQTT connection (kept alive with jittered
reconnects) and stores both on ``app.state``. ``/healthz`` says the process serves;
``/readyz`` says the broker and the database are reachable now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Literal

import aiomqtt
from fastapi import FastAPI, Request, Response
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from plaza.db import make_engine, migrate
from plaza.mqtt import Backoff, service_client
from plaza.settings import Settings

log = logging.getLogger(__name__)


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    database: bool
    broker: bool


class BrokerLink:
    """The api's MQTT connection, reconnected forever in the background."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connected = asyncio.Event()
        self.client: aiomqtt.Client | None = None

    async def run(self) -> None:
        backoff = Backoff(self.settings.reconnect_min, self.settings.reconnect_max)
        client = service_client(self.settings, "plaza-api", persistent=False)
        while True:
            try:
                async with client:
                    self.client = client
                    self.connected.set()
                    backoff.reset()
                    async for _ in client.messages:  # keeps the link observed
                        pass
            except aiomqtt.MqttError as exc:
                log.warning("api broker link lost: %s", exc)
            finally:
                self.client = None
                self.connected.clear()
            await asyncio.sleep(backoff.next_delay())


async def database_ok(engine: AsyncEngine) -> bool:
    try:
        async with asyncio.timeout(2), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:  # any failure means not ready; the reason is logged
        log.warning("readiness: database unreachable", exc_info=True)
        return False
    return True


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.db_url)
        await migrate(engine)
        link = BrokerLink(settings)
        app.state.engine = engine
        app.state.broker = link
        task = asyncio.get_running_loop().create_task(link.run(), name="api-broker-link")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await engine.dispose()

    app = FastAPI(
        title="GamePlaza API",
        version="0.1.0",
        summary="Admin and player REST API of the GamePlaza realtime backbone.",
        lifespan=lifespan,
    )

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Health:
        """The process is up and serving requests."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        tags=["ops"],
        responses={503: {"model": Readiness, "description": "broker or database unreachable"}},
    )
    async def readyz(request: Request, response: Response) -> Readiness:
        """Ready when the database answers and the broker connection is up."""
        db = await database_ok(request.app.state.engine)
        mqtt = request.app.state.broker.connected.is_set()
        if not (db and mqtt):
            response.status_code = 503
        return Readiness(status="ready" if db and mqtt else "not_ready", database=db, broker=mqtt)

    return app
