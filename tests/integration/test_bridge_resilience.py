"""The bridge and the machines through broker restarts, faults and commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from plaza.db import make_engine
from plaza.messages import CommandName, DeviceCommand, MachineState, now
from plaza.tables import Alert
from tests.conftest import BrokerHandle, RunningService, Watch
from tests.integration.helpers import board_of, is_board, machine, start, stop

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_after_a_broker_restart_bridge_and_machines_reconnect_and_the_board_is_right(
    broker: BrokerHandle, bridge: RunningService, fleet_ids: list[str], tmp_path: Path
) -> None:
    device = fleet_ids[0]
    m = machine(broker, device, tmp_path)
    task = await start(m)
    async with Watch(broker.observer(), [f"plaza/board/{device}"]) as watch:
        first = board_of(await watch.wait_for(is_board(device, online=True)))
    reconnects = bridge.service.metrics.reconnects

    broker.broker.stop()  # a clean stop saves retained messages (persistence)
    broker.broker.start()

    async with Watch(broker.observer(), [f"plaza/board/{device}"]) as watch:
        entry = board_of(
            await watch.wait_for(
                lambda s: (
                    is_board(device, online=True)(s)
                    and (board_of(s).epoch or 0) > (first.epoch or 0)
                ),
                timeout=10,
            )
        )
        assert entry.epoch == m.epoch
        assert entry.version > first.version
        await m.set_state(MachineState.IN_USE)
        await watch.wait_for(is_board(device, status="in_use"), timeout=5)
    assert bridge.service.metrics.reconnects > reconnects
    await stop(m, task)


async def test_a_machine_fault_raises_one_admin_alert_that_is_stored_and_published(
    broker: BrokerHandle,
    bridge: RunningService,
    fleet_ids: list[str],
    tmp_path: Path,
    db_url: str,
) -> None:
    device = fleet_ids[1]
    m = machine(broker, device, tmp_path)
    async with Watch(broker.observer(), ["plaza/admin/alerts", f"plaza/board/{device}"]) as watch:
        task = await start(m)
        await watch.wait_for(is_board(device, online=True))
        await m.set_state(MachineState.FAULT, fault="coin mech jammed")
        alert = await watch.wait_for(lambda s: s.topic == "plaza/admin/alerts")
        body = json.loads(alert.payload)
        assert (body["type"], body["severity"], body["device_id"]) == (
            "device_fault",
            "high",
            device,
        )
        assert "coin mech jammed" in body["message"]
        await watch.wait_for(is_board(device, status="fault"))
        await m.set_state(MachineState.FAULT, fault="still jammed")  # no second alert
        await m.set_state(MachineState.IDLE)
        await watch.wait_for(is_board(device, status="available"))
        alerts = [s for s in watch.seen if s.topic == "plaza/admin/alerts"]
        assert len(alerts) == 1
    await bridge.service.store.flushed()  # type: ignore[union-attr]
    engine = make_engine(db_url)
    async with AsyncSession(engine) as session:
        rows = (await session.exec(select(Alert))).all()
    await engine.dispose()
    assert [(a.id, a.device_id, a.severity) for a in rows] == [(body["id"], device, "high")]
    await stop(m, task)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_machine_answers_commands_on_its_cmd_topic_and_ignores_bad_ones(
    broker: BrokerHandle, bridge: RunningService, fleet_ids: list[str], tmp_path: Path
) -> None:
    device = fleet_ids[2]
    m = machine(broker, device, tmp_path)
    cmd_topic = broker.topics.cmd(device)
    async with (
        Watch(broker.observer(), [f"plaza/board/{device}"]) as watch,
        broker.stand_in_bridge() as bridge_account,
    ):
        task = await start(m)
        await watch.wait_for(is_board(device, online=True))
        await bridge_account.publish(cmd_topic, b"{broken", qos=1)
        start_cmd = DeviceCommand(cmd=CommandName.START_SESSION, ts=now())
        await bridge_account.publish(cmd_topic, start_cmd.encode(), qos=1)
        entry = board_of(await watch.wait_for(is_board(device, status="in_use")))
        assert entry.session is not None
        end_cmd = DeviceCommand(cmd=CommandName.END_SESSION, ts=now())
        await bridge_account.publish(cmd_topic, end_cmd.encode(), qos=1)
        await watch.wait_for(is_board(device, status="available"), since=watch.mark())
        mark = watch.mark()
        rebirth = DeviceCommand(cmd=CommandName.REBIRTH, ts=now())
        await bridge_account.publish(cmd_topic, rebirth.encode(), qos=1)
        # Rebirth re-publishes state with a higher seq: the bridge accepts it, the board moves.
        await watch.wait_for(is_board(device, status="available"), since=mark)
    assert m.stats.bad_commands == 1
    assert m.stats.commands == 3
    await stop(m, task)


def test_plaza_sim_injects_crash_faults_from_the_cli_and_prints_progress_and_a_summary(
    broker: BrokerHandle, fleet_ids: list[str], tmp_path: Path
) -> None:
    devices = tmp_path / "devices.json"
    devices.write_text(json.dumps(broker.secrets.devices))
    env = {
        "PLAZA_MQTT_HOST": broker.host,
        "PLAZA_MQTT_PORT": str(broker.port),
        "PLAZA_DATA_DIR": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "venue.cli",
            "sim",
            "--devices-file",
            str(devices),
            "--fault",
            "crash,flap",
            "--fault-fraction",
            "0.5",
            "--fault-every",
            "1",
            "--down-for",
            "0.5",
            "--duration",
            "4",
            "--progress-every",
            "0.5",
            "--no-play",
            "--seed",
            "7",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"sim: starting {len(fleet_ids)} machines" in run.stdout
    assert f"sim: {len(fleet_ids)}/{len(fleet_ids)} online" in run.stdout
    summary = run.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"sim summary after 4s: {len(fleet_ids)} machines")
    connections = int(summary.split(" connections")[0].rsplit(" ", 1)[1])
    assert connections > len(fleet_ids), "crashed machines came back with new connections"
    assert "crash" in summary or "flap" in summary
    epochs = json.loads((tmp_path / "sim-epochs.json").read_text())
    assert sum(epochs.values()) == connections, "one persisted epoch per connection"
