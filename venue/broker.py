"""Run Mosquitto from broker-config/ on chosen ports: a local binary or a Docker container.

``render_config`` rewrites only the lines that depend on the machine (listener ports, data
directory, plugin path, log destination) and keeps every other line of
broker-config/mosquitto.conf, so tests and `plaza up` run the production configuration.

Errors::

    BrokerError (RuntimeError)
     +-- raised when mosquitto cannot be found, exits early or does not open its ports
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from plaza.acl import Role
from plaza.dynsec import BrokerClient, document
from venue.logs import RotatingLog, pump

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
CONFIG_SOURCE = REPO / "broker-config" / "mosquitto.conf"
DYNSEC_FILE = "dynamic-security.json"
_PLUGIN_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)


class BrokerError(RuntimeError):
    """Mosquitto could not be started as asked."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def find_plugin() -> str:
    for candidate in _PLUGIN_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    raise BrokerError("mosquitto_dynamic_security.so not found; install the mosquitto package")


def render_config(
    source: str,
    *,
    mqtt_port: int,
    ws_port: int,
    data_dir: Path,
    plugin_path: str,
    bind: str | None = "127.0.0.1",
    log_file: Path | None = None,
    log_stderr: bool = False,
    run_as_root: bool = False,
    certfile: Path | None = None,
    keyfile: Path | None = None,
) -> str:
    """Return ``source`` with machine-specific lines replaced (see the module docstring).

    With ``certfile``/``keyfile`` both listeners serve TLS with those files; without them the
    listeners' TLS lines are dropped (plain MQTT and WebSocket, local development)."""
    out: list[str] = []
    listener = 0
    for line in source.splitlines():
        word = line.split(maxsplit=1)[0] if line.strip() and not line.startswith("#") else ""
        if word in ("certfile", "keyfile", "tls_version", "cafile") and certfile is None:
            continue
        if word == "certfile":
            line = f"certfile {certfile}"
        elif word == "keyfile":
            line = f"keyfile {keyfile}"
        elif word == "listener":
            port = mqtt_port if listener == 0 else ws_port
            listener += 1
            # The WebSocket listener ignores a bind address in 2.0; keep it off that line.
            line = f"listener {port} {bind}" if (bind and listener == 1) else f"listener {port}"
        elif word == "persistence_location":
            line = f"persistence_location {data_dir}/"
        elif word == "plugin":
            line = f"plugin {plugin_path}"
        elif word == "plugin_opt_config_file":
            line = f"plugin_opt_config_file {data_dir / DYNSEC_FILE}"
        elif word == "log_dest" and log_file is not None:
            line = f"log_dest file {log_file}"
        elif word == "log_dest" and log_stderr:
            line = "log_dest stderr"  # unbuffered: each line reaches a pipe when it is logged
        out.append(line)
    if listener != 2:
        raise BrokerError("broker-config/mosquitto.conf must have exactly two listeners (mqtt, ws)")
    if run_as_root:
        # Local runs as root keep their own user, so the data directory stays writable.
        out.append("user root")
    return "\n".join(out) + "\n"


def durable_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, rename it over ``path``
    and fsync the directory: after a crash at any instant ``path`` holds the old bytes or the
    new ones, never a prefix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # a leftover temp file keeps its old mode through O_CREAT
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def last_good_path(path: Path) -> Path:
    """Where the last copy of the plugin's file that parsed is kept."""
    return path.with_name(path.stem + ".last-good" + path.suffix)


