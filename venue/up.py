"""`plaza up`: the whole venue on one machine, supervised.

Order: pick ports -> secrets and credentials files -> database seed -> mosquitto -> bridge ->
api -> simulator -> wait until the api is ready and every machine is online on the board ->
print one summary. Ctrl-C or SIGTERM stops the children in reverse order; every child also
gets SIGTERM from the kernel if this process dies (PR_SET_PDEATHSIG), so none is orphaned.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import aiomqtt

from plaza.db import make_engine
from plaza.messages import BoardEntry
from plaza.mqtt import NODELAY
from plaza.settings import Settings
from plaza.topics import Topics
from venue.broker import LocalBroker, die_with_parent, free_port, port_is_free
from venue.fleet import (
    API_USER,
    BRIDGE_USER,
    OBSERVER_CLIENT_ID,
    OBSERVER_USER,
    VenueSecrets,
    demo_fleet,
    write_private,
)
from venue.seed import seed


class UpError(RuntimeError):
    """The venue could not be brought up; the message says what to do."""


@dataclass(frozen=True, slots=True)
class UpOptions:
    data_dir: Path
    devices: int = 20
    mqtt_port: int | None = None
    ws_port: int | None = None
    http_port: int | None = None
    metrics_port: int | None = None
    database_url: str = ""
    sim_speed: float = 30.0
    ready_timeout: float = 60.0


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


@dataclass
class Venue:
    options: UpOptions
    settings: Settings
    secrets: VenueSecrets
    device_ids: list[str]
    broker: LocalBroker
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        return self.options.data_dir / "logs"

    def spawn(self, name: str, args: list[str], user: str | None, password: str | None) -> None:
        env = dict(os.environ)
        env.update(
            PLAZA_DATA_DIR=str(self.options.data_dir),
            PLAZA_MQTT_HOST=self.settings.mqtt_host,
            PLAZA_MQTT_PORT=str(self.settings.mqtt_port),
            PLAZA_WS_PORT=str(self.settings.ws_port),
            PLAZA_HTTP_PORT=str(self.settings.http_port),
            PLAZA_BRIDGE_METRICS_PORT=str(self.settings.bridge_metrics_port),
            PLAZA_DATABASE_URL=self.settings.db_url,
            PYTHONUNBUFFERED="1",
        )
        if user and password:
            env.update(PLAZA_MQTT_USERNAME=user, PLAZA_MQTT_PASSWORD=password)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("ab")
        self.logs.append(log)
        self.children[name] = subprocess.Popen(
            [sys.executable, "-m", "venue.cli", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )

    def stop(self) -> None:
        """Stop in reverse start order (machines disconnect cleanly while the broker runs)."""
        for name in reversed(list(self.children)):
            proc = self.children[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.broker.stop()
        for log in self.logs:
            log.close()

    def dead_child(self) -> str | None:
        for name, proc in self.children.items():
            if proc.poll() is not None:
                return f"{name} exited with code {proc.returncode} (see {self.log_dir}/{name}.log)"
        if self.broker.proc is None or self.broker.proc.poll() is not None:
            return f"mosquitto exited (see {self.broker.log_path})"
        return None


def init_venue(
    settings: Settings, devices: int, service_passwords: dict[str, str] | None = None
) -> tuple[VenueSecrets, list[str]]:
    """Secrets, the machines' and people's credential files, and the seeded database.

    Existing secrets in the data dir are kept; ``service_passwords`` (bridge, api, observer,
    admin) override generated ones, as compose passes them from the environment."""
    data = settings.data_dir
    fleet = demo_fleet(devices)
    secrets = VenueSecrets.load_or_create(data / "secrets.json")
    for field_name, password in (service_passwords or {}).items():
        setattr(secrets, field_name, password)
    secrets.ensure_devices([d.id for d in fleet])
    secrets.save(data / "secrets.json")
    write_private(data / "devices.json", {d.id: secrets.devices[d.id] for d in fleet})
    write_private(data / "credentials.json", secrets.credentials())

    async def _seed() -> None:
        engine = make_engine(settings.db_url)
        try:
            await seed(engine, fleet, secrets)
        finally:
            await engine.dispose()

    asyncio.run(_seed())
    return secrets, [d.id for d in fleet]


def prepare(options: UpOptions) -> Venue:
    data = options.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    taken: set[int] = set()
    mqtt_port = choose_port("MQTT", "--mqtt-port", options.mqtt_port, 1883, taken)
    ws_port = choose_port("WebSocket", "--ws-port", options.ws_port, 9001, taken)
    http_port = choose_port("HTTP", "--http-port", options.http_port, 8000, taken)
    metrics_port = choose_port(
        "bridge metrics", "--metrics-port", options.metrics_port, 9102, taken
    )
    settings = Settings(
        data_dir=data,
        mqtt_port=mqtt_port,
        ws_port=ws_port,
        http_port=http_port,
        bridge_metrics_port=metrics_port,
        database_url=options.database_url,
    )
    secrets, device_ids = init_venue(settings, options.devices)
    broker = LocalBroker(data / "broker", mqtt_port, ws_port)
    broker.configure(secrets.broker_clients(settings), secrets.roles(Topics(settings.topic_root)))
    return Venue(options, settings, secrets, device_ids, broker)


def wait_http_ready(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url, timeout=1) as reply,  # noqa: S310 - our own URL
        ):
            if reply.status == 200:
                return
        time.sleep(0.2)
    raise UpError(f"{url} did not answer 200 in time")


async def wait_board_online(venue: Venue, deadline: float) -> int:
    """Watch the retained board as the observer until every machine is online."""
    topics = Topics(venue.settings.topic_root)
    online: dict[str, bool] = {}
    versions: dict[str, int] = {}
    client = aiomqtt.Client(
        "127.0.0.1",
        venue.settings.mqtt_port,
        username=OBSERVER_USER,
        password=venue.secrets.observer,
        identifier=OBSERVER_CLIENT_ID,
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=NODELAY,
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
    return "\n".join(
        [
            f"GamePlaza venue is up in {elapsed:.1f}s: {len(venue.device_ids)} machines online.",
            f"  MQTT (TCP)        mqtt://127.0.0.1:{s.mqtt_port}",
            f"  MQTT (WebSocket)  ws://127.0.0.1:{s.ws_port}/",
            f"  Web client        http://{s.http_host}:{s.http_port}/  (?wall=1 for a wall screen)",
            f"  REST API          http://{s.http_host}:{s.http_port}  (/docs, /healthz, /readyz)",
            f"  Bridge metrics    http://{s.http_host}:{s.bridge_metrics_port}/metrics",
            f"  Database          {s.db_url.replace('+aiosqlite', '').replace('+asyncpg', '')}",
            f"  Credentials       {creds}",
            f"  Logs              {venue.log_dir}/",
            "  Watch it live:",
            f'    mosquitto_sub -h 127.0.0.1 -p {s.mqtt_port} -u observer -P "{read_pw}" '
            f"-i {OBSERVER_CLIENT_ID} -t '{s.topic_root}/board/+' -v",
            "Press Ctrl-C to stop.",
        ]
    )


def up(options: UpOptions) -> int:
    started = time.monotonic()
    venue = prepare(options)
    stopping = False

    def _stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        venue.broker.start()
        venue.spawn("bridge", ["bridge"], BRIDGE_USER, venue.secrets.bridge)
        venue.spawn("api", ["api"], API_USER, venue.secrets.api)
        venue.spawn(
            "sim",
            [
                "sim",
                "--devices-file",
                str(options.data_dir.resolve() / "devices.json"),
                "--speed",
                str(options.sim_speed),
            ],
            None,
            None,
        )
        deadline = time.monotonic() + options.ready_timeout
        wait_http_ready(f"http://127.0.0.1:{venue.settings.http_port}/readyz", deadline)
        try:
            asyncio.run(wait_board_online(venue, deadline))
        except TimeoutError as exc:
            raise UpError(
                f"not every machine came online within {options.ready_timeout:.0f}s; "
                f"see {venue.log_dir}"
            ) from exc
        print(summary(venue, time.monotonic() - started), flush=True)
        while not stopping:
            problem = venue.dead_child()
            if problem:
                print(f"error: {problem}; stopping the venue", file=sys.stderr)
                return 1
            time.sleep(0.3)
        print("stopping the venue...", flush=True)
        return 0
    except UpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        venue.stop()
        print("venue stopped.", flush=True)
