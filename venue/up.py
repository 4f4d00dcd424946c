"""`plaza up`: the whole venue on one machine, supervised.

Order: pick ports -> secrets and credentials files -> database seed -> mosquitto -> bridge ->
api -> simulator -> wait until the api is ready and every machine is online on the board ->
print one summary -> supervise until Ctrl-C or SIGTERM, which stop the children in reverse
order. Every child also gets SIGTERM from the kernel if this process dies
(PR_SET_PDEATHSIG), so none is orphaned.

Supervision (:meth:`Venue.supervise`): a bridge, api or simulator that exits is started again
after a jittered, doubling delay (``PLAZA_RESTART_BACKOFF_MIN``..``_MAX``), and the others
keep running; so is mosquitto, after its account file has been checked and, if a crash cut it
short, restored from its last-good copy (the services reconnect by themselves). A bridge or
api that is alive but wedged, whose HTTP endpoint (the bridge's ``/metrics``, served from its
event loop; the api's ``/healthz``) stops answering ``PLAZA_HEALTH_FAILURES`` times in a row,
is killed and restarted the same way. Every child's output goes through a pipe into a
rotated log (:mod:`venue.logs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Protocol
from zoneinfo import ZoneInfo

import aiomqtt

from plaza.db import DatabaseError, make_engine
from plaza.messages import BoardEntry
from plaza.mqtt import Backoff, client_options
from plaza.settings import Settings
from plaza.topics import Topics
from venue import runstate
from venue.accounts import (
    API_USER,
    BRIDGE_USER,
    OBSERVER_CLIENT_ID,
    OBSERVER_USER,
    VenueSecrets,
    demo_fleet,
    desk_consoles,
    write_private,
)
from venue.broker import (
    BrokerError,
    LocalBroker,
    die_with_parent,
    free_port,
    port_is_free,
    terminate,
)
from venue.limits import LimitError, raise_open_files
from venue.logs import RotatingLog, pump
from venue.proxy import NGINX_SOURCE, NginxProxy, ProxyError, render_nginx
from venue.seed import seed
from venue.tls import (
    TlsError,
    TlsFiles,
    default_hosts,
    ensure_venue_tls,
    with_operator_cert,
)

#: how often DIR/supervisor.json is rewritten (seconds)
RECORD_EVERY = 1.0


class UpError(RuntimeError):
    """The venue could not be brought up; the message says what to do."""


@dataclass(frozen=True, slots=True)
class UpOptions:
    data_dir: Path
    devices: int = 20
    #: consoles without an agent at the desk (staff set their state; no simulated agent)
    consoles: int = 0
    #: simulated players who book machines, get approved at the simulated desk and arrive to
    #: check in with their codes (`plaza sim --players`; 0: none)
    players: int = 0
    mqtt_port: int | None = None
    ws_port: int | None = None
    http_port: int | None = None
    metrics_port: int | None = None
    database_url: str = ""
    sim_speed: float = 30.0
    ready_timeout: float = 60.0
    #: `--tls`: the venue CA and a server certificate (made once under DIR/tls/)
    tls: bool = False
    tls_hosts: tuple[str, ...] = ()
    #: the operator's own certificate, shown to browsers instead of the venue CA's
    tls_cert: Path | None = None
    tls_key: Path | None = None


def choose_port(name: str, flag: str, requested: int | None, default: int, taken: set[int]) -> int:
    """The requested port (which must be free), else the default, else any free port."""
    if requested is not None:
        if requested in taken or not port_is_free(requested, "0.0.0.0"):  # noqa: S104
            raise UpError(f"port {requested} for {name} is busy; choose another with {flag}")
        taken.add(requested)
        return requested
    port = default
    if port in taken or not port_is_free(port, "0.0.0.0"):  # noqa: S104
        while (port := free_port()) in taken:
            pass
        print(f"note: {name} default port {default} is busy; using {port} (set {flag} to choose)")
    taken.add(port)
    return port


def say(text: str) -> None:
    """A line from the supervisor on its own stderr."""
    print(f"plaza up: {text}", file=sys.stderr, flush=True)


def exit_text(code: int | None) -> str:
    if code is None:
        return "is gone"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


def answers(url: str, timeout: float) -> bool:
    """True when ``url`` answers 200 within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 - our own URL
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class Child:
    """One supervised service process: its command, its log, its health URL, its restarts."""

    name: str
    args: list[str]
    env: dict[str, str]
    log: RotatingLog
    health_url: str | None
    backoff: Backoff
    proc: subprocess.Popen[bytes] | None = None
    pumps: list[threading.Thread] = field(default_factory=list)
    started_at: float = 0.0
    restart_at: float | None = None
    restarts: int = 0
    last_exit: str | None = None
    #: the health URL answered since the last start: from then on every miss counts
    answered: bool = False
    misses: int = 0
    next_probe: float = 0.0

    def start(self, now: float, probe_every: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "venue.cli", *self.args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor, which stops us
            preexec_fn=die_with_parent,
        )
        assert self.proc.stdout is not None
        self.pumps = [t for t in self.pumps if t.is_alive()]
        self.pumps.append(pump(self.proc.stdout, self.log))
        self.started_at, self.restart_at = now, None
        self.answered, self.misses, self.next_probe = False, 0, now + probe_every


