"""Simulated machines are back soon after the broker is (issue 16: after a broker restart
they took up to ~10 s, the bridge under 2 s).

Three causes, each a test here, against a real broker:
- a machine that was waiting for a PUBACK when the broker closed its connection (at shutdown
  Mosquitto delivers each machine its own will, and the machine publishes its birth again)
  waited out aiomqtt's whole timeout (10 s) before it noticed;
- a machine behind a relay (the soak's machines: silent network losses) got the relay's
  connection closed before any CONNACK, which aiomqtt also waits out for 10 s;
- the backoff grew while the broker was down (refused connects), to 3.2-6.4 s after a 2 s
  restart, and never started again from its first delay after a good connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from plaza.messages import CommandName, DeviceCommand, now
from plaza_sim.machine import Machine
from plaza_sim.reconnect import BASE, REFUSED_CAP
from tests.conftest import BrokerHandle
from tests.integration.helpers import machine, start, stop

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

#: what a connect, a birth, a subscribe and a state take on a loaded 2-core machine, on top
#: of the schedule's own delay; aiomqtt's timeout (what the machines waited before) is 10 s
MARGIN = 1.5


@pytest.fixture
def fleet_ids() -> list[str]:
    return [f"sim-{i:02d}" for i in range(30)]


async def back_after(m: Machine, connects: int) -> None:
    """Until ``m`` has made a new connection since it had ``connects`` and is connected."""
    while m.stats.connects <= connects or not m.connected.is_set():  # noqa: ASYNC110
        await asyncio.sleep(0.01)


async def test_a_machine_waiting_for_a_puback_notices_its_connection_closed_at_once(
    broker: BrokerHandle, fleet_ids: list[str], tmp_path: Path
) -> None:
    device = fleet_ids[0]
    m = machine(broker, device, tmp_path, via_relay=True)
    task = await start(m)
    assert m.relay is not None
    m.relay.drop_to_broker = True  # the machine's birth is lost: its PUBACK never comes
    async with broker.stand_in_bridge() as bridge:
        rebirth = DeviceCommand(cmd=CommandName.REBIRTH, ts=now())
        await bridge.publish(broker.topics.cmd(device), rebirth.encode(), qos=1)
        async with asyncio.timeout(5):
            while m.stats.commands < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # the birth went out and waits for its PUBACK
    m.relay.restore()
    t0 = time.monotonic()
    m.relay.cut()  # as a broker that stops: the machine reads EOF now
    async with asyncio.timeout(BASE + MARGIN):
        await back_after(m, 1)
    assert time.monotonic() - t0 < BASE + MARGIN
    await stop(m, task)


async def test_after_a_broker_restart_every_machine_is_back_within_the_refused_cap(
    broker: BrokerHandle, fleet_ids: list[str], tmp_path: Path
) -> None:
    """30 machines (5 behind a relay, as the soak runs them), the broker stopped (SIGTERM),
    down 2 s and started again on the same ports and persistence: each machine tries again
    within REFUSED_CAP of the broker listening, so all are back within REFUSED_CAP + MARGIN
    of its start; and they are not back all at once (the jitter still spreads them)."""
    machines = [
        machine(broker, d, tmp_path, keepalive=60, via_relay=i < 5) for i, d in enumerate(fleet_ids)
    ]
    tasks = [await start(m) for m in machines]
    connects = [m.stats.connects for m in machines]

    broker.broker.stop()
    await asyncio.sleep(2.0)  # the machines keep trying, refused
    broker.broker.start()
    t0 = time.monotonic()
    back: dict[str, float] = {}

    async def timed(m: Machine, had: int) -> None:
        await back_after(m, had)
        back[m.device] = time.monotonic() - t0

    waits = [timed(m, c) for m, c in zip(machines, connects, strict=True)]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(REFUSED_CAP + MARGIN):
            await asyncio.gather(*waits)
    late = sorted(set(fleet_ids) - set(back))
    assert not late, f"not back within {REFUSED_CAP + MARGIN} s: {late}"
    assert max(back.values()) - min(back.values()) > 0.1  # spread, not a burst
    for m, t in zip(machines, tasks, strict=True):
        await stop(m, t)
