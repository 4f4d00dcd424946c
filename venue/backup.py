"""`plaza backup` and `plaza restore`: one archive holds everything a venue needs to come back.

The archive (a gzip'd tar, mode 0600: it holds the venue's secrets) contains:

- the database, copied while the venue runs: SQLite through its online backup API (one read
  transaction, so the copy is one consistent moment even under WAL with writers going on;
  never a file copy), PostgreSQL through ``pg_dump --format=custom`` (one snapshot);
- ``broker/dynamic-security.json``: every broker account and role, including those the api
  made at run time (browser sessions, provisioned machines); its last-good copy when the live
  file is caught mid-save (Mosquitto 2.0.11 rewrites it in place);
- ``secrets.json`` (services', machines' and demo passwords, the JWT key), ``devices.json``
  (the simulator's machine passwords), ``sim-epochs.json`` and ``tls/`` (the venue CA and
  certificates) when present;
- ``manifest.json``: when, from which release and schema revision, and the SHA-256 and size
  of every other member. A restore checks every one before it writes anything.

Order: the account file first, then the database. A browser account that appears in the
copied file existed before the database snapshot, so its row is in the dump, unless it was
deleted in between; :func:`restore` drops any browser account without a row, so none
outlives its session.

``plaza restore FILE --data-dir DIR`` writes a new data directory (it refuses one that
already holds a venue) and the database: SQLite into ``DIR/plaza.db``, PostgreSQL into the
empty database named by ``--database-url`` (``pg_restore``). ``plaza up`` on it then upgrades
the schema if the backup came from an older release.

Errors::

    BackupError (RuntimeError)
     +-- raised with a message that says what to do
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.request import pathname2url

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from plaza import migrations
from plaza.db import is_sqlite, make_engine
from plaza.dynsec import SESSION_SEPARATOR
from plaza.settings import Settings
from plaza.tables import BrokerSession, table_of
from venue import runstate
from venue.broker import DYNSEC_FILE, durable_write, last_good_path, parse_dynsec

FORMAT = 1
MANIFEST = "manifest.json"
DYNSEC = f"broker/{DYNSEC_FILE}"
#: data-dir files carried as they are, when present
PLAIN_FILES = ("secrets.json", "devices.json", "sim-epochs.json")
#: the venue CA and certificates (`plaza up --tls`, `plaza init --tls`)
TLS_DIR = "tls"
SQLITE_FILE, PG_FILE = "plaza.db", "plaza.pgdump"
#: where the last backup of a data dir is recorded (for `plaza status`)
LAST_BACKUP = "last-backup.json"


class BackupError(RuntimeError):
    """A backup or restore could not be done; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Source:
    """What to back up: a data dir (with its files) and its database, or a database alone."""

    data_dir: Path | None
    database_url: str


def source_of(target: str, database_url: str | None = None) -> Source:
    """``target`` is a data dir or a database URL. A data dir's database is ``database_url``,
    else ``PLAZA_DATABASE_URL``, else what `plaza up` recorded there, else its SQLite file."""
    if "://" in target:
        return Source(None, target)
    data = Path(target)
    if not data.is_dir():
        raise BackupError(f"{data} is not a data directory")
    url = database_url or os.environ.get("PLAZA_DATABASE_URL", "")
    if not url and (state := runstate.read(data)) is not None:
        url = state.database_url
    return Source(data, url or Settings(data_dir=data).db_url)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database:
        raise BackupError(f"{url} names no SQLite file")
    return Path(database)


def libpq(url: str) -> tuple[list[str], dict[str, str]]:
    """``pg_dump``/``pg_restore`` connection arguments and environment for a SQLAlchemy URL
    (the password goes in the environment, not on the command line)."""
    u = make_url(url)
    args = ["--dbname", u.database or ""]
    if u.host:
        args += ["--host", u.host]
    if u.port:
        args += ["--port", str(u.port)]
    if u.username:
        args += ["--username", u.username]
    env = dict(os.environ)
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    ssl = u.query.get("ssl") or u.query.get("sslmode")
    if isinstance(ssl, str):
        env["PGSSLMODE"] = ssl
    return args, env


def pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found: install PostgreSQL's client (postgresql-client)")
    return found