class Runner(Protocol):
    """What the supervisor needs of mosquitto and nginx (LocalBroker, NginxProxy)."""

    proc: subprocess.Popen[bytes] | None

    @property
    def log_path(self) -> Path: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


@dataclass
class Daemon:
    """mosquitto or nginx under supervision: restarted like a child, by its runner."""

    name: str
    runner: Runner
    backoff: Backoff
    #: run before every restart (the broker: check and restore its account file)
    before_start: Callable[[], None] = lambda: None
    started_at: float = 0.0
    restart_at: float | None = None
    restarts: int = 0
    last_exit: str | None = None

    def start(self, now: float) -> None:
        self.before_start()
        self.runner.start()
        self.started_at, self.restart_at = now, None


@dataclass
class Venue:
    options: UpOptions
    settings: Settings
    secrets: VenueSecrets
    device_ids: list[str]
    broker: LocalBroker
    #: where uvicorn listens: the public HTTP port, or under TLS an internal one behind nginx
    api_port: int = 0
    proxy: NginxProxy | None = None
    tls: TlsFiles | None = None
    children: dict[str, Child] = field(default_factory=dict)
    daemons: list[Daemon] = field(default_factory=list)
    logs: list[RotatingLog] = field(default_factory=list)
    next_snapshot: float = 0.0
    next_record: float = 0.0
    #: when `plaza up` started (Unix seconds), for DIR/supervisor.json
    started_wall: float = field(default_factory=time.time)

    @property
    def log_dir(self) -> Path:
        return self.options.data_dir / "logs"

    def open_log(self, path: Path) -> RotatingLog:
        log = RotatingLog(path, self.settings.log_max_bytes, self.settings.log_backups)
        self.logs.append(log)
        return log

    def _backoff(self) -> Backoff:
        return Backoff(self.settings.restart_backoff_min, self.settings.restart_backoff_max)

    def _configure_broker(self) -> None:
        # checks the account file and restores its last-good copy if the broker died while
        # rewriting it
        topics = Topics(self.settings.topic_root)
        self.broker.configure(
            self.secrets.broker_clients(self.settings), self.secrets.roles(topics)
        )

    def start_broker(self) -> None:
        """mosquitto, then nginx in front of it under TLS (each supervised from now on)."""
        now = time.monotonic()
        self.daemons = [Daemon("mosquitto", self.broker, self._backoff(), self._configure_broker)]
        self.broker.start()
        self.daemons[0].started_at = now
        if self.proxy is not None:
            self.daemons.append(Daemon("nginx", self.proxy, self._backoff()))
            self.proxy.start()
            self.daemons[1].started_at = now

    def spawn(
        self,
        name: str,
        args: list[str],
        user: str | None,
        password: str | None,
        health_url: str | None = None,
        **extra_env: str,
    ) -> None:
        s = self.settings
        env = dict(os.environ)
        env.update(
            PLAZA_DATA_DIR=str(self.options.data_dir),
            PLAZA_MQTT_HOST=s.mqtt_host,
            PLAZA_MQTT_PORT=str(s.mqtt_port),
            PLAZA_WS_PORT=str(s.ws_port),
            PLAZA_HTTP_PORT=str(s.http_port),
            PLAZA_BRIDGE_METRICS_PORT=str(s.bridge_metrics_port),
            PLAZA_DATABASE_URL=s.db_url,
            PYTHONUNBUFFERED="1",
        )
        if s.mqtt_tls:
            env.update(PLAZA_MQTT_TLS="true", PLAZA_TLS_CA=str(s.tls_ca or ""))
        if s.public_tls:
            env.update(PLAZA_PUBLIC_TLS="true")
        if user and password:
            env.update(PLAZA_MQTT_USERNAME=user, PLAZA_MQTT_PASSWORD=password)
        env.update(extra_env)
        log = self.open_log(self.log_dir / f"{name}.log")
        child = Child(name, args, env, log, health_url, self._backoff())
        child.start(time.monotonic(), s.health_interval)
        self.children[name] = child

    # -- supervision -------------------------------------------------------------------------
    def supervise(self, now: float) -> None:
        """One round: restart what exited, kill what is wedged, keep the account file safe."""
        for daemon in self.daemons:
            self._watch_daemon(daemon, now)
        for child in self.children.values():
            self._watch(child, now)
        broker_up = bool(self.daemons) and self.daemons[0].restart_at is None
        if now >= self.next_snapshot and broker_up:
            self.next_snapshot = now + self.settings.dynsec_snapshot_interval
            self.broker.snapshot_dynsec()
        if now >= self.next_record:
            self.next_record = now + RECORD_EVERY
            self.record(now)

    def record(self, now: float, *, stopped: bool = False) -> None:
        """Write DIR/supervisor.json (:mod:`venue.runstate`) for `plaza status`."""
        wall = time.time()

        def since(started: float, running: bool) -> float | None:
            return wall - (now - started) if running else None

        processes = []
        for daemon in self.daemons:
            proc = daemon.runner.proc
            running = not stopped and proc is not None and proc.poll() is None
            processes.append(
                runstate.ProcessState(
                    daemon.name,
                    running,
                    proc.pid if running and proc is not None else None,
                    since(daemon.started_at, running),
                    daemon.restarts,
                    daemon.last_exit,
                )
            )
        for child in self.children.values():
            running = not stopped and child.proc is not None and child.proc.poll() is None
            processes.append(
                runstate.ProcessState(
                    child.name,
                    running,
                    child.proc.pid if running and child.proc is not None else None,
                    since(child.started_at, running),
                    child.restarts,
                    child.last_exit,
                )
            )
        s = self.settings
        state = runstate.SupervisorState(
            pid=os.getpid(),
            started_at=self.started_wall,
            updated_at=wall,
            database_url=s.db_url,
            ports={
                "mqtt": s.mqtt_port,
                "ws": s.ws_port,
                "http": s.http_port,
                "metrics": s.bridge_metrics_port,
            },
            processes=processes,
            stopped=stopped,
        )
        try:
            runstate.write(self.options.data_dir.resolve(), state)
        except OSError as exc:  # a full disk must not stop the supervisor
            say(f"could not write {runstate.FILE}: {exc}")

    def _watch(self, child: Child, now: float) -> None:
        s = self.settings
        if child.proc is None:
            if child.restart_at is not None and now >= child.restart_at:
                child.start(now, s.health_interval)
                assert child.proc is not None
                say(f"{child.name} started again (pid {child.proc.pid})")
            return
        code = child.proc.poll()
        if code is not None:
            ran = now - child.started_at
            if ran >= s.restart_stable_after:
                child.backoff.reset()
            delay = child.backoff.next_delay()
            child.restarts += 1
            child.last_exit = exit_text(code)
            text = (
                f"{child.name} {exit_text(code)} after {ran:.1f}s; restarting it in "
                f"{delay:.2f}s (restart {child.restarts}; see {child.log.path})"
            )
            say(text)
            child.log.note(text)
            child.proc, child.restart_at = None, now + delay
            return
        if child.health_url is None or now < child.next_probe:
            return
        child.next_probe = now + s.health_interval
        if answers(child.health_url, s.health_timeout):
            child.answered, child.misses = True, 0
            return
        if not child.answered and now - child.started_at < s.health_start_grace:
            return  # still starting
        child.misses += 1
        if child.misses >= s.health_failures:
            text = (
                f"{child.name} is wedged: {child.health_url} did not answer "
                f"{child.misses} times in a row; killing it (SIGKILL)"
            )
            say(text)
            child.log.note(text)
            child.proc.kill()

    def _watch_daemon(self, daemon: Daemon, now: float) -> None:
        runner = daemon.runner
        if daemon.restart_at is None:
            if runner.proc is not None and runner.proc.poll() is None:
                return
            code = runner.proc.returncode if runner.proc is not None else None
            ran = now - daemon.started_at
            if ran >= self.settings.restart_stable_after:
                daemon.backoff.reset()
            delay = daemon.backoff.next_delay()
            daemon.restarts += 1
            daemon.last_exit = exit_text(code)
            say(
                f"{daemon.name} {exit_text(code)} after {ran:.1f}s; restarting it in "
                f"{delay:.2f}s (see {runner.log_path}); the services reconnect by themselves"
            )
            runner.stop()  # what it left behind (nginx: workers of a killed master)
            daemon.restart_at = now + delay
            return
        if now < daemon.restart_at:
            return
        try:
            daemon.start(now)
        except (BrokerError, ProxyError) as exc:
            delay = daemon.backoff.next_delay()
            say(f"{daemon.name} did not start again ({exc}); next try in {delay:.2f}s")
            daemon.restart_at = time.monotonic() + delay
            return
        assert runner.proc is not None
        say(f"{daemon.name} started again (pid {runner.proc.pid})")

    def stop(self) -> None:
        """Stop in reverse start order (machines disconnect cleanly while the broker runs)."""
        for child in reversed(list(self.children.values())):
            if child.proc is not None:
                terminate(child.proc)
        if self.proxy is not None:
            self.proxy.stop()
        self.broker.stop()
        for child in self.children.values():
            for thread in child.pumps:
                thread.join(timeout=2)
        for log in self.logs:
            log.close()
        if self.daemons:
            self.record(time.monotonic(), stopped=True)

    def dead_child(self) -> str | None:
        for name, child in self.children.items():
            if child.proc is not None and child.proc.poll() is not None:
                return f"{name} {exit_text(child.proc.returncode)} (see {child.log.path})"
        for daemon in self.daemons:
            proc = daemon.runner.proc
            if proc is None or proc.poll() is not None:
                return f"{daemon.name} exited (see {daemon.runner.log_path})"
        return None


