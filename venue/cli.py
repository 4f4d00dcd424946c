"""`plaza`: the one operator CLI. Subcommands: up, init, broker, bridge, api, admin, sim,
bench."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from plaza.mqtt import stop_task
from plaza.settings import Settings
from venue.fleet import API_USER, BRIDGE_USER, VenueSecrets


def _settings(args: argparse.Namespace, user: str | None = None) -> Settings:
    """Settings from PLAZA_* env; the service account falls back to DIR/secrets.json."""
    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    for name in ("mqtt_host", "mqtt_port", "ws_port", "http_port", "database_url"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    settings = Settings(**overrides)
    secrets_file = settings.data_dir / "secrets.json"
    if user and secrets_file.exists():
        secrets = VenueSecrets.load(secrets_file)
        if settings.mqtt_username is None:
            overrides["mqtt_username"] = user
            overrides["mqtt_password"] = secrets.bridge if user == BRIDGE_USER else secrets.api
        if user == API_USER and settings.jwt_secret is None:
            overrides["jwt_secret"] = secrets.jwt
        settings = Settings(**overrides)
    return settings


def _run(coro: Coroutine[Any, Any, None]) -> int:
    """Run a service until it ends or SIGTERM/SIGINT arrives; exit 0 on a requested stop."""

    async def main() -> None:
        task = asyncio.ensure_future(coro)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not task.done():
            await stop_task(task)
        elif not task.cancelled():
            task.result()  # a service that ended on its own: its error, if any

    if sys.platform != "win32":
        import uvloop  # ~20 % less latency per hop than the default loop

        uvloop.run(main())
    else:
        asyncio.run(main())
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from venue.up import UpError, UpOptions, up

    options = UpOptions(
        data_dir=Path(args.data_dir),
        devices=args.devices,
        mqtt_port=args.mqtt_port,
        ws_port=args.ws_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        database_url=args.database_url or os.environ.get("PLAZA_DATABASE_URL", ""),
        sim_speed=args.sim_speed,
    )
    try:
        return up(options)
    except UpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def cmd_init(args: argparse.Namespace) -> int:
    """Prepare a data dir (and a broker's dynsec file) without running anything: compose."""
    from plaza.topics import Topics
    from venue.broker import write_dynsec
    from venue.up import init_venue

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "bridge": "PLAZA_BRIDGE_PASSWORD",
        "api": "PLAZA_API_PASSWORD",
        "observer": "PLAZA_OBSERVER_PASSWORD",
        "admin": "PLAZA_ADMIN_PASSWORD",
    }
    given = {name: os.environ[var] for name, var in env.items() if os.environ.get(var)}
    secrets, device_ids = init_venue(settings, args.devices, given)
    dynsec = Path(args.dynsec_file or settings.data_dir / "broker" / "dynamic-security.json")
    write_dynsec(
        dynsec, secrets.broker_clients(settings), secrets.roles(Topics(settings.topic_root))
    )
    if owner := os.environ.get("PLAZA_DYNSEC_UID"):  # the broker image runs as uid 1883
        for path in (dynsec.parent, dynsec):
            os.chown(path, int(owner), int(owner))
    print(f"initialised {settings.data_dir} for {len(device_ids)} machines; dynsec: {dynsec}")
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from plaza.topics import Topics
    from venue.broker import LocalBroker

    settings = _settings(args)
    secrets_file = settings.data_dir / "secrets.json"
    secrets = VenueSecrets.load_or_create(secrets_file)
    secrets.save(secrets_file)
    broker = LocalBroker(
        settings.data_dir / "broker", settings.mqtt_port, settings.ws_port, log_to_file=False
    )
    broker.configure(secrets.broker_clients(settings), secrets.roles(Topics(settings.topic_root)))
    broker.start()
    print(f"mosquitto on mqtt://127.0.0.1:{broker.port} and ws://127.0.0.1:{broker.ws_port}")
    try:
        assert broker.proc is not None
        broker.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0


def cmd_bridge(args: argparse.Namespace) -> int:
    from bridge.service import BridgeService

    return _run(BridgeService(_settings(args, BRIDGE_USER), freeze_startup_objects=True).run())


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    settings = _settings(args, API_USER)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level="info",
        access_log=False,
    )
    return 0


