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
    run_as_root: bool = False,
) -> str:
    """Return ``source`` with machine-specific lines replaced (see the module docstring)."""
    out: list[str] = []
    listener = 0
    for line in source.splitlines():
        word = line.split(maxsplit=1)[0] if line.strip() and not line.startswith("#") else ""
        if word == "listener":
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
        out.append(line)
    if listener != 2:
        raise BrokerError("broker-config/mosquitto.conf must have exactly two listeners (mqtt, ws)")
    if run_as_root:
        # Local runs as root keep their own user, so the data directory stays writable.
        out.append("user root")
    return "\n".join(out) + "\n"


def write_dynsec(path: Path, clients: list[BrokerClient], roles: list[Role]) -> None:
    """Write the plugin's file. When one exists, roles defined in code replace their old
    definitions, clients it lacks are added, and every other client (accounts the api
    provisioned at run time) is kept with its password; clients defined in code keep their
    password but take their client-id binding from code. Written to a temp file and renamed,
    so a crash never leaves a truncated file the broker cannot load."""
    doc = document(clients, roles)
    if path.exists():
        old = json.loads(path.read_text())
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=1)
    tmp.replace(path)


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise BrokerError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the parent dies, even by SIGKILL (Linux),
    so no orphan mosquitto or service outlives `plaza up`."""
    if sys.platform == "linux":
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


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
    its parent's cleanup and leaves no orphan)."""

    data_dir: Path
    port: int
    ws_port: int
    host: str = "127.0.0.1"
    log_to_file: bool = True
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def config_path(self) -> Path:
        return self.data_dir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "mosquitto.log"

    def configure(self, clients: list[BrokerClient], roles: list[Role]) -> None:
        """Write the rendered config and the dynsec file (see :func:`write_dynsec`)."""
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            render_config(
                CONFIG_SOURCE.read_text(),
                mqtt_port=self.port,
                ws_port=self.ws_port,
                data_dir=self.data_dir.resolve(),
                plugin_path=find_plugin(),
                bind=self.host,
                log_file=self.log_path.resolve() if self.log_to_file else None,
                run_as_root=os.geteuid() == 0,
            )
        )
        write_dynsec(self.data_dir / DYNSEC_FILE, clients, roles)

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        out = subprocess.DEVNULL if self.log_to_file else None
        self.proc = subprocess.Popen(
            [binary, "-c", str(self.config_path)],
            stdout=out,
            stderr=out,
            start_new_session=True,  # a terminal's Ctrl-C goes to the supervisor only
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + 10
        try:
            for port in (self.port, self.ws_port):
                wait_for_port(port, self.host, max(0.1, deadline - time.monotonic()))
        except BrokerError as exc:
            code = self.proc.poll()
            self.stop()
            tail = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
            raise BrokerError(f"mosquitto did not start (exit {code}): {exc}\n{tail}") from exc

    def stop(self) -> None:
        """SIGTERM and wait: mosquitto saves its persistence file on a clean stop."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
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
