"""`plaza bench scale` and `plaza bench storm`: many machines with wills on one broker.

Set-up: a private mosquitto from broker-config/, the bridge as its own process (SQLite), the
machines seeded in SQL and run by several `plaza sim` processes (each paces its connects at
1,000/s), the open-file soft limit raised for all of them (venue.limits).

scale measures:

- the time until every machine is online on the board (from the first sim start);
- broker and bridge RSS per machine (VmRSS after minus before the machines connected);
- that the board tracks every one (one online entry per machine);
- that a *new* subscriber to ``plaza/board/+`` receives every retained entry: Mosquitto issue
  2196, a wildcard subscription delivering only part of a large retained set, happens when the
  retained set exceeds the subscriber's queue (``max_queued_messages``); broker-config sizes it
  at 20,000, twice the 10,000 machines;
- the offline-detection latency of a 1 % crash wave: one sim process holds 1 % of the machines
  and is killed with SIGKILL (every socket closes without DISCONNECT); per machine, the time
  until its board entry says offline.

storm restarts the broker under N machines and M board subscribers (browser-like clients that
reconnect on their own, with or without jitter) and measures the time until every board entry
is right again and the peak connect rate (connects per second from the broker's log).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plaza.messages import BoardEntry
from plaza.topics import Topics
from venue.accounts import DeviceSpec, demo_fleet
from venue.bench_fanout import load_average
from venue.benchkit import (
    BENCH_SCREENS,
    BenchVenue,
    machine_line,
    percentile,
    start_sim,
    watch_board,
    write_report,
)
from venue.limits import raise_open_files
from venue.soak import Screens

TOPICS = Topics()


def rss_kb(pid: int) -> int:
    for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Board:
    """Every board entry seen, as the observer: online per machine and when it changed."""

    online: dict[str, bool] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    went_offline: dict[str, float] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self, payload: bytes) -> None:
        entry = BoardEntry.model_validate_json(payload)
        if entry.version < self.versions.get(entry.device_id, -1):
            return
        self.versions[entry.device_id] = entry.version
        if self.online.get(entry.device_id) and not entry.online:
            self.went_offline[entry.device_id] = time.monotonic()
        self.online[entry.device_id] = entry.online
        self.changed.set()

    def count_online(self, devices: list[str]) -> int:
        return sum(1 for d in devices if self.online.get(d))

    async def progress(self, devices: list[str], every: float = 5.0) -> None:
        started = time.monotonic()
        while True:
            await asyncio.sleep(every)
            print(
                f"bench: {time.monotonic() - started:.0f}s: "
                f"{self.count_online(devices)}/{len(devices)} online on the board",
                flush=True,
            )

    async def until(self, test: Any, seconds: float) -> None:
        async with asyncio.timeout(seconds):
            while not test():
                self.changed.clear()
                await self.changed.wait()


async def retained_count(venue: BenchVenue, quiet: float = 2.0) -> int:
    """A new subscriber to plaza/board/+: how many retained entries it receives."""
    seen: set[str] = set()
    client = venue.client(
        BENCH_SCREENS.username, BENCH_SCREENS.password, identifier="bench-new-sub"
    )
    async with client:
        await client.subscribe(TOPICS.all_board, qos=1)
        with contextlib.suppress(TimeoutError):
            while True:
                async with asyncio.timeout(quiet):
                    message = await anext(client.messages)
                if message.retain:
                    seen.add(message.topic.value)
    return len(seen)


class Sims:
    """The machines in ``processes`` `plaza sim` children; the last holds ``crash_share``."""

    def __init__(self, venue: BenchVenue, work: Path) -> None:
        self.venue = venue
        self.work = work
        self.procs: list[asyncio.subprocess.Process] = []
        self.groups: list[list[str]] = []

    async def start(self, groups: list[list[str]]) -> None:
        self.groups = groups
        for i, group in enumerate(groups):
            devices = {d: self.venue.secrets.devices[d] for d in group}
            self.procs.append(
                await start_sim(
                    self.venue.broker.port, devices, self.work, f"sim-{i}", progress_every=5
                )
            )

    def kill(self, index: int) -> None:
        self.procs[index].send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in self.procs:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 20)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def split(fleet: list[DeviceSpec], processes: int, crash: int) -> list[list[str]]:
    """``processes`` groups of the first machines, and a last group of ``crash`` machines."""
    ids = [d.id for d in fleet]
    head, tail = ids[: len(ids) - crash], ids[len(ids) - crash :]
    groups = [head[i::processes] for i in range(processes)]
    return [g for g in groups if g] + ([tail] if tail else [])


def bridge_env() -> dict[str, str]:
    return {"PLAZA_TIMER_TICK": "5", "PLAZA_OUTAGE_GRACE": "3600"}


async def _scale(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    fleet = demo_fleet(args.machines)
    crash = max(1, args.machines // 100)
    result: dict[str, Any] = {"machines": len(fleet), "crash": crash}
    async with BenchVenue(work, fleet, bridge_env=bridge_env(), seed_devices=True) as venue:
        await venue.wait_bridge_ready()
        assert venue.broker.proc is not None
        assert venue.bridge is not None
        await asyncio.sleep(1.0)
        broker_before, bridge_before = rss_kb(venue.broker.proc.pid), rss_kb(venue.bridge.pid)
        board = Board()
        watcher = asyncio.ensure_future(watch_board(venue, board, "bench-board"))
        devices = [d.id for d in fleet]
        sims = Sims(venue, work)
        await asyncio.sleep(1.0)  # the observer's own connect falls before ``since``
        since, started_wall = time.strftime("%Y-%m-%dT%H:%M:%S"), time.time()
        started = time.monotonic()
        progress = asyncio.ensure_future(board.progress(devices))
        await sims.start(split(fleet, args.processes, crash))
        await board.until(lambda: board.count_online(devices) == len(devices), args.timeout)
        result["connect_s"] = time.monotonic() - started
        progress.cancel()
        await asyncio.sleep(3.0)
        broker_after, bridge_after = rss_kb(venue.broker.proc.pid), rss_kb(venue.bridge.pid)
        result["rss"] = (broker_before, broker_after, bridge_before, bridge_after)
        result["broker_kb"] = (broker_after - broker_before) / len(fleet)
        result["bridge_kb"] = (bridge_after - bridge_before) / len(fleet)
        log = venue.broker.log_path.read_text(errors="replace")
        reached = connected_by(log, since, len(fleet))
        result["broker_s"] = reached - started_wall if reached is not None else float("nan")
        result["board_online"] = board.count_online(devices)
        result["retained"] = await retained_count(venue)
        doomed = sims.groups[-1]
        t0 = time.monotonic()
        sims.kill(len(sims.groups) - 1)
        await board.until(lambda: all(not board.online.get(d) for d in doomed), 60)
        result["offline_ms"] = [(board.went_offline[d] - t0) * 1000 for d in doomed]
        result["others_online"] = board.count_online(devices[: len(devices) - crash])
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await sims.stop()
    return result


def mib(kb: int) -> str:
    return f"{kb / 1024:.1f} MiB"


def scale_report(r: dict[str, Any], command: str) -> str:
    off = r["offline_ms"]
    n = r["machines"]
    return "\n".join(
        [
            "## Scale (`plaza bench scale`)",
            "",
            f"{machine_line()}; load average before the run {r['load']}. {n:,} simulated "
            "machines with wills in several `plaza sim` processes (1,000 connects/s each), the "
            "bridge as its own process (SQLite), mosquitto from broker-config/.",
            "",
            f"Command: `{command}`",
            "",
            "| figure | value |",
            "|---|---|",
            f"| time until every machine is online on the board | {r['connect_s']:.1f} s |",
            "| every machine connected at the broker (its log, 1 s resolution) | "
            f"{r['broker_s']:.0f} s |",
            f"| broker RSS before / after the machines connected | {mib(r['rss'][0])} / "
            f"{mib(r['rss'][1])} (per machine {r['broker_kb']:.1f} KiB) |",
            f"| bridge RSS before / after the machines connected | {mib(r['rss'][2])} / "
            f"{mib(r['rss'][3])} (per machine {r['bridge_kb']:.1f} KiB) |",
            f"| board entries online (of {n:,}) | {r['board_online']:,} |",
            f"| retained entries a new `plaza/board/+` subscriber receives | {r['retained']:,} |",
            f"| crash wave: machines killed at once (SIGKILL of their process) | {r['crash']} |",
            f"| offline on the board after the crash: p50 / p99 / max | "
            f"{percentile(off, 50):.0f} / {percentile(off, 99):.0f} / {max(off):.0f} ms |",
            f"| other machines still online | {r['others_online']:,} of {n - r['crash']:,} |",
            "",
        ]
    )


# -- storm -----------------------------------------------------------------------------------
def connected_by(log: str, since: str, count: int) -> float | None:
    """The wall-clock second (from the broker log, 1 s resolution) by whose end ``count``
    clients had connected since ``since``; None when fewer did."""
    seen = 0
    for line in log.splitlines():
        if "New client connected" in line and line[:19] >= since:
            seen += 1
            if seen == count:
                return time.mktime(time.strptime(line[:19], "%Y-%m-%dT%H:%M:%S")) + 1.0
    return None


def connect_rate(log: str, since: str) -> tuple[int, int]:
    """(peak connects in one second, total) from the broker log lines after ``since``."""
    per_second: Counter[str] = Counter()
    for line in log.splitlines():
        if "New client connected" in line and line[:19] >= since:
            per_second[line[:19]] += 1
    return (max(per_second.values()) if per_second else 0), sum(per_second.values())


async def _storm(args: argparse.Namespace, work: Path, jitter: bool) -> dict[str, Any]:
    fleet = demo_fleet(args.machines)
    result: dict[str, Any] = {"jitter": jitter}
    async with BenchVenue(work, fleet, bridge_env=bridge_env(), seed_devices=True) as venue:
        await venue.wait_bridge_ready()
        board = Board()
        watcher = asyncio.ensure_future(watch_board(venue, board, "bench-board"))
        devices = [d.id for d in fleet]
        sims = Sims(venue, work)
        await sims.start(split(fleet, args.processes, 0))
        await board.until(lambda: board.count_online(devices) == len(devices), args.timeout)
        # browser-like screens: mqtt.js over WebSocket in node, connected as the web client
        processes = max(1, min(args.processes, -(-args.clients // 250)))
        screens = Screens(venue, args.clients, processes, [], jitter=jitter)
        try:
            await screens.start(len(devices), args.timeout)
            before = await screens.counts()
            await asyncio.to_thread(venue.broker.stop)
            since = time.strftime("%Y-%m-%dT%H:%M:%S")
            # The bridge sees the machines' wills only from a live broker; after a restart the
            # retained presence says online until each machine is back with a new epoch.
            epochs = dict(board.versions)
            await asyncio.sleep(1.0)
            t0 = time.monotonic()
            await asyncio.to_thread(venue.broker.start)

            def board_right() -> bool:
                return all(
                    board.online.get(d) and board.versions.get(d, -1) > epochs.get(d, -1)
                    for d in devices
                )

            async def timed(wait: Awaitable[None]) -> float:
                await wait
                return time.monotonic() - t0

            board_s, screens_s = await asyncio.gather(
                timed(board.until(board_right, args.timeout)),
                timed(screens.all_live(args.timeout)),
                return_exceptions=True,
            )
            nan = float("nan")
            result["board_s"] = board_s if isinstance(board_s, float) else nan
            result["screens_s"] = screens_s if isinstance(screens_s, float) else nan
            result["recovered_s"] = max(result["board_s"], result["screens_s"])
            await asyncio.sleep(1.0)
            log = venue.broker.log_path.read_text(errors="replace")
            result["peak"], result["connects"] = connect_rate(log, since)
            after = await screens.counts()
            result["full_boards"] = after["full_boards"] - before["full_boards"]
            result["screen_connects"] = after["connects"] - before["connects"]
            await screens.stop()
        finally:
            await screens.close()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await sims.stop()
    return result


def storm_report(runs: list[dict[str, Any]], args: argparse.Namespace, command: str) -> str:
    lines = [
        "## Reconnect storm (`plaza bench storm`)",
        "",
        f"{machine_line()}; load average before the run {runs[0]['load']}. {args.machines:,} "
        "machines (`plaza sim`, reconnecting with jittered backoff from 0.2 s, at most 1 s "
        "apart while the broker refuses: docs/protocol.md, Reconnecting) and "
        f"{args.clients} browser-like screens (mqtt.js over WebSocket in node, connected and "
        "reconnected as the web client: a persistent session, retain handling 1 when it heard "
        "from the broker within 60 s); the broker is stopped (SIGTERM), down 1 s, and started "
        "again. 'board right again' = every board entry online with a newer version than "
        "before the restart (as a fresh subscriber sees it); 'screens all back' = every "
        "screen connected and subscribed again (the screens' own boards are not compared).",
        "",
        f"Command: `{command}`",
        "",
        "| screens' backoff | board right again | screens all back | both | peak connects/s "
        "| connects | screens' reconnects / with the whole board again |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {'web client (jitter)' if r['jitter'] else 'no jitter'} | "
            f"{r['board_s']:.1f} s | {r['screens_s']:.1f} s | {r['recovered_s']:.1f} s | "
            f"{r['peak']} | {r['connects']} | {r['screen_connects']} / {r['full_boards']} |"
        )
    return "\n".join([*lines, ""])


def run_scale_bench(args: argparse.Namespace) -> int:
    note = raise_open_files(args.machines + args.clients, "plaza bench")
    if note:
        print(note)
    load = load_average()
    command = f"plaza bench {args.what} --machines {args.machines} --processes {args.processes}"
    with tempfile.TemporaryDirectory(prefix=f"plaza-bench-{args.what}-") as tmp:
        if args.what == "scale":
            result = asyncio.run(_scale(args, Path(tmp)))
            result["load"] = load
            section = scale_report(result, command)
        else:
            command += f" --clients {args.clients}"
            runs = []
            for jitter in (False, True):
                with tempfile.TemporaryDirectory(dir=tmp) as sub:
                    runs.append(asyncio.run(_storm(args, Path(sub), jitter)) | {"load": load})
            section = storm_report(runs, args, command)
    print(section)
    write_report(Path(args.output), section)
    return 0
