"""The attack suite (issue #13): what a hostile or broken client tried, and what now holds.

One section per finding, one test per attack, over a real broker and a real bridge. Each
test failed before its fix. Sections are kept apart so that several branches can add theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.app import create_app
from bridge.retention import Keep, Retention
from plaza.db import make_engine, migrate, session_factory
from plaza.logs import LogLimits
from plaza.messages import MachineState, ServiceStatus
from plaza.settings import Settings
from plaza.tables import CommandLog, CoolOff, Notification, Outbox
from plaza.topics import BRIDGE_SERVICE
from tests.api.conftest import assert_problem, until_dropped
from tests.conftest import (
    DOCKER,
    BridgeProcess,
    BrokerHandle,
    RunningService,
    Seen,
    Watch,
    close_dead_client,
    running_bridge,
)
from tests.integration.helpers import is_board, machine, start, stop
from tests.integration.reserving import Requester, as_admin, slot

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


# -- finding 3: one player's flood starves everyone ---------------------------------------------
#: what one player sends in the tests below: a few thousand malformed requests
FLOOD = 5000
#: another player's command round trip during such a flood stays under this (before the fix
#: the flood's 5,000 refusals all went out first: about 3 s, from 35 s for 60,000). Loose on
#: purpose: a shared CI machine at load 8 took 0.5 s once; the figure itself is measured by
#: `plaza bench abuse` (docs/benchmarks.md)
DURING_FLOOD_BOUND = 1.5


def flood_budget(settings: Settings, **kw: object) -> Settings:
    """The production flood budget (the fixtures' is wide, for the other tests' bursts)."""
    production = {"flood_burst": 50, "flood_rate": 5.0, "flood_disable_after": 50}
    return settings.model_copy(update={**production, **kw})


async def mosquitto_flood(
    broker: BrokerHandle, user: str, topic: str, count: int, *, qos: int = 0
) -> asyncio.subprocess.Process:
    """``yes '{}' | head -n COUNT | mosquitto_pub -l`` as the attacker ran it (started: the
    caller waits for it)."""
    proc = await asyncio.create_subprocess_exec(
        "mosquitto_pub",
        *("-h", broker.host, "-p", str(broker.port), "-V", "mqttv5", "-q", str(qos)),
        *("-u", user, "-P", broker.secrets.players[user], "-i", broker.client_ids[user]),
        *("-t", topic, "-l"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(b"{}\n" * count)
    await proc.stdin.drain()
    proc.stdin.close()
    return proc


async def round_trips(
    phone: Requester, device: str, count: int, every: float = 0.02
) -> list[float]:
    """``count`` commands, one every ``every`` s without waiting for the previous one; each
    one's round trip (a missing reply fails the test: none may be lost)."""
    loop = asyncio.get_running_loop()

    async def one(i: int) -> float:
        await asyncio.sleep(i * every)
        started = loop.time()
        reply = await phone.request(device, timeout=5, op="cancel", reservation_id="nope")
        assert reply.error is not None
        assert reply.error.code == "not_found"
        return loop.time() - started

    return list(await asyncio.gather(*(one(i) for i in range(count))))


