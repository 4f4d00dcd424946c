"""After (re)connecting, the bridge publishes again only the board entries the broker does not
hold (bridge.presence.board_sync): a bridge started after a kill -9 sends no entry the broker
still has (at 2,000 machines x 1,000 screens each one re-sent is 1,000 deliveries of nothing
new), and a broker that lost its retained messages gets them back."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from pathlib import Path

import pytest

from bridge.models import Incoming
from bridge.presence.board_sync import BoardSync
from plaza.messages import MachineState
from plaza.settings import Settings
from plaza.topics import BoardTopic, Topics
from tests.conftest import BridgeProcess, BrokerHandle, Seen, Watch
from tests.integration.helpers import board_of, is_board, machine, start, stop

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SYNCED = b"board sync:"


async def _logged(path: Path, what: bytes, mark: int, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_bytes()[mark:]  # noqa: ASYNC240 - a small log file
        if what in text:
            return text[text.index(what) :].split(b"\n", 1)[0].decode()
        await asyncio.sleep(0.05)
    raise TimeoutError(path.read_text()[-3000:])  # noqa: ASYNC240


def _versions(seen: list[Seen], since: int = 0, until: int | None = None) -> dict[str, set[int]]:
    out: dict[str, set[int]] = defaultdict(set)
    for s in seen[since:until]:
        if s.topic.startswith("plaza/board/") and s.payload:
            out[s.topic].add(board_of(s).version)
    return out


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_bridge_started_after_a_kill_sends_no_board_entry_the_broker_still_holds(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str], tmp_path: Path
) -> None:
    env = {"PLAZA_BRIDGE_METRICS_PORT": "0"}
    bridges = [BridgeProcess(bridge_settings, tmp_path / f"b{i}.log", **env) for i in range(2)]
    live = seeded[:3]
    machines = [machine(broker, d, tmp_path) for d in live]
    tasks: list[asyncio.Task[None]] = []
    try:
        async with Watch(broker.observer(), ["plaza/board/+"]) as watch:
            await bridges[0].start()
            tasks = [await start(m) for m in machines]
            for d in live:
                await watch.wait_for(is_board(d, online=True), timeout=10)
            await _logged(bridges[0].log_path, SYNCED, 0)
            await asyncio.sleep(1.5)  # the store commits behind the publish
            bridges[0].kill9()
            mark = watch.mark()
            await bridges[1].start()
            synced = await _logged(bridges[1].log_path, SYNCED, 0)
            # a change after the restart still reaches the board, from the new bridge
            await machines[0].set_state(MachineState.IN_USE)
            await watch.wait_for(is_board(live[0], status="in_use"), since=mark, timeout=10)
            before, after = _versions(watch.seen, 0, mark), _versions(watch.seen, mark)
        repeated = {t: sorted(v & before[t]) for t, v in after.items() if v & before[t]}
        assert repeated == {}, f"entries the broker held were sent again ({synced})"
        assert "published again: 0" in synced, synced
    finally:
        for m, t in zip(machines, tasks, strict=False):
            await stop(m, t)
        for b in bridges:
            b.stop()


async def _retained(broker: BrokerHandle, topic: str) -> list[Seen]:
    """What a screen subscribing now gets retained on ``topic``."""
    async with Watch(broker.observer(), [topic]) as fresh:
        await asyncio.sleep(0.5)
        return [s for s in fresh.seen if s.retain and s.payload]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_board_entries_the_broker_lost_are_published_again(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str], tmp_path: Path
) -> None:
    device = seeded[0]
    topic = f"plaza/board/{device}"
    env = {"PLAZA_BRIDGE_METRICS_PORT": "0"}
    bridges = [BridgeProcess(bridge_settings, tmp_path / f"b{i}.log", **env) for i in range(2)]
    m = machine(broker, device, tmp_path)
    try:
        await bridges[0].start()
        async with Watch(broker.observer(), [topic]) as watch:
            task = await start(m)
            await watch.wait_for(is_board(device, online=True), timeout=10)
            await stop(m, task)  # no machine will publish this one again
            await asyncio.sleep(1)
            last = board_of(watch.seen[-1])
        bridges[0].stop()
        # as a broker killed before its autosave loses it (deterministically: no race with
        # the autosave interval)
        async with broker.stand_in_bridge() as writer:
            await writer.publish(topic, b"", qos=1, retain=True)
        assert await _retained(broker, topic) == [], "the broker kept it: nothing to restore"

        await bridges[1].start()
        synced = await _logged(bridges[1].log_path, SYNCED, 0)
        got = await _retained(broker, topic)
        assert got, f"the lost entry was not published again ({synced})"
        assert board_of(got[-1]).version >= last.version
    finally:
        for b in bridges:
            b.stop()


async def test_the_read_waits_for_entries_queued_behind_a_backlog_of_other_messages(
    broker: BrokerHandle,
) -> None:
    """After a broker restart the bridge works through thousands of presence and state
    messages before the retained board it asked for; the read must wait for them (its
    marker comes behind them), not give up after a quiet spell. A first cut ended after 2 s
    without a board entry: in `plaza bench storm` it heard none of 2,000 and sent 636
    again needlessly."""
    topics = Topics()
    expected = {f"pc-{i:02d}": 4_294_967_296 + i for i in range(1, 21)}
    async with broker.stand_in_bridge() as writer:
        for device, version in expected.items():
            body = json.dumps({"device_id": device, "version": version, "ts": 1}).encode()
            await writer.publish(topics.board(device), body, qos=1, retain=True)
    missing = "pc-99"  # expected, but the broker has none: the marker ends the read
    expected_too = {**expected, missing: 4_294_967_296 + 99}
    sync = BoardSync(topics, "board-sync-test", payload_limit=65_536)
    busy_for = 3.0  # longer than the first cut's quiet spell (2 s)
    async with broker.stand_in_bridge(identifier="board-sync-test") as reader:

        async def consume() -> None:
            await asyncio.sleep(busy_for)  # the loop is busy with other messages meanwhile
            async for m in reader.messages:
                payload = m.payload if isinstance(m.payload, bytes) else b""
                if m.topic.value == sync.marker_topic:
                    sync.marked(payload)
                    continue
                parsed = topics.parse(m.topic.value)
                assert isinstance(parsed, BoardTopic)
                await sync.handle(parsed, Incoming(m.topic.value, payload, retained=m.retain))

        consumer = asyncio.get_running_loop().create_task(consume())
        try:
            started = time.monotonic()
            held = await sync.read(reader, expected_too)  # type: ignore[arg-type]
            took = time.monotonic() - started
        finally:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
    assert {d: b["version"] for d, b in held.items()} == expected
    assert busy_for <= took < busy_for + sync.limit / 2, "ended by the marker, not the limit"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_an_entry_of_an_older_release_at_the_same_version_is_published_again(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str], tmp_path: Path
) -> None:
    """A release that adds a board field (pos, managed and locked were added so) leaves the
    broker holding entries without it at the bridge's own version."""
    device = seeded[0]
    topic = f"plaza/board/{device}"
    env = {"PLAZA_BRIDGE_METRICS_PORT": "0"}
    bridges = [BridgeProcess(bridge_settings, tmp_path / f"b{i}.log", **env) for i in range(2)]
    m = machine(broker, device, tmp_path)
    task = None
    try:
        await bridges[0].start()
        async with Watch(broker.observer(), [topic]) as watch:
            task = await start(m)
            await watch.wait_for(is_board(device, online=True), timeout=10)
        await asyncio.sleep(1.5)  # the store commits behind the publish
        full = json.loads((await _retained(broker, topic))[-1].payload)
        bridges[0].stop()
        older = {k: v for k, v in full.items() if k not in ("kind", "zone")}
        async with broker.stand_in_bridge() as writer:
            await writer.publish(topic, json.dumps(older).encode(), qos=1, retain=True)

        await bridges[1].start()
        synced = await _logged(bridges[1].log_path, SYNCED, 0)
        got = json.loads((await _retained(broker, topic))[-1].payload)
        assert got["version"] == full["version"]
        assert (got["kind"], got["zone"]) == (full["kind"], full["zone"]), synced
        assert "(1 of an older content)" in synced, synced
    finally:
        if task is not None:
            await stop(m, task)
        for b in bridges:
            b.stop()
