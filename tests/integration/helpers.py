"""Helpers of the integration tests: simulated machines and what their boards say, SQL
written and read straight, the players' and the api's MQTT clients and the api's admin
commands."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from plaza.db import make_engine
from plaza.messages import BoardEntry, Reply
from plaza.tables import Reservation
from plaza_sim.epochs import EpochStore
from plaza_sim.machine import Machine, MachineConfig
from tests.conftest import BrokerHandle, Seen
from tests.integration.reserving import Requester

CONSOLE = "console-01"  # the seeded fleet's console: made a machine without an agent here


def board_of(seen: Seen) -> BoardEntry:
    return BoardEntry.model_validate_json(seen.payload)


def is_board(
    device: str, online: bool | None = None, status: str | None = None
) -> Callable[[Seen], bool]:
    def check(seen: Seen) -> bool:
        if seen.topic != f"plaza/board/{device}" or not seen.payload:
            return False
        entry = board_of(seen)
        return (online is None or entry.online is online) and (
            status is None or entry.status.value == status
        )

    return check


def machine(broker: BrokerHandle, device: str, tmp_path: Path, **kw: object) -> Machine:
    keepalive = int(kw.pop("keepalive", 10))  # type: ignore[call-overload]
    via_relay = bool(kw.pop("via_relay", False))
    cfg = MachineConfig(
        device,
        broker.device_password(device),
        broker.host,
        broker.port,
        keepalive=keepalive,
        via_relay=via_relay,
    )
    return Machine(cfg, EpochStore(tmp_path / "epochs.json"), autoplay=False)


async def start(m: Machine) -> asyncio.Task[None]:
    task = asyncio.get_running_loop().create_task(m.run())
    await asyncio.wait_for(m.connected.wait(), 5)
    return task


async def stop(m: Machine, task: asyncio.Task[None]) -> None:
    await m.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def sql(db_url: str, *statements: Any) -> None:
    engine = make_engine(db_url)
    try:
        async with AsyncSession(engine) as session:
            for statement in statements:
                if isinstance(statement, Reservation):
                    session.add(statement)
                else:
                    await session.exec(statement)
            await session.commit()
    finally:
        await engine.dispose()


async def rows(db_url: str, model: Any) -> list[Any]:
    """Every row of ``model``, read without the write lock (SQLite: a deferred transaction),
    so a read after a bridge stopped never waits on what it may have left behind."""
    engine = make_engine(db_url, reader=True)
    try:
        async with AsyncSession(engine) as session:
            return list((await session.exec(select(model))).all())
    finally:
        await engine.dispose()


def player(broker: BrokerHandle, name: str = "player1") -> Requester:
    return Requester(broker, name, broker.secrets.players[name])


def api(broker: BrokerHandle) -> Requester:
    return Requester(broker, "api", broker.secrets.api)


def code_of(reply: Reply) -> str | None:
    return reply.error.code if reply.error else None


async def admin(requester: Requester, **body: Any) -> Reply:
    """An admin command (``admin/requests``) as the api sends it."""
    body.setdefault("request_id", uuid.uuid4().hex)
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = requester.broker.topics.replies(requester.user)
    props.CorrelationData = uuid.uuid4().bytes
    topic = requester.broker.topics.admin_requests
    await requester.client.publish(topic, json.dumps(body).encode(), qos=1, properties=props)
    return await requester.reply(body["request_id"])