def make_private(data: Path) -> None:
    """The data directory and everything in it readable by its owner only (0700/0600): the
    database holds password hashes and check-in codes, the logs user names, the broker's
    files its accounts. The certificates in tls/ stay 0644 (clients copy ca.crt). New files are
    private through the umask `plaza up` sets for itself and its children."""
    os.chmod(data, 0o700)
    for root, dirs, files in os.walk(data):
        for name in dirs:
            os.chmod(Path(root) / name, 0o700)
        for name in files:
            path = Path(root) / name
            if not path.is_symlink():
                public = path.parent == data / "tls" and path.suffix == ".crt"
                os.chmod(path, 0o644 if public else 0o600)


def init_venue(
    settings: Settings,
    devices: int,
    service_passwords: dict[str, str] | None = None,
    ca: Path | None = None,
    *,
    consoles: int = 0,
    players: int = 0,
) -> tuple[VenueSecrets, list[str]]:
    """Secrets, the machines' and people's credential files, and the seeded database.

    Existing secrets in the data dir are kept; ``service_passwords`` (bridge, api, observer,
    admin) override generated ones, as compose passes them from the environment."""
    data = settings.data_dir
    # `plaza up` and `plaza init` add ``consoles`` consoles without an agent (--consoles)
    fleet = [*demo_fleet(devices), *desk_consoles(consoles)]
    secrets = VenueSecrets.load_or_create(data / "secrets.json")
    for field_name, password in (service_passwords or {}).items():
        setattr(secrets, field_name, password)
    secrets.ensure_devices([d.id for d in fleet])
    # the simulator's players (`plaza sim --players`): their own accounts, not the demo
    # players people log in with
    sim_players = secrets.ensure_sim_players(players)
    secrets.save(data / "secrets.json")
    # the simulator starts an agent for each of these: none for the machines without one
    agents = {d.id: secrets.devices[d.id] for d in fleet if d.agent}
    write_private(data / "devices.json", agents)
    write_private(data / "players.json", {u: secrets.sim_players[u] for u in sim_players})
    credentials = secrets.credentials()
    if ca is not None:
        credentials["ca"] = str(ca)  # verify the venue's TLS with this (mosquitto_sub --cafile)
    write_private(data / "credentials.json", credentials)

    async def _seed() -> None:
        engine = make_engine(settings.db_url)
        try:
            await seed(
                engine,
                fleet,
                secrets,
                floor_plan=True,
                history_days=7,
                tz=ZoneInfo(settings.venue_timezone),
            )
        finally:
            await engine.dispose()

    try:
        asyncio.run(_seed())
    except DatabaseError as exc:  # a database from a newer release: say so, start nothing
        raise UpError(f"{exc}; nothing was started") from exc
    return secrets, [d.id for d in fleet]


