"""Shared fixtures: a real Mosquitto from broker-config/, SQLite and PostgreSQL, the bridge.

Mosquitto runs in a container through testcontainers when a Docker engine answers, else the
local ``mosquitto`` binary runs the same rendered configuration on free ports. PostgreSQL is a
testcontainers container when an engine answers, else the local server (127.0.0.1:5432,
database ``test`` for admin); every test gets a fresh database either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bridge.service import BridgeService
from plaza import dynsec, paho_tables
from plaza.acl import DYNSEC_COMMAND, DYNSEC_RESPONSE
from plaza.db import make_engine
from plaza.dynsec import BrokerClient
from plaza.mqtt import NODELAY, stop_task
from plaza.settings import Settings
from plaza.topics import Topics
from venue.accounts import API_USER, BRIDGE_USER, VenueSecrets, demo_fleet
from venue.broker import (
    ContainerBroker,
    LocalBroker,
    docker_engine_answers,
    start_on_free_ports,
)
from venue.seed import seed

DOCKER = docker_engine_answers()
# The test session is an entry point like `plaza bridge`: in-process services run on the same
# paho as in production (tests/unit/test_paho_properties.py sees both states).
paho_tables.install()
RACERS = 100  # extra player accounts for concurrency tests
JWT_SECRET = "test-signing-key-that-is-long-enough-0123456789"
PG_ADMIN_URL = os.environ.get("PLAZA_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- broker ----------------------------------------------------------------------------------
#: The tests' own accounts, unbound (any client id), so several can be open at once and none
#: takes a service's connection over: ``watcher`` reads like the observer, ``stand-in-bridge``
#: and ``stand-in-api`` publish what those services would while the real ones run.
TEST_ACCOUNTS = (
    BrokerClient("test-watcher", "test-watcher-pw", ("observer",)),
    BrokerClient("stand-in-bridge", "stand-in-bridge-pw", ("svc-bridge",)),
    BrokerClient("stand-in-api", "stand-in-api-pw", ("svc-api",)),
)


@dataclass
class BrokerHandle:
    broker: LocalBroker | ContainerBroker
    secrets: VenueSecrets
    topics: Topics = field(default_factory=Topics)
    #: every venue account's bound client id (``client()`` uses it unless told otherwise)
    client_ids: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.broker.host

    @property
    def port(self) -> int:
        return self.broker.port

    @property
    def ws_port(self) -> int:
        return self.broker.ws_port

    def client(self, username: str | None, password: str | None, **kw: Any) -> aiomqtt.Client:
        """A client of ``username``, under its bound client id unless ``identifier`` is
        given (tools' accounts get a random one)."""
        if username in self.client_ids:
            kw.setdefault("identifier", self.client_ids[username])
        kw.setdefault("protocol", aiomqtt.ProtocolVersion.V5)
        kw.setdefault("socket_options", NODELAY)
        kw.setdefault("timeout", 5)
        return aiomqtt.Client(self.host, self.port, username=username, password=password, **kw)

    def _tool(self, username: str, **kw: Any) -> aiomqtt.Client:
        account = next(a for a in TEST_ACCOUNTS if a.username == username)
        return self.client(account.username, account.password, **kw)

    def observer(self, **kw: Any) -> aiomqtt.Client:
        """The tests' eyes: the observer's role, any client id (several at once)."""
        return self._tool("test-watcher", **kw)

    def stand_in_bridge(self, **kw: Any) -> aiomqtt.Client:
        """The bridge's role, not its account: publishes beside a running bridge."""
        return self._tool("stand-in-bridge", **kw)

    def stand_in_api(self, **kw: Any) -> aiomqtt.Client:
        """The api's role, not its account: publishes beside a running api."""
        return self._tool("stand-in-api", **kw)

    async def add_account(self, account: BrokerClient) -> None:
        """Create one more broker account at run time, as the api does (e.g. a second
        bridge's: every account is bound to one client id)."""
        async with self.stand_in_api() as control:
            await control.subscribe(DYNSEC_RESPONSE, qos=1)
            body = dynsec.batch([dynsec.create_client(account)])
            await control.publish(DYNSEC_COMMAND, json.dumps(body), qos=1)
            async with asyncio.timeout(5):
                async for message in control.messages:
                    (answer,) = json.loads(bytes(message.payload))["responses"]
                    assert "error" not in answer, answer
                    return

    def device_password(self, device: str) -> str:
        return self.secrets.devices[device]


@pytest.fixture
def fleet_ids() -> list[str]:
    return [d.id for d in demo_fleet(6)]


@pytest.fixture
def broker(tmp_path: Path, fleet_ids: list[str]) -> Iterator[BrokerHandle]:
    secrets = VenueSecrets()
    secrets.ensure_devices(fleet_ids)
    secrets.players.update({f"racer{i:03d}": f"racer-pw-{i:03d}" for i in range(RACERS)})
    topics = Topics()
    data = tmp_path / "broker"
    clients = secrets.broker_clients(Settings(data_dir=tmp_path))
    accounts, roles = [*clients, *TEST_ACCOUNTS], secrets.roles(topics)
    if DOCKER:
        b: LocalBroker | ContainerBroker = ContainerBroker(data)
        b.configure(accounts, roles)
        b.start()
    else:
        b = start_on_free_ports(data, accounts, roles)
    try:
        yield BrokerHandle(b, secrets, topics, {c.username: c.client_id or "" for c in clients})
    finally:
        b.stop()


# -- databases -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    if DOCKER:
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15", driver="asyncpg") as pg:
            yield pg.get_connection_url()
        return
    yield PG_ADMIN_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'plaza.db'}"
        return
    admin_url: str = request.getfixturevalue("pg_admin_url")
    name = f"plaza_t_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# -- services --------------------------------------------------------------------------------
