"""`plaza scenario NAME`: a fault injected into a venue under load, then `plaza check`.

Every scenario runs the real processes: Mosquitto from broker-config/ (its own, on free ports),
`plaza bridge` as a child process, simulated machines (plaza_sim) and players that speak the
reservation protocol over MQTT 5 with persistent sessions. Each player reserves a slot that
conflicts with nothing and cancels it, over and over; a command without a reply is sent again
with the same request id (its idempotency key) until the reply comes. In the middle of the load
the scenario's fault is injected. When the load ends, the scenario waits until every command is
answered and then checks:

- every command was answered (lost: 0), and no command was answered twice when sent once;
- every notification row in SQL reached its player (by seq, direct or in a digest);
- `plaza check`'s invariants (venue.check): no double booking, one effect per acknowledged
  command, nothing committed left unpublished, the board agrees with the machines and SQL;
- the scenario's own figures (alerts per flap window, a slow subscriber's losses).

Scenarios: ``broker-restart``, ``bridge-kill``, ``db-outage`` (SQLite locked by another process
holding a write transaction; PostgreSQL refusing connections with every backend terminated by
``pg_terminate_backend``), ``flap``, ``slow-subscriber``, ``bridges`` (two or three bridges
on PostgreSQL with keyed routing, one killed mid-load and left down). The defaults are the
full size; the tests run each with small options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from plaza.messages import NotificationEvent
from plaza.mqtt import connect_properties
from plaza.settings import Settings
from plaza.topics import Topics
from plaza_sim.epochs import EpochStore
from plaza_sim.machine import Machine, MachineConfig
from venue.accounts import API_USER, demo_fleet
from venue.benchkit import (
    BENCH_SCREENS,
    KEYED,
    PG_ADMIN,
    BenchVenue,
    drop_pg_database,
    fresh_pg_database,
    limit_queues,
    machine_line,
    percentile,
    pg_url,
    slots_settled,
)
from venue.check import CheckOptions, Report, check
from venue.limits import raise_open_files
from venue.soak import SoakParts, quiet_round_trips

TOPICS = Topics()
log = logging.getLogger(__name__)
NAMES = ("broker-restart", "bridge-kill", "db-outage", "flap", "slow-subscriber", "bridges")


@dataclass
class ScenarioOptions:
    name: str
    machines: int = 200
    players: int = 50
    seconds: float = 60.0  # load duration
    fault_at: float = 0.4  # share of the load duration before the (first) fault
    outage: float = 10.0  # db-outage: seconds the database is unavailable
    database: str = "sqlite"  # sqlite | postgresql
    retry: float = 3.0  # a player sends an unanswered command again after this many seconds
    queue_limit: int = 0  # slow-subscriber: the broker's max_queued_messages (0: the config's)
    flaps: int = 2  # flap: rounds of rapid reconnects
    flap_window: float = 600.0
    bridges: int = 3  # bridges: how many (PostgreSQL, keyed routing), one killed mid-load
    pace: float = 0.1  # seconds a player waits between two bookings
    # soak at venue size (venue.soak): machines in `plaza sim` children (walk-in sessions and
    # their own faults), WebSocket screens in node, and in-process probe machines whose state
    # changes are timed at the screens
    sim_machines: int = 0
    screens: int = 0
    screen_processes: int = 4
    probes: int = 0
    probe_rate: float = 2.0
    sim_faults: str = "crash,silent,flap"


@dataclass
class Outcome:
    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    report: Report | None = None

    def summary(self) -> str:
        lines = [f"plaza scenario {self.name}: {'OK' if not self.problems else 'FAILED'}"]
        lines += [f"  {k}: {v}" for k, v in self.figures.items()]
        if self.report is not None:
            lines.append("  " + self.report.summary().replace("\n", "\n  "))
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        return "\n".join(lines)


# -- players -------------------------------------------------------------------------------
@dataclass
class Load:
    sent: int = 0
    resent: int = 0
    duplicate_replies: int = 0
    refused: int = 0
    round_trips: list[float] = field(default_factory=list)
    #: (wall clock when sent, round trip ms) per command
    timed: list[tuple[float, float]] = field(default_factory=list)
    k: int = 0


class Player:
    """A player's phone: one MQTT 5 connection with a persistent session (same client id,
    clean_start false), reconnecting forever; collects replies and notification seqs."""

    def __init__(
        self, venue: BenchVenue, name: str, password: str, identifier: str | None = None
    ) -> None:
        self.venue = venue
        self.name = name
        self.password = password
        #: the client id the account is bound to (a player's is its own name)
        self.identifier = identifier or name
        self.replies: dict[str, list[dict[str, Any]]] = {}
        self.arrived: dict[str, asyncio.Event] = {}
        self.seqs: set[int] = set()
        self.client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.connects = 0
        self.up_since: float | None = None
        self.up_total = 0.0

    async def run(self) -> None:
        while True:
            client = self.venue.client(
                self.name,
                self.password,
                identifier=self.identifier,
                clean_start=False,
                properties=connect_properties(3600),
                timeout=5,
            )
            try:
                async with client:
                    await client.subscribe(TOPICS.user_tree(self.name), qos=1)
                    self.client = client
                    self.connects += 1
                    self.connected.set()
                    self.up_since = time.monotonic()
                    async for m in client.messages:
                        self._take(m.topic.value, m.payload)
            except aiomqtt.MqttError:
                pass
            self.connected.clear()
            self.client = None
            if self.up_since is not None:
                self.up_total += time.monotonic() - self.up_since
                self.up_since = None
            await asyncio.sleep(0.2 + 0.3 * (hash(self.name) % 10) / 10)

    def _take(self, topic: str, payload: object) -> None:
        if not isinstance(payload, bytes) or not payload:
            return
        if topic.endswith("/notifications"):
            event = NotificationEvent.model_validate_json(payload)
            if event.seq is not None:
                self.seqs.add(event.seq)
            self.seqs.update(i.seq for i in event.items or [])
            return
        reply = json.loads(payload)
        rid = reply.get("request_id")
        if isinstance(rid, str):
            self.replies.setdefault(rid, []).append(reply)
            self.arrived.setdefault(rid, asyncio.Event()).set()

    async def command(
        self, device: str, body: dict[str, Any], retry: float, load: Load
    ) -> dict[str, Any]:
        """Send until answered (same request id, so applied once); the first reply."""
        rid = body["request_id"]
        done = self.arrived.setdefault(rid, asyncio.Event())
        payload = json.dumps(body).encode()
        first = time.monotonic()
        sends = 0
        while not done.is_set():
            await self.connected.wait()
            client = self.client
            if client is None:
                continue
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = TOPICS.replies(self.name)
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(
                    TOPICS.request(device, self.name), payload, qos=1, properties=props
                )
                sends += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), retry)
        took = (time.monotonic() - first) * 1000
        load.round_trips.append(took)
        load.timed.append((time.time() - took / 1000, took))
        if took > 5000:
            log.warning("%s on %s took %.0f ms (%d sends)", body.get("op"), device, took, sends)
        load.sent += 1
        load.resent += max(0, sends - 1)
        await asyncio.sleep(0)
        if sends == 1 and len(self.replies[rid]) > 1:
            load.duplicate_replies += 1
        reply = self.replies[rid][0]
        if not reply.get("ok"):
            load.refused += 1
            error = reply.get("error") or {}
            log.warning("refused %s on %s: %s", body.get("op"), device, error)
        return reply


async def play(
    players: list[Player], admin: Player, devices: list[str], opts: ScenarioOptions, load: Load
) -> None:
    """Each player: reserve a slot that conflicts with nothing, have every other one approved
    by an admin (through the api's account: the player is notified), then cancel it."""
    base = time.time() + 2 * 3600
    stop_at = time.monotonic() + opts.seconds

    async def one(player: Player) -> None:
        await player.connected.wait()
        while time.monotonic() < stop_at:
            k, load.k = load.k, load.k + 1
            device = devices[k % len(devices)]
            # 11 minutes apart: no two slots of the load overlap, however the commands of
            # different players interleave (a machine another bridge takes over stalls a while)
            start = base + k * 660
            rid = f"s{k}-{uuid.uuid4().hex[:8]}"
            body = {"request_id": rid, "op": "reserve", "starts_at": start, "ends_at": start + 600}
            reply = await player.command(device, body, opts.retry, load)
            if reply.get("ok") and reply.get("reservation"):
                reservation = reply["reservation"]["id"]
                if k % 2 == 0:
                    approve = {
                        "request_id": f"{rid}-a",
                        "op": "approve",
                        "reservation_id": reservation,
                        "on_behalf_of": {"user": "admin", "role": "admin"},
                    }
                    await admin.command(device, approve, opts.retry, load)
                cancel = {"request_id": f"{rid}-c", "op": "cancel", "reservation_id": reservation}
                await player.command(device, cancel, opts.retry, load)
            await asyncio.sleep(opts.pace)

    await asyncio.gather(*(one(p) for p in players))


# -- faults ----------------------------------------------------------------------------------
async def restart_broker(venue: BenchVenue, figures: dict[str, Any]) -> None:
    """SIGTERM (Mosquitto saves its persistence file), then start again on the same ports."""
    t0 = time.monotonic()
    await asyncio.to_thread(venue.broker.stop)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(venue.broker.start)
    figures["broker down (s)"] = round(time.monotonic() - t0, 2)


async def kill_bridge(venue: BenchVenue, figures: dict[str, Any]) -> None:
    t0 = time.monotonic()
    await venue.kill_bridge()
    await asyncio.sleep(0.5)
    await venue.start_bridge()
    await venue.wait_bridge_ready()
    figures["bridge down until connected again (s)"] = round(time.monotonic() - t0, 2)


async def lock_sqlite(path: Path, seconds: float) -> None:
    """Another process holds a write transaction (BEGIN IMMEDIATE) on the file."""
    code = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
        "c.execute('ROLLBACK')\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, str(path), str(seconds), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    await proc.stdout.readline()
    await proc.wait()


async def cut_postgres(admin_url: str, database: str, seconds: float) -> int:
    """Refuse new connections to ``database`` and terminate every backend on it, for
    ``seconds``; how many backends were terminated."""
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    killed = 0
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'))
            stop_at = time.monotonic() + seconds
            while time.monotonic() < stop_at:
                rows = await conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :d AND pid <> pg_backend_pid()"
                    ),
                    {"d": database},
                )
                killed += sum(1 for r in rows if r[0])
                await asyncio.sleep(0.2)
            await conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
    finally:
        await engine.dispose()
    return killed


