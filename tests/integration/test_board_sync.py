"""After (re)connecting, the bridge publishes again only the board entries the broker does not
hold (bridge.presence.board_sync): a bridge started after a kill -9 sends no entry the broker
still has (at 2,000 machines x 1,000 screens each one re-sent is 1,000 deliveries of nothing
new), and a broker that lost its retained messages gets them back."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import pytest

from plaza.messages import MachineState
from plaza.settings import Settings
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
async def test_a_broker_killed_before_saving_gets_the_board_entries_it_lost_again(
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
        broker.broker.kill()  # before its autosave: the retained board is gone with it
        broker.broker.start()
        assert await _retained(broker, topic) == [], "the broker kept it: nothing to restore"

        await bridges[1].start()
        synced = await _logged(bridges[1].log_path, SYNCED, 0)
        got = await _retained(broker, topic)
        assert got, f"the lost entry was not published again ({synced})"
        assert board_of(got[-1]).version >= last.version
    finally:
        for b in bridges:
            b.stop()
