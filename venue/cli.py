"""`plaza`: the one operator CLI. Subcommands: up, init, broker, bridge, api, admin, sim,
check, status, backup, restore, scenario, soak, bench."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from plaza import paho_tables
from plaza.logs import setup_logging
from plaza.mqtt import stop_task
from plaza.settings import Settings
from venue.accounts import API_USER, BRIDGE_USER, OBSERVER_USER, VenueSecrets

if TYPE_CHECKING:
    from plaza_sim.arrivals import PlayerPlan
    from plaza_sim.desk import Desk


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
        consoles=args.consoles,
        players=args.players,
        mqtt_port=args.mqtt_port,
        ws_port=args.ws_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        database_url=args.database_url or os.environ.get("PLAZA_DATABASE_URL", ""),
        sim_speed=args.sim_speed,
        tls=args.tls or bool(args.tls_cert),
        tls_hosts=tuple(args.tls_host),
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
    )
    from plaza_sim.arrivals import MAX_PLAYERS

    if not 0 <= args.players <= MAX_PLAYERS:
        print(f"error: --players must be within 0..{MAX_PLAYERS}", file=sys.stderr)
        return 2
    try:
        return up(options)
    except UpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def cmd_init(args: argparse.Namespace) -> int:
    """Prepare a data dir (and a broker's dynsec file) without running anything: compose."""
    from plaza.topics import Topics
    from venue.broker import last_good_path, write_dynsec
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
    tls_dir = Path(args.tls_dir or settings.data_dir / "tls")
    ca = init_tls(args, tls_dir) if args.tls else None
    secrets, device_ids = init_venue(settings, args.devices, given, ca=ca, consoles=args.consoles)
    dynsec = Path(args.dynsec_file or settings.data_dir / "broker" / "dynamic-security.json")
    write_dynsec(
        dynsec, secrets.broker_clients(settings), secrets.roles(Topics(settings.topic_root))
    )
    if owner := os.environ.get("PLAZA_DYNSEC_UID"):  # the broker image runs as uid 1883
        uid = int(owner)
        for path in (dynsec.parent, dynsec, last_good_path(dynsec)):
            os.chown(path, uid, uid)
        if args.tls:  # the broker reads its certificate and key
            for path in (tls_dir / "server.crt", tls_dir / "server.key"):
                os.chown(path, uid, uid)
    print(f"initialised {settings.data_dir} for {len(device_ids)} machines; dynsec: {dynsec}")
    return 0


def init_tls(args: argparse.Namespace, tls_dir: Path) -> Path:
    """`plaza init --tls`: the venue CA and the broker's certificate in ``tls_dir`` (compose
    mounts it into the broker, nginx and the services), and ``public.crt``/``public.key``
    for nginx: the operator's own certificate when given, else a copy of the broker's."""
    import shutil

    from venue.tls import default_hosts, ensure_venue_tls, with_operator_cert

    files = ensure_venue_tls(tls_dir, default_hosts(args.tls_host))
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise SystemExit("plaza init: --tls-cert and --tls-key go together")
        files = with_operator_cert(files, Path(args.tls_cert), Path(args.tls_key))
    shutil.copyfile(files.public_cert, tls_dir / "public.crt")
    shutil.copyfile(files.public_key, tls_dir / "public.key")
    os.chmod(tls_dir / "public.crt", 0o644)
    os.chmod(tls_dir / "public.key", 0o600)
    os.chmod(tls_dir, 0o755)  # noqa: S103 - keys stay 0600; the services read ca.crt
    print(f"TLS: venue CA {files.ca}; browsers are shown {files.public_cert}")
    return files.ca


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
        while broker.proc.poll() is None:
            # Mosquitto 2.0.11 rewrites its account file in place: keep a last-good copy
            broker.snapshot_dynsec()
            with contextlib.suppress(subprocess.TimeoutExpired):
                broker.proc.wait(timeout=settings.dynsec_snapshot_interval)
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
    config = uvicorn.Config(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level="info",
        access_log=False,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )
    config.load()
    if config.ssl is not None:
        # uvicorn has no option for a minimum version; its context is ours to tighten
        # before the server starts.
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_3
    uvicorn.Server(config).run()
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
    try:
        players, plan, desk = sim_players(args, settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
        tls_ca=settings.tls_ca,
        tls=settings.mqtt_tls,
        players=players,
        player_plan=plan,
        desk=desk,
    )
    from venue.limits import LimitError, raise_open_files

    try:
        if note := raise_open_files(len(fleet.machines) + len(players), "plaza sim"):
            print(note, flush=True)
    except LimitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"sim: starting {len(fleet.machines)} machines and {len(players)} players against "
        f"{settings.mqtt_host}:{settings.mqtt_port}"
        + (f"; the desk approves their bookings through {desk.api}" if desk else ""),
        flush=True,
    )
    return _run(fleet.run(args.duration, args.progress_every))