class SlowSubscriber:
    """A browser on bad Wi-Fi: subscribes to the board and the events with QoS 1 and a
    receive maximum of 1, and acknowledges nothing until :meth:`catch_up`, so the broker
    queues everything for it (up to max_queued_messages) and drops the rest."""

    def __init__(self, port: int, password: str) -> None:
        self.received: set[bytes] = set()
        self.held: list[int] = []
        self.acking = False
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.ReceiveMaximum = 1
        props.SessionExpiryInterval = 3600
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id="scn-slow",
            protocol=paho.MQTTv5,
            manual_ack=True,
        )
        self.client.username_pw_set(BENCH_SCREENS.username, password)
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port, keepalive=30, clean_start=False, properties=props)
        self.client.subscribe(TOPICS.events_tree, qos=1)
        self.client.loop_start()

    def _message(self, client: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
        self.received.add(bytes(m.payload))
        if self.acking:
            client.ack(m.mid, m.qos)
        else:
            self.held.append(m.mid)

    def catch_up(self) -> None:
        self.acking = True
        for mid in self.held:
            self.client.ack(mid, 1)
        self.held.clear()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- the run ---------------------------------------------------------------------------------


async def _notification_rows(database_url: str) -> set[tuple[str, int]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text('SELECT "user", seq FROM notification'))
            return {(str(u), int(q)) for u, q in rows}
    finally:
        await engine.dispose()


class Watcher:
    """The operator's screen: every admin alert and every board entry, as the observer."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.events: set[bytes] = set()

    async def run(self, venue: BenchVenue) -> None:
        while True:
            client = venue.client(
                BENCH_SCREENS.username, BENCH_SCREENS.password, identifier="scn-watch"
            )
            with contextlib.suppress(aiomqtt.MqttError):
                async with client:
                    await client.subscribe([(TOPICS.admin_alerts, 1), (TOPICS.events_tree, 1)])
                    async for m in client.messages:
                        if not isinstance(m.payload, bytes) or not m.payload:
                            continue
                        if m.topic.value == TOPICS.admin_alerts:
                            self.alerts.append(json.loads(m.payload))
                        else:
                            self.events.add(m.payload)
            await asyncio.sleep(0.3)


async def run_scenario(opts: ScenarioOptions, work: Path) -> Outcome:
    outcome = Outcome(opts.name)
    figures = outcome.figures
    several = opts.name == "bridges"
    if several:
        opts.database = "postgresql"
    pg_name = await fresh_pg_database("plaza_scn") if opts.database == "postgresql" else None
    database_url = pg_url(pg_name) if pg_name else ""
    fleet = demo_fleet(opts.machines)
    env = {
        "PLAZA_MAX_ACTIVE_PER_PLAYER": "100000",
        "PLAZA_RATE_BURST": "100000",
        "PLAZA_FLOOD_BURST": "100000",
        "PLAZA_RATE_PER_MINUTE": "10000000",
        "PLAZA_MAX_DAYS_AHEAD": "3650",
        "PLAZA_DIGEST_INTERVAL": "1",
        "PLAZA_RECONNECT_MIN": "0.1",
        "PLAZA_RECONNECT_MAX": "1",
        "PLAZA_FLAP_WINDOW": str(opts.flap_window),
        "PLAZA_FLAP_COUNT": "4",
        **(KEYED if several else {}),
    }
    try:
        async with contextlib.AsyncExitStack() as stack:
            venue = BenchVenue(
                work,
                fleet,
                players=opts.players,
                database_url=database_url,
                bridge_env=env,
                seed_devices=True,
                bridges=opts.bridges if several else 1,
            )
            if opts.queue_limit:
                limit_queues(venue, opts.queue_limit)
            if opts.sim_machines or opts.screens:
                venue.ready_within = 120.0  # a bridge restarting into thousands of machines
            await stack.enter_async_context(venue)
            await venue.wait_bridge_ready()
            tg = await stack.enter_async_context(asyncio.TaskGroup())
            tasks: list[asyncio.Task[None]] = []
            epochs = EpochStore(work / "epochs.json")
            local = fleet[: len(fleet) - opts.sim_machines]
            machines = [
                Machine(
                    MachineConfig(
                        d.id, venue.secrets.devices[d.id], port=venue.broker.port, keepalive=5
                    ),
                    epochs,
                    autoplay=False,
                )
                for d in local
            ]
            tasks += [tg.create_task(m.run()) for m in machines]
            watcher = Watcher()
            tasks.append(tg.create_task(watcher.run(venue)))
            players = [
                Player(venue, f"bench{i:03d}", f"bench-pw-{i:03d}") for i in range(opts.players)
            ]
            admin = Player(venue, API_USER, venue.secrets.api, identifier=Settings().api_id)
            tasks += [tg.create_task(p.run()) for p in [*players, admin]]
            async with asyncio.timeout(60):
                for m in machines:
                    await m.connected.wait()
            parts = None
            if opts.name == "soak" and (opts.sim_machines or opts.screens or opts.probes):
                parts = SoakParts(
                    venue,
                    machines,
                    [d.id for d in fleet[len(local) :]],
                    screens=opts.screens,
                    processes=opts.screen_processes,
                    probes=opts.probes,
                    probe_rate=opts.probe_rate,
                    sim_faults=opts.sim_faults,
                )
                stack.push_async_callback(parts.close)
                tasks += await parts.start(tg, figures)
            slow = None
            if opts.name == "slow-subscriber":
                slow = SlowSubscriber(venue.broker.port, BENCH_SCREENS.password)
            load = Load()
            loop_started = time.monotonic()
            playing = asyncio.ensure_future(play(players, admin, [d.id for d in fleet], opts, load))
            await asyncio.sleep(opts.seconds * opts.fault_at)
            connects = [m.stats.connects for m in machines]
            if opts.name == "soak":
                await _soak(venue, opts, figures, machines, parts)
            else:
                fault = FAULTS[opts.name]
                await fault(venue, opts, figures, machines, database_url, pg_name)
            await asyncio.wait_for(playing, opts.seconds + 120)
            figures["load (s)"] = round(time.monotonic() - loop_started, 1)
            figures["commands answered"] = load.sent
            figures["commands sent again (same request id)"] = load.resent
            figures["refused"] = load.refused
            # QoS 1 is at least once: a reply in flight when the broker stops is sent again
            # after it restarts; clients de-duplicate by request id. Counted, not a failure.
            figures["duplicate replies to a single send"] = load.duplicate_replies
            figures["round trip p50 / p99 / max (ms)"] = (
                f"{percentile(load.round_trips, 50):.1f} / "
                f"{percentile(load.round_trips, 99):.1f} / {max(load.round_trips):.0f}"
            )
            figures["player reconnects"] = sum(p.connects - 1 for p in players)
            now = time.monotonic()
            connected = sum(p.up_total + (now - p.up_since if p.up_since else 0.0) for p in players)
            wanted = (now - loop_started) * len(players)
            figures["player connection stability (connected / wanted, faults included)"] = (
                f"{100 * min(1.0, connected / wanted):.3f} %"
            )
            # every machine back: after a broker restart, connected again to the new broker
            # (a machine that has not noticed yet still shows its old connection as up)
            t0 = time.monotonic()
            async with asyncio.timeout(60):
                for m, before in zip(machines, connects, strict=True):
                    while not m.connected.is_set() or (  # noqa: ASYNC110 - polls counters
                        opts.name == "broker-restart" and m.stats.connects <= before
                    ):
                        await asyncio.sleep(0.05)
            figures["machines all connected again after the load (s)"] = round(
                time.monotonic() - t0, 2
            )
            if parts is not None:
                figures["round trip p50 / p99 / max (ms), outside fault windows"] = (
                    quiet_round_trips(load.timed, parts.windows)
                )
                more, trouble = await parts.finish()
                figures.update(more)
                outcome.problems += trouble
            await asyncio.sleep(2.0)  # the last digests and births
            await admin.connected.wait()
            rows = await _notification_rows(venue.database_url)
            got = {(p.name, q) for p in players for q in p.seqs}
            missing = rows - got
            figures["notifications in SQL / received"] = f"{len(rows)} / {len(rows & got)}"
            if missing:
                outcome.problems.append(f"{len(missing)} notifications never reached their player")
            if opts.name == "flap":
                _flap_verdict(watcher, machines[0].device, outcome)
            if slow is not None:
                await _slow_verdict(slow, watcher, opts, outcome)
            outcome.report = await check(
                CheckOptions(
                    database_url=venue.database_url,
                    mqtt_port=venue.broker.port,
                    password=venue.secrets.observer,
                    grace=5.0,
                    digest_interval=1.0,
                    settle=1.0,
                )
            )
            outcome.problems += [p.line() for p in outcome.report.problems]
            # the bulk machines (`plaza sim` children) were stopped, some in the middle of an
            # injected fault: the in-process ones must all be online
            board = outcome.report.retained.board
            online = sum(1 for m in machines if (e := board.get(m.device)) and e.online)
            figures["board entries online at the end"] = f"{online} / {len(machines)}"
            if online != len(machines):
                outcome.problems.append(f"the board shows {online} of {len(machines)} online")
            for m in machines:
                await m.stop()
            for t in tasks:
                t.cancel()
    finally:
        if pg_name:
            await drop_pg_database(pg_name)
    return outcome


def _flap_verdict(watcher: Watcher, device: str, outcome: Outcome) -> None:
    flapping = [a for a in watcher.alerts if a.get("type") == "device_flapping"]
    mine = [a for a in flapping if a.get("device_id") == device]
    outcome.figures["device_flapping alerts (flapped machine / others)"] = (
        f"{len(mine)} / {len(flapping) - len(mine)}"
    )
    if len(mine) != 1 or len(flapping) != 1:
        outcome.problems.append(
            f"expected one device_flapping alert in the window, got {len(mine)} for {device} "
            f"and {len(flapping) - len(mine)} for others"
        )


async def _slow_verdict(
    slow: SlowSubscriber, watcher: Watcher, opts: ScenarioOptions, outcome: Outcome
) -> None:
    """The slow one held everything; a fast one (the watcher) saw every event. After the
    slow one catches up, what it never got is what the broker dropped past its queue bound."""
    before = len(slow.received)
    slow.catch_up()
    await asyncio.sleep(3.0)
    slow.close()
    published = len(watcher.events)
    lost = len(watcher.events - slow.received)
    bound = opts.queue_limit or 20000
    outcome.figures["events published (seen by a fast subscriber)"] = published
    outcome.figures["slow subscriber: received before / after catching up"] = (
        f"{before} / {len(slow.received)}"
    )
    outcome.figures[f"slow subscriber lost (past max_queued_messages {bound})"] = lost
    if published <= bound and lost:
        outcome.problems.append(f"the slow subscriber lost {lost} within its queue bound {bound}")
    if published > bound + 1 and lost < published - bound - 1:
        outcome.problems.append(f"lost {lost}, fewer than the bound implies: the bound is not it")


Fault = Callable[
    [BenchVenue, ScenarioOptions, dict[str, Any], list[Machine], str, str | None], Awaitable[None]
]


async def _broker_restart(venue: BenchVenue, *_: Any) -> None:
    await restart_broker(venue, _[1])


async def _bridge_kill(venue: BenchVenue, *_: Any) -> None:
    await kill_bridge(venue, _[1])


async def _kill_one_of_several(
    venue: BenchVenue, opts: ScenarioOptions, figures: dict[str, Any], *_: Any
) -> None:
    """SIGKILL bridge 0 (started first: the clock's leader, and an owner) and keep it down;
    the others take its slots and the clock."""
    figures["slots per bridge before"] = await slots_settled(venue.database_url, opts.bridges)
    t0 = time.monotonic()
    await venue.kill_bridge()
    held = await slots_settled(venue.database_url, opts.bridges - 1)
    figures["slots per bridge after the kill"] = held
    figures["bridge 0 killed until its slots were owned again (s)"] = round(
        time.monotonic() - t0, 2
    )


async def _db_outage(
    venue: BenchVenue,
    opts: ScenarioOptions,
    figures: dict[str, Any],
    _m: list[Machine],
    _url: str,
    pg_name: str | None,
) -> None:
    t0 = time.monotonic()
    if pg_name:
        killed = await cut_postgres(PG_ADMIN, pg_name, opts.outage)
        figures["PostgreSQL backends terminated"] = killed
    else:
        await lock_sqlite(venue.work / "plaza.db", opts.outage)
    figures["database unavailable (s)"] = round(time.monotonic() - t0, 1)


async def _flap(
    venue: BenchVenue,
    opts: ScenarioOptions,
    figures: dict[str, Any],
    machines: list[Machine],
    *_: Any,
) -> None:
    # Each reconnect after a drop backs off twice as long (0.2 s, 0.4 s, ...): 3 per round.
    for _round in range(opts.flaps):
        await machines[0].flap(times=3, gap=0.3)
        await asyncio.sleep(0.5)
    figures["flap rounds x reconnects"] = f"{opts.flaps} x 3 on {machines[0].device}"


async def _all_back(machines: list[Machine], started: float) -> float:
    async with asyncio.timeout(120):
        for m in machines:
            await m.connected.wait()
    return round(time.monotonic() - started, 2)


async def _soak(
    venue: BenchVenue,
    opts: ScenarioOptions,
    figures: dict[str, Any],
    machines: list[Machine],
    parts: SoakParts | None,
) -> None:
    """Faults through the load: machine crashes, a flap, one broker restart, one bridge kill;
    the time until every machine (and every screen) is connected again after each (the
    bridge: until it is)."""
    gap = opts.seconds * (1 - opts.fault_at) / 5
    for n, kind in enumerate(("crash", "broker-restart", "flap", "bridge-kill", "crash")):
        t0, wall = time.monotonic(), time.time()
        if kind == "crash":
            for m in machines[1 : 1 + max(1, len(machines) // 20)]:
                m.crash(down_for=1.0)
            await asyncio.sleep(0.1)
        elif kind == "broker-restart":
            await restart_broker(venue, {})
        elif kind == "flap":
            await machines[0].flap(times=3, gap=0.3)
        else:
            await kill_bridge(venue, {})
        await _all_back(machines, t0)
        if parts is not None:
            await parts.back(kind, wall)
        figures[f"recovery after {kind} #{n}"] = f"{round(time.monotonic() - t0, 2)} s"
        await asyncio.sleep(max(0.0, gap - (time.monotonic() - t0)))


async def _nothing(*_: Any) -> None:
    return None


FAULTS: dict[str, Fault] = {
    "broker-restart": _broker_restart,
    "bridge-kill": _bridge_kill,
    "db-outage": _db_outage,
    "flap": _flap,
    "slow-subscriber": _nothing,
    "bridges": _kill_one_of_several,
}


def run(args: argparse.Namespace) -> int:
    soak: dict[str, Any] = {}
    if args.command == "soak":
        args.name, args.seconds, args.outage, args.database = "soak", args.minutes * 60, 0, "sqlite"
        args.queue_limit = 0
        soak = {
            "sim_machines": max(0, args.machines - args.local_machines),
            "screens": args.screens,
            "screen_processes": args.screen_processes,
            "probes": min(args.probes, args.local_machines - 2),
            "probe_rate": args.probe_rate,
            "pace": args.pace,
        }
    opts = ScenarioOptions(
        **soak,
        fault_at=0.1 if args.name == "soak" else 0.4,
        name=args.name,
        machines=args.machines,
        players=args.players,
        seconds=args.seconds,
        outage=args.outage,
        database=args.database,
        queue_limit=args.queue_limit,
        bridges=getattr(args, "bridges", 3),
    )
    logging.getLogger("plaza_sim").setLevel(logging.WARNING)
    if note := raise_open_files(
        opts.machines + opts.screens + opts.players, f"plaza {args.command}"
    ):
        print(note)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"plaza-scenario-{opts.name}-") as tmp:
        outcome = asyncio.run(run_scenario(opts, Path(tmp)))
    print(machine_line() + f"; load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(outcome.summary())
    print(f"scenario took {time.monotonic() - started:.1f}s")
    return 1 if outcome.problems else 0
