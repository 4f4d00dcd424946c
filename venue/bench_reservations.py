"""`plaza bench reservations`: command round trips and sustained throughput.

Set-up per database (SQLite, then PostgreSQL): a private mosquitto, the bridge as its own
process, N machines seeded in SQL and connected as simulated machines, P players. Measured in
the same run:

- echo:  a message published to an echo process (same account, event loop and process shape as
         the bridge), which publishes it to a player's replies topic, received by that player:
         the raw broker request/response round trip, the reference;
- paced: reserve commands at a fixed rate (default 200/s), publish -> commit -> reply received;
- max:   a fixed window of commands kept in flight for a while: completed commands per second.

Every command is a reserve that conflicts with nothing (distinct slots per machine and player),
so each one commits a reservation, a command-log row and three outbox rows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from plaza.mqtt import NODELAY
from plaza.topics import Topics
from venue.accounts import demo_fleet
from venue.benchkit import (
    BENCH_TOOL,
    KEYED,
    BenchVenue,
    CpuLedger,
    database_pids,
    drop_pg_database,
    fresh_pg_database,
    machine_line,
    percentile,
    pg_url,
    slots_settled,
    start_sim,
    write_report,
)
from venue.broker import die_with_parent

TOPICS = Topics()
SLOT_SPACING_S = 15
SLOT_MINUTES = 10


@dataclass
class Player:
    name: str
    client: aiomqtt.Client
    waiting: dict[str, tuple[float, asyncio.Future[float]]] = field(default_factory=dict)

    async def pump(self) -> None:
        loop = asyncio.get_running_loop()
        async for m in self.client.messages:
            at = loop.time()
            payload = m.payload if isinstance(m.payload, bytes) else b""
            rid = json.loads(payload).get("request_id") if payload else None
            entry = self.waiting.pop(rid, None) if isinstance(rid, str) else None
            if entry is not None and not entry[1].done():
                entry[1].set_result((at - entry[0]) * 1000)


class Load:
    def __init__(self, players: list[Player], devices: list[str], base: float) -> None:
        self.players = players
        self.devices = devices
        self.base = base
        self.k = 0
        self.failures = 0

    async def one(self) -> float:
        """Send one reserve that conflicts with nothing; its round trip in ms."""
        k, self.k = self.k, self.k + 1
        player = self.players[k % len(self.players)]
        start = self.base + k * SLOT_SPACING_S
        rid = f"b{k}-{uuid.uuid4().hex[:6]}"
        body = json.dumps(
            {
                "request_id": rid,
                "op": "reserve",
                "starts_at": start,
                "ends_at": start + SLOT_MINUTES * 60,
            }
        ).encode()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()
        player.waiting[rid] = (loop.time(), future)
        await player.client.publish(
            TOPICS.request(self.devices[k % len(self.devices)], player.name), body, qos=1
        )
        try:
            return await asyncio.wait_for(future, 30)
        except TimeoutError:
            self.failures += 1
            player.waiting.pop(rid, None)
            return float("nan")


async def join_players(
    venue: BenchVenue,
    count: int,
    stack: contextlib.AsyncExitStack,
    tg: asyncio.TaskGroup,
) -> tuple[list[Player], list[asyncio.Task[None]]]:
    """``count`` bench players (bench000...), each connected under its bound id, subscribed
    to its replies, and the tasks (in ``tg``) pumping them; their connections close with
    ``stack``."""
    players, pumps = [], []
    for i in range(count):
        name = f"bench{i:03d}"
        client = venue.client(name, f"bench-pw-{i:03d}", identifier=name)
        await stack.enter_async_context(client)
        await client.subscribe(TOPICS.replies(name), qos=1)
        player = Player(name, client)
        pumps.append(tg.create_task(player.pump()))
        players.append(player)
    return players, pumps


async def paced(rate: float, seconds: float, make: object) -> list[float]:
    """Start one operation every 1/rate s for ``seconds``; their results."""
    loop = asyncio.get_running_loop()
    tasks = []
    start = loop.time()
    n = int(rate * seconds)
    for i in range(n):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(make()))  # type: ignore[operator]
    return [r for r in await asyncio.gather(*tasks) if r == r]  # drop NaN (timeouts)


async def sustained(
    window: int, seconds: float, make: Callable[[], Awaitable[float]]
) -> tuple[float, int]:
    """Keep ``window`` operations in flight for ``seconds``: completed ones per second."""
    loop = asyncio.get_running_loop()
    done = 0
    stop_at = loop.time() + seconds

    async def worker() -> None:
        nonlocal done
        while loop.time() < stop_at:
            result = await make()
            if result == result:
                done += 1

    started = loop.time()
    await asyncio.gather(*(worker() for _ in range(window)))
    return done / (loop.time() - started), done


async def echo_server(port: int, password: str) -> None:
    """The reference responder: what the bridge does minus the work (uvloop, own process)."""
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        username=BENCH_TOOL.username,
        password=password,
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=NODELAY,
    ) as client:
        await client.subscribe(TOPICS.bench_echo, qos=1)
        print("echo ready", flush=True)
        async for m in client.messages:
            payload = m.payload if isinstance(m.payload, bytes) else b""
            user = json.loads(payload)["user"]
            await client.publish(TOPICS.replies(user), payload, qos=1)


async def _run_db(
    label: str, database_url: str, args: argparse.Namespace, work: Path, bridges: int = 0
) -> dict[str, object]:
    """One venue's run; ``bridges`` > 0: that many bridges with keyed routing."""
    fleet = demo_fleet(args.machines)
    env = {
        "PLAZA_MAX_ACTIVE_PER_PLAYER": "100000000",
        "PLAZA_RATE_BURST": "100000000",
        "PLAZA_FLOOD_BURST": "100000000",
        "PLAZA_FLOOD_RATE": "100000000",
        "PLAZA_RATE_PER_MINUTE": "1000000000",
        "PLAZA_MAX_DAYS_AHEAD": "3650",
        "PLAZA_TIMER_TICK": "5",
        **(KEYED if bridges else {}),
    }
    async with BenchVenue(
        work,
        fleet,
        players=args.players,
        database_url=database_url,
        bridge_env=env,
        seed_devices=True,
        bridges=max(1, bridges),
    ) as venue:
        await venue.wait_bridge_ready()
        if bridges:
            await slots_settled(venue.database_url, bridges)
        echo = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "venue.bench_reservations",
            "--echo",
            str(venue.broker.port),
            BENCH_TOOL.password,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        assert echo.stdout is not None
        await asyncio.wait_for(echo.stdout.readline(), 10)
        # The machines run as `plaza sim` in their own process, as in a venue, so they do not
        # share this process's event loop with the load generator.
        sim = await start_sim(
            venue.broker.port,
            venue.secrets.devices,
            work,
            "sim",
            progress_every=1,
            stdout=asyncio.subprocess.PIPE,
        )
        assert sim.stdout is not None
        want = f"sim: {len(fleet)}/{len(fleet)} online".encode()
        async with asyncio.timeout(120):
            while want not in await sim.stdout.readline():
                pass
        results: dict[str, object] = {"label": label}
        async with contextlib.AsyncExitStack() as stack:
            tg = await stack.enter_async_context(asyncio.TaskGroup())
            players, runs = await join_players(venue, args.players, stack, tg)
            load = Load(players, [d.id for d in fleet], time.time() + 3600)

            sender = venue.client(BENCH_TOOL.username, BENCH_TOOL.password)
            await stack.enter_async_context(sender)

            async def echo_once() -> float:
                player = players[load.k % len(players)]
                load.k += 1
                rid = uuid.uuid4().hex
                loop = asyncio.get_running_loop()
                fut: asyncio.Future[float] = loop.create_future()
                player.waiting[rid] = (loop.time(), fut)
                body = json.dumps({"request_id": rid, "user": player.name}).encode()
                await sender.publish(TOPICS.bench_echo, body, qos=1)
                return await asyncio.wait_for(fut, 10)

            await paced(100, 1, load.one)  # warm-up: connections, caches, first batches
            await paced(100, 1, echo_once)
            results["echo"] = await paced(args.rate, args.seconds / 2, echo_once)
            results["paced"] = await paced(args.rate, args.seconds, load.one)
            pids = venue.bridge_pids()
            ledger = CpuLedger(
                {
                    "bridge": pids,
                    "broker": [venue.broker.proc.pid] if venue.broker.proc else [],
                    "database server": await database_pids(venue.database_url),
                    "load generator": [os.getpid()],
                    "echo responder": [echo.pid],
                    "simulator": [sim.pid],
                }
            )

            async def backends() -> dict[str, list[int]]:  # those that connected meanwhile
                return {"database server": await database_pids(venue.database_url)}

            ledger.start()
            rate, done = await sustained(args.window, args.seconds, load.one)
            results["cpu_commands"] = _per_command(ledger.stop(await backends()), done)
            results["max"], results["max_done"] = rate, done
            # each bridge's CPU per command of the sustained phase (ms)
            results["cpu_ms"] = [ledger.by_pid.get(pid, 0.0) * 1000 / max(1, done) for pid in pids]
            # The same window of bare echoes: what any responder built on aiomqtt (and this
            # load generator) can reach on this machine, the ceiling for the bridge.
            ledger.start()
            results["echo_max"], echoed = await sustained(args.window, args.seconds / 2, echo_once)
            results["cpu_echoes"] = _per_command(ledger.stop(await backends()), echoed)
            results["failures"] = load.failures
            for t in runs:
                t.cancel()
        for child in (echo, sim):
            child.terminate()
            await child.wait()
    return results


