"""`plaza soak`'s venue-sized parts: machines in `plaza sim` children, WebSocket screens in node,
timed probe changes, and the KPIs they give (read by venue.scenario's soak run).

- **Machines.** Besides the scenario's own in-process machines (which its faults hit), the bulk
  run in `plaza sim` children (at most 1,000 each) with walk-in sessions and the simulator's
  own fault injection: crashes, silent network losses and flaps of a small share every round.
- **Screens.** ``screens`` browser-like mqtt.js clients over WebSocket (venue/soak_clients.mjs,
  spread over several node processes), connected as the web client connects: a persistent
  session, the board subscribed with QoS 1 on every connect, reconnects with backoff and
  jitter. Each counts every board version it receives once.
- **Reference.** One TCP subscriber of the board with a persistent session (the observer):
  every version the broker delivered to it after the screens were ready is expected at every
  screen. Loss = expected deliveries a screen never got: the broker-to-screens path (a version
  the broker lost before delivering it to anyone is not seen here).
- **Probes.** A few in-process machines change state at a steady rate; the time from the
  change (the machine's publish) to each screen's receipt of the board entry that shows it is
  the "state change -> client" latency. Changes inside a fault window (its start until every
  machine and screen is back) are reported apart from the rest.
- **Stability.** Per screen, time connected / time wanted (from its first connect to the end),
  with every disconnection, and again without the disconnections that began inside a fault
  window (those are the faults' own effect; their length is the recovery time).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from plaza.messages import BoardEntry, MachineState
from plaza.mqtt import connect_properties
from plaza.topics import Topics
from plaza_sim.machine import Machine
from venue.bench_fanout import WEB_PACKAGE, ClientProcess
from venue.benchkit import BENCH_SCREENS, BenchVenue, percentile, start_sim, watch_board
from venue.broker import die_with_parent

TOPICS = Topics()
CLIENTS_JS = Path(__file__).with_name("soak_clients.mjs")
#: machines per `plaza sim` child
PER_SIM = 1000


@dataclass
class Window:
    """A fault, from its injection until everything was back (wall clock, seconds)."""

    kind: str
    start: float
    end: float

    def holds(self, t: float) -> bool:
        return self.start <= t <= self.end


@dataclass
class Observer:
    """The reference: every board version the broker delivers to a persistent TCP session."""

    #: (machine, version) -> (when it arrived, the entry's state)
    seen: dict[tuple[str, int], tuple[float, str | None]] = field(default_factory=dict)
    latest: dict[str, BoardEntry] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, venue: BenchVenue) -> None:
        await watch_board(
            venue,
            self,
            "soak-reference",
            clean_start=False,
            properties=connect_properties(3600),
        )

    def take(self, payload: bytes) -> None:
        entry = BoardEntry.model_validate_json(payload)
        old = self.latest.get(entry.device_id)
        if old is not None and entry.version <= old.version:
            return
        self.latest[entry.device_id] = entry
        self.seen[(entry.device_id, entry.version)] = (time.time(), entry.state)
        self.changed.set()


@dataclass
class Probe:
    device: str
    state: str
    at: float  # wall clock of the machine's publish
    key: str | None = None  # device:version of the board entry that shows it


class Probes:
    """Toggle the probe machines idle <-> in use, one change every 1/rate s, round robin."""

    def __init__(self, machines: list[Machine], rate: float, observer: Observer) -> None:
        self.machines = machines
        self.rate = rate
        self.observer = observer
        self.changes: list[Probe] = []

    async def run(self) -> None:
        k = 0
        while True:
            m = self.machines[k % len(self.machines)]
            k += 1
            await asyncio.sleep(1 / self.rate)
            if not m.connected.is_set():
                continue
            state = MachineState.IN_USE if m.state is MachineState.IDLE else MachineState.IDLE
            probe = Probe(m.device, state.value, time.time())
            with contextlib.suppress(aiomqtt.MqttError):
                await m.set_state(state)
                self.changes.append(probe)

    def resolve(self) -> None:
        """Each change's board version: the first the observer saw for that machine after
        the change, in the new state."""
        by_device: dict[str, list[tuple[float, int, str | None]]] = {}
        for (device, version), (t, state) in self.observer.seen.items():
            by_device.setdefault(device, []).append((t, version, state))
        for seen in by_device.values():
            seen.sort()
        # The first version in the new state after the change. When the board lags more than
        # the machine's next two changes, a later change's version can be taken for this one
        # (its latency then reads longer than it was): bounding the match by the machine's
        # next changes instead left lagging changes unmatched, which read as lost.
        for probe in self.changes:
            for t, version, state in by_device.get(probe.device, []):
                if t >= probe.at and state == probe.state:
                    probe.key = f"{probe.device}:{version}"
                    break


class Screens:
    """``count`` WebSocket screens in ``processes`` node children."""

    def __init__(
        self,
        venue: BenchVenue,
        count: int,
        processes: int,
        probes: list[str],
        *,
        jitter: bool = True,
    ) -> None:
        self.venue = venue
        self.jitter = jitter
        self.count = count
        self.processes = max(1, min(processes, count))
        self.probes = probes
        self.procs: list[ClientProcess] = []
        self.report_paths: list[Path] = []
        self.ready_at = 0.0
        self.reports: list[dict[str, Any]] = []

    async def start(self, devices: int, within: float) -> float:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not installed: the soak's screens are mqtt.js in node")
        shares = [self.count // self.processes] * self.processes
        for i in range(self.count % self.processes):
            shares[i] += 1
        t0 = time.monotonic()
        for i, share in enumerate(shares):
            report = self.venue.work / f"screens{i}.json"
            log = (self.venue.work / f"screens{i}.log").open("wb")
            proc = await asyncio.create_subprocess_exec(
                node,
                str(CLIENTS_JS),
                *("--url", f"ws://127.0.0.1:{self.venue.broker.ws_port}/"),
                *("--username", BENCH_SCREENS.username, "--password", BENCH_SCREENS.password),
                *("--clients", str(share), "--prefix", f"soak{i}", "--devices", str(devices)),
                *("--web", str(WEB_PACKAGE), "--probes", ",".join(self.probes)),
                *("--report", str(report), "--jitter", "on" if self.jitter else "off"),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                preexec_fn=die_with_parent,
            )
            self.procs.append(ClientProcess(proc, f"screens{i}", log))
            self.report_paths.append(report)
        for p in self.procs:
            await p.event("ready", within)
        self.ready_at = time.time()
        return time.monotonic() - t0

    async def counts(self) -> dict[str, int]:
        """Screens connected now, and connects and full-board subscribes so far."""
        for p in self.procs:
            await p.send(cmd="count")
        answers = [await p.event("count", 30) for p in self.procs]
        return {k: sum(a[k] for a in answers) for k in ("live", "connects", "full_boards")}

    async def live(self) -> int:
        """How many screens are connected now."""
        return (await self.counts())["live"]

    async def all_live(self, within: float) -> None:
        """Until every screen is connected (TimeoutError after ``within`` seconds). A node
        process busy with a storm may take long to answer a count: that is not yet known,
        not yet failed (a 30 s count timeout used to end the wait early, reported as
        screens not back within 120 s)."""
        async with asyncio.timeout(within):
            while True:
                try:
                    if await self.live() >= self.count:
                        return
                except TimeoutError:
                    continue
                await asyncio.sleep(0.2)

    async def stop(self) -> None:
        for p in self.procs:
            if p.proc.returncode is None:
                await p.send(cmd="stop")
        for p, path in zip(self.procs, self.report_paths, strict=True):
            with contextlib.suppress(RuntimeError, TimeoutError):
                await p.event("done", 60)
                self.reports.append(json.loads(path.read_text()))
        await self.close()

    async def close(self) -> None:
        for p in self.procs:
            if p.proc.returncode is None:
                p.proc.terminate()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(p.proc.wait(), 10)
            p.log.close()


async def start_sims(
    venue: BenchVenue, devices: list[str], faults: str, fraction: float, every: float
) -> list[asyncio.subprocess.Process]:
    """The bulk machines in `plaza sim` children, playing walk-in sessions, with faults."""
    procs = []
    for i in range(0, len(devices), PER_SIM):
        group = {d: venue.secrets.devices[d] for d in devices[i : i + PER_SIM]}
        extra: list[str] = []
        if faults:
            extra += ["--fault", faults, "--fault-fraction", str(fraction)]
            extra += ["--fault-every", str(every), "--down-for", "5"]
        procs.append(
            await start_sim(
                venue.broker.port,
                group,
                venue.work,
                f"soak-sim-{i // PER_SIM}",
                progress_every=30,
                play=True,
                keepalive=30,
                extra=extra,
            )
        )
    return procs


async def stop_sims(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            proc.terminate()
    for proc in procs:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 30)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _overlap(a: float, b: float, windows: list[Window]) -> bool:
    return any(w.start <= b and a <= w.end for w in windows)


def quiet_round_trips(timed: list[tuple[float, float]], windows: list[Window]) -> str:
    """p50 / p99 / max of the commands that overlapped no fault window, and how many."""
    quiet = [ms for at, ms in timed if not _overlap(at, at + ms / 1000, windows)]
    if not quiet:
        return "none"
    return (
        f"{statistics.median(quiet):.1f} / {percentile(quiet, 99):.1f} / {max(quiet):.0f} "
        f"({len(quiet)} of {len(timed)} commands)"
    )


def screen_kpis(
    screens: Screens,
    observer: Observer,
    probes: Probes | None,
    windows: list[Window],
    settle_until: float,
) -> tuple[dict[str, Any], list[str]]:
    """The soak's screen figures, and its problems (a lost delivery, a screen report missing)."""
    figures: dict[str, Any] = {}
    problems: list[str] = []
    if len(screens.reports) != len(screens.procs):
        problems.append(
            f"{len(screens.procs) - len(screens.reports)} screen processes sent no report"
        )
    got: dict[str, int] = {}
    for r in screens.reports:
        for key, n in r["keys"].items():
            got[key] = got.get(key, 0) + n
    expected_keys = [
        f"{d}:{v}"
        for (d, v), (t, _state) in observer.seen.items()
        if screens.ready_at + 1.0 < t < settle_until
    ]
    expected = len(expected_keys) * screens.count
    delivered = sum(min(got.get(k, 0), screens.count) for k in expected_keys)
    figures["board versions published during the run (seen by the reference)"] = len(expected_keys)
    figures["board deliveries to screens: delivered / expected"] = f"{delivered:,} / {expected:,}"
    lost = expected - delivered
    figures["board deliveries lost"] = (
        f"{lost:,} ({100 * lost / expected:.4f} %)" if expected else "0"
    )
    if lost:
        problems.append(f"{lost} board deliveries to screens were lost")
    figures["repeats (retained copies on reconnect, QoS 1 redeliveries)"] = sum(
        r["repeats"] for r in screens.reports
    )
    # stability
    wanted = connected = connected_quiet = 0.0
    downs_total = downs_fault = 0
    for r in screens.reports:
        end = r["end_ms"] / 1000
        for start in r["up_from"]:
            if start is not None:
                wanted += end - start / 1000
        down_by_client: dict[int, float] = {}
        for client, a, b in r["downs"]:
            a, b = a / 1000, (b / 1000 if b is not None else end)
            down_by_client[client] = down_by_client.get(client, 0.0) + (b - a)
            downs_total += 1
            window = next((w for w in windows if w.holds(a)), None)
            if window is not None:
                downs_fault += 1
                connected_quiet -= max(0.0, b - window.end)  # longer than the fault's own
            else:
                connected_quiet -= b - a
        connected -= sum(down_by_client.values())
    connected += wanted
    connected_quiet += wanted
    if wanted:
        figures["screens' connection stability, faults included"] = (
            f"{100 * connected / wanted:.3f} %"
        )
        figures["screens' connection stability, outside the faults' own disconnections"] = (
            f"{100 * connected_quiet / wanted:.4f} %"
        )
    figures["screen disconnections: all / begun in a fault window"] = (
        f"{downs_total} / {downs_fault}"
    )
    figures["screen connects / of them with the whole retained board again"] = (
        f"{sum(r['connects'] for r in screens.reports)} / "
        f"{sum(r['full_boards'] for r in screens.reports)}"
    )
    cpu = sum(r["cpu_ms"] for r in screens.reports) / 1000
    figures["screens' node CPU (s, all processes)"] = round(cpu, 1)
    # latency
    if probes is not None:
        probes.resolve()
        times: dict[str, list[float]] = {}
        for r in screens.reports:
            for key, arrivals in r["probes"].items():
                times.setdefault(key, []).extend(arrivals)
        quiet: list[float] = []
        faulty: list[float] = []
        last_quiet: list[float] = []
        unresolved = unseen = 0
        lost_in_faults = 0
        for p in probes.changes:
            if p.at >= settle_until:
                continue
            if p.key is None:
                # a change made while the machine or the broker was down may be overtaken
                # by the next before it is ever published; outside a fault it is a loss
                if any(w.holds(p.at) for w in windows):
                    lost_in_faults += 1
                else:
                    unresolved += 1
                continue
            lat = [t / 1000 - p.at for t in times.get(p.key, [])]
            if not lat:
                unseen += 1
                continue
            in_fault = _overlap(p.at, p.at + max(lat), windows)
            (faulty if in_fault else quiet).extend(x * 1000 for x in lat)
            if not in_fault:
                last_quiet.append(max(lat) * 1000)
        timed = sum(1 for p in probes.changes if p.key is not None and p.at < settle_until)
        figures["probe changes (outside / inside fault windows)"] = (
            f"{len(last_quiet)} / {timed - unseen - len(last_quiet)}"
        )
        figures["probe changes overtaken before the board showed them, inside faults"] = (
            lost_in_faults
        )
        if unresolved:
            problems.append(
                f"{unresolved} probe changes outside the fault windows never showed on the board"
            )
        if unseen:
            problems.append(f"{unseen} probe changes on the board reached no screen")
        if quiet:
            figures["state change -> screen p50 / p99 / max (ms), outside faults"] = (
                f"{statistics.median(quiet):.1f} / {percentile(quiet, 99):.1f} / {max(quiet):.0f}"
            )
            figures["state change -> the last screen p50 / p99 (ms), outside faults"] = (
                f"{statistics.median(last_quiet):.1f} / {percentile(last_quiet, 99):.1f}"
            )
        if faulty:
            figures["state change -> screen p50 / p99 / max (ms), inside fault windows"] = (
                f"{statistics.median(faulty):.1f} / {percentile(faulty, 99):.1f} / "
                f"{max(faulty):.0f}"
            )
    return figures, problems


