"""What every `plaza bench` needs: a private broker, the bridge as its own process, a report.

:class:`BenchVenue` starts mosquitto from broker-config/ on free ports with the bench's
accounts, seeds the machines into the database, and runs `plaza bench`'s bridge as a child
process (as `plaza up` runs it), with settings given as environment variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

import aiomqtt
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from bridge.partitions import SLOT_LOCKS
from plaza.db import make_engine, migrate
from plaza.dynsec import BrokerClient
from plaza.mqtt import NODELAY
from plaza.settings import Settings
from plaza.tables import Device
from plaza.topics import Topics
from venue.accounts import BRIDGE_USER, DeviceSpec, VenueSecrets, bridge_accounts
from venue.broker import LocalBroker, die_with_parent, free_port

#: The bench's own load account: the bridge's role, no bound client id (the bridge's own
#: account is bound to the bridge's id, which the running bridge holds).
BENCH_TOOL = BrokerClient("bench-tool", "bench-tool-pw", ("svc-bridge",), "bench load")
#: The bench's screens: the observer's read-only role with no bound client id, so one account
#: can hold the many screen connections a benchmark opens (every venue account is bound to one
#: client id; a browser gets an account per session from the api).
BENCH_SCREENS = BrokerClient("bench-screens", "bench-screens-pw", ("observer",), "bench screens")


#: where benchmarks and scenarios create (and drop) their own PostgreSQL databases
PG_ADMIN = os.environ.get("PLAZA_BENCH_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


async def fresh_pg_database(prefix: str) -> str:
    """Create an empty database on the PG_ADMIN server; return its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    engine = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await engine.dispose()
    return name


async def drop_pg_database(name: str) -> None:
    engine = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await engine.dispose()


def pg_url(name: str) -> str:
    """The URL of database ``name`` on the PG_ADMIN server."""
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def machine_line() -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Run {when} on {platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )


class BenchVenue:
    def __init__(
        self,
        work: Path,
        fleet: list[DeviceSpec],
        *,
        players: int = 0,
        database_url: str = "",
        bridge_env: dict[str, str] | None = None,
        seed_devices: bool = False,
        bridges: int = 1,
    ) -> None:
        """``bridges`` > 1: that many bridges (PostgreSQL and keyed routing in
        ``bridge_env``), bridge ``i`` as ``plaza-bridge-{i}`` with accounts of its own."""
        self.work = work
        self.bridge_count = bridges
        #: bridges 1.. (bridge 0 is :attr:`bridge`)
        self.others: dict[int, asyncio.subprocess.Process] = {}
        self.fleet = fleet
        self.topics = Topics()
        self.secrets = VenueSecrets()
        self.secrets.ensure_devices([d.id for d in fleet])
        self.secrets.players.update({f"bench{i:03d}": f"bench-pw-{i:03d}" for i in range(players)})
        self.database_url = database_url or f"sqlite+aiosqlite:///{work / 'plaza.db'}"
        self.bridge_env = bridge_env or {}
        self.seed_devices = seed_devices
        self.broker = LocalBroker(work / "broker", free_port(), free_port())
        self.bridge: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._log_mark = 0
        #: seconds a (re)started bridge may take to connect (a venue-sized soak: longer)
        self.ready_within = 30.0

    def client(self, user: str, password: str, **kw: object) -> aiomqtt.Client:
        return aiomqtt.Client(
            "127.0.0.1",
            self.broker.port,
            username=user,
            password=password,
            protocol=aiomqtt.ProtocolVersion.V5,
            socket_options=NODELAY,
            **kw,  # type: ignore[arg-type]
        )

    async def __aenter__(self) -> BenchVenue:
        clients = [
            *self.secrets.broker_clients(Settings(data_dir=self.work)),
            BENCH_TOOL,
            BENCH_SCREENS,
            *(
                a
                for i in range(1, self.bridge_count)
                for a in bridge_accounts(
                    f"{BRIDGE_USER}{i}", self.secrets.bridge, f"plaza-bridge-{i}"
                )
            ),
        ]
        self.broker.configure(clients, self.secrets.roles(self.topics))
        self.broker.start()
        if self.seed_devices:
            engine = make_engine(self.database_url)
            try:
                await migrate(engine)
                async with AsyncSession(engine) as session:
                    session.add_all(
                        Device(id=d.id, name=d.name, kind=d.kind, zone=d.zone) for d in self.fleet
                    )
                    await session.commit()
            finally:
                await engine.dispose()
        await self.start_bridge()
        for i in range(1, self.bridge_count):
            await self.start_bridge(i)
        return self

    async def start_bridge(self, index: int = 0) -> None:
        """`plaza bridge` as a child process (again, after :meth:`kill_bridge`); bridge
        ``index`` > 0 logs to ``bridge{index}.log``."""
        env = dict(
            os.environ,
            PLAZA_DATA_DIR=str(self.work),
            PLAZA_MQTT_PORT=str(self.broker.port),
            PLAZA_MQTT_USERNAME=f"{BRIDGE_USER}{index or ''}",
            PLAZA_MQTT_PASSWORD=self.secrets.bridge,
            PLAZA_DATABASE_URL=self.database_url,
            **self.bridge_env,
        )
        if index:
            env["PLAZA_BRIDGE_ID"] = f"plaza-bridge-{index}"
            with (self.work / f"bridge{index}.log").open("ab") as out:
                self.others[index] = await self._spawn(env, out)
            return
        if self._log is None:
            self._log = (self.work / "bridge.log").open("ab")
        self._log_mark = (self.work / "bridge.log").stat().st_size
        self.bridge = await self._spawn(env, self._log)

    @staticmethod
    async def _spawn(env: dict[str, str], out: IO[bytes]) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "venue.cli",
            "bridge",
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )

    def bridge_pids(self) -> list[int]:
        """The running bridges' process ids, bridge 0 first."""
        procs = [self.bridge, *(self.others[i] for i in sorted(self.others))]
        return [p.pid for p in procs if p is not None and p.returncode is None]

    async def kill_bridge(self, index: int = 0) -> None:
        """SIGKILL the bridge, as a crash or an OOM kill would."""
        other = self.others.get(index) if index else None
        if other is not None and other.returncode is None:
            other.kill()
            await other.wait()
        if not index and self.bridge is not None and self.bridge.returncode is None:
            self.bridge.kill()
            await self.bridge.wait()

    async def wait_bridge_ready(self) -> None:
        """Until the bridge (the last one started) logs its connection (at most
        :attr:`ready_within` s), and every other bridge has too."""
        logs = [(self.work / "bridge.log", self._log_mark)]
        logs += [(self.work / f"bridge{i}.log", 0) for i in self.others]
        async with asyncio.timeout(self.ready_within):
            for log, mark in logs:
                while b"bridge connected" not in log.read_bytes()[mark:]:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for other in self.others.values():
            if other.returncode is None:
                other.terminate()
                try:
                    await asyncio.wait_for(other.wait(), 10)
                except TimeoutError:
                    other.kill()
                    await other.wait()
        if self.bridge is not None and self.bridge.returncode is None:
            self.bridge.terminate()
            try:
                await asyncio.wait_for(self.bridge.wait(), 10)
            except TimeoutError:
                self.bridge.kill()
                await self.bridge.wait()
        if self._log is not None:
            self._log.close()
            kept = Path(tempfile.gettempdir()) / "plaza-bench-bridge.log"
            shutil.copyfile(self.work / "bridge.log", kept)  # the work dir is deleted
        self.broker.stop()