def _per_command(used: dict[str, float], done: int) -> dict[str, float]:
    """CPU ms per command of each role, and the host's busy share of its capacity."""
    out = {k: v * 1000 / max(1, done) for k, v in used.items() if not k.startswith("host")}
    out["host busy share"] = used["host busy"] / max(1e-9, used["host capacity"])
    return out


def cpu_report(runs: list[dict[str, object]]) -> list[str]:
    """Where the sustained phases' CPU went, per command: the bridge's phase against the bare
    echo's, and what the host's cores allow."""
    cores = os.cpu_count() or 1
    lines = [
        "",
        "CPU per command in the sustained phases (ms of CPU per command answered, from "
        "/proc; the database server is the backends of the bench's own database):",
        "",
        "| database | phase | "
        + " | ".join(ROLES)
        + " | all roles | host busy | cores / all roles (commands/s) |",
        "|---|---|" + "---|" * (len(ROLES) + 3),
    ]
    for run in runs:
        for phase, key in (("commands", "cpu_commands"), ("bare echo", "cpu_echoes")):
            cpu = run.get(key)
            if not isinstance(cpu, dict):
                continue
            total = sum(cpu.get(r, 0.0) for r in ROLES)
            lines.append(
                f"| {run['label']} | {phase} | "
                + " | ".join(f"{cpu.get(r, 0.0):.3f}" for r in ROLES)
                + f" | {total:.3f} | {100 * cpu['host busy share']:.0f} % | "
                f"{cores * 1000 / max(total, 1e-9):.0f} |"
            )
    return lines