def run_tool(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BackupError(f"{Path(args[0]).name} failed: {done.stderr.strip()[-2000:]}")


def revision_of(url: str) -> str | None:
    async def read() -> str | None:
        engine = make_engine(url, reader=True)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(migrations.current)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def copy_database(url: str, into: Path) -> tuple[str, str]:
    """Dump ``url``'s database into the directory ``into``; return (dialect, file name)."""
    if is_sqlite(url):
        path = sqlite_path(url)
        if not path.exists():
            raise BackupError(f"no database at {path}")
        source = sqlite3.connect(f"file:{pathname2url(str(path))}?mode=ro", uri=True, timeout=30)
        target = sqlite3.connect(into / SQLITE_FILE)
        try:
            source.execute("PRAGMA busy_timeout=30000")
            source.backup(target)  # all pages in one step: one read transaction
        finally:
            target.close()
            source.close()
        return "sqlite", SQLITE_FILE
    args, env = libpq(url)
    run_tool([pg_tool("pg_dump"), "--format=custom", "--file", str(into / PG_FILE), *args], env)
    return "postgresql", PG_FILE


def account_file(data_dir: Path) -> bytes | None:
    """The broker's account file as it stands, or its last-good copy when it is caught
    mid-save (nothing is moved, unlike the broker's start-up check)."""
    path = data_dir / DYNSEC
    for candidate in (path, last_good_path(path)):
        if candidate.exists() and parse_dynsec(raw := candidate.read_bytes()) is not None:
            return raw
    return None


def backup(source: Source, to: Path) -> dict[str, Any]:
    """Write the archive ``to`` (atomically); return its manifest."""
    to = to.resolve()
    if is_sqlite(source.database_url) and not sqlite_path(source.database_url).exists():
        raise BackupError(f"no database at {sqlite_path(source.database_url)}")
    to.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=to.parent, prefix=".plaza-backup-") as tmp:
        work = Path(tmp)
        members: list[str] = []
        if source.data_dir is not None:
            accounts = account_file(source.data_dir)
            if accounts is not None:  # first: see the module docstring
                (work / "broker").mkdir()
                (work / DYNSEC).write_bytes(accounts)
                members.append(DYNSEC)
        revision = revision_of(source.database_url)
        dialect, db_file = copy_database(source.database_url, work)
        members.append(db_file)
        if source.data_dir is not None:
            for name in PLAIN_FILES:
                if (source.data_dir / name).is_file():
                    shutil.copyfile(source.data_dir / name, work / name)
                    members.append(name)
            tls = source.data_dir / TLS_DIR
            if tls.is_dir():
                (work / TLS_DIR).mkdir()
                for item in sorted(tls.iterdir()):
                    if item.is_file():
                        shutil.copyfile(item, work / TLS_DIR / item.name)
                        members.append(f"{TLS_DIR}/{item.name}")
        manifest = {
            "format": FORMAT,
            "created_at": datetime.now(UTC).isoformat(),
            "source": str(source.data_dir.resolve()) if source.data_dir else None,
            "database": {"dialect": dialect, "file": db_file, "revision": revision},
            "files": {
                name: {"sha256": sha256(work / name), "bytes": (work / name).stat().st_size}
                for name in members
            },
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1))
        write_archive(to, work, [MANIFEST, *members])
    archive: dict[str, Any] = {
        "file": str(to),
        "bytes": to.stat().st_size,
        "sha256": sha256(to),
        "seconds": round(time.monotonic() - started, 3),
    }
    manifest["archive"] = archive
    if source.data_dir is not None:
        record = {"at": time.time(), **archive}
        durable_write(source.data_dir / LAST_BACKUP, json.dumps(record, indent=1).encode())
    return manifest