class SoakParts:
    """The soak's bulk machines, screens, reference and probes around a scenario run."""

    def __init__(
        self,
        venue: BenchVenue,
        local: list[Machine],
        bulk: list[str],
        *,
        screens: int,
        processes: int,
        probes: int,
        probe_rate: float,
        sim_faults: str,
    ) -> None:
        self.venue = venue
        self.local = local
        self.bulk = bulk
        self.sim_faults = sim_faults
        self.observer = Observer()
        probe_machines = local[len(local) - probes :] if probes else []
        self.probes = Probes(probe_machines, probe_rate, self.observer) if probes else None
        self.screens = Screens(venue, screens, processes, [m.device for m in probe_machines])
        self.sims: list[asyncio.subprocess.Process] = []
        self.windows: list[Window] = []
        self.problems: list[str] = []
        self._probing: asyncio.Task[None] | None = None

    async def start(
        self, tg: asyncio.TaskGroup, figures: dict[str, Any]
    ) -> list[asyncio.Task[None]]:
        """The reference, the bulk machines (until the board has every machine online), the
        screens (until each holds the whole board), then the probes; the tasks started."""
        tasks = [tg.create_task(self.observer.run(self.venue))]
        t0 = time.monotonic()
        self.sims = await start_sims(self.venue, self.bulk, self.sim_faults, 0.005, 30.0)
        everyone = [d.id for d in self.venue.fleet]
        async with asyncio.timeout(600):
            while not all(
                (e := self.observer.latest.get(d)) is not None and e.online for d in everyone
            ):
                self.observer.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.observer.changed.wait(), 1.0)
        figures["every machine online on the board (s)"] = round(time.monotonic() - t0, 1)
        if self.screens.count:
            took = await self.screens.start(len(everyone), 600)
            figures["screens connected, each holding the whole board (s)"] = round(took, 1)
        if self.probes is not None:
            self._probing = tg.create_task(self.probes.run())
            tasks.append(self._probing)
        return tasks

    async def back(self, kind: str, started_wall: float) -> None:
        """After a fault: until every screen is connected again (at most 120 s); the fault's
        window."""
        if self.screens.count:
            try:
                await self.screens.all_live(120)
            except TimeoutError:
                self.problems.append(f"after the {kind}, not every screen was back within 120 s")
        self.windows.append(Window(kind, started_wall, time.time() + 1.0))

    async def finish(self) -> tuple[dict[str, Any], list[str]]:
        """Stop the probes and the bulk machines, let the last changes arrive, then the
        screens' report."""
        if self._probing is not None:
            self._probing.cancel()
        await stop_sims(self.sims)
        await asyncio.sleep(5.0)
        settle_until = time.time() - 3.0
        if not self.screens.count:
            return {}, self.problems
        await self.screens.stop()
        figures, problems = screen_kpis(
            self.screens, self.observer, self.probes, self.windows, settle_until
        )
        return figures, self.problems + problems

    async def close(self) -> None:
        if self._probing is not None:
            self._probing.cancel()
        await stop_sims(self.sims)
        await self.screens.close()