#: the processes a reservations bench phase is charged to, in report order
ROLES = ("bridge", "broker", "database server", "load generator", "echo responder", "simulator")


def _row(label: str, values: list[float]) -> str:
    return (
        f"| {label} | {len(values)} | {statistics.median(values):.2f} | "
        f"{percentile(values, 99):.2f} | {max(values):.2f} |"
    )


def report(runs: list[dict[str, object]], args: argparse.Namespace, command: str) -> str:
    lines = [
        "## Reservations (`plaza bench reservations`)",
        "",
        f"{machine_line()}; {args.machines} machines seeded and connected, {args.players} "
        "players, bridge as its own process (uvloop). Every command is a reserve that commits "
        "(reservation + command log + 3 outbox rows).",
        "",
        f"Command: `{command}`",
        "",
        "| database | measurement | n | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
    ]
    verdicts = []
    for run in runs:
        label = str(run["label"])
        echo = run["echo"]
        paced_ = run["paced"]
        assert isinstance(echo, list)
        assert isinstance(paced_, list)
        lines.append(f"| {label} |" + _row("raw echo round trip (reference)", echo)[1:])
        lines.append(f"| {label} |" + _row(f"command round trip at {args.rate:.0f}/s", paced_)[1:])
        ratio = statistics.median(paced_) / statistics.median(echo)
        p99 = percentile(paced_, 99)
        verdicts.append(
            f"- {label}: p50 {ratio:.1f} x the echo p50 (target <= 3 x: "
            f"{'met' if ratio <= 3 else 'NOT met'}); p99 {p99:.1f} ms at {args.rate:.0f}/s "
            f"(target < 20 ms: {'met' if p99 < 20 else 'NOT met'}); sustained "
            f"{float(run['max']):.0f} commands/s with {args.window} in flight "  # type: ignore[arg-type]
            f"({run['max_done']} commands, {run['failures']} timeouts); the bare echo with the "
            f"same window: {float(run['echo_max']):.0f}/s."  # type: ignore[arg-type]
        )
    for run in runs:
        share = float(run["max"]) / float(run["echo_max"])  # type: ignore[arg-type]
        verdicts.append(
            f"- {run['label']}: sustained {share:.2f} x the bare echo with the same window "
            f"(target >= 0.6 x: {'met' if share >= 0.6 else 'NOT met'})."
        )
    return "\n".join([*lines, "", *verdicts, *cpu_report(runs), ""])