def parse_dynsec(raw: bytes) -> dict[str, Any] | None:
    """The plugin's document, or None when ``raw`` is not one (empty, cut short, not JSON,
    or JSON without the client and role lists). A prefix of a JSON object never parses, so a
    file caught while the broker rewrites it is refused here, not half-used."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    clients, roles = doc.get("clients"), doc.get("roles")
    if not isinstance(clients, list) or not isinstance(roles, list):
        return None
    if not all(isinstance(c, dict) and isinstance(c.get("username"), str) for c in clients):
        return None
    if not all(isinstance(r, dict) and isinstance(r.get("rolename"), str) for r in roles):
        return None
    return doc


def read_dynsec(path: Path) -> dict[str, Any] | None:
    """The plugin's file as the broker left it, or its last-good copy when the file is broken.

    Mosquitto 2.0.11 rewrites the file in place (it truncates, then writes, with no fsync), so
    a broker killed while saving leaves it empty or cut short, and a broker started on such a
    file refuses everyone. Then the last-good copy (see :class:`DynsecKeeper`) is used, the
    broken file is kept beside it as ``*.broken`` and a warning says so. None when there is no
    file yet, or neither it nor a copy parses (an error is logged: accounts provisioned at run
    time are then lost and must be re-keyed)."""
    if not path.exists():
        return None
    raw = path.read_bytes()
    doc = parse_dynsec(raw)
    if doc is not None:
        return doc
    what = "empty" if not raw else f"not a valid account file ({len(raw)} bytes)"
    broken = path.with_name(path.name + ".broken")
    path.replace(broken)
    good = last_good_path(path)
    backup = parse_dynsec(good.read_bytes()) if good.exists() else None
    if backup is not None:
        saved = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(good.stat().st_mtime))
        log.warning(
            "%s was %s: the broker was probably stopped while saving it. Restored %d broker "
            "accounts from %s (saved %s); the broken file is kept as %s",
            path,
            what,
            len(backup["clients"]),
            good.name,
            saved,
            broken.name,
        )
        return backup
    log.error(
        "%s was %s and there is no last-good copy: starting with the accounts in "
        "secrets.json only; machines provisioned at run time need new credentials "
        "(POST /devices/{id}/credentials) and browsers log in again. The broken file is "
        "kept as %s",
        path,
        what,
        broken.name,
    )
    return None


def write_dynsec(path: Path, clients: list[BrokerClient], roles: list[Role]) -> None:
    """Write the plugin's file. When one exists, roles defined in code replace their old
    definitions, clients it lacks are added, and every other client (accounts the api
    provisioned at run time) is kept with its password; clients defined in code keep their
    password but take their client-id binding from code. A broken file is replaced by its
    last-good copy first (:func:`read_dynsec`). Written durably (:func:`durable_write`), and
    the result becomes the new last-good copy."""
    doc = document(clients, roles)
    old = read_dynsec(path)
    if old is not None:
        bound = {c["username"]: c["clientid"] for c in doc["clients"] if "clientid" in c}
        for client in old.get("clients", []):  # accounts of an older release get bound too
            if client.get("username") in bound:
                client["clientid"] = bound[client["username"]]
        ours = {r["rolename"] for r in doc["roles"]}
        users = {c["username"] for c in old.get("clients", [])}
        old["clients"] = old.get("clients", []) + [
            c for c in doc["clients"] if c["username"] not in users
        ]
        old["roles"] = [r for r in old.get("roles", []) if r["rolename"] not in ours]
        old["roles"] += doc["roles"]
        doc = old
    data = json.dumps(doc, indent=1).encode()
    durable_write(path, data)
    durable_write(last_good_path(path), data)


@dataclass
class DynsecKeeper:
    """Keeps ``last_good_path(path)`` a copy of the newest version of the plugin's file that
    parses. The supervisor calls :meth:`snapshot` every second or so while the broker runs;
    a file caught mid-save does not parse and is simply read again at the next call."""

    path: Path
    _seen: tuple[int, int] | None = field(default=None, init=False)

    def snapshot(self) -> bool:
        """Copy the file when it changed and parses; True when a copy was written."""
        try:
            st = self.path.stat()
            if (st.st_mtime_ns, st.st_size) == self._seen:
                return False
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return False
        if parse_dynsec(raw) is None:
            return False  # being rewritten right now, or broken: keep the last good copy
        durable_write(last_good_path(self.path), raw)
        self._seen = (st.st_mtime_ns, st.st_size)
        return True


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise BrokerError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


#: what mosquitto logs when a listener's port was taken between free_port() and its bind
_PORT_TAKEN = ("Unable to create", "Address already in use")


def start_on_free_ports(
    data_dir: Path, clients: list[BrokerClient], roles: list[Role], *, attempts: int = 3
) -> LocalBroker:
    """A :class:`LocalBroker` configured and started on free ports. :func:`free_port` only
    finds a port free at that moment; when another process (a parallel test run) binds it
    first, mosquitto cannot listen, and new ports are tried, up to ``attempts`` times."""
    for attempt in range(1, attempts + 1):
        broker = LocalBroker(data_dir, free_port(), free_port())
        broker.configure(clients, roles)
        try:
            broker.start()
        except BrokerError as exc:
            if attempt == attempts or not any(s in str(exc) for s in _PORT_TAKEN):
                raise
            log.warning("mosquitto's port was taken meanwhile (%s); new ports", exc)
            continue
        return broker
    raise AssertionError("unreachable")


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the parent dies, even by SIGKILL (Linux),
    so no orphan mosquitto or service outlives `plaza up`."""
    if sys.platform == "linux":
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM ``proc`` if it runs, wait up to ``timeout`` seconds, then SIGKILL it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Broker(Protocol):
    host: str
    port: int
    ws_port: int

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...