@contextlib.asynccontextmanager
async def staff(broker: BrokerHandle) -> AsyncIterator[Callable[..., Awaitable[float]]]:
    """The api's requests as staff make them (``on_behalf_of`` an admin, from the api's
    account): a function that sends one to a machine and returns its round trip."""
    inbox = broker.topics.inbox("api", "flood-test")
    replies: dict[str, asyncio.Future[None]] = {}
    client = broker.stand_in_api(identifier=f"staff-{uuid.uuid4().hex[:6]}")
    async with client:
        await client.subscribe(inbox, qos=1)

        async def pump() -> None:
            async for m in client.messages:
                rid = json.loads(bytes(m.payload)).get("request_id")
                waiter = replies.get(rid)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

        task = asyncio.get_running_loop().create_task(pump())

        async def ask(device: str, **command: str) -> float:
            loop = asyncio.get_running_loop()
            rid = uuid.uuid4().hex
            replies[rid] = loop.create_future()
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = inbox
            body = as_admin(
                {"request_id": rid, **(command or {"op": "cancel", "reservation_id": "nope"})}
            )
            started = loop.time()
            await client.publish(
                broker.topics.request(device, "api"), json.dumps(body), qos=1, properties=props
            )
            await asyncio.wait_for(replies[rid], 5)
            return loop.time() - started

        try:
            yield ask
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_flood_of_5000_messages_from_one_player_delays_no_other_player_s_command(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str]
) -> None:
    settings = flood_budget(bridge_settings, flood_disable_after=0)  # the flood goes on
    device = seeded[0]
    async with (
        running_bridge(settings) as running,
        player(broker, "player2") as other,
        staff(broker) as ask_as_staff,
    ):
        await round_trips(other, device, 2)  # warm: the actor, the first SQL reads
        flood = await mosquitto_flood(
            broker, "player1", broker.topics.request(device, "player1"), FLOOD
        )
        times, staff_times = await asyncio.gather(
            round_trips(other, device, 20),
            asyncio.gather(*(ask_as_staff(device) for _ in range(5))),
        )
        await asyncio.wait_for(flood.communicate(), 10)
        dropped = running.service.metrics.dropped["over_budget"]
    print(
        f"during the flood: player max {max(times) * 1000:.0f} ms, staff max "
        f"{max(staff_times) * 1000:.0f} ms, {dropped} dropped"
    )
    assert max(times) < DURING_FLOOD_BOUND, sorted(times)
    assert max(staff_times) < DURING_FLOOD_BOUND, sorted(staff_times)
    assert dropped >= FLOOD - 100, "the flood was shed at the drop path"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("qos", [0, 1])
async def test_a_flooder_past_its_budget_hears_nothing_back(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str], qos: int
) -> None:
    settings = flood_budget(bridge_settings, flood_disable_after=0)
    device = seeded[0]
    async with running_bridge(settings) as running, replies_of(broker, "player1") as flooder:
        flood = await mosquitto_flood(
            broker, "player1", broker.topics.request(device, "player1"), 2000, qos=qos
        )
        out, err = await asyncio.wait_for(flood.communicate(), 20)
        assert flood.returncode == 0, (out + err).decode()  # QoS 1: every message acknowledged
        async with player(broker, "player2") as other:  # behind the flood: all of it is read
            await round_trips(other, device, 1)
        admitted = 2000 - running.service.metrics.dropped["over_budget"]
        for _ in range(100):  # the refusals of what was let through, still arriving
            if flooder.qsize() >= admitted:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
    # the burst of 50 is answered (each one `invalid`), plus what 5 a second refill meanwhile;
    # the rest (about 1,950) gets nothing at all
    assert flooder.qsize() == admitted
    assert 50 <= admitted <= 60, admitted


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_flood_of_venue_requests_is_charged_to_its_sender_and_a_retained_one_is_cleared(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str]
) -> None:
    settings = flood_budget(bridge_settings, flood_disable_after=0)
    venue = broker.topics.venue_request("player1")
    async with running_bridge(settings) as running, replies_of(broker, "player1") as flooder:
        flood = await mosquitto_flood(broker, "player1", venue, 500, qos=1)
        out, err = await asyncio.wait_for(flood.communicate(), 20)
        assert flood.returncode == 0, (out + err).decode()
        async with player(broker, "player2") as other:  # behind the flood: all of it is read
            await round_trips(other, seeded[0], 1)
        dropped = running.service.metrics.dropped["over_budget"]
        assert dropped >= 400, "the venue topic's sender is charged at the drop path"
        for _ in range(100):  # the refusals of what was let through, still arriving
            if flooder.qsize() >= 500 - dropped:
                break
            await asyncio.sleep(0.05)
        assert flooder.qsize() == 500 - dropped
        # a retained venue request is never applied, and its topic is cleared
        await publish_as(
            broker, "player2", [(broker.topics.venue_request("player2"), b"{}")], retain=True
        )

        async def cleared() -> bool:
            return await retained_on(broker, [broker.topics.venue_request("player2")]) == []

        await until(cleared, timeout=5)
        assert running.service.metrics.dropped["retained"] == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_presence_and_boards_keep_flowing_while_a_player_floods(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str], tmp_path: Path
) -> None:
    settings = flood_budget(bridge_settings, flood_disable_after=0)
    device = seeded[1]
    m = machine(broker, device, tmp_path)
    async with (
        running_bridge(settings),
        Watch(broker.observer(), [broker.topics.board(device)]) as watch,
    ):
        task = await start(m)
        try:
            await watch.wait_for(is_board(device, online=True, status="available"))
            flood = await mosquitto_flood(
                broker, "player1", broker.topics.request(seeded[0], "player1"), FLOOD
            )
            loop = asyncio.get_running_loop()
            took = []
            for state in [MachineState.IN_USE, MachineState.IDLE] * 6:  # through the flood
                await asyncio.sleep(0.03)
                started, mark = loop.time(), watch.mark()
                await m.set_state(state)
                status = "in_use" if state is MachineState.IN_USE else "available"
                await watch.wait_for(is_board(device, status=status), timeout=10, since=mark)
                took.append(loop.time() - started)
            await asyncio.wait_for(flood.communicate(), 10)
        finally:
            await stop(m, task)
    print(f"board during the flood: max {max(took) * 1000:.0f} ms")
    assert max(took) < DURING_FLOOD_BOUND, took