def write_archive(to: Path, work: Path, members: list[str]) -> None:
    """The tar.gz of ``members`` of ``work`` at ``to``, mode 0600: written beside it, fsynced,
    renamed over it, so ``to`` is the whole archive or absent, never a prefix."""
    partial = to.with_name(f".{to.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar:
                for name in members:
                    tar.add(work / name, arcname=name, recursive=False)
            raw.flush()
            os.fsync(raw.fileno())
        partial.replace(to)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    dir_fd = os.open(to.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def prune_copies(directory: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest ``plaza-*.tar.gz`` in ``directory`` (by name, which
    is the time they were taken); return what was deleted."""
    copies = sorted(directory.glob("plaza-*.tar.gz"))
    doomed = copies[: max(0, len(copies) - keep)]
    for old in doomed:
        old.unlink()
    return doomed


def last_backup(data_dir: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((data_dir / LAST_BACKUP).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


# -- restore ---------------------------------------------------------------------------------
def unpack(archive: Path, into: Path) -> dict[str, Any]:
    """Extract the manifest and every member it lists into ``into``, each checked against
    its checksum; return the manifest. Nothing else in the archive is extracted."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            names = {m.name: m for m in tar.getmembers() if m.isfile()}
            if MANIFEST not in names:
                raise BackupError(f"{archive} has no {MANIFEST}: not a plaza backup")
            manifest = json.loads(_member(tar, names[MANIFEST]).read())
            if manifest.get("format") != FORMAT:
                raise BackupError(f"{archive} is backup format {manifest.get('format')}")
            for name, expected in manifest["files"].items():
                if name.startswith("/") or ".." in Path(name).parts or name not in names:
                    raise BackupError(f"{archive}: {name} is missing or not a plain path")
                target = into / name
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with _member(tar, names[name]) as fh, target.open("wb") as out:
                    while chunk := fh.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
                if digest.hexdigest() != expected["sha256"]:
                    raise BackupError(f"{archive}: {name} does not match its checksum")
    except (tarfile.TarError, OSError, EOFError, ValueError, KeyError) as exc:
        raise BackupError(f"{archive} cannot be read: {exc}") from exc
    return dict(manifest)


def _member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    fh = tar.extractfile(member)
    if fh is None:
        raise BackupError(f"{member.name} is not a file")
    return fh


def place(source: Path, target: Path) -> None:
    """Move an unpacked file to its place with the data dir's modes (0600; certificates in
    ``tls/`` 0644), fsynced."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    public = target.parent.name == TLS_DIR and target.suffix == ".crt"
    os.chmod(source, 0o644 if public else 0o600)
    with source.open("rb") as fh:
        os.fsync(fh.fileno())
    shutil.move(source, target)


async def _is_empty(url: str) -> bool:
    engine = make_engine(url, reader=True)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
    finally:
        await engine.dispose()
    return not names


async def _sessions(url: str) -> set[str]:
    engine = make_engine(url, reader=True)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.select(table_of(BrokerSession).c.client))
            return set(rows.scalars())
    finally:
        await engine.dispose()


def restore(archive: Path, data_dir: Path, database_url: str | None = None) -> dict[str, Any]:
    """Bring the venue in ``archive`` back into the new data dir ``data_dir`` (and the empty
    database ``database_url``, required for a PostgreSQL backup); return the manifest."""
    for taken in ("secrets.json", SQLITE_FILE, DYNSEC):
        if (data_dir / taken).exists():
            raise BackupError(
                f"{data_dir} already holds a venue ({taken}): restore into a new data dir"
            )
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".restore-") as tmp:
        work = Path(tmp)
        manifest = unpack(archive, work)
        dialect, db_file = manifest["database"]["dialect"], manifest["database"]["file"]
        url = database_url or ""
        if dialect == "postgresql" and not url.startswith("postgresql"):
            raise BackupError(
                "this backup is of a PostgreSQL database: give --database-url of an empty one"
            )
        if dialect == "sqlite" and url and not is_sqlite(url):
            raise BackupError("this backup is of a SQLite database: it restores into SQLite only")
        if dialect == "sqlite":
            target = sqlite_path(url) if url else data_dir / SQLITE_FILE
            if target.exists():
                raise BackupError(f"{target} exists: restore into a new database file")
            place(work / db_file, target)
            url = url or Settings(data_dir=data_dir).db_url
        else:
            if not asyncio.run(_is_empty(url)):
                raise BackupError(f"{make_url(url).database} is not empty: restore into a new one")
            args, env = libpq(url)
            restore_tool = [pg_tool("pg_restore"), "--no-owner", "--no-acl", "--exit-on-error"]
            run_tool([*restore_tool, *args, str(work / db_file)], env)
        if DYNSEC in manifest["files"]:
            raw = (work / DYNSEC).read_bytes()
            kept = without_orphan_sessions(raw, asyncio.run(_sessions(url)))
            (work / DYNSEC).write_bytes(kept)
        for name in manifest["files"]:
            if name != db_file:
                place(work / name, data_dir / name)
    return manifest


def without_orphan_sessions(raw: bytes, sessions: set[str]) -> bytes:
    """The account file without browser-session accounts (``user~session``) whose session
    row is not in the restored database: nothing would ever expire them."""
    doc = json.loads(raw)
    doc["clients"] = [
        c
        for c in doc["clients"]
        if SESSION_SEPARATOR not in c["username"] or c["username"] in sessions
    ]
    return json.dumps(doc, indent=1).encode()


def describe(manifest: dict[str, Any]) -> str:
    db = manifest["database"]
    files = manifest["files"]
    size = sum(f["bytes"] for f in files.values())
    return (
        f"{len(files)} files ({size / 1024:.0f} KiB before compression): {db['dialect']} "
        f"database at schema revision {db['revision']}, "
        + ", ".join(sorted(n for n in files if n != db["file"]))
        + f"; taken {manifest['created_at']}"
    )