def bridges_report(runs: list[dict[str, object]], args: argparse.Namespace, command: str) -> str:
    """1, 2, 3... bridges on one PostgreSQL: throughput, p99, CPU per command, a prediction."""
    lines = [
        "## Several bridges (`plaza bench reservations --bridges`)",
        "",
        f"{machine_line()}; {args.machines} machines, {args.players} players; keyed routing "
        f"({KEYED['PLAZA_PARTITIONS']} slots), each bridge its own process, one PostgreSQL, one "
        "Mosquitto, the load generator and the simulator on the same cores.",
        "",
        f"Command: `{command}`",
        "",
        f"| bridges | echo p50 ms | p50 ms at {args.rate:.0f}/s | p99 ms | sustained /s "
        f"(window {args.window}) | timeouts | bridge CPU ms per command (each) | total |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        echo, paced_, cpu = run["echo"], run["paced"], run["cpu_ms"]
        assert isinstance(echo, list)
        assert isinstance(paced_, list)
        assert isinstance(cpu, list)
        lines.append(
            f"| {run['bridges']} | {statistics.median(echo):.2f} | "
            f"{statistics.median(paced_):.2f} | {percentile(paced_, 99):.2f} | "
            f"{float(run['max']):.0f} | {run['failures']} | "  # type: ignore[arg-type]
            f"{' / '.join(f'{c:.3f}' for c in cpu)} | {sum(cpu):.3f} |"
        )
    lines.append("")
    for run in runs:
        cpu = run["cpu_ms"]
        assert isinstance(cpu, list)
        n = len(cpu)
        heaviest = max(cpu)
        # every bridge reads every request, and decides 1/n of them: with a core each, the
        # busiest bridge's CPU per command (of the whole venue's stream) bounds the rate
        lines.append(
            f"- {n} bridge(s): the busiest bridge spends {heaviest:.3f} ms of CPU per command "
            f"of the venue's stream, so with a core of its own each carries up to about "
            f"{1000 / heaviest:.0f} commands/s; the {n} together spend {sum(cpu):.3f} ms per "
            f"command, so bridges alone would fill {sum(cpu):.3f} cores per 1,000/s "
            "(PostgreSQL and the broker need their own cores beside them)."
        )
    return "\n".join([*lines, ""])


async def _main_bridges(args: argparse.Namespace) -> list[dict[str, object]]:
    runs = []
    for n in args.bridges:
        name = await fresh_pg_database("plaza_bench")
        try:
            with tempfile.TemporaryDirectory(prefix=f"plaza-bench-pg{n}-") as tmp:
                run = await _run_db(f"PostgreSQL x{n}", pg_url(name), args, Path(tmp), n)
                run["bridges"] = n
                runs.append(run)
        finally:
            await drop_pg_database(name)
    return runs


async def _main(args: argparse.Namespace) -> list[dict[str, object]]:
    runs = []
    if not args.postgresql_only:
        with tempfile.TemporaryDirectory(prefix="plaza-bench-sqlite-") as tmp:
            runs.append(await _run_db("SQLite", "", args, Path(tmp)))
    if not args.sqlite_only:
        name = await fresh_pg_database("plaza_bench")
        try:
            with tempfile.TemporaryDirectory(prefix="plaza-bench-pg-") as tmp:
                url = pg_url(name)
                runs.append(await _run_db("PostgreSQL", url, args, Path(tmp)))
        finally:
            await drop_pg_database(name)
    return runs


def run_reservations_bench(args: argparse.Namespace) -> int:
    command = (
        f"plaza bench reservations --machines {args.machines} --rate {args.rate:.0f} "
        f"--seconds {args.seconds:.0f} --window {args.window}"
        + (" --sqlite-only" if args.sqlite_only else "")
        + (" --postgresql-only" if args.postgresql_only else "")
    )
    started = time.monotonic()
    if getattr(args, "bridges", None):
        command += " --bridges " + ",".join(str(n) for n in args.bridges)
        section = bridges_report(asyncio.run(_main_bridges(args)), args, command)
    else:
        section = report(asyncio.run(_main(args)), args, command)
    print(section)
    print(f"bench took {time.monotonic() - started:.1f}s; report in {args.output}")
    write_report(Path(args.output), section)
    return 0


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--echo":
    import uvloop

    from plaza import paho_tables

    paho_tables.install()  # as every venue process does (venue.cli.main)
    uvloop.run(echo_server(int(sys.argv[2]), sys.argv[3]))