def slot_minutes(text: str) -> tuple[float, float]:
    """``--slot-minutes``: ``A-B`` (between A and B minutes) or ``A``."""
    low, _, high = text.partition("-")
    try:
        return float(low), float(high or low)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: minutes as A-B or A") from exc


def sim_players(
    args: argparse.Namespace, settings: Settings
) -> tuple[dict[str, str], PlayerPlan, Desk | None]:
    """`plaza sim`'s players (``--players`` of DIR/players.json), how they behave, and the
    desk that approves their bookings (``--desk``); ValueError says what is wrong."""
    from plaza_sim.arrivals import MAX_PLAYERS, PlayerPlan
    from plaza_sim.desk import Desk

    plan = PlayerPlan(
        book_ahead=args.book_ahead,
        slot_minutes=args.slot_minutes,
        pace=args.player_pace,
        no_show=args.no_show,
        late=args.late,
        wrong_code=args.wrong_code,
        early_by=args.early_by,
        late_by=args.late_by,
    )
    if not 0 <= args.players <= MAX_PLAYERS:
        raise ValueError(f"--players must be within 0..{MAX_PLAYERS}")
    players: dict[str, str] = {}
    if args.players:
        path = Path(args.players_file or settings.data_dir / "players.json")
        if not path.exists():
            raise ValueError(f"{path} not found; run `plaza up` once or pass --players-file")
        accounts: dict[str, str] = json.loads(path.read_text())
        if len(accounts) < args.players:
            raise ValueError(f"--players {args.players}: {path} has {len(accounts)} accounts")
        players = dict(sorted(accounts.items())[: args.players])
    desk = None
    if args.desk:
        path = Path(args.desk_credentials or settings.data_dir / "credentials.json")
        if not path.exists():
            raise ValueError(f"{path} not found; pass --desk-credentials")
        admin = json.loads(path.read_text())["admin"]
        desk = Desk(
            args.desk,
            admin["username"],
            admin["password"],
            frozenset(players),
            every=args.desk_every,
            ca=settings.tls_ca,
        )
    return players, plan, desk


def cmd_check(args: argparse.Namespace) -> int:
    from venue.check import run

    return run(args, _settings(args))


def cmd_status(args: argparse.Namespace) -> int:
    from venue.status import run

    return run(args, _settings(args))


def backup_file(to: str) -> Path:
    """``--to``: a file, or a directory (existing, or written with a trailing slash) to put
    ``plaza-YYYYMMDD-HHMMSS.tar.gz`` in."""
    import time

    path = Path(to)
    if path.is_dir() or to.endswith("/"):
        return path / time.strftime("plaza-%Y%m%d-%H%M%S.tar.gz", time.gmtime())
    return path