def venue_tls(options: UpOptions, data: Path) -> TlsFiles | None:
    if not (options.tls or options.tls_cert or options.tls_key):
        return None
    files = ensure_venue_tls(data / "tls", default_hosts(options.tls_hosts))
    if options.tls_cert or options.tls_key:
        if not (options.tls_cert and options.tls_key):
            raise UpError("--tls-cert and --tls-key go together")
        files = with_operator_cert(files, options.tls_cert, options.tls_key)
    return files


def prepare(options: UpOptions) -> Venue:
    data = options.data_dir.resolve()
    os.umask(0o077)  # every file plaza up and its children create is private
    data.mkdir(parents=True, exist_ok=True)
    make_private(data)
    taken: set[int] = set()
    mqtt_port = choose_port("MQTT", "--mqtt-port", options.mqtt_port, 1883, taken)
    ws_port = choose_port("WebSocket", "--ws-port", options.ws_port, 9001, taken)
    http_port = choose_port("HTTP", "--http-port", options.http_port, 8000, taken)
    metrics_port = choose_port(
        "bridge metrics", "--metrics-port", options.metrics_port, 9102, taken
    )
    try:
        tls = venue_tls(options, data)
    except TlsError as exc:
        raise UpError(str(exc)) from exc
    settings = Settings(
        data_dir=data,
        mqtt_port=mqtt_port,
        ws_port=ws_port,
        http_port=http_port,
        bridge_metrics_port=metrics_port,
        database_url=options.database_url,
        mqtt_tls=tls is not None,
        tls_ca=tls.ca if tls else None,
        public_tls=tls is not None,
    )
    secrets, device_ids = init_venue(
        settings,
        options.devices,
        ca=tls.ca if tls else None,
        consoles=options.consoles,
        players=options.players,
    )
    broker_log = RotatingLog(
        data / "broker" / "mosquitto.log", settings.log_max_bytes, settings.log_backups
    )
    # Under TLS browsers reach nginx on the public ports, which proxies to the broker's
    # WebSocket listener and to uvicorn on internal ones.
    broker_ws = free_port() if tls else ws_port
    api_port = free_port() if tls else http_port
    broker = LocalBroker(
        data / "broker",
        mqtt_port,
        broker_ws,
        log=broker_log,
        certfile=tls.cert if tls else None,
        keyfile=tls.key if tls else None,
    )
    venue = Venue(options, settings, secrets, device_ids, broker, api_port=api_port, tls=tls)
    venue.logs.append(broker_log)
    venue._configure_broker()
    if tls is not None:
        venue.proxy = NginxProxy(
            data / "nginx",
            render_nginx(
                NGINX_SOURCE.read_text(),
                bind=settings.http_host,
                ws_port=ws_port,
                http_port=http_port,
                ws_upstream=f"https://127.0.0.1:{broker_ws}",
                http_upstream=f"http://127.0.0.1:{api_port}",
                cert=tls.public_cert,
                key=tls.public_key,
                ca=tls.ca,
                run_dir=data / "nginx",
                run_as_root=os.geteuid() == 0,
            ),
            (ws_port, http_port),
            venue.open_log(venue.log_dir / "nginx.log"),
            host="127.0.0.1" if settings.http_host in ("0.0.0.0", "") else settings.http_host,  # noqa: S104
        )
    return venue