def cmd_admin(args: argparse.Namespace) -> int:
    """`plaza admin create NAME`: create (or re-key) an admin account in the database."""
    import getpass

    from plaza.topics import TopicError, valid_id
    from venue.seed import create_admin

    try:
        valid_id(args.name, "user name")
    except TopicError as exc:
        print(f"plaza admin: {exc}", file=sys.stderr)
        return 2
    settings = _settings(args)
    password = os.environ.get("PLAZA_NEW_ADMIN_PASSWORD") or getpass.getpass(
        f"password for admin {args.name}: "
    )
    if len(password) < 8:
        print("plaza admin: the password needs at least 8 characters", file=sys.stderr)
        return 2
    created = asyncio.run(create_admin(settings.db_url, args.name, password))
    print(f"admin {args.name} {'created' if created else 'updated (new password, role admin)'}")
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from plaza_sim.epochs import EpochStore
    from plaza_sim.fleet import FaultPlan, Fleet, load_devices

    settings = _settings(args)
    devices_file = Path(args.devices_file or settings.data_dir / "devices.json")
    if not devices_file.exists():
        print(
            f"error: {devices_file} not found; run `plaza up` once or pass --devices-file",
            file=sys.stderr,
        )
        return 2
    faults = FaultPlan(
        kinds=tuple(k for k in (args.fault or "").split(",") if k),
        fraction=args.fault_fraction,
        every=args.fault_every,
        down_for=args.down_for,
    )
    fleet = Fleet(
        load_devices(devices_file, args.count),
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        keepalive=args.keepalive or settings.device_keepalive,
        epochs=EpochStore(settings.data_dir / "sim-epochs.json"),
        autoplay=not args.no_play,
        speed=args.speed,
        faults=faults,
        topic_root=settings.topic_root,
        will_delay=settings.will_delay,
        seed=args.seed,
    )
    print(
        f"sim: starting {len(fleet.machines)} machines against "
        f"{settings.mqtt_host}:{settings.mqtt_port}",
        flush=True,
    )
    return _run(fleet.run(args.duration, args.progress_every))


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "presence":
        from venue.bench import run_presence_bench

        args.machines = args.machines or 200
        return int(run_presence_bench(args))
    from venue.bench_reservations import run_reservations_bench

    args.machines = args.machines or 1000
    return int(run_reservations_bench(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plaza", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, ports: bool = True) -> None:
        p.add_argument(
            "--data-dir",
            default=os.environ.get("PLAZA_DATA_DIR", "var"),
            help="where data, secrets and logs live (default: ./var)",
        )
        if ports:
            p.add_argument("--mqtt-host", default=None)
            p.add_argument("--mqtt-port", type=int, default=None)
            p.add_argument("--ws-port", type=int, default=None)
            p.add_argument("--http-port", type=int, default=None)
            p.add_argument("--database-url", default=None)

    p = sub.add_parser("up", help="run the whole venue: broker, bridge, api and simulator")
    p.add_argument("--data-dir", default="var", help="data directory (default: ./var)")
    p.add_argument("--devices", type=int, default=20, help="simulated machines (default 20)")
    p.add_argument("--mqtt-port", type=int, default=None, help="MQTT TCP port (default 1883)")
    p.add_argument("--ws-port", type=int, default=None, help="MQTT WebSocket port (default 9001)")
    p.add_argument("--http-port", type=int, default=None, help="REST API port (default 8000)")
    p.add_argument(
        "--metrics-port", type=int, default=None, help="bridge /metrics port (default 9102)"
    )
    p.add_argument("--database-url", default=None, help="default: SQLite in the data dir")
    p.add_argument(
        "--sim-speed",
        type=float,
        default=30.0,
        help="simulated time runs this many times faster (default 30)",
    )
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("init", help="prepare secrets, credentials, database and dynsec file")
    common(p)
    p.add_argument("--devices", type=int, default=20)
    p.add_argument("--dynsec-file", default=None, help="default: DATA_DIR/broker/...")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("broker", help="run mosquitto from broker-config/ in the foreground")
    common(p)
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("bridge", help="run the bridge service")
    common(p)
    p.set_defaults(func=cmd_bridge)

    p = sub.add_parser("api", help="run the REST API (uvicorn)")
    common(p)
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("admin", help="manage admin accounts: `plaza admin create NAME`")
    common(p)
    p.add_argument("action", choices=["create"])
    p.add_argument("name", help="3-48 of a-z 0-9 _ . -")
    p.set_defaults(func=cmd_admin)

    p = sub.add_parser("sim", help="run simulated game machines")
    common(p)
    p.add_argument("--devices-file", default=None, help="default: DATA_DIR/devices.json")
    p.add_argument("--count", type=int, default=None, help="use only the first N machines")
    p.add_argument("--keepalive", type=int, default=None, help="MQTT keepalive seconds")
    p.add_argument("--speed", type=float, default=1.0, help="simulated time factor")
    p.add_argument("--no-play", action="store_true", help="no walk-in sessions")
    p.add_argument("--fault", default="", help="comma list of crash,silent,flap,fault")
    p.add_argument("--fault-fraction", type=float, default=0.1, help="share of machines hit")
    p.add_argument("--fault-every", type=float, default=30.0, help="seconds between rounds")
    p.add_argument("--down-for", type=float, default=5.0, help="seconds a fault lasts")
    p.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    p.add_argument("--progress-every", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("bench", help="benchmarks (report in docs/benchmarks.md)")
    p.add_argument("what", choices=["presence", "reservations"])
    p.add_argument("--machines", type=int, default=None, help="default 200 / 1000")
    p.add_argument("--trials", type=int, default=100, help="presence: trials")
    p.add_argument("--players", type=int, default=50, help="reservations: players")
    p.add_argument("--rate", type=float, default=200, help="reservations: paced commands/s")
    p.add_argument("--seconds", type=float, default=10, help="reservations: per phase")
    p.add_argument("--window", type=int, default=256, help="reservations: in flight (max)")
    p.add_argument("--sqlite-only", action="store_true", help="reservations: skip PostgreSQL")
    p.add_argument("--output", default="docs/benchmarks.md")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiomqtt").setLevel(logging.WARNING)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
