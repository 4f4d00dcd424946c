"""The simulator process: a fleet of machines, fault injection, the players who book them and
arrive (plaza_sim/arrivals.py) and the staff who approve those bookings at the desk
(plaza_sim/desk.py), progress and a summary."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from plaza.messages import MachineState
from plaza_sim.arrivals import Arrivals, PlayerLink, PlayerPlan
from plaza_sim.desk import Desk
from plaza_sim.epochs import EpochStore
from plaza_sim.machine import Machine, MachineConfig

log = logging.getLogger(__name__)
FAULT_KINDS = ("crash", "silent", "flap", "fault")


@dataclass(frozen=True, slots=True)
class FaultPlan:
    kinds: tuple[str, ...] = ()
    fraction: float = 0.1
    every: float = 30.0
    down_for: float = 5.0

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; use {FAULT_KINDS}")
        if not 0 <= self.fraction <= 1:
            raise ValueError("fault fraction must be within 0..1")


def load_devices(path: Path, count: int | None = None) -> dict[str, str]:
    """``{device_id: password}`` from the file `plaza up` writes (DIR/devices.json)."""
    devices: dict[str, str] = json.loads(path.read_text())
    items = sorted(devices.items())
    return dict(items[:count] if count else items)


def tls_context(ca: Path | None) -> ssl.SSLContext:
    """MQTT over TLS 1.3, the broker verified against ``ca`` (the venue CA) or the system's
    trust store, host name checked: what a machine's firmware is provisioned with."""
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


class Fleet:
    def __init__(
        self,
        devices: dict[str, str],
        *,
        host: str,
        port: int,
        keepalive: int,
        epochs: EpochStore,
        autoplay: bool = True,
        speed: float = 1.0,
        faults: FaultPlan | None = None,
        topic_root: str = "plaza",
        will_delay: int = 0,
        seed: int | None = None,
        tls_ca: Path | None = None,
        tls: bool = False,
        players: dict[str, str] | None = None,
        player_plan: PlayerPlan | None = None,
        desk: Desk | None = None,
    ) -> None:
        self.faults = faults or FaultPlan()
        self.rng = random.Random(seed)
        relay = "silent" in self.faults.kinds
        context = tls_context(tls_ca) if tls else None
        self.machines = [
            Machine(
                MachineConfig(
                    device, pw, host, port, keepalive, will_delay, topic_root, relay, context
                ),
                epochs,
                autoplay=autoplay,
                speed=speed,
                rng=random.Random(self.rng.random()),
            )
            for device, pw in devices.items()
        ]
        #: simulated players who book these machines and arrive to type their codes
        self.arrivals = (
            Arrivals(
                players,
                self.machines,
                link=PlayerLink(host, port, topic_root, context),
                plan=player_plan,
                rng=random.Random(self.rng.random()),
            )
            if players
            else None
        )
        self.desk = desk

    def online(self) -> int:
        return sum(m.connected.is_set() for m in self.machines)

    def line(self) -> str:
        states = Counter(m.state.value for m in self.machines if m.connected.is_set())
        faults: Counter[str] = Counter()
        for m in self.machines:
            faults.update(m.stats.faults)
        fault_text = " ".join(f"{k} {faults[k]}" for k in FAULT_KINDS if faults[k]) or "none"
        line = (
            f"sim: {self.online()}/{len(self.machines)} online, "
            f"{states[MachineState.IN_USE.value]} in use, faults injected: {fault_text}"
        )
        if self.arrivals is not None:
            line += f"; {self.arrivals.line()}"
        if self.desk is not None:
            line += f"; {self.desk.line()}"
        return line

    async def run(
        self,
        duration: float | None = None,
        progress_every: float = 10.0,
        out: TextIO = sys.stdout,
    ) -> None:
        started = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            tasks = []
            for i, machine in enumerate(self.machines):
                tasks.append(tg.create_task(machine.run(), name=machine.device))
                if i % 50 == 49:
                    await asyncio.sleep(0.05)  # pace the connect burst (listen backlog is 100)
            helpers = [tg.create_task(self._progress(progress_every, out))]
            if self.faults.kinds:
                helpers.append(tg.create_task(self._inject(tg, helpers)))
            if self.arrivals is not None:
                helpers.append(tg.create_task(self.arrivals.run(), name="players"))
            if self.desk is not None:
                helpers.append(tg.create_task(self.desk.run(), name="desk"))
            try:
                if duration is None:
                    await asyncio.Event().wait()
                await asyncio.sleep(duration or 0)
            finally:
                final = self.summary(time.monotonic() - started)
                await asyncio.gather(*(machine.stop() for machine in self.machines))
                for task in (*tasks, *helpers):
                    task.cancel()
                print(final, file=out, flush=True)

    def summary(self, elapsed: float) -> str:
        connects = sum(m.stats.connects for m in self.machines)
        rebirths = sum(m.stats.rebirths for m in self.machines)
        sessions = sum(m.stats.sessions for m in self.machines)
        commands = sum(m.stats.commands for m in self.machines)
        bumped = sum(m.stats.bumped for m in self.machines)
        return (
            f"sim summary after {elapsed:.0f}s: {len(self.machines)} machines, "
            f"{connects} connections, {rebirths} rebirths, {sessions} walk-in sessions "
            f"({bumped} ended for a reservation), {commands} commands answered; {self.line()}"
        )

    async def _progress(self, every: float, out: TextIO) -> None:
        last = ""
        while True:
            await asyncio.sleep(every)
            line = self.line()
            if line != last:
                print(line, file=out, flush=True)
                last = line

    async def _inject(self, tg: asyncio.TaskGroup, running: list[asyncio.Task[None]]) -> None:
        """Every ``plan.every`` seconds, hit a share of the healthy machines with a fault;
        fault tasks go into ``running`` so a stop cancels them too."""
        plan = self.faults
        while True:
            await asyncio.sleep(plan.every)
            healthy = [m for m in self.machines if m.connected.is_set()]
            count = max(1, round(len(self.machines) * plan.fraction)) if healthy else 0
            for machine in self.rng.sample(healthy, min(count, len(healthy))):
                kind = self.rng.choice(plan.kinds)
                log.info("injecting %s into %s", kind, machine.device)
                if kind == "crash":
                    machine.crash(plan.down_for)
                elif kind == "silent":
                    running.append(tg.create_task(machine.silent_loss(plan.down_for)))
                elif kind == "flap":
                    running.append(tg.create_task(_quiet(machine.flap())))
                else:
                    fault = machine.report_fault("injected hardware fault", plan.down_for)
                    running.append(tg.create_task(fault))


async def _quiet(coro: object) -> None:
    with contextlib.suppress(TimeoutError):
        await coro  # type: ignore[misc]