async def start_sim(
    port: int,
    devices: Mapping[str, str],
    work: Path,
    name: str,
    *,
    progress_every: int,
    stdout: int = asyncio.subprocess.DEVNULL,
    play: bool = False,
    keepalive: int = 60,
    extra: Sequence[str] = (),
) -> asyncio.subprocess.Process:
    """``devices`` (id -> password) as one `plaza sim` child, connected to the broker at
    ``port``: the machines run in their own process, as in a venue, so they do not share the
    load generator's event loop. The child dies with this process (even by SIGKILL), so a
    failed benchmark leaves no machines behind. ``play``: walk-in sessions; ``extra``: more
    `plaza sim` options (faults)."""
    devices_file = work / f"{name}.json"
    devices_file.write_text(json.dumps(dict(devices)))
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "venue.cli",
        "sim",
        "--devices-file",
        str(devices_file),
        *([] if play else ["--no-play"]),
        "--keepalive",
        str(keepalive),
        *extra,
        "--progress-every",
        str(progress_every),
        env={**os.environ, "PLAZA_MQTT_PORT": str(port), "PLAZA_DATA_DIR": str(work / name)},
        stdout=stdout,
        stderr=asyncio.subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )


def limit_queues(venue: BenchVenue, limit: int) -> None:
    """Render the broker's config with ``max_queued_messages limit`` instead of the
    production value (to show what a subscriber loses past its queue bound)."""
    original = venue.broker.configure

    def configure(*a: Any, **kw: Any) -> None:
        original(*a, **kw)
        path = venue.broker.config_path
        lines = [
            f"max_queued_messages {limit}" if line.startswith("max_queued_messages") else line
            for line in path.read_text().splitlines()
        ]
        path.write_text("\n".join(lines) + "\n")

    venue.broker.configure = configure  # type: ignore[method-assign]


#: several bridges in a bench venue: keyed routing (bridge/partitions.py), short lock timings
KEYED = {"PLAZA_PARTITIONS": "16", "PLAZA_PARTITION_TICK": "0.5", "PLAZA_HANDOVER_WINDOW": "30"}


