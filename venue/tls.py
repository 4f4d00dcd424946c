"""The venue's certificates for `plaza up --tls`: a venue CA and a server certificate.

On first start :func:`ensure_venue_tls` creates ``DIR/tls/ca.key`` + ``ca.crt`` (a CA of this
venue only, ten years) and ``server.key`` + ``server.crt``, signed by it, for ``localhost``,
this machine's host name, 127.0.0.1, ::1 and every ``--tls-host`` (names or addresses). Later
starts keep the CA and reissue the server certificate only when the names changed or it
expires within 30 days, so clients that trust ``ca.crt`` keep working. Keys are 0600, the
certificates 0644. An operator's own certificate (``--tls-cert``/``--tls-key``, e.g. from a
public CA) is what browsers are shown instead (:func:`with_operator_cert`); the broker keeps
the venue CA's, which the machines and the services verify.

Keys are ECDSA P-256 (``cryptography``; no hand-written ASN.1).

Errors::

    TlsError (RuntimeError)
     +-- a given certificate or key that cannot be read, or that do not belong together
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_DAYS = 397  # what browsers accept for a leaf certificate
CA_DAYS = 3650
RENEW_BEFORE = dt.timedelta(days=30)


class TlsError(RuntimeError):
    """The venue's TLS files could not be made or used as asked."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The broker's certificate (machines and services verify it with ``ca``, the venue
    CA) and what browsers are shown (``public_*``: the same, or the operator's own)."""

    cert: Path
    key: Path
    ca: Path
    public_cert: Path
    public_key: Path

    @property
    def operator_cert(self) -> bool:
        return self.public_cert != self.cert


def default_hosts(extra: Iterable[str] = ()) -> list[str]:
    hosts = ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    for host in extra:
        if host and host not in hosts:
            hosts.append(host)
    return hosts


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError(f"{path} is not an EC key")
    return key


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _make_ca(tls_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "GamePlaza venue"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"GamePlaza venue CA ({socket.gethostname()})"),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(tls_dir / "ca.key", _key_pem(key), 0o600)
    _write(tls_dir / "ca.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key


def _make_server(
    tls_dir: Path, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, hosts: list[str]
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(tls_dir / "server.key", _key_pem(key), 0o600)
    _write(tls_dir / "server.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _needs_new_server_cert(path: Path, ca: x509.Certificate, hosts: list[str]) -> bool:
    if not path.exists() or not path.with_suffix(".key").exists():
        return True
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    if cert.issuer != ca.subject or cert.not_valid_after_utc - RENEW_BEFORE < _now():
        return True
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san) != set(_san(hosts))


def ensure_venue_tls(tls_dir: Path, hosts: list[str]) -> TlsFiles:
    """The venue CA and a server certificate for ``hosts`` under ``tls_dir`` (made if
    missing, the server certificate reissued if its names changed or it is about to expire)."""
    tls_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(tls_dir, 0o700)
    ca_crt, ca_key = tls_dir / "ca.crt", tls_dir / "ca.key"
    if ca_crt.exists() and ca_key.exists():
        ca = x509.load_pem_x509_certificate(ca_crt.read_bytes())
        key = _load_key(ca_key)
        os.chmod(ca_crt, 0o644)
        os.chmod(ca_key, 0o600)
    else:
        ca, key = _make_ca(tls_dir)
    server = tls_dir / "server.crt"
    if _needs_new_server_cert(server, ca, hosts):
        _make_server(tls_dir, ca, key, hosts)
    key_path = tls_dir / "server.key"
    return TlsFiles(server, key_path, ca_crt, server, key_path)


def with_operator_cert(files: TlsFiles, cert: Path, key: Path) -> TlsFiles:
    """Browsers are shown the operator's certificate (checked to load and to match its key);
    the broker keeps the venue CA's, which machines and services verify."""
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot use --tls-cert {cert} / --tls-key {key}: {exc}") from exc
    return TlsFiles(files.cert, files.key, files.ca, cert.resolve(), key.resolve())