def wait_http_ready(url: str, deadline: float, check: Callable[[], str | None]) -> None:
    """Until ``url`` answers 200; ``check`` names a child that died meanwhile (fatal while
    starting: a service that cannot start once will not start by being retried)."""
    while time.monotonic() < deadline:
        if answers(url, 1.0):
            return
        if problem := check():
            raise UpError(f"{problem} while the venue was starting")
        time.sleep(0.2)
    raise UpError(f"{url} did not answer 200 in time")


async def wait_board_online(venue: Venue, deadline: float) -> int:
    """Watch the retained board as the observer until every machine is online."""
    topics = Topics(venue.settings.topic_root)
    online: dict[str, bool] = {}
    versions: dict[str, int] = {}
    client = aiomqtt.Client(
        venue.settings.mqtt_host,
        venue.settings.mqtt_port,
        username=OBSERVER_USER,
        password=venue.secrets.observer,
        identifier=OBSERVER_CLIENT_ID,
        **client_options(venue.settings),
    )
    async with client:
        await client.subscribe(topics.all_board, qos=1)
        async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
            async for message in client.messages:
                if not isinstance(message.payload, bytes) or not message.payload:
                    continue
                entry = BoardEntry.model_validate_json(message.payload)
                if entry.version >= versions.get(entry.device_id, -1):
                    versions[entry.device_id] = entry.version
                    online[entry.device_id] = entry.online
                if all(online.get(d) for d in venue.device_ids):
                    return len(venue.device_ids)
    return sum(online.values())