@contextlib.asynccontextmanager
async def api_running(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The api in-process (its real lifespan), ready."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://plaza") as client:
            for _ in range(200):
                if (
                    await client.get("/healthz")
                ).status_code == 200 and app.state.plaza.link.connected.is_set():
                    break
                await asyncio.sleep(0.05)
            yield client


async def login(rest: httpx.AsyncClient, broker: BrokerHandle, user: str) -> dict[str, str]:
    answer = await rest.post(
        "/auth/login", json={"username": user, "password": broker.secrets.players[user]}
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


async def refused_at_connect(broker: BrokerHandle, user: str, password: str, **kw: Any) -> bool:
    try:
        async with broker.client(user, password, **kw):
            return False
    except aiomqtt.MqttCodeError:
        return True


def is_alert(kind: str) -> Callable[[Seen], bool]:
    return lambda s: s.topic == "plaza/admin/alerts" and json.loads(s.payload)["type"] == kind


async def cool_off_rows(db_url: str) -> list[CoolOff]:
    engine = make_engine(db_url)
    try:
        async with AsyncSession(engine) as session:
            return list((await session.exec(select(CoolOff))).all())
    finally:
        await engine.dispose()


COOL_OFF = 2.0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_persistent_flooder_is_disconnected_and_refused_for_the_cooling_off_then_enabled(
    broker: BrokerHandle,
    bridge_settings: Settings,
    api_settings: Settings,
    seeded: list[str],
    db_url: str,
) -> None:
    settings = flood_budget(bridge_settings, cool_off=COOL_OFF)
    device = seeded[0]
    player1 = broker.secrets.players["player1"]
    async with (
        running_bridge(settings) as running,
        api_running(api_settings) as rest,
        Watch(broker.observer(), ["plaza/admin/alerts"]) as alerts,
    ):
        auth = await login(rest, broker, "player1")
        creds = (await rest.post("/auth/mqtt", headers=auth)).json()
        session = broker.client(creds["username"], creds["password"], identifier=creds["client_id"])
        await session.__aenter__()  # the player's browser tab, connected
        loop = asyncio.get_running_loop()
        started = loop.time()
        flood = await mosquitto_flood(
            broker, "player1", broker.topics.request(device, "player1"), FLOOD
        )
        await asyncio.wait_for(flood.communicate(), 10)  # the broker ends it: disconnected
        cut_after = loop.time() - started
        alert = json.loads((await alerts.wait_for(is_alert("player_disabled"))).payload)
        assert "player1" in alert["message_en"]
        with pytest.raises(aiomqtt.MqttError):  # every account of theirs was disabled
            await until_dropped(session)
        await close_dead_client(session)
        assert running.service.metrics.senders_disabled == 1
        # while cooling off: no connection, no fresh broker account
        assert await refused_at_connect(broker, "player1", player1)
        assert await refused_at_connect(
            broker, creds["username"], creds["password"], identifier=creds["client_id"]
        )
        again = await rest.post("/auth/mqtt", headers=auth)
        body = assert_problem(again, 429, "cooling_off")
        assert datetime.fromisoformat(str(body["until"])) > datetime.now(UTC)
        assert int(again.headers["Retry-After"]) >= 1
        (row,) = await cool_off_rows(db_url)
        assert row.user == "player1"
        assert set(json.loads(row.accounts_json)) == {"player1", creds["username"]}

        async def enabled() -> bool:
            return not await refused_at_connect(broker, "player1", player1)

        await until(enabled, timeout=COOL_OFF + 8)  # after the cooling-off: back
        assert not await refused_at_connect(
            broker, creds["username"], creds["password"], identifier=creds["client_id"]
        )
        assert (await rest.post("/auth/mqtt", headers=auth)).status_code == 200
        async with player(broker, "player1") as phone:
            await round_trips(phone, device, 1)
    assert await cool_off_rows(db_url) == []
    print(f"the flooder was cut off {cut_after * 1000:.0f} ms after it started")
    assert cut_after < 2.0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_cooling_off_outlives_a_bridge_restart(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str], db_url: str
) -> None:
    settings = flood_budget(bridge_settings, cool_off=COOL_OFF)
    player1 = broker.secrets.players["player1"]
    async with Watch(broker.observer(), ["plaza/admin/alerts"]) as alerts:
        async with running_bridge(settings):
            flood = await mosquitto_flood(
                broker, "player1", broker.topics.request(seeded[0], "player1"), FLOOD
            )
            await asyncio.wait_for(flood.communicate(), 10)
            await alerts.wait_for(is_alert("player_disabled"))
        # the bridge that disabled the player is gone; a new one enables it when it is due
        assert await refused_at_connect(broker, "player1", player1)
        async with running_bridge(settings):

            async def enabled() -> bool:
                return not await refused_at_connect(broker, "player1", player1)

            await until(enabled, timeout=COOL_OFF + 8)
            async with player(broker, "player1") as phone:
                await round_trips(phone, seeded[0], 1)
    assert await cool_off_rows(db_url) == []