def service_settings(broker: BrokerHandle, db_url: str, tmp_path: Path, user: str) -> Settings:
    password = broker.secrets.bridge if user == BRIDGE_USER else broker.secrets.api
    return Settings(
        data_dir=tmp_path,
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        ws_port=broker.ws_port,
        mqtt_username=user,
        mqtt_password=password,
        database_url=db_url,
        device_keepalive=2,
        reconnect_min=0.05,
        reconnect_max=0.5,
        min_slot_minutes=0.05,
        timer_tick=0.2,
        rate_burst=1000,
        flood_burst=1000,  # the attack suite sets the production budget where it floods
        actor_idle_seconds=2,
        reminder_lead=1.0,
        no_show_grace=1.0,
        jwt_secret=JWT_SECRET,
        bridge_metrics_port=0,
        digest_interval=0.3,
        bridge_timeout=3.0,
    )


@pytest.fixture
def bridge_settings(broker: BrokerHandle, db_url: str, tmp_path: Path) -> Settings:
    return service_settings(broker, db_url, tmp_path, BRIDGE_USER)


@pytest.fixture
def api_settings(broker: BrokerHandle, db_url: str, tmp_path: Path) -> Settings:
    return service_settings(broker, db_url, tmp_path, API_USER)


class RunningService:
    """Runs a service's ``run()`` in a task; ``stop()`` cancels it and waits. Restarts use
    :class:`BridgeProcess` (a new process), as a deploy or a crash does."""

    def __init__(self, service: BridgeService) -> None:
        self.service = service
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> BridgeService:
        self._task = asyncio.get_running_loop().create_task(self.service.run())
        ready = asyncio.get_running_loop().create_task(self.service.ready.wait())
        done, _ = await asyncio.wait({self._task, ready}, timeout=15, return_when="FIRST_COMPLETED")
        if self._task in done:
            ready.cancel()
            self._task.result()  # raise the service's own error
        if ready not in done:
            ready.cancel()
            raise TimeoutError("service did not become ready in 15 s")
        return self.service

    async def stop(self) -> None:
        if self._task is not None:
            await stop_task(self._task)
            self._task = None


