"""The attack suite (issue #13): what a hostile or broken client tried, and what now holds.

One section per finding, one test per attack, over a real broker and a real bridge. Each
test failed before its fix. Sections are kept apart so that several branches can add theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bridge.retention import Keep, Retention
from plaza.db import make_engine, migrate, session_factory
from plaza.logs import LogLimits
from plaza.settings import Settings
from plaza.tables import CommandLog, Outbox
from tests.conftest import (
    BridgeProcess,
    BrokerHandle,
    RunningService,
    Seen,
    Watch,
    running_bridge,
)
from tests.integration.reserving import Requester, slot

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


# -- shared by the sections -------------------------------------------------------------------
def player(broker: BrokerHandle, name: str) -> Requester:
    return Requester(broker, name, broker.secrets.players[name])


async def mosquitto_pub(broker: BrokerHandle, user: str, topic: str, *args: str) -> None:
    """``mosquitto_pub -V mqttv5 -q 1`` as the attacker ran it, with the player's account."""
    proc = await asyncio.create_subprocess_exec(
        "mosquitto_pub",
        *("-h", broker.host, "-p", str(broker.port), "-V", "mqttv5", "-q", "1"),
        *("-u", user, "-P", broker.secrets.players[user], "-i", broker.client_ids[user]),
        *("-t", topic),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, (out + err).decode()


@dataclass(frozen=True)
class Received:
    topic: str
    body: dict[str, Any]
    correlation: bytes | None


@contextlib.asynccontextmanager
async def replies_of(broker: BrokerHandle, user: str) -> AsyncIterator[asyncio.Queue[Received]]:
    """Every message on the player's replies topic, with its correlation data, read through
    the bridge's role (the player's own account is bound to one client id, which the attack
    itself connects with)."""
    queue: asyncio.Queue[Received] = asyncio.Queue()
    client = broker.stand_in_bridge(identifier=f"replies-{user}-{uuid.uuid4().hex[:6]}")
    async with client:
        await client.subscribe(broker.topics.replies(user), qos=1)

        async def pump() -> None:
            async for m in client.messages:
                raw = m.payload if isinstance(m.payload, bytes) else b""
                cd = getattr(m.properties, "CorrelationData", None)
                queue.put_nowait(Received(m.topic.value, json.loads(raw), cd))

        task = asyncio.get_running_loop().create_task(pump())
        try:
            yield queue
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


async def outbox_rows(db_url: str) -> list[Outbox]:
    engine = make_engine(db_url)
    try:
        async with AsyncSession(engine) as session:
            return list((await session.exec(select(Outbox).order_by(col(Outbox.id)))).all())
    finally:
        await engine.dispose()


def reply_to(request_id: str) -> Callable[[Seen], bool]:
    def check(seen: Seen) -> bool:
        return (
            seen.topic.endswith("/replies")
            and json.loads(seen.payload).get("request_id") == request_id
        )

    return check


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``predicate`` (a look at SQL) until it holds."""
    for _ in range(int(timeout / 0.05)):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"not true within {timeout} s")


# -- finding 1: a reply larger than the broker takes (poison reply) ----------------------------
#: the attacker's correlation data: with the request it makes a packet just under the broker's
#: 64 KiB maximum, and the bridge's reply (which echoes it) just over it
POISON = "P" * 65423

DECIDED = '{"request_id":"p","op":"cancel","reservation_id":"zz"}'  # decided: an unknown id
REFUSED_AT_ONCE = '{"request_id":"p","op":"cancel"'  # malformed JSON: refused by the desk


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("payload", [DECIDED, REFUSED_AT_ONCE], ids=["decided", "refused-at-once"])
async def test_a_request_with_65_kb_of_correlation_data_is_refused_and_others_are_answered_at_once(
    broker: BrokerHandle, bridge: RunningService, fleet_ids: list[str], payload: str
) -> None:
    device = fleet_ids[0]
    reconnects = bridge.service.metrics.reconnects
    async with replies_of(broker, "player1") as attacker, player(broker, "player2") as other:
        await mosquitto_pub(
            broker,
            "player1",
            broker.topics.request(device, "player1"),
            *("-D", "publish", "correlation-data", POISON, "-m", payload),
        )
        answer = await asyncio.wait_for(attacker.get(), 5)
        assert answer.body["ok"] is False
        assert answer.body["error"]["code"] == "correlation_too_large"
        assert answer.correlation is None  # the reply carries none of it back

        reply = await other.request(device, timeout=2, op="cancel", reservation_id="nope")
        assert reply.error is not None
        assert reply.error.code == "not_found"
    assert bridge.service.metrics.reconnects == reconnects  # the broker never dropped the bridge


@pytest.mark.parametrize(
    ("topic", "size", "reason"),
    [
        ("plaza/users/player1/replies", 70_000, "too_large"),
        ("elsewhere/not-the-venue", 2, "refused"),  # by the broker's ACL (PUBACK 0x87)
        ("plaza/users/+/replies", 2, "invalid_topic"),
    ],
    ids=["too-large", "refused-by-the-broker", "wildcard-topic"],
)
async def test_an_outbox_row_the_broker_cannot_take_is_dead_lettered_at_start_and_the_rows_behind_it_are_delivered(  # noqa: E501
    broker: BrokerHandle,
    bridge_settings: Settings,
    seeded: list[str],
    db_url: str,
    topic: str,
    size: int,
    reason: str,
) -> None:
    engine = make_engine(db_url)
    try:
        await migrate(engine)
        async with AsyncSession(engine) as session:
            session.add(Outbox(topic=topic, payload=b"x" * size))
            for n in (1, 2):
                body = {"request_id": f"after-{n}", "ok": True}
                session.add(
                    Outbox(topic="plaza/users/player2/replies", payload=json.dumps(body).encode())
                )
            await session.commit()
    finally:
        await engine.dispose()
    filters = ["plaza/users/player2/replies", "plaza/admin/alerts"]
    async with (
        Watch(broker.observer(), filters) as watch,
        running_bridge(bridge_settings) as running,
    ):
        for n in (1, 2):
            await watch.wait_for(reply_to(f"after-{n}"), timeout=10)
        alert = await watch.wait_for(lambda s: s.topic == "plaza/admin/alerts", timeout=10)
        body = json.loads(alert.payload)
        assert body["type"] == "outbox_dead_letter"
        assert body["severity"] == "high"
        assert running.service.metrics.dead_letters == 1
        assert running.service.metrics.reconnects == 0

        async def settled() -> bool:
            rows = await outbox_rows(db_url)
            return rows[0].dead_at is not None and all(r.published_at for r in rows[1:])

        await until(settled)
    first, *rest = await outbox_rows(db_url)
    assert first.published_at is None
    assert first.dead_reason
    assert first.dead_reason.split(":")[0] == reason
    assert all(r.dead_at is None for r in rest)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_broker_s_own_maximum_from_connack_holds_when_the_setting_is_larger(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str], db_url: str
) -> None:
    settings = bridge_settings.model_copy(update={"mqtt_max_packet_size": 1_000_000})
    filters = ["plaza/users/player2/replies", "plaza/admin/alerts"]
    async with (
        Watch(broker.observer(), filters) as watch,
        running_bridge(settings) as running,
    ):
        assert running.service.link.max_packet == 65_536  # what the broker's CONNACK said
        publisher = running.service.publisher
        assert publisher is not None
        engine = make_engine(db_url)
        try:  # a row written as the 1,000,000-byte setting allows, sent after the CONNACK
            async with AsyncSession(engine) as session:
                for topic, body in (
                    ("plaza/users/player2/replies", b"x" * 70_000),
                    ("plaza/users/player2/replies", b'{"request_id":"behind","ok":true}'),
                ):
                    session.add(Outbox(topic=topic, payload=body))
                await session.commit()
        finally:
            await engine.dispose()
        await publisher.load_unsent()
        await watch.wait_for(reply_to("behind"), timeout=10)
        await watch.wait_for(lambda s: s.topic == "plaza/admin/alerts", timeout=10)
        assert running.service.metrics.reconnects == 0


# -- finding 10: logs a client can grow ---------------------------------------------------------
async def burst(broker: BrokerHandle, user: str, messages: list[tuple[str, bytes]]) -> None:
    """Publish ``messages`` (topic, payload) as ``user``, QoS 1, as fast as the broker takes."""
    password = broker.secrets.players[user]
    async with broker.client(user, password) as c:  # under the account's bound client id
        await asyncio.gather(*(c.publish(t, p, qos=1) for t, p in messages))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_burst_of_bad_messages_with_a_30_kb_topic_adds_a_bounded_number_of_log_bytes(
    broker: BrokerHandle,
    bridge_settings: Settings,
    seeded: list[str],
    tmp_path: Path,
) -> None:
    bridge = BridgeProcess(bridge_settings, tmp_path / "bridge.log")
    await bridge.start()
    try:
        before = bridge.log_path.stat().st_size
        # the ACL lets a player publish to any machine level of their requests: a 30 KB one
        # is no machine id at all, and the refusal logged the topic (twice)
        huge = f"plaza/devices/{'x' * 30_000}/requests/player1"
        bad: list[tuple[str, bytes]] = [(huge, b"{}") for _ in range(300)]
        bad += [(broker.topics.request(seeded[0], "player1"), b"not json") for _ in range(300)]
        await burst(broker, "player1", bad)
        async with player(broker, "player2") as other:  # handled in order: the burst is behind
            reply = await other.request(seeded[0], timeout=20, op="cancel", reservation_id="zz")
        assert reply.error is not None
        assert reply.error.code == "not_found"
        grown = bridge.log_path.stat().st_size - before
    finally:
        bridge.stop()
    # before: every message logged, the topic twice: 300 x 60 KB = 18 MB
    assert grown < 20_000, bridge.log_path.read_text()[-3000:]  # measured: 4 KB


async def test_every_log_line_of_a_command_carries_its_request_id(
    broker: BrokerHandle,
    bridge: RunningService,
    fleet_ids: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bridge")
    # what `plaza bridge` puts on its log handler; pytest keeps one capture handler for the
    # whole run, so the filter comes off again (left on, its sampling silenced later tests)
    limits = LogLimits()
    caplog.handler.addFilter(limits)
    try:
        await _three_commands(broker, fleet_ids[0])
    finally:
        caplog.handler.removeFilter(limits)
    by_request: dict[str, list[str]] = {}
    for record in caplog.records:
        rid = getattr(record, "request_id", None)
        if rid:
            by_request.setdefault(rid, []).append(record.getMessage())
    # intake and decision (with its reply) for decided commands; the refusal for the bad one
    assert len(by_request.get("rid-ok", [])) >= 2, by_request
    assert len(by_request.get("rid-gone", [])) >= 2, by_request
    assert len(by_request.get("rid-bad", [])) >= 1, by_request


async def _three_commands(broker: BrokerHandle, device: str) -> None:
    """A decided command, a malformed one and a refused one, from one player."""
    async with player(broker, "player1") as phone:
        made = await phone.request(device, request_id="rid-ok", op="reserve", **slot(3600, 30))
        assert made.ok
        bad = await phone.request(device, request_id="rid-bad", op="explode")
        assert bad.error is not None
        gone = await phone.request(device, request_id="rid-gone", op="cancel", reservation_id="x")
        assert gone.error is not None


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_with_plaza_log_format_json_every_line_is_an_object_with_the_request_id(
    broker: BrokerHandle,
    bridge_settings: Settings,
    seeded: list[str],
    tmp_path: Path,
) -> None:
    bridge = BridgeProcess(bridge_settings, tmp_path / "bridge.log", PLAZA_LOG_FORMAT="json")
    await bridge.start()
    try:
        async with player(broker, "player1") as phone:
            bad = await phone.request(seeded[0], request_id="rid-json", op="explode")
            assert bad.error is not None
    finally:
        bridge.stop()
    lines = [json.loads(line) for line in bridge.log_path.read_text().splitlines()]
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    refused = [line for line in lines if line.get("request_id") == "rid-json"]
    assert refused, lines
    assert refused[0]["level"] == "WARNING"


# -- finding 12: growth and lifetimes (the command log) ------------------------------------------
async def command_log(db_url: str) -> dict[str, datetime]:
    engine = make_engine(db_url)
    try:
        async with AsyncSession(engine) as session:
            rows = (await session.exec(select(CommandLog))).all()
            return {r.request_key: r.created_at for r in rows}
    finally:
        await engine.dispose()


async def age_command_log(db_url: str, created_at: dict[str, datetime]) -> None:
    """Give command-log rows an older ``created_at`` (adding the keys that are missing)."""
    engine = make_engine(db_url)
    try:
        await migrate(engine)
        async with AsyncSession(engine) as session:
            for key, at in created_at.items():
                row = await session.get(CommandLog, key)
                if row is None:
                    reply = '{"request_id":"x","ok":false}'
                    row = CommandLog(
                        request_key=key, device_id="pc-01", op="cancel", ok=False, reply_json=reply
                    )
                row.created_at = at
                session.add(row)
            await session.commit()
    finally:
        await engine.dispose()


async def test_pruning_the_command_log_removes_old_rows_in_chunks_and_keeps_the_newest(
    db_url: str,
) -> None:
    now = datetime.now(UTC)
    old = {f"p:old-{n}": now - timedelta(days=8, minutes=n) for n in range(25)}
    new = {f"p:new-{n}": now - timedelta(hours=n) for n in range(5)}
    edge = {f"p:edge-{n}": now - timedelta(days=6, hours=23) for n in range(3)}
    await age_command_log(db_url, {**old, **new, **edge})
    engine = make_engine(db_url)
    try:
        keep = Keep.from_settings(Settings(command_log_retention=7 * 86400))
        retention = Retention(session_factory(engine), asyncio.Lock(), keep, chunk=10)
        assert await retention.prune() == 25  # in three chunks of at most ten
        assert await retention.prune() == 0
    finally:
        await engine.dispose()
    assert set(await command_log(db_url)) == set(new) | set(edge)


async def test_a_retry_within_the_command_log_s_retention_is_answered_from_the_log(
    broker: BrokerHandle, bridge: RunningService, fleet_ids: list[str], db_url: str
) -> None:
    device = fleet_ids[2]
    parts = bridge.service.parts
    assert parts is not None
    now = datetime.now(UTC)
    async with player(broker, "player1") as phone:
        when, later = slot(7200, 30), slot(3 * 3600, 30)
        first = await phone.request(device, request_id="keep-me", op="reserve", **when)
        assert first.ok
        gone = await phone.request(device, request_id="forget-me", op="reserve", **later)
        assert gone.ok
        await age_command_log(
            db_url,
            {
                "player1:keep-me": now - timedelta(days=6),  # inside the 7 days
                "player1:forget-me": now - timedelta(days=8),
                **{f"p:old-{n}": now - timedelta(days=9) for n in range(30)},
            },
        )
        assert await parts.retention.prune() == 31
        for rid, at in (("keep-me", when), ("forget-me", later)):  # each one's second reply
            await phone.send(device, {"request_id": rid, "op": "reserve", **at})
        again = await phone.reply("keep-me", count=2)
        late = await phone.reply("forget-me", count=2)
    assert again == first  # the same reply, from the log: applied once
    # past the retention the retry is decided again: it meets its own booking, and is refused
    assert late.error is not None
    assert late.error.code == "conflict"
    logged = await command_log(db_url)
    assert "player1:keep-me" in logged
    assert not any(key.startswith("p:old-") for key in logged)
