"""/healthz and /readyz through httpx's ASGITransport, with the app's real lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from plaza.db import make_engine
from plaza.settings import Settings
from tests.conftest import BrokerHandle

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def client_for(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://plaza") as client:
            yield app, client


async def wait_ready(client: httpx.AsyncClient) -> httpx.Response:
    for _ in range(100):
        reply = await client.get("/readyz")
        if reply.status_code == 200:
            return reply
        await asyncio.sleep(0.05)
    return reply


async def test_healthz_answers_ok(api_settings: Settings) -> None:
    async for _app, client in client_for(api_settings):
        reply = await client.get("/healthz")
        assert reply.status_code == 200
        assert reply.json() == {"status": "ok"}


async def test_readyz_is_ready_when_broker_and_database_answer(
    broker: BrokerHandle, api_settings: Settings
) -> None:
    async for _app, client in client_for(api_settings):
        reply = await wait_ready(client)
        assert reply.status_code == 200
        assert reply.json() == {"status": "ready", "database": True, "broker": True}


async def test_readyz_says_503_and_why_when_the_broker_is_down(
    broker: BrokerHandle, api_settings: Settings
) -> None:
    async for _app, client in client_for(api_settings):
        assert (await wait_ready(client)).status_code == 200
        broker.broker.stop()
        for _ in range(100):
            reply = await client.get("/readyz")
            if reply.status_code == 503:
                break
            await asyncio.sleep(0.05)
        assert reply.status_code == 503
        assert reply.json() == {"status": "not_ready", "database": True, "broker": False}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_readyz_says_503_when_the_database_is_unreachable(
    broker: BrokerHandle, api_settings: Settings, tmp_path: Path
) -> None:
    async for app, client in client_for(api_settings):
        assert (await wait_ready(client)).status_code == 200
        # Swap in an engine whose database path is a directory: every connect fails.
        (tmp_path / "blocker").mkdir()
        state = app.state.plaza
        await state.engine.dispose()
        state.engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'blocker'}")
        reply = await client.get("/readyz")
        assert reply.status_code == 503
        assert reply.json()["database"] is False
        assert reply.headers["content-type"] == "application/json"
