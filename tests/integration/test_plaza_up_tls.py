"""`plaza up --tls` (issue 14): TLS 1.3 only on the MQTT, WebSocket and HTTP ports, with a
venue CA whose certificate verifies for localhost and 127.0.0.1; the security headers; a
private data directory."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_plaza_up_supervision import RunningVenue, running
from venue.tls import ensure_venue_tls

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def venue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningVenue]:
    with running(tmp_path_factory.mktemp("tls-venue"), "--tls", "--tls-host", "venue.lan") as v:
        yield v


def ca(v: RunningVenue) -> Path:
    return v.data / "tls" / "ca.crt"


def ports(v: RunningVenue) -> dict[str, int]:
    return {"mqtt": v.mqtt_port, "websocket": v.ws_port, "http": v.http_port}


def handshake(port: int, context: ssl.SSLContext, name: str) -> str:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        return str(tls.version())


@pytest.mark.parametrize("listener", ["mqtt", "websocket", "http"])
def test_tls_1_2_is_refused_on_every_port(venue: RunningVenue, listener: str) -> None:
    context = ssl.create_default_context(cafile=str(ca(venue)))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|protocol version"):
        handshake(ports(venue)[listener], context, "localhost")


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "venue.lan"])
@pytest.mark.parametrize("listener", ["mqtt", "websocket", "http"])
def test_tls_1_3_is_served_with_a_certificate_that_verifies_against_the_venue_ca(
    venue: RunningVenue, listener: str, name: str
) -> None:
    context = ssl.create_default_context(cafile=str(ca(venue)))  # verifies chain and name
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    assert handshake(ports(venue)[listener], context, name) == "TLSv1.3"


def test_a_certificate_for_another_name_is_refused(venue: RunningVenue) -> None:
    context = ssl.create_default_context(cafile=str(ca(venue)))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(venue.mqtt_port, context, "elsewhere.example")


def test_plain_mqtt_gets_nothing_from_the_tls_port(venue: RunningVenue) -> None:
    observer = venue.credentials()["observer"]
    plain = subprocess.run(
        [
            *("mosquitto_sub", "-h", "127.0.0.1", "-p", str(venue.mqtt_port)),
            *("-u", "observer", "-P", observer["password"], "-i", observer["client_id"]),
            *("-t", "plaza/board/+", "-C", "1", "-W", "3"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert plain.returncode != 0
    assert plain.stdout == ""


def test_mosquitto_sub_reads_the_board_over_tls_with_the_venue_ca(venue: RunningVenue) -> None:
    creds = venue.credentials()
    assert creds["ca"] == str(ca(venue)), "credentials.json names the CA"
    sub = subprocess.run(
        [
            *("mosquitto_sub", "-h", "localhost", "-p", str(venue.mqtt_port)),
            *("--cafile", creds["ca"], "-u", "observer", "-P", creds["observer"]["password"]),
            *("-i", creds["observer"]["client_id"]),
            *("-t", "plaza/board/+", "-C", "4", "-W", "10"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert sub.returncode == 0, sub.stderr
    boards = [json.loads(line) for line in sub.stdout.splitlines()]
    assert len(boards) == 4
    assert all(b["online"] for b in boards)


def test_the_summary_prints_the_ca_and_the_https_and_wss_urls(venue: RunningVenue) -> None:
    out = venue.output
    assert f"CA {ca(venue)}" in out
    assert f"https://127.0.0.1:{venue.http_port}/" in out
    assert f"wss://127.0.0.1:{venue.ws_port}/" in out
    assert f"--cafile {ca(venue)}" in out


def https(venue: RunningVenue, path: str) -> tuple[int, dict[str, str], bytes]:
    context = ssl.create_default_context(cafile=str(ca(venue)))
    url = f"https://localhost:{venue.http_port}{path}"
    try:
        with urllib.request.urlopen(url, context=context, timeout=10) as reply:
            return reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


@pytest.mark.parametrize(("path", "status"), [("/", 200), ("/healthz", 200), ("/devices", 401)])
def test_the_web_client_and_api_routes_send_the_security_headers_and_hsts(
    venue: RunningVenue, path: str, status: int
) -> None:
    code, headers, _ = https(venue, path)
    assert code == status
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert f"connect-src 'self' wss://127.0.0.1:{venue.ws_port}" in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["strict-transport-security"] == "max-age=31536000"


def test_the_api_hands_browsers_a_wss_url(venue: RunningVenue) -> None:
    assert https(venue, "/healthz")[0] == 200
    request = urllib.request.Request(
        f"https://localhost:{venue.http_port}/auth/login",
        data=json.dumps(
            {k: venue.credentials()["players"][0][k] for k in ("username", "password")}
        ).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    context = ssl.create_default_context(cafile=str(ca(venue)))
    with urllib.request.urlopen(request, context=context, timeout=10) as reply:  # noqa: S310
        token = json.loads(reply.read())["access_token"]
    creds = urllib.request.Request(
        f"https://localhost:{venue.http_port}/auth/mqtt",
        data=b"{}",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    with urllib.request.urlopen(creds, context=context, timeout=10) as reply:  # noqa: S310
        assert json.loads(reply.read())["ws_url"] == f"wss://127.0.0.1:{venue.ws_port}/"


def test_the_data_directory_and_every_file_in_it_are_private(venue: RunningVenue) -> None:
    data = venue.data
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    seen = set()
    for root, dirs, files in os.walk(data):
        for name in dirs:
            assert stat.S_IMODE((Path(root) / name).stat().st_mode) == 0o700, name
        for name in files:
            path = Path(root) / name
            mode = stat.S_IMODE(path.stat().st_mode)
            public = path.parent == data / "tls" and path.suffix == ".crt"
            assert mode == (0o644 if public else 0o600), (path, oct(mode))
            seen.add(path.relative_to(data).as_posix())
    for expected in (
        "plaza.db",
        "secrets.json",
        "credentials.json",
        "logs/bridge.log",
        "logs/nginx.log",
        "broker/mosquitto.log",
        "broker/dynamic-security.json",
        "tls/ca.key",
        "tls/server.key",
        "tls/ca.crt",
    ):
        assert expected in seen, expected


def test_a_killed_nginx_is_restarted_and_https_serves_again(venue: RunningVenue) -> None:
    pid = int((venue.data / "nginx" / "nginx.pid").read_text())
    os.kill(pid, signal.SIGKILL)  # its worker keeps the ports until the supervisor reaps it
    venue.wait_for("nginx was killed by SIGKILL")
    venue.wait_for("nginx started again")
    deadline = time.monotonic() + 10
    while True:
        try:
            assert https(venue, "/healthz")[0] == 200
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_an_operator_certificate_is_what_browsers_see_and_the_broker_keeps_the_venue_ca(
    tmp_path: Path,
) -> None:
    own = ensure_venue_tls(tmp_path / "own-ca", ["127.0.0.1", "localhost", "venue.example"])
    with running(tmp_path / "data", "--tls-cert", str(own.cert), "--tls-key", str(own.key)) as v:
        assert f"browsers see {own.cert}" in v.output
        theirs = ssl.create_default_context(cafile=str(own.ca))
        venue_ca = ssl.create_default_context(cafile=str(ca(v)))
        for port in (v.http_port, v.ws_port):
            assert handshake(port, theirs, "venue.example") == "TLSv1.3"
            with pytest.raises(ssl.SSLCertVerificationError):
                handshake(port, venue_ca, "localhost")
        assert handshake(v.mqtt_port, venue_ca, "localhost") == "TLSv1.3"
