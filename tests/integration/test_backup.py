"""`plaza backup` and `plaza restore` without a running venue (SQLite; the restore drill runs
both databases under load): what the archive holds, and what a restore refuses."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from plaza.db import make_engine
from plaza.dynsec import BrokerClient
from plaza.settings import Settings
from plaza.tables import BrokerSession, table_of
from plaza.topics import Topics
from venue.backup import BackupError, backup, restore, source_of
from venue.broker import DYNSEC_FILE, write_dynsec
from venue.up import init_venue

pytestmark = pytest.mark.integration


def venue_dir(data: Path) -> Path:
    """A data dir as `plaza init` leaves it, plus one live browser session (row and broker
    account) and one browser account whose session row is gone."""
    settings = Settings(data_dir=data)
    secrets, _ = init_venue(settings, 2)
    live, orphan = "player1~live", "player1~gone"
    clients = [
        *secrets.broker_clients(settings),
        BrokerClient(live, "pw-live", ("player-player1",)),
        BrokerClient(orphan, "pw-gone", ("player-player1",)),
    ]
    write_dynsec(data / "broker" / DYNSEC_FILE, clients, secrets.roles(Topics()))

    async def session_row() -> None:
        engine = make_engine(settings.db_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    sa.insert(table_of(BrokerSession)).values(
                        client=live,
                        owner="player1",
                        expires_at=datetime.now(UTC) + timedelta(hours=1),
                    )
                )
        finally:
            await engine.dispose()

    asyncio.run(session_row())
    return data


def accounts(data: Path) -> set[str]:
    doc = json.loads((data / "broker" / DYNSEC_FILE).read_text())
    return {c["username"] for c in doc["clients"]}


def test_a_backup_holds_every_file_with_its_checksum_and_restores_into_a_new_dir(
    tmp_path: Path,
) -> None:
    source = venue_dir(tmp_path / "a")
    manifest = backup(source_of(str(source)), tmp_path / "copy.tar.gz")
    assert set(manifest["files"]) == {
        "plaza.db",
        "broker/dynamic-security.json",
        "secrets.json",
        "devices.json",
    }
    assert manifest["database"]["dialect"] == "sqlite"
    assert oct((tmp_path / "copy.tar.gz").stat().st_mode & 0o777) == "0o600"
    recorded = json.loads((source / "last-backup.json").read_text())
    assert recorded["file"] == str(tmp_path / "copy.tar.gz")

    restore(tmp_path / "copy.tar.gz", tmp_path / "b")
    b = tmp_path / "b"
    assert (b / "secrets.json").read_bytes() == (source / "secrets.json").read_bytes()
    assert oct(b.stat().st_mode & 0o777) == "0o700"
    assert oct((b / "plaza.db").stat().st_mode & 0o777) == "0o600"
    assert "player1~live" in accounts(b), "a session with its row keeps its broker account"
    assert "player1~gone" not in accounts(b), "an account no session row expires is dropped"
    assert accounts(b) == accounts(source) - {"player1~gone"}


def test_a_restore_refuses_a_damaged_archive_and_a_data_dir_that_holds_a_venue(
    tmp_path: Path,
) -> None:
    source = venue_dir(tmp_path / "a")
    good = tmp_path / "copy.tar.gz"
    backup(source_of(str(source)), good)
    with pytest.raises(BackupError, match="already holds a venue"):
        restore(good, source)
    damaged = tmp_path / "damaged.tar.gz"
    with tarfile.open(good) as tar, tarfile.open(damaged, "w:gz") as out:
        for member in tar.getmembers():
            data = tar.extractfile(member)
            assert data is not None
            raw = data.read()
            if member.name == "secrets.json":
                raw = raw.replace(b'"admin"', b'"admix"')
            member.size = len(raw)
            out.addfile(member, io.BytesIO(raw))
    with pytest.raises(BackupError, match=r"secrets\.json does not match its checksum"):
        restore(damaged, tmp_path / "c")
    assert not (tmp_path / "c" / "plaza.db").exists(), "nothing is written from a bad archive"
    with pytest.raises(BackupError, match="restores into SQLite only"):
        restore(good, tmp_path / "d", "postgresql+asyncpg://nobody@127.0.0.1/none")