def cmd_backup(args: argparse.Namespace) -> int:
    from venue.backup import BackupError, backup, describe, prune_copies, source_of

    try:
        source = source_of(args.target, args.database_url)
        to = backup_file(args.to)
        manifest = backup(source, to)
        removed = prune_copies(to.parent, args.keep) if args.keep else []
    except BackupError as exc:
        print(f"plaza backup: {exc}", file=sys.stderr)
        return 1
    archive = manifest["archive"]
    print(
        f"backup {archive['file']} ({archive['bytes'] / 1024:.0f} KiB, "
        f"{archive['seconds']:.1f}s): {describe(manifest)}"
    )
    for old in removed:
        print(f"removed the older copy {old}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from venue.backup import BackupError, describe, restore

    data_dir = Path(args.data_dir)
    try:
        manifest = restore(Path(args.archive), data_dir, args.database_url)
    except BackupError as exc:
        print(f"plaza restore: {exc}", file=sys.stderr)
        return 1
    url = f" --database-url {args.database_url}" if args.database_url else ""
    print(f"restored into {data_dir}: {describe(manifest)}")
    print(f"start it with: plaza up --data-dir {data_dir}{url}")
    return 0


def cmd_scenario(args: argparse.Namespace) -> int:
    from venue.scenario import run

    return run(args)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "presence":
        from venue.bench import run_presence_bench

        args.machines = args.machines or 200
        return int(run_presence_bench(args))
    if args.what in ("scale", "storm"):
        from venue.bench_scale import run_scale_bench

        args.machines = args.machines or (10000 if args.what == "scale" else 2000)
        return run_scale_bench(args)
    if args.what == "abuse":
        from venue.bench_abuse import run_abuse_bench

        args.machines = args.machines or 20
        return run_abuse_bench(args)
    if args.what == "utilization":
        from venue.bench_utilization import run_utilization_bench

        args.machines = args.machines or 300
        return run_utilization_bench(args)
    if args.what == "fanout":
        from venue.bench_fanout import run_fanout_bench

        args.machines = args.machines or 20
        return run_fanout_bench(args)
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
    p.add_argument(
        "--consoles",
        type=int,
        default=2,
        help="consoles without an agent, managed by staff at the desk (default 2)",
    )
    p.add_argument(
        "--players",
        type=int,
        default=8,
        help="simulated players who book, get approved at the desk and check in by code, "
        "0..200 (default 8)",
    )
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
    p.add_argument(
        "--tls",
        action="store_true",
        help="TLS 1.3 on the MQTT, WebSocket and HTTP ports (a venue CA under DIR/tls/)",
    )
    p.add_argument(
        "--tls-host",
        action="append",
        default=[],
        help="another host name or address for the certificate (repeatable)",
    )
    p.add_argument("--tls-cert", default=None, help="your own certificate (PEM), shown to browsers")
    p.add_argument("--tls-key", default=None, help="the key of --tls-cert (PEM)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("init", help="prepare secrets, credentials, database and dynsec file")
    common(p)
    p.add_argument("--devices", type=int, default=20)
    p.add_argument("--consoles", type=int, default=2, help="consoles without an agent")
    p.add_argument("--dynsec-file", default=None, help="default: DATA_DIR/broker/...")
    p.add_argument("--tls", action="store_true", help="also the venue CA and certificates")
    p.add_argument("--tls-dir", default=None, help="default: DATA_DIR/tls")
    p.add_argument("--tls-host", action="append", default=[], help="a name for the certificate")
    p.add_argument(
        "--tls-cert", default=os.environ.get("PLAZA_TLS_CERT") or None, help="for browsers"
    )
    p.add_argument("--tls-key", default=os.environ.get("PLAZA_TLS_KEY") or None, help="its key")
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
    g = p.add_argument_group("players who book and arrive (docs/operations.md, The simulator)")
    g.add_argument("--players", type=int, default=0, help="simulated players, 0..200 (default 0)")
    g.add_argument("--players-file", default=None, help="default: DATA_DIR/players.json")
    g.add_argument(
        "--book-ahead",
        type=float,
        default=720.0,
        help="seconds from a booking to its slot, 0..3600 (default 720)",
    )
    g.add_argument(
        "--slot-minutes",
        type=slot_minutes,
        default=(20.0, 45.0),
        help="slot length, A-B minutes within 0.05..240 (default 20-45)",
    )
    g.add_argument(
        "--player-pace",
        type=float,
        default=60.0,
        help="seconds a player waits between bookings, 1..3600 (default 60)",
    )
    g.add_argument("--no-show", type=float, default=0.1, help="P(never comes), default 0.1")
    g.add_argument("--late", type=float, default=0.2, help="P(comes late), default 0.2")
    g.add_argument(
        "--wrong-code", type=float, default=0.1, help="P(types a wrong code first), default 0.1"
    )
    g.add_argument(
        "--early-by", type=float, default=60.0, help="on time: up to N s early (default 60)"
    )
    g.add_argument(
        "--late-by", type=float, default=240.0, help="late: up to N s late (default 240)"
    )
    g.add_argument(
        "--desk",
        default=None,
        metavar="URL",
        help="the api: staff there approve the players' pending bookings",
    )
    g.add_argument(
        "--desk-credentials", default=None, help="default: DATA_DIR/credentials.json (its admin)"
    )
    g.add_argument(
        "--desk-every", type=float, default=5.0, help="seconds between desk rounds, 1..3600"
    )
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("check", help="check the venue's invariants over SQL and the broker")
    common(p)
    p.add_argument("--mqtt-username", default=OBSERVER_USER, help="default: observer")
    p.add_argument(
        "--mqtt-password",
        default=None,
        help="default: $PLAZA_CHECK_MQTT_PASSWORD, else the observer's in DATA_DIR/secrets.json",
    )
    p.add_argument("--grace", type=float, default=30.0, help="seconds a message may be in flight")
    p.add_argument("--since", type=float, default=24.0, help="hours of command log to check")
    p.add_argument("--settle", type=float, default=2.0, help="seconds before re-reading the board")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("status", help="one screen for staff; exit 1 when something needs attention")
    p.add_argument(
        "target", nargs="?", default=None, help="a data dir or a database URL (default: --data-dir)"
    )
    p.add_argument(
        "--data-dir",
        default=os.environ.get("PLAZA_DATA_DIR", "var"),
        help="where plaza up runs (default: ./var)",
    )
    p.add_argument("--database-url", default=None, help="default: what plaza up recorded")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("backup", help="a consistent copy of a running venue in one archive")
    p.add_argument("target", help="the venue's data dir (or a database URL: the database only)")
    p.add_argument("--to", required=True, help="the archive, or a directory to put it in")
    p.add_argument("--database-url", default=None, help="default: what plaza up recorded")
    p.add_argument(
        "--keep",
        type=int,
        default=0,
        help="with --to DIR: keep this many newest plaza-*.tar.gz there, delete the rest",
    )
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("restore", help="bring a venue back from a backup into a new data dir")
    p.add_argument("archive", help="a file written by plaza backup")
    p.add_argument("--data-dir", required=True, help="the new data dir (must not hold a venue)")
    p.add_argument(
        "--database-url",
        default=None,
        help="an empty database to restore into (required for a PostgreSQL backup)",
    )
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("scenario", help="a fault under load, then plaza check's invariants")
    p.add_argument(
        "name",
        choices=[
            *("broker-restart", "bridge-kill", "db-outage", "flap", "slow-subscriber"),
            "bridges",
        ],
    )
    p.add_argument("--bridges", type=int, default=3, help="bridges: how many (2 or more)")
    p.add_argument("--machines", type=int, default=200)
    p.add_argument("--players", type=int, default=50)
    p.add_argument("--seconds", type=float, default=60.0, help="load duration")
    p.add_argument("--outage", type=float, default=10.0, help="db-outage: seconds")
    p.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument(
        "--queue-limit", type=int, default=0, help="slow-subscriber: max_queued_messages"
    )
    p.set_defaults(func=cmd_scenario)

    p = sub.add_parser("soak", help="the plan's KPIs under load with faults throughout")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--machines", type=int, default=2000)
    p.add_argument(
        "--local-machines",
        type=int,
        default=50,
        help="machines in the soak's own process (its faults and probes hit these); the rest "
        "run in `plaza sim` children with walk-in sessions and the simulator's own faults",
    )
    p.add_argument("--players", type=int, default=50)
    p.add_argument("--pace", type=float, default=5.0, help="seconds between a player's bookings")
    p.add_argument("--screens", type=int, default=1000, help="WebSocket screens (mqtt.js in node)")
    p.add_argument("--screen-processes", type=int, default=4)
    p.add_argument("--probes", type=int, default=20, help="machines whose changes are timed")
    p.add_argument("--probe-rate", type=float, default=2.0, help="probe changes per second")
    p.set_defaults(func=cmd_scenario)

    p = sub.add_parser("bench", help="benchmarks (report in docs/benchmarks.md)")
    p.add_argument(
        "what",
        choices=["presence", "reservations", "fanout", "scale", "storm", "abuse", "utilization"],
    )
    p.add_argument(
        "--machines",
        type=int,
        default=None,
        help="default 200 / 1000 / 20 / 10000 / 2000 / 20 / 300",
    )
    p.add_argument("--trials", type=int, default=100, help="presence: trials")
    p.add_argument("--players", type=int, default=50, help="reservations/abuse: players")
    p.add_argument("--rate", type=float, default=200, help="reservations/abuse: paced commands/s")
    p.add_argument("--seconds", type=float, default=10, help="reservations/abuse: per phase")
    p.add_argument("--window", type=int, default=256, help="reservations: in flight (max)")
    p.add_argument("--subscribers", type=int, default=1000, help="fanout: WebSocket clients")
    p.add_argument("--changes", type=int, default=50, help="fanout: state changes measured")
    p.add_argument("--processes", type=int, default=4, help="fanout/scale/storm: processes")
    p.add_argument("--clients", type=int, default=500, help="storm: board subscribers")
    p.add_argument("--timeout", type=float, default=300, help="scale/storm: seconds to wait")
    p.add_argument("--days", type=int, default=31, help="utilization: days of history")
    p.add_argument("--sqlite-only", action="store_true", help="reservations: skip PostgreSQL")
    p.add_argument("--postgresql-only", action="store_true", help="reservations: skip SQLite")
    p.add_argument(
        "--bridges",
        type=lambda s: [int(n) for n in s.split(",")],
        default=None,
        help="reservations: e.g. 1,2,3 bridges on PostgreSQL with keyed routing, in one run",
    )
    p.add_argument("--output", default="docs/benchmarks.md")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    paho_tables.install()  # every service and tool of the venue runs on the faster paho
    args = build_parser().parse_args(argv)
    try:
        logs = Settings()
    except ValidationError:  # the command reports it; log with the defaults meanwhile
        logs = Settings.model_construct()
    setup_logging(
        verbose=args.verbose,
        log_format=logs.log_format,
        first=logs.log_sample_first,
        interval=logs.log_sample_interval,
        excerpt_chars=logs.log_excerpt_chars,
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