@pytest.fixture
def seeded(db_url: str, broker: BrokerHandle, fleet_ids: list[str]) -> list[str]:
    """The demo fleet and accounts in SQL (as `plaza up` seeds them), before the bridge."""

    people = dataclasses.replace(
        broker.secrets,
        players={u: p for u, p in broker.secrets.players.items() if not u.startswith("racer")},
    )

    async def go() -> None:
        engine = make_engine(db_url)
        try:
            await seed(engine, demo_fleet(len(fleet_ids)), people)
        finally:
            await engine.dispose()

    asyncio.run(go())
    return fleet_ids


@contextlib.asynccontextmanager
async def running_bridge(
    settings: Settings, *, metrics_port: int | None = None
) -> AsyncIterator[RunningService]:
    """An in-process bridge, started and stopped around the block."""
    running = RunningService(BridgeService(settings, metrics_port=metrics_port))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def bridge(bridge_settings: Settings, seeded: list[str]) -> AsyncIterator[RunningService]:
    async with running_bridge(bridge_settings) as running:
        yield running


class BridgeProcess:
    """`plaza bridge` as its own process, so it can be killed with SIGKILL."""

    def __init__(self, settings: Settings, log_path: Path, **env: str) -> None:
        self.settings = settings
        self.log_path = log_path
        self.env = {
            **os.environ,
            "PLAZA_DATA_DIR": str(settings.data_dir),
            "PLAZA_MQTT_HOST": settings.mqtt_host,
            "PLAZA_MQTT_PORT": str(settings.mqtt_port),
            "PLAZA_MQTT_USERNAME": settings.mqtt_username or "",
            "PLAZA_MQTT_PASSWORD": settings.mqtt_password_value() or "",
            "PLAZA_DATABASE_URL": settings.db_url,
            "PLAZA_MAX_ACTIVE_PER_PLAYER": "1000",
            "PLAZA_RATE_BURST": "100000",
            "PLAZA_FLOOD_BURST": "100000",
            "PLAZA_MAX_DAYS_AHEAD": "60",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        mark = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - a child we must SIGKILL later
                [sys.executable, "-m", "venue.cli", "bridge"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if b"bridge connected" in self.log_path.read_bytes()[mark:]:
                return
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            await asyncio.sleep(0.05)
        raise TimeoutError(self.log_path.read_text()[-3000:])

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if it has not ended in 10 s: a bridge left running after a
        failed test outlives the session and fails the next test's warning checks."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def close_dead_client(client: aiomqtt.Client) -> None:
    """Leave a client whose connection is already gone (taken over, socket shut down), and
    read the reason aiomqtt left on it, so the loop reports no never-retrieved exception."""
    with contextlib.suppress(aiomqtt.MqttError):
        await client.__aexit__(None, None, None)
    gone = client._disconnected
    if gone.done() and not gone.cancelled():
        gone.exception()


# -- observing the broker --------------------------------------------------------------------
@dataclass(frozen=True)
class Seen:
    topic: str
    payload: bytes
    retain: bool
    at: float


class Watch:
    """An observer connection that records every message on some topic filters."""

    def __init__(self, client: aiomqtt.Client, filters: list[str]) -> None:
        self.client = client
        self.filters = filters
        self.seen: list[Seen] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watch:
        await self.client.__aenter__()
        await self.client.subscribe([(f, 1) for f in self.filters])
        self._task = asyncio.get_running_loop().create_task(self._pump())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
        with contextlib.suppress(aiomqtt.MqttError):
            await self.client.__aexit__(None, None, None)

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        async for m in self.client.messages:
            payload = m.payload if isinstance(m.payload, bytes) else b""
            async with self._changed:
                self.seen.append(Seen(m.topic.value, payload, bool(m.retain), loop.time()))
                self._changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[Seen], bool], timeout: float = 5.0, since: int = 0
    ) -> Seen:
        """The first message from index ``since`` on (seen or arriving) matching ``predicate``."""
        start = since

        async def scan() -> Seen:
            nonlocal start
            async with self._changed:
                while True:
                    for item in self.seen[start:]:
                        if predicate(item):
                            return item
                    start = len(self.seen)
                    await self._changed.wait()

        return await asyncio.wait_for(scan(), timeout)

    def mark(self) -> int:
        """An index to pass as ``since``, so a wait looks only at newer messages."""
        return len(self.seen)
