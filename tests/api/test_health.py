"""/healthz and /readyz through httpx's ASGITransport, with the app's real lifespan."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from plaza.db import make_engine
from plaza.messages import ServiceStatus
from plaza.settings import Settings
from plaza.topics import BRIDGE_SERVICE
from tests.conftest import BrokerHandle, close_dead_client

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
        assert reply.json() == {
            "status": "ready",
            "database": True,
            "broker": True,
            "bridge": "unknown",
        }


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
        body = reply.json()
        assert (body["status"], body["database"], body["broker"]) == ("not_ready", True, False)
        assert "broker" in body["reason"]


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


async def readiness(client: httpx.AsyncClient, want: int) -> dict[str, object]:
    """The next /readyz answer with status ``want`` (at most 5 s)."""
    for _ in range(100):
        reply = await client.get("/readyz")
        if reply.status_code == want:
            body = reply.json()
            assert isinstance(body, dict)
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"/readyz stayed {reply.status_code}: {reply.text}")


async def test_readyz_reports_the_bridge_down_when_its_status_says_offline_or_goes_stale(
    broker: BrokerHandle, api_settings: Settings
) -> None:
    """The bridge's retained status (a birth, heartbeats, a will saying offline) is what
    readiness reads; a stand-in publishes it here with the bridge's role."""
    topic = broker.topics.service_status(BRIDGE_SERVICE)
    settings = api_settings.model_copy(update={"bridge_stale_after": 2.0})

    def status(online: bool, age: float = 0.0) -> bytes:
        return ServiceStatus(online=online, ts=time.time() - age, id="plaza-bridge").encode()

    async for _app, client in client_for(settings):
        assert (await wait_ready(client)).json()["bridge"] == "unknown"  # none published yet
        async with broker.stand_in_bridge() as bridge:
            await bridge.publish(topic, status(True), qos=1, retain=True)
            assert (await readiness(client, 200))["bridge"] == "up"
            await bridge.publish(topic, status(False), qos=1, retain=True)
            down = await readiness(client, 503)
            assert (down["status"], down["bridge"]) == ("not_ready", "down")
            assert "offline" in str(down["reason"])
            await bridge.publish(topic, status(True, age=10), qos=1, retain=True)
            stale = await readiness(client, 503)
            assert stale["bridge"] == "stale"
            assert "heartbeat" in str(stale["reason"])
            await bridge.publish(topic, status(True), qos=1, retain=True)
            assert (await readiness(client, 200))["bridge"] == "up"
            await asyncio.sleep(2.5)  # no heartbeat since: stale by the clock alone
            assert (await readiness(client, 503))["bridge"] == "stale"
        # a bridge that dies without a word: the broker publishes its will
        will = aiomqtt.Will(topic, ServiceStatus(online=False).encode(), qos=1, retain=True)
        dying = broker.stand_in_bridge(will=will)
        await dying.__aenter__()
        await dying.publish(topic, status(True), qos=1, retain=True)
        assert (await readiness(client, 200))["bridge"] == "up"
        dying._client.socket().shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        assert (await readiness(client, 503))["bridge"] == "down"
        await close_dead_client(dying)