async def slot_owners(database_url: str) -> dict[str, int]:
    """Slots held per bridge (keyed routing), as PostgreSQL's lock table has them."""
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT a.application_name, count(*) FROM pg_locks k "
                    "JOIN pg_stat_activity a ON a.pid = k.pid WHERE k.locktype = 'advisory' "
                    "AND k.granted AND k.classid::int = :ns GROUP BY 1 ORDER BY 1"
                ),
                {"ns": SLOT_LOCKS},
            )
            return {str(app).split(":", 1)[1]: int(n) for app, n in rows}
    finally:
        await engine.dispose()


async def slots_settled(database_url: str, bridges: int) -> dict[str, int]:
    """Until every slot is held, by ``bridges`` bridges (at most 30 s)."""
    partitions = int(KEYED["PLAZA_PARTITIONS"])
    async with asyncio.timeout(30):
        while True:
            held = await slot_owners(database_url)
            if sum(held.values()) == partitions and len(held) == bridges:
                return held
            await asyncio.sleep(0.1)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_cpu() -> tuple[float, float]:
    """The whole host's busy and total CPU seconds so far (all cores), from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    total = sum(ticks[:8])  # guest time is already counted in user
    hz = os.sysconf("SC_CLK_TCK")
    return (total - idle) / hz, total / hz


async def database_pids(database_url: str) -> list[int]:
    """The PostgreSQL server processes serving ``database_url``'s database (its backends)."""
    if not database_url.startswith("postgresql"):
        return []
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            )
            return [int(pid) for (pid,) in rows]
    finally:
        await engine.dispose()


class CpuLedger:
    """CPU seconds per role (a role is a set of processes) and of the whole host, between
    :meth:`start` and :meth:`stop`: where a benchmark phase's CPU went. Counted per process:
    one that starts during the phase counts from zero; one that ends during it is not
    counted (its CPU is lost: an undercount, never a negative). ``stop(more=...)`` adds
    processes found at the end (a database server's backends that connected meanwhile)."""

    def __init__(self, roles: Mapping[str, Sequence[int]]) -> None:
        self.roles = {name: list(pids) for name, pids in roles.items()}
        self._before: dict[int, float] = {}
        self._host: tuple[float, float] = (0.0, 0.0)
        #: each process's CPU seconds over the last phase (by pid), as :meth:`stop` found it
        self.by_pid: dict[int, float] = {}

    @staticmethod
    def _cpu(pids: Sequence[int]) -> dict[int, float]:
        out = {}
        for pid in pids:
            with contextlib.suppress(OSError):  # ended: not counted
                out[pid] = process_cpu(pid)
        return out

    def start(self) -> None:
        self._before = self._cpu([pid for pids in self.roles.values() for pid in pids])
        self._host = host_cpu()

    def stop(self, more: Mapping[str, Sequence[int]] | None = None) -> dict[str, float]:
        """Each role's CPU seconds, plus ``host busy`` and ``host capacity`` (cores x wall)
        over the phase."""
        for name, pids in (more or {}).items():
            self.roles[name] = sorted({*self.roles.get(name, []), *pids})
        busy, total = host_cpu()
        after = self._cpu([pid for pids in self.roles.values() for pid in pids])
        self.by_pid = {pid: max(0.0, t - self._before.get(pid, 0.0)) for pid, t in after.items()}
        out = {
            name: sum(self.by_pid.get(pid, 0.0) for pid in pids)
            for name, pids in self.roles.items()
        }
        out["host busy"] = busy - self._host[0]
        out["host capacity"] = total - self._host[1]
        return out


def write_report(path: Path, section: str) -> None:
    """Replace the section (by its first line) in docs/benchmarks.md, or append it."""
    header = (
        "# Benchmarks\n\nMeasured figures, newest run of each benchmark. The machines are shared "
        "and noisy, so each benchmark reports medians and ratios against a reference measured "
        "in the same run. Re-run with the command shown; the file is rewritten per section.\n\n"
    )
    text = path.read_text() if path.exists() else header
    marker = section.splitlines()[0]
    if marker in text:
        start = text.index(marker)
        nxt = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[nxt + 1 :] if nxt != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


class BoardTaker(Protocol):
    def take(self, payload: bytes) -> None: ...


async def watch_board(venue: BenchVenue, board: BoardTaker, ident: str, **kw: object) -> None:
    """Every board entry to ``board.take``, reconnecting forever (``kw``: more client
    options, e.g. a persistent session)."""
    while True:
        client = venue.client(
            BENCH_SCREENS.username, BENCH_SCREENS.password, identifier=ident, **kw
        )
        with contextlib.suppress(aiomqtt.MqttError):
            async with client:
                await client.subscribe(Topics().all_board, qos=1)
                async for m in client.messages:
                    if isinstance(m.payload, bytes) and m.payload:
                        board.take(m.payload)
        await asyncio.sleep(0.2)
