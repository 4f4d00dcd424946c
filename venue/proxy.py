"""nginx in front of the venue under `plaza up --tls`: TLS 1.3 for browsers.

Mosquitto 2.0.11's WebSocket listener ignores ``tls_version`` (it still accepts TLS 1.2), so
browsers reach the broker through nginx (Debian's ``nginx-light``), which also terminates
HTTPS for the web client and the REST API. ``render_nginx`` rewrites only the machine-specific
lines of broker-config/nginx.conf (listen addresses, upstreams, certificate paths, pid and
temporary directories, the ``user`` line) and keeps every other line, as ``render_config``
does for mosquitto.

Errors::

    ProxyError (RuntimeError)
     +-- nginx is not installed, its configuration is refused, or it does not open its ports
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from venue.broker import BrokerError, die_with_parent, terminate, wait_for_port
from venue.logs import RotatingLog, pump

REPO = Path(__file__).resolve().parent.parent
NGINX_SOURCE = REPO / "broker-config" / "nginx.conf"
_TEMP_WORDS = (
    "client_body_temp_path",
    "proxy_temp_path",
    "fastcgi_temp_path",
    "uwsgi_temp_path",
    "scgi_temp_path",
)


class ProxyError(RuntimeError):
    """nginx could not be started as asked."""


def render_nginx(
    source: str,
    *,
    bind: str,
    ws_port: int,
    http_port: int,
    ws_upstream: str,
    http_upstream: str,
    cert: Path,
    key: Path,
    ca: Path,
    run_dir: Path,
    upstream_name: str = "localhost",
    run_as_root: bool = False,
) -> str:
    """``source`` with the machine-specific lines replaced (see the module docstring). The
    first ``listen``/``proxy_pass`` pair is the WebSocket server, the second the HTTP one."""
    out: list[str] = []
    listens = [f"{bind}:{ws_port}", f"{bind}:{http_port}"]
    upstreams = [ws_upstream, http_upstream]
    servers = 0
    for line in source.splitlines():
        indent = line[: len(line) - len(line.lstrip())]
        words = line.split()
        word = words[0] if words and not words[0].startswith("#") else ""
        if word == "user":
            if not run_as_root:
                continue
            line = f"{indent}user root;"  # local runs as root keep their user: files stay 0600
        elif word == "pid":
            line = f"{indent}pid {run_dir / 'nginx.pid'};"
        elif word in _TEMP_WORDS:
            line = f"{indent}{word} {run_dir / 'tmp' / word.removesuffix('_path')};"
        elif word == "ssl_certificate":
            line = f"{indent}ssl_certificate {cert};"
        elif word == "ssl_certificate_key":
            line = f"{indent}ssl_certificate_key {key};"
        elif word == "proxy_ssl_trusted_certificate":
            line = f"{indent}proxy_ssl_trusted_certificate {ca};"
        elif word == "proxy_ssl_name":
            line = f"{indent}proxy_ssl_name {upstream_name};"
        elif word == "listen":
            if servers >= 2:
                raise ProxyError("broker-config/nginx.conf must have exactly two servers")
            line = f"{indent}listen {listens[servers]} ssl;"
        elif word == "proxy_pass":
            line = f"{indent}proxy_pass {upstreams[servers]};"
            servers += 1
        out.append(line)
    if servers != 2:
        raise ProxyError("broker-config/nginx.conf must have exactly two servers (ws, http)")
    return "\n".join(out) + "\n"


@dataclass
class NginxProxy:
    """``nginx -c <rendered config>`` in the foreground, its stderr into ``log``."""

    run_dir: Path
    config: str
    ports: tuple[int, ...]
    log: RotatingLog
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def config_path(self) -> Path:
        return self.run_dir / "nginx.conf"

    @property
    def log_path(self) -> Path:
        return self.log.path

    def start(self) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise ProxyError("nginx is not installed (apt-get install nginx-light)")
        (self.run_dir / "tmp").mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config)
        args = [binary, "-p", str(self.run_dir), "-c", str(self.config_path), "-e", "stderr"]
        check = subprocess.run(
            [*args, "-t", "-q"], capture_output=True, text=True, check=False, timeout=30
        )
        if check.returncode != 0:
            raise ProxyError(f"nginx refused its configuration: {check.stderr.strip()}")
        self.proc = subprocess.Popen(
            [*args, "-g", "daemon off; master_process on;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its workers share its process group: stopped together
            preexec_fn=die_with_parent,
        )
        assert self.proc.stderr is not None
        pump(self.proc.stderr, self.log)
        deadline = time.monotonic() + 10
        try:
            for port in self.ports:
                wait_for_port(port, self.host, max(0.1, deadline - time.monotonic()))
        except BrokerError as exc:
            code = self.proc.poll()
            self.stop()
            raise ProxyError(f"nginx did not start (exit {code}): {exc}") from exc

    def stop(self) -> None:
        """SIGTERM the master and wait; then make sure no worker of its group is left (a
        master killed by SIGKILL leaves workers holding the ports)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        terminate(proc)
        reap_group(proc.pid)


def reap_group(pgid: int) -> None:
    """SIGKILL whatever is left in process group ``pgid`` (the one nginx's master led)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