# -- finding 8: retained junk on player topics ---------------------------------------------------
async def retained_on(broker: BrokerHandle, topics: list[str], wait: float = 0.3) -> list[str]:
    """The topics among ``topics`` on which the broker holds a retained message now."""
    async with Watch(broker.observer(), topics) as fresh:
        await asyncio.sleep(wait)
        return sorted({s.topic for s in fresh.seen if s.retain and s.payload})


async def receipts(db_url: str, user: str) -> dict[int, bool]:
    """seq -> read, of the player's notifications."""
    engine = make_engine(db_url)
    try:
        async with AsyncSession(engine) as session:
            rows = (await session.exec(select(Notification).where(Notification.user == user))).all()
            return {r.seq: r.read_at is not None for r in rows}
    finally:
        await engine.dispose()


async def publish_as(
    broker: BrokerHandle, user: str, messages: list[tuple[str, bytes]], *, retain: bool
) -> None:
    async with broker.client(user, broker.secrets.players[user]) as c:
        for topic, payload in messages:
            await c.publish(topic, payload, qos=1, retain=retain)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_retained_request_and_read_receipt_are_never_applied_and_are_cleared(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str], db_url: str
) -> None:
    device = seeded[2]
    t = broker.topics
    junk = [t.request(device, "player1"), t.acks("player1")]

    def reserve(rid: str, start_in: float) -> bytes:
        return json.dumps({"request_id": rid, "op": "reserve", **slot(start_in, 30)}).encode()

    async with running_bridge(bridge_settings) as running:
        async with player(broker, "player1") as phone, staff(broker) as ask_as_staff:
            for n in (1, 2, 3):  # three approvals, three notifications: seq 1, 2, 3
                made = await phone.request(device, op="reserve", **slot(3600 * n, 30))
                assert made.reservation is not None
                await ask_as_staff(device, op="approve", reservation_id=made.reservation.id)
        retained = [(junk[0], reserve("retained-live", 5 * 3600)), (junk[1], b'{"seqs":[1]}')]
        await publish_as(broker, "player1", retained, retain=True)
        # behind the junk, in the player's own queue: once this is read, so was the junk
        await publish_as(broker, "player1", [(junk[1], b'{"seqs":[2]}')], retain=False)

        async def second_read() -> bool:
            return (await receipts(db_url, "player1")).get(2, False)

        await until(second_read)
        assert (await receipts(db_url, "player1"))[1] is False, "the retained receipt"
        assert running.service.metrics.dropped["retained"] == 2

        async def cleared() -> bool:
            return await retained_on(broker, junk) == []

        await until(cleared, timeout=5)
    # while the bridge is away: junk queued in its persistent session, seen at its return
    retained = [(junk[0], reserve("retained-queued", 6 * 3600)), (junk[1], b'{"seqs":[3]}')]
    await publish_as(broker, "player1", retained, retain=True)
    async with running_bridge(bridge_settings):
        await until(cleared, timeout=5)
        async with player(broker, "player1") as phone:
            await phone.request(device, op="cancel", reservation_id="nope")
    logged = await command_log(db_url)
    assert not any("retained" in key for key in logged), logged
    assert (await receipts(db_url, "player1"))[3] is False