def summary(venue: Venue, elapsed: float) -> str:
    s, data = venue.settings, venue.options.data_dir.resolve()
    creds = data / "credentials.json"
    read_pw = (
        f'$(python3 -c \'import json; print(json.load(open("{creds}"))["observer"]["password"])\')'
    )
    host = s.mqtt_host
    if venue.tls is None:
        web, ws, mqtt, cafile = "http", "ws", "mqtt", ""
    else:
        web, ws, mqtt = "https", "wss", "mqtts"
        cafile = f" --cafile {venue.tls.ca}"
    lines = [
        f"GamePlaza venue is up in {elapsed:.1f}s: {len(venue.device_ids)} machines online.",
        f"  MQTT (TCP)        {mqtt}://{host}:{s.mqtt_port}",
        f"  MQTT (WebSocket)  {ws}://{host}:{s.ws_port}/",
        f"  Web client        {web}://{host}:{s.http_port}/  (?wall=1 for a wall screen)",
        f"  REST API          {web}://{host}:{s.http_port}  (/docs, /healthz, /readyz)",
        f"  Bridge metrics    http://{s.http_host}:{s.bridge_metrics_port}/metrics",
        f"  Database          {s.db_url.replace('+aiosqlite', '').replace('+asyncpg', '')}",
        f"  Credentials       {creds}",
    ]
    if venue.tls is not None:
        shown = f"; browsers see {venue.tls.public_cert}" if venue.tls.operator_cert else ""
        lines.append(f"  TLS               1.3 only; venue CA {venue.tls.ca}{shown}")
        lines.append(
            f"  Internal          broker WebSocket :{venue.broker.ws_port} (every interface, "
            f"TLS; firewall it), api 127.0.0.1:{venue.api_port}, both behind nginx"
        )
    lines += [
        f"  Logs              {venue.log_dir}/ (rotated at {s.log_max_bytes // 1024} KiB, "
        f"{s.log_backups} kept; mosquitto's in {venue.broker.log_path.parent}/)",
        "  Supervised        a bridge, api, simulator or broker that stops is restarted",
    ]
    if venue.options.players:
        lines.append(
            f"  Simulated players {venue.options.players} book ahead, staff at the simulated "
            "desk approve, they check in by code (some late, some no-shows)"
        )
    lines += [
        "  Watch it live:",
        f'    mosquitto_sub -h {host} -p {s.mqtt_port}{cafile} -u observer -P "{read_pw}" '
        f"-i {OBSERVER_CLIENT_ID} -t '{s.topic_root}/board/+' -v",
        "Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)


def sim_player_args(options: UpOptions, api: str) -> list[str]:
    """The demo's players for `plaza sim`: they book a little ahead, the simulated desk
    approves their bookings over REST (``api``), and they arrive to type their codes."""
    if not options.players:
        return []
    data = options.data_dir.resolve()
    return [
        "--players",
        str(options.players),
        "--players-file",
        str(data / "players.json"),
        "--desk",
        api,
        "--desk-credentials",
        str(data / "credentials.json"),
    ]


def up(options: UpOptions) -> int:
    started = time.monotonic()
    try:  # before anything starts; the broker and the simulator inherit the raised limit
        if note := raise_open_files(options.devices, "plaza up", options.players):
            print(note, flush=True)
    except LimitError as exc:
        raise UpError(str(exc)) from exc
    venue = prepare(options)
    stopping = False

    def _stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        venue.start_broker()
        s = venue.settings
        metrics = f"http://127.0.0.1:{s.bridge_metrics_port}/metrics"
        venue.spawn(
            "bridge",
            ["bridge"],
            BRIDGE_USER,
            venue.secrets.bridge,
            metrics if s.bridge_metrics_port else None,
        )
        api = f"http://127.0.0.1:{venue.api_port}"
        venue.spawn(
            "api",
            ["api"],
            API_USER,
            venue.secrets.api,
            f"{api}/healthz",
            PLAZA_HTTP_PORT=str(venue.api_port),
        )
        venue.spawn(
            "sim",
            [
                "sim",
                "--devices-file",
                str(options.data_dir.resolve() / "devices.json"),
                "--speed",
                str(options.sim_speed),
                *sim_player_args(options, api),
            ],
            None,
            None,
        )
        venue.record(time.monotonic())
        deadline = time.monotonic() + options.ready_timeout
        wait_http_ready(f"{api}/readyz", deadline, venue.dead_child)
        try:
            asyncio.run(wait_board_online(venue, deadline))
        except TimeoutError as exc:
            raise UpError(
                f"not every machine came online within {options.ready_timeout:.0f}s; "
                f"see {venue.log_dir}"
            ) from exc
        print(summary(venue, time.monotonic() - started), flush=True)
        while not stopping:
            venue.supervise(time.monotonic())
            time.sleep(0.2)
        print("stopping the venue...", flush=True)
        return 0
    except (UpError, BrokerError, ProxyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        venue.stop()
        print("venue stopped.", flush=True)
