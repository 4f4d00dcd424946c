"""`plaza status` as a monitoring check runs it: exit 1 with what needs attention, 2 when the
database cannot be read (the running venue's screen is in the restore drill)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from plaza.db import make_engine
from plaza.settings import Settings
from plaza.tables import Alert, Outbox, table_of
from venue import runstate
from venue.up import init_venue

pytestmark = pytest.mark.integration


def status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "venue.cli", "status", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PLAZA_BRIDGE_METRICS_PORT": "0"},
    )


def test_a_venue_whose_supervisor_died_with_an_alert_and_a_dead_letter_needs_attention(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path)
    init_venue(settings, 3)

    async def trouble() -> None:
        engine = make_engine(settings.db_url)
        now = datetime.now(UTC)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    sa.insert(table_of(Alert)).values(
                        id="a1",
                        type="machine_offline",
                        severity="high",
                        message="m",
                        created_at=now,
                    )
                )
                await conn.execute(
                    sa.insert(table_of(Outbox)).values(
                        topic="t",
                        payload=b"x",
                        qos=1,
                        retain=False,
                        created_at=now,
                        dead_at=now,
                        dead_reason="too large",
                    )
                )
        finally:
            await engine.dispose()

    asyncio.run(trouble())
    dead_pid = 2**22 + 1  # above the default pid_max: no process has it
    runstate.write(
        tmp_path,
        runstate.SupervisorState(
            pid=dead_pid,
            started_at=time.time() - 100,
            updated_at=time.time() - 50,
            database_url=settings.db_url,
            ports={"metrics": 0},
        ),
    )
    done = status(str(tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    attention = [line for line in done.stdout.splitlines() if line.startswith("attention: ")]
    assert [a.split(": ", 1)[1].split(" ")[0:2] for a in attention] == [
        ["plaza", "up"],
        ["1", "unacknowledged"],
        ["1", "dead-lettered"],
        ["no", "backup"],
    ], done.stdout
    assert "machines      0/3 online" in done.stdout
    assert "commands      0/min (last minute, command log)" in done.stdout


def test_a_database_that_cannot_be_read_exits_2_and_none_is_made(tmp_path: Path) -> None:
    done = status("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "database      UNREADABLE" in done.stdout
    empty = status(str(tmp_path))
    assert empty.returncode == 2
    assert f"database      UNREADABLE: no database at {tmp_path / 'plaza.db'}" in empty.stdout
    assert not (tmp_path / "plaza.db").exists(), "a later restore into this dir still works"
