"""venue.tls and venue.proxy: the venue CA, its server certificate and nginx's rendering."""

from __future__ import annotations

import shutil
import socket
import ssl
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509

from venue.proxy import NGINX_SOURCE, ProxyError, render_nginx
from venue.tls import TlsError, ensure_venue_tls, with_operator_cert

pytestmark = pytest.mark.unit


def names(cert: Path) -> set[str]:
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    san = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n.value) for n in san}


def test_the_ca_and_server_files_are_made_with_private_keys(tmp_path: Path) -> None:
    files = ensure_venue_tls(tmp_path / "tls", ["localhost", "127.0.0.1", "venue.lan"])
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "tls").iterdir()}
    assert modes == {"ca.crt": 0o644, "ca.key": 0o600, "server.crt": 0o644, "server.key": 0o600}
    assert names(files.cert) == {"localhost", "127.0.0.1", "venue.lan"}
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # a TLS server with these files is verified by a client that trusts only the CA
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.cert, files.key)
    client = ssl.create_default_context(cafile=str(files.ca))
    assert handshake(server, client, "venue.lan") == "TLSv1.3"
    assert handshake(server, client, "127.0.0.1") == "TLSv1.3"


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> str:
    """A TLS handshake over a socket pair (the server side in a thread)."""
    left, right = socket.socketpair()
    with left, right:
        done = threading.Thread(
            target=lambda: server.wrap_socket(right, server_side=True).close(), daemon=True
        )
        done.start()
        with client.wrap_socket(left, server_hostname=name) as tls:
            version = str(tls.version())
        done.join(timeout=5)
    return version


def test_a_second_start_keeps_the_ca_and_a_new_name_reissues_only_the_server_cert(
    tmp_path: Path,
) -> None:
    tls = tmp_path / "tls"
    first = ensure_venue_tls(tls, ["localhost", "127.0.0.1"])
    ca, server = first.ca.read_bytes(), first.cert.read_bytes()
    ensure_venue_tls(tls, ["localhost", "127.0.0.1"])
    assert (first.ca.read_bytes(), first.cert.read_bytes()) == (ca, server)
    ensure_venue_tls(tls, ["localhost", "127.0.0.1", "10.0.0.5"])
    assert first.ca.read_bytes() == ca, "clients that trust the CA keep working"
    assert first.cert.read_bytes() != server
    assert "10.0.0.5" in names(first.cert)


def test_an_operator_certificate_is_shown_to_browsers_and_checked_against_its_key(
    tmp_path: Path,
) -> None:
    venue = ensure_venue_tls(tmp_path / "tls", ["localhost"])
    own = ensure_venue_tls(tmp_path / "own", ["venue.example"])
    other = ensure_venue_tls(tmp_path / "other", ["venue.example"])
    files = with_operator_cert(venue, own.cert, own.key)
    assert files.operator_cert
    assert (files.public_cert, files.public_key) == (own.cert.resolve(), own.key.resolve())
    assert (files.cert, files.ca) == (venue.cert, venue.ca), "the broker keeps the venue CA's"
    assert not venue.operator_cert
    with pytest.raises(TlsError, match="cannot use --tls-cert"):
        with_operator_cert(venue, own.cert, other.key)


def render(**kw: object) -> str:
    args: dict[str, object] = {
        "bind": "127.0.0.1",
        "ws_port": 29001,
        "http_port": 28000,
        "ws_upstream": "https://127.0.0.1:40001",
        "http_upstream": "http://127.0.0.1:40002",
        "cert": Path("/v/tls/server.crt"),
        "key": Path("/v/tls/server.key"),
        "ca": Path("/v/tls/ca.crt"),
        "run_dir": Path("/v/nginx"),
    }
    args.update(kw)
    return render_nginx(NGINX_SOURCE.read_text(), **args)  # type: ignore[arg-type]


def directive(config: str, word: str) -> list[str]:
    return [
        ln.split(None, 1)[1].rstrip(";") for ln in config.splitlines() if ln.split()[:1] == [word]
    ]


def test_nginx_is_rendered_with_tls_1_3_only_and_the_venue_s_ports_and_files() -> None:
    config = render()
    assert directive(config, "ssl_protocols") == ["TLSv1.3"]
    assert directive(config, "listen") == ["127.0.0.1:29001 ssl", "127.0.0.1:28000 ssl"]
    assert directive(config, "proxy_pass") == ["https://127.0.0.1:40001", "http://127.0.0.1:40002"]
    assert directive(config, "ssl_certificate") == ["/v/tls/server.crt"]
    assert directive(config, "proxy_ssl_trusted_certificate") == ["/v/tls/ca.crt"]
    assert directive(config, "proxy_ssl_verify") == ["on"]
    assert directive(config, "pid") == ["/v/nginx/nginx.pid"]
    assert directive(config, "user") == []
    assert directive(render(run_as_root=True), "user") == ["root"]
    assert len(config.splitlines()) == len(NGINX_SOURCE.read_text().splitlines()) - 1


def test_a_proxy_config_without_two_servers_is_refused() -> None:
    with pytest.raises(ProxyError, match="exactly two servers"):
        render_nginx(
            "http {\n}\n",
            bind="127.0.0.1",
            ws_port=1,
            http_port=2,
            ws_upstream="https://127.0.0.1:3",
            http_upstream="http://127.0.0.1:4",
            cert=Path("c"),
            key=Path("k"),
            ca=Path("a"),
            run_dir=Path("r"),
        )


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_accepts_the_rendered_configuration(tmp_path: Path) -> None:
    files = ensure_venue_tls(tmp_path / "tls", ["localhost"])
    (tmp_path / "nginx" / "tmp").mkdir(parents=True)
    conf = tmp_path / "nginx" / "nginx.conf"
    conf.write_text(render(cert=files.cert, key=files.key, ca=files.ca, run_dir=tmp_path / "nginx"))
    check = subprocess.run(
        ["nginx", "-p", str(tmp_path / "nginx"), "-c", str(conf), "-e", "stderr", "-t"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