@dataclass
class LocalBroker:
    """``mosquitto -c <rendered config>`` as a child process (never daemonized, so it dies with
    its parent's cleanup and leaves no orphan).

    Its log goes to ``log_path`` by mosquitto itself, or, when ``log`` is given, through a
    pipe into that :class:`~venue.logs.RotatingLog` (`plaza up`: a capped, rotated file)."""

    data_dir: Path
    port: int
    ws_port: int
    host: str = "127.0.0.1"
    log_to_file: bool = True
    log: RotatingLog | None = None
    #: both listeners serve TLS 1.3 with these (`plaza up --tls`)
    certfile: Path | None = None
    keyfile: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    keeper: DynsecKeeper = field(init=False)

    def __post_init__(self) -> None:
        self.keeper = DynsecKeeper(self.data_dir / DYNSEC_FILE)

    @property
    def config_path(self) -> Path:
        return self.data_dir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.log.path if self.log is not None else self.data_dir / "mosquitto.log"

    def configure(self, clients: list[BrokerClient], roles: list[Role]) -> None:
        """Write the rendered config and the dynsec file (see :func:`write_dynsec`)."""
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        piped = self.log is not None
        self.config_path.write_text(
            render_config(
                CONFIG_SOURCE.read_text(),
                mqtt_port=self.port,
                ws_port=self.ws_port,
                data_dir=self.data_dir.resolve(),
                plugin_path=find_plugin(),
                bind=self.host or None,
                log_file=self.log_path.resolve() if self.log_to_file and not piped else None,
                log_stderr=piped,
                run_as_root=os.geteuid() == 0,
                certfile=self.certfile,
                keyfile=self.keyfile,
            )
        )
        write_dynsec(self.data_dir / DYNSEC_FILE, clients, roles)

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        out: int | None = subprocess.DEVNULL if self.log_to_file else None
        self.proc = subprocess.Popen(
            [binary, "-c", str(self.config_path)],
            stdout=out,
            stderr=subprocess.PIPE if self.log is not None else out,
            start_new_session=True,  # a terminal's Ctrl-C goes to the supervisor only
            preexec_fn=die_with_parent,
        )
        if self.log is not None:
            assert self.proc.stderr is not None
            pump(self.proc.stderr, self.log)
        deadline = time.monotonic() + 10
        try:
            for port in (self.port, self.ws_port):
                wait_for_port(port, self.host or "127.0.0.1", max(0.1, deadline - time.monotonic()))
        except BrokerError as exc:
            code = self.proc.poll()
            self.stop()
            time.sleep(0.1)  # let the pump copy mosquitto's last words
            tail = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
            raise BrokerError(f"mosquitto did not start (exit {code}): {exc}\n{tail}") from exc

    def snapshot_dynsec(self) -> bool:
        """Refresh the last-good copy of the account file (see :class:`DynsecKeeper`)."""
        return self.keeper.snapshot()

    def stop(self) -> None:
        """SIGTERM and wait: mosquitto saves its persistence file on a clean stop."""
        if self.proc is not None:
            terminate(self.proc)
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def docker_engine_answers(timeout: float = 1.0) -> bool:
    """True when a Docker engine answers ``GET /_ping`` (fails in ~0.1 s when none does).

    Only the local unix socket (or a ``unix://`` DOCKER_HOST) is asked; a TCP DOCKER_HOST is
    trusted as set and confirmed by testcontainers itself."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return True
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(host.removeprefix("unix://"))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply


@dataclass
class ContainerBroker:
    """eclipse-mosquitto:2.0 through testcontainers, with the same rendered config mounted."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    ws_port: int = 0
    image: str = "eclipse-mosquitto:2.0.20"
    container: Any = field(default=None, init=False)

    def configure(self, clients: list[BrokerClient], roles: list[Role]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "mosquitto.conf").write_text(
            render_config(
                CONFIG_SOURCE.read_text(),
                mqtt_port=1883,
                ws_port=9001,
                data_dir=Path("/mosquitto/data"),
                plugin_path="/usr/lib/mosquitto_dynamic_security.so",
                bind=None,
            )
        )
        write_dynsec(self.data_dir / DYNSEC_FILE, clients, roles)
        os.chmod(self.data_dir, 0o777)  # noqa: S103 - the image runs as uid 1883
        os.chmod(self.data_dir / DYNSEC_FILE, 0o666)  # noqa: S103

    def start(self) -> None:
        from testcontainers.community.mqtt import MosquittoContainer

        container = MosquittoContainer(image=self.image)
        container.with_exposed_ports(9001)
        container.with_volume_mapping(str(self.data_dir.resolve()), "/mosquitto/data", "rw")
        container.start(configfile=str((self.data_dir / "mosquitto.conf").resolve()))
        self.container = container
        self.host = container.get_container_host_ip()
        self.port = int(container.get_exposed_port(1883))
        self.ws_port = int(container.get_exposed_port(9001))

    def stop(self) -> None:
        if self.container is not None:
            self.container.stop()
            self.container = None

    kill = stop
