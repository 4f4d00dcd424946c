"""How long simulated machines take to come back after a broker restart (issue 16).

A private mosquitto from broker-config/ on free ports, N machines in this process (as one
`plaza sim` runs them; ``--relay K``: the first K behind a relay, as the soak's), the broker
stopped (SIGTERM, it saves its persistence), down ``--down`` seconds, started again on the same
ports and persistence; per machine, the time from the broker's start until the machine is
connected again (birth, subscribe and state acknowledged).

    PYTHONPATH=$PWD:$PWD/device-firmware-sim .venv/bin/python scripts/sim_reconnect.py \\
        --machines 50 --down 1 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from plaza.settings import Settings
from plaza.topics import Topics
from plaza_sim.epochs import EpochStore
from plaza_sim.machine import Machine, MachineConfig
from venue.accounts import VenueSecrets, demo_fleet
from venue.broker import start_on_free_ports


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


async def run(machines: int, down: float, relay: int) -> str:
    work = Path(tempfile.mkdtemp(prefix="sim-reconnect-"))
    ids = [d.id for d in demo_fleet(machines)]
    secrets = VenueSecrets()
    secrets.ensure_devices(ids)
    clients = secrets.broker_clients(Settings(data_dir=work))
    broker = start_on_free_ports(work / "broker", clients, secrets.roles(Topics()))
    epochs = EpochStore(work / "epochs.json")
    fleet = [
        Machine(
            MachineConfig(
                d, secrets.devices[d], broker.host, broker.port, keepalive=60, via_relay=i < relay
            ),
            epochs,
            autoplay=False,
        )
        for i, d in enumerate(ids)
    ]
    tasks = []
    try:
        for i, m in enumerate(fleet):
            tasks.append(asyncio.create_task(m.run()))
            if i % 50 == 49:
                await asyncio.sleep(0.05)  # paced as `plaza sim` paces its first connects
        async with asyncio.timeout(120):
            await asyncio.gather(*(m.connected.wait() for m in fleet))
        had = [m.stats.connects for m in fleet]
        t_stop = time.monotonic()
        await asyncio.to_thread(broker.stop)
        stopped = time.monotonic() - t_stop
        await asyncio.sleep(down)
        t0 = time.monotonic()
        await asyncio.to_thread(broker.start)
        back: dict[str, float] = {}

        async def timed(m: Machine, connects: int) -> None:
            while m.stats.connects <= connects or not m.connected.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            back[m.device] = time.monotonic() - t0

        try:
            async with asyncio.timeout(60):
                await asyncio.gather(*(timed(m, c) for m, c in zip(fleet, had, strict=True)))
        except TimeoutError:
            pass
        times = list(back.values()) or [float("nan")]
        return (
            f"{machines} machines ({relay} via relay), stop {stopped:.2f} s, down {down} s: "
            f"back {len(back)}/{machines}, after the broker's start p50 "
            f"{percentile(times, 50):.2f} / p90 {percentile(times, 90):.2f} / max "
            f"{max(times):.2f} s; rebirths {sum(m.stats.rebirths for m in fleet)}"
        )
    finally:
        await asyncio.gather(*(m.stop() for m in fleet))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=50)
    parser.add_argument("--down", type=float, default=1.0, help="seconds the broker is down")
    parser.add_argument("--relay", type=int, default=0, help="machines behind a relay")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    for _ in range(args.runs):
        try:
            line = asyncio.run(run(args.machines, args.down, args.relay))
        except Exception as exc:  # e.g. another process took the port while the broker was down
            line = f"run failed: {exc!r}"[:500]
        print(line, flush=True)


if __name__ == "__main__":
    main()
