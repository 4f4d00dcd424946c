"""Machine presence end to end: real Mosquitto, real bridge, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from plaza.db import make_engine
from plaza.messages import MachineState, Presence
from plaza.settings import Settings
from plaza.tables import Device, DeviceStatusChange
from tests.conftest import (
    BridgeProcess,
    BrokerHandle,
    RunningService,
    Watch,
)
from tests.integration.helpers import board_of, is_board, machine, start, stop

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def rows(db_url: str, device: str) -> tuple[Device | None, list[DeviceStatusChange]]:
    engine = make_engine(db_url)
    try:
        async with AsyncSession(engine) as session:
            row = await session.get(Device, device)
            history = (
                await session.exec(
                    select(DeviceStatusChange).where(DeviceStatusChange.device_id == device)
                )
            ).all()
            return row, list(history)
    finally:
        await engine.dispose()


async def test_a_machine_birth_turns_its_board_online_and_the_board_survives_a_bridge_restart(
    broker: BrokerHandle,
    seeded: list[str],
    bridge_settings: Settings,
    tmp_path: Path,
    db_url: str,
) -> None:
    device = seeded[0]
    bridge = BridgeProcess(bridge_settings, tmp_path / "bridge.log")  # a real process restart
    await bridge.start()
    m = machine(broker, device, tmp_path)
    try:
        async with Watch(broker.observer(), ["plaza/board/+", "plaza/events/devices"]) as watch:
            task = await start(m)
            first = board_of(
                await watch.wait_for(is_board(device, online=True, status="available"))
            )
            assert first.epoch == m.epoch
            event = await watch.wait_for(lambda s: s.topic == "plaza/events/devices")
            assert json.loads(event.payload)["type"] == "device_online"

            bridge.stop()
            await bridge.start()
            await m.set_state(MachineState.IN_USE)
            after = board_of(await watch.wait_for(is_board(device, status="in_use")))
            assert after.version > first.version, "board versions must grow across restarts"

        # A newcomer gets the retained board at once, without any device publishing again.
        async with Watch(broker.observer(), [f"plaza/board/{device}"]) as late:
            retained = await late.wait_for(lambda s: s.retain)
            assert board_of(retained).status.value == "in_use"
            assert board_of(retained).version == after.version

        async with asyncio.timeout(10):  # SQL follows the board within a batch or two
            while True:
                row, history = await rows(db_url, device)
                if row is not None and row.board_version == after.version:
                    break
                await asyncio.sleep(0.1)
        assert (row.online, row.status) == (True, "in_use")
        assert [h.status for h in history][-2:] == ["available", "in_use"]
        await stop(m, task)
    finally:
        bridge.stop()


async def test_killing_a_machine_socket_without_disconnect_turns_its_board_offline(
    broker: BrokerHandle, bridge: RunningService, fleet_ids: list[str], tmp_path: Path
) -> None:
    device = fleet_ids[1]
    m = machine(broker, device, tmp_path)
    async with Watch(broker.observer(), [f"plaza/board/{device}"]) as watch:
        task = await start(m)
        await watch.wait_for(is_board(device, online=True))
        mark = watch.mark()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        m.crash(down_for=60)
        offline = await watch.wait_for(is_board(device, online=False), timeout=5, since=mark)
        latency_ms = (offline.at - t0) * 1000
        print(f"socket drop -> board offline: {latency_ms:.1f} ms")
        assert board_of(offline).status.value == "offline"
        assert latency_ms < 1000
    await stop(m, task)


async def test_a_late_will_from_an_older_epoch_does_not_turn_the_board_offline(
    broker: BrokerHandle, bridge: RunningService, fleet_ids: list[str], tmp_path: Path
) -> None:
    device = fleet_ids[2]
    topic = broker.topics.presence(device)
    # An old connection (epoch 1) left its birth. Its will is published late, after the
    # machine is back at epoch 2: the machine's account is bound to one client id, so the
    # old connection cannot still be open beside the new one; the stand-in replays what the
    # broker publishes then (a will with delay, a keepalive timeout noticed late).
    stale = broker.stand_in_bridge()
    await stale.__aenter__()
    await stale.publish(topic, Presence(online=True, epoch=1).encode(), qos=1, retain=True)

    m = machine(broker, device, tmp_path)  # its epoch store hands out epoch 1, 2, ...
    m.epochs.bump(device)  # epoch 1 was used by the old connection
    async with Watch(broker.observer(), [f"plaza/board/{device}", topic]) as watch:
        task = await start(m)
        assert m.epoch == 2
        await watch.wait_for(lambda s: is_board(device, online=True)(s) and board_of(s).epoch == 2)
        mark = watch.mark()

        # The old connection's will (epoch 1) arrives now.
        await stale.publish(topic, Presence(online=False, epoch=1).encode(), qos=1, retain=True)
        will = await watch.wait_for(
            lambda s: (
                s.topic == topic
                and bool(s.payload)
                and not Presence.model_validate_json(s.payload).online
            ),
            since=mark,
        )
        assert Presence.model_validate_json(will.payload).epoch == 1
        # The machine sees its presence say offline and publishes its birth again.
        rebirth = await watch.wait_for(
            lambda s: s.topic == topic and Presence.model_validate_json(s.payload).online,
            since=watch.seen.index(will),
        )
        assert Presence.model_validate_json(rebirth.payload).epoch == 2
        # Give the bridge time to have processed the will before judging it.
        await asyncio.sleep(0.3)
        boards = [board_of(s) for s in watch.seen[mark:] if s.topic.startswith("plaza/board/")]
        assert all(b.online for b in boards), "a fenced will must never reach the board"
        assert bridge.service.metrics.fenced_presences >= 1

    # To the end of the sequence: the retained presence is the live machine's birth.
    async with Watch(broker.observer(), [topic, f"plaza/board/{device}"]) as late:
        retained = await late.wait_for(lambda s: s.topic == topic and s.retain)
        assert Presence.model_validate_json(retained.payload).online is True
        assert Presence.model_validate_json(retained.payload).epoch == 2
        board = await late.wait_for(lambda s: s.topic.startswith("plaza/board/") and s.retain)
        assert board_of(board).online is True
    await stop(m, task)
    await stale.__aexit__(None, None, None)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # about the broker, not SQL
async def test_silent_loss_is_detected_after_about_one_and_a_half_keepalives(
    broker: BrokerHandle, bridge: RunningService, fleet_ids: list[str], tmp_path: Path
) -> None:
    device = fleet_ids[3]
    keepalive = 2
    m = machine(broker, device, tmp_path, keepalive=keepalive, via_relay=True)
    async with Watch(broker.observer(), [f"plaza/board/{device}"]) as watch:
        task = await start(m)
        await watch.wait_for(is_board(device, online=True))
        await m.set_state(MachineState.IDLE)  # the broker's last packet from it is now
        await watch.wait_for(lambda s: is_board(device)(s) and board_of(s).state == "idle")
        mark = watch.mark()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        loss = loop.create_task(m.silent_loss(down_for=30))
        offline = await watch.wait_for(is_board(device, online=False), timeout=15, since=mark)
        detected = offline.at - t0
        print(f"silent loss detected after {detected:.2f} s (keepalive {keepalive} s)")
        # The broker can only learn of a silent loss from its keepalive timer: more than
        # 1.5 x keepalive after the last packet. Mosquitto 2.0 runs that check every 5 s
        # (src/keepalive.c: last_keepalive_check + 5 < now, on whole seconds), which adds up
        # to 6 s; see docs/operations.md.
        assert 1.5 * keepalive <= detected <= 1.5 * keepalive + 7
        loss.cancel()
    await stop(m, task)


async def test_a_malformed_or_oversize_presence_is_logged_and_the_next_valid_one_is_processed(
    broker: BrokerHandle,
    bridge: RunningService,
    fleet_ids: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    device = fleet_ids[4]
    topic = broker.topics.presence(device)
    bad = [
        b"{not json",
        b'{"online": "yes", "epoch": 5}',
        b'{"online": true, "epoch": 5, "surprise": 1}',
        json.dumps({"online": True, "epoch": 5, "fw": "x" * 20_000}).encode(),  # > 16 KiB
    ]
    async with (
        Watch(broker.observer(), [f"plaza/board/{device}"]) as watch,
        broker.client(device, broker.device_password(device)) as dev,
    ):
        for payload in bad:
            await dev.publish(topic, payload, qos=1)
        await dev.publish(topic, Presence(online=True, epoch=7).encode(), qos=1)
        entry = board_of(await watch.wait_for(is_board(device, online=True)))
        assert entry.epoch == 7
    assert bridge.service.metrics.bad_payloads == len(bad)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "exceeds the limit" in messages
    assert "invalid Presence" in messages


async def test_a_message_on_an_unknown_topic_is_logged_and_dropped(
    broker: BrokerHandle, bridge: RunningService, caplog: pytest.LogCaptureFixture
) -> None:
    await bridge.service.handle("plaza/devices/pc-01/firmware", b"{}")
    await bridge.service.handle("elsewhere/x/y", b"{}")
    await bridge.service.handle("plaza/devices/PC 01/presence", b"{}")
    assert bridge.service.metrics.unknown_topics == 3
    assert "unknown topic" in caplog.text
