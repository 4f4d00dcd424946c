"""The api in-process (httpx ASGITransport, the app's real lifespan) against the real broker,
the real bridge and SQLite; accounts come from the demo seeding (admin, player1..3)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from plaza.mqtt import NODELAY
from plaza.settings import Settings
from tests.conftest import BrokerHandle, RunningService, running_bridge

PROBLEM = "application/problem+json"


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """REST tests run on SQLite; the SQL rules themselves are proven on both databases in
    tests/integration."""
    return f"sqlite+aiosqlite:///{tmp_path / 'plaza.db'}"


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    broker: BrokerHandle
    settings: Settings
    bridge: RunningService

    async def token(self, username: str, password: str) -> str:
        reply = await self.client.post(
            "/auth/login", json={"username": username, "password": password}
        )
        assert reply.status_code == 200, reply.text
        token = reply.json()["access_token"]
        assert isinstance(token, str)
        return token

    async def headers(self, username: str) -> dict[str, str]:
        s = self.broker.secrets
        password = s.admin if username == "admin" else s.players[username]
        return {"Authorization": f"Bearer {await self.token(username, password)}"}


async def wait_ready(client: httpx.AsyncClient) -> None:
    for _ in range(200):
        if (await client.get("/readyz")).status_code == 200:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the api did not become ready")


@pytest.fixture
async def bridge(bridge_settings: Settings, seeded: list[str]) -> AsyncIterator[RunningService]:
    """The bridge with its metrics endpoint on a free port (the admin stats read it)."""
    async with running_bridge(bridge_settings, metrics_port=0) as running:
        yield running


@pytest.fixture
async def api(
    api_settings: Settings, broker: BrokerHandle, bridge: RunningService
) -> AsyncIterator[Api]:
    port = bridge.service.metrics_port
    assert port
    api_settings = api_settings.model_copy(update={"bridge_metrics_port": port})
    async with running_api(api_settings, broker, bridge) as running:
        yield running


@contextlib.asynccontextmanager
async def running_api(
    api_settings: Settings, broker: BrokerHandle, bridge: RunningService
) -> AsyncIterator[Api]:
    """The api in-process (its real lifespan), ready, with a client."""
    app = create_app(api_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://plaza") as client:
            await wait_ready(client)
            yield Api(app, client, broker, api_settings, bridge)


def assert_problem(reply: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith(PROBLEM)
    body = reply.json()
    assert isinstance(body, dict)
    assert body["code"] == code
    assert body["status"] == status
    assert body["type"] == f"/problems/{code}"
    assert body["detail"]
    return body


async def until_dropped(client: aiomqtt.Client) -> None:
    """Read until the broker drops the connection (raises MqttError), at most 5 s."""
    async with asyncio.timeout(5):
        async for _ in client.messages:
            pass


def ws_client(api: Api, creds: dict[str, str]) -> aiomqtt.Client:
    return aiomqtt.Client(
        api.broker.host,
        api.broker.ws_port,
        username=creds["username"],
        password=creds["password"],
        identifier=creds["client_id"],
        transport="websockets",
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=NODELAY,
        timeout=5,
    )
