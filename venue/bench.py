"""`plaza bench presence`: presence latencies with a fleet connected, against a raw reference.

Set-up: a private mosquitto from broker-config/ on free ports, the bridge as its own process
(SQLite in a temp dir, as `plaza up` runs it), N simulated machines and one observer in this
process. Three measurements are interleaved, trial by trial, in one run:

- raw:   a publish by one client -> received by the observer (the broker's own round trip);
- drop:  a machine's socket closed without DISCONNECT -> board entry offline at the observer;
- state: a machine publishes a new state -> board entry with that status at the observer.

Each figure is the time from just before the trigger to the observer's receipt, in the same
event loop and clock. Medians and p99 are reported, and state/raw as a ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from plaza.messages import BoardEntry, MachineState
from plaza.topics import Topics
from plaza_sim.epochs import EpochStore
from plaza_sim.machine import Machine, MachineConfig
from venue.accounts import OBSERVER_CLIENT_ID, OBSERVER_USER, DeviceSpec, demo_fleet
from venue.benchkit import BENCH_TOOL, BenchVenue, percentile, write_report

TOPICS = Topics()
ECHO_TOPIC = TOPICS.bench_echo


@dataclass
class Observer:
    """Records arrival times; a waiter is a predicate with a future."""

    loop: asyncio.AbstractEventLoop
    waiters: list[tuple[Callable[[str, bytes], bool], asyncio.Future[float]]] = field(
        default_factory=list
    )

    def arrived(self, topic: str, payload: bytes) -> None:
        at = self.loop.time()
        for item in list(self.waiters):
            predicate, future = item
            if not future.done() and predicate(topic, payload):
                future.set_result(at)
                self.waiters.remove(item)

    def expect(self, predicate: Callable[[str, bytes], bool]) -> asyncio.Future[float]:
        future: asyncio.Future[float] = self.loop.create_future()
        self.waiters.append((predicate, future))
        return future


def board_is(device: str, check: Callable[[BoardEntry], bool]) -> Callable[[str, bytes], bool]:
    topic = TOPICS.board(device)

    def predicate(t: str, payload: bytes) -> bool:
        return t == topic and bool(payload) and check(BoardEntry.model_validate_json(payload))

    return predicate


def echo_is(marker: bytes) -> Callable[[str, bytes], bool]:
    return lambda topic, payload: topic == ECHO_TOPIC and payload == marker


def state_is(state: MachineState) -> Callable[[BoardEntry], bool]:
    return lambda entry: entry.state is state


async def _bench(machines: int, trials: int, work: Path) -> dict[str, list[float]]:
    topics = TOPICS
    fleet = demo_fleet(machines)
    async with BenchVenue(work, fleet) as venue:
        return await _measure(venue, fleet, trials, topics)


async def _measure(
    venue: BenchVenue, fleet: list[DeviceSpec], trials: int, topics: Topics
) -> dict[str, list[float]]:
    machines = len(fleet)
    secrets, broker = venue.secrets, venue.broker
    loop = asyncio.get_running_loop()
    observer = Observer(loop)
    online: set[str] = set()
    all_online = asyncio.Event()
    epochs = EpochStore(None)
    fleet_machines = [
        Machine(
            MachineConfig(d.id, secrets.devices[d.id], "127.0.0.1", broker.port, keepalive=30),
            epochs,
            autoplay=False,
        )
        for d in fleet
    ]
    results: dict[str, list[float]] = {"raw": [], "drop": [], "state": []}

    client = venue.client
    async with (
        client(OBSERVER_USER, secrets.observer, identifier=OBSERVER_CLIENT_ID) as watch,
        client(BENCH_TOOL.username, BENCH_TOOL.password) as raw_pub,
        asyncio.TaskGroup() as tg,
    ):
        await watch.subscribe([(topics.all_board, 1), (ECHO_TOPIC, 1)])

        async def pump() -> None:
            async for m in watch.messages:
                payload = m.payload if isinstance(m.payload, bytes) else b""
                if m.topic.value != ECHO_TOPIC and payload:  # a board entry
                    entry = BoardEntry.model_validate_json(payload)
                    (online.add if entry.online else online.discard)(entry.device_id)
                    if len(online) == machines:
                        all_online.set()
                observer.arrived(m.topic.value, payload)

        pump_task = tg.create_task(pump())
        tasks = []
        for i, m in enumerate(fleet_machines):
            tasks.append(tg.create_task(m.run()))
            if i % 50 == 49:
                await asyncio.sleep(0.05)
        await asyncio.wait_for(all_online.wait(), 60)
        print(f"bench: {machines} machines online on the board; {trials} trials each")

        for trial in range(trials):
            m = fleet_machines[trial % machines]
            # raw reference
            got = observer.expect(echo_is(f"{trial}".encode()))
            t0 = loop.time()
            await raw_pub.publish(ECHO_TOPIC, f"{trial}".encode(), qos=1)
            results["raw"].append((await asyncio.wait_for(got, 5) - t0) * 1000)
            # state change -> board
            target = MachineState.IN_USE if m.state is MachineState.IDLE else MachineState.IDLE
            got = observer.expect(board_is(m.device, state_is(target)))
            t0 = loop.time()
            await m.set_state(target)
            results["state"].append((await asyncio.wait_for(got, 5) - t0) * 1000)
            # socket drop -> board offline
            got = observer.expect(board_is(m.device, lambda e: not e.online))
            t0 = loop.time()
            m.crash(down_for=0.2)
            results["drop"].append((await asyncio.wait_for(got, 5) - t0) * 1000)
            back = observer.expect(board_is(m.device, lambda e: e.online))
            await asyncio.wait_for(back, 10)
        for m in fleet_machines:
            await m.stop()
        for t in (*tasks, pump_task):
            t.cancel()
    return results


def report(results: dict[str, list[float]], machines: int, trials: int, command: str) -> str:
    def row(name: str, label: str) -> str:
        v = results[name]
        return (
            f"| {label} | {len(v)} | {statistics.median(v):.2f} | {percentile(v, 99):.2f} "
            f"| {max(v):.2f} |"
        )

    raw_p50 = statistics.median(results["raw"])
    raw_p99 = percentile(results["raw"], 99)
    state_p50 = statistics.median(results["state"])
    state_p99 = percentile(results["state"], 99)
    drop_p99 = percentile(results["drop"], 99)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpu = os.cpu_count()
    return "\n".join(
        [
            "## Presence (`plaza bench presence`)",
            "",
            f"Run {when} on {platform.system()} {platform.machine()}, {cpu} cores, "
            f"Python {platform.python_version()}, {machines} simulated machines connected, "
            "bridge as its own process on SQLite, mosquitto from broker-config/ on loopback.",
            "",
            f"Command: `{command}`",
            "",
            "| measurement | trials | p50 ms | p99 ms | max ms |",
            "|---|---|---|---|---|",
            row("raw", "raw broker publish -> receive (reference)"),
            row("state", "(b) state change -> board update at a subscriber"),
            row("drop", "(a) socket drop -> board offline at a subscriber"),
            "",
            f"- (a) p99 {drop_p99:.2f} ms; target < 100 ms: "
            f"{'met' if drop_p99 < 100 else 'NOT met'}.",
            f"- (b) p99 {state_p99:.2f} ms = {state_p99 / raw_p99:.1f} x the raw p99 "
            f"({raw_p99:.2f} ms); p50 ratio {state_p50 / raw_p50:.1f} x; "
            f"target p99 within 5 x raw: {'met' if state_p99 <= 5 * raw_p99 else 'NOT met'}.",
            "",
        ]
    )


def run_presence_bench(args: argparse.Namespace) -> int:
    command = f"plaza bench presence --machines {args.machines} --trials {args.trials}"
    with tempfile.TemporaryDirectory(prefix="plaza-bench-") as tmp:
        started = time.monotonic()
        results = asyncio.run(_bench(args.machines, args.trials, Path(tmp)))
    section = report(results, args.machines, args.trials, command)
    print(section)
    print(f"bench took {time.monotonic() - started:.1f}s; report in {args.output}")
    write_report(Path(args.output), section)
    return 0