# -- finding 4: the MQTT loop wedges, undetected -------------------------------------------------
def status_of(seen: Seen) -> ServiceStatus:
    return ServiceStatus.model_validate_json(seen.payload)


def is_status(online: bool) -> Callable[[Seen], bool]:
    return lambda s: bool(s.payload) and status_of(s).online is online


@pytest.mark.skipif(DOCKER, reason="stops the local mosquitto process with SIGSTOP")
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_broker_frozen_past_the_keepalive_then_thawed_finds_the_bridge_serving_again(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str]
) -> None:
    # a 1 s keepalive and 1 s operations: the freeze outlasts both, so a disconnect waits out
    # its timeout, which wedged a reused aiomqtt 2.5.1 client for good
    settings = bridge_settings.model_copy(update={"service_keepalive": 1, "service_timeout": 1.0})
    proc = getattr(broker.broker, "proc", None)
    assert isinstance(proc, subprocess.Popen)
    async with running_bridge(settings) as running:
        async with player(broker, "player2") as phone:
            await round_trips(phone, seeded[0], 1)
        proc.send_signal(signal.SIGSTOP)
        try:
            async with asyncio.timeout(10):  # the bridge notices (keepalive)
                while running.service.ready.is_set():  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            await asyncio.sleep(2)
        finally:
            proc.send_signal(signal.SIGCONT)
        await asyncio.wait_for(running.service.ready.wait(), 20)
        async with player(broker, "player2") as phone:
            await round_trips(phone, seeded[0], 1)
        assert running.service.metrics.reconnects >= 2  # both connections came back


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_bridge_s_status_beats_while_it_runs_goes_offline_when_it_dies_and_readyz_follows(
    broker: BrokerHandle,
    bridge_settings: Settings,
    api_settings: Settings,
    seeded: list[str],
    tmp_path: Path,
) -> None:
    topic = broker.topics.service_status(BRIDGE_SERVICE)
    bridge = BridgeProcess(bridge_settings, tmp_path / "bridge.log", PLAZA_BRIDGE_HEARTBEAT="0.3")
    async with Watch(broker.observer(), [topic]) as watch, api_running(api_settings) as rest:
        await bridge.start()
        try:
            birth = status_of(await watch.wait_for(is_status(True)))
            assert birth.id == bridge_settings.bridge_id
            mark = watch.mark()
            beat = status_of(await watch.wait_for(is_status(True), since=mark))
            assert (beat.ts or 0) > (birth.ts or 0), "a heartbeat: the same, newer"
            ready = await rest.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["bridge"] == "up"
            bridge.kill9()
            await watch.wait_for(is_status(False), since=watch.mark())  # its will
            for _ in range(100):
                down = await rest.get("/readyz")
                if down.status_code == 503:
                    break
                await asyncio.sleep(0.05)
            assert down.status_code == 503, down.text
            assert down.json()["bridge"] == "down"
            # started again: online; stopped cleanly (no will then): offline all the same
            await bridge.start()
            await watch.wait_for(is_status(True), since=watch.mark())
            mark = watch.mark()
            bridge.stop()
            await watch.wait_for(is_status(False), since=mark)
        finally:
            bridge.stop()
