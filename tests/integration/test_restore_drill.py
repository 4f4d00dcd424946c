"""The restore drill (issue 19), on SQLite and PostgreSQL: a running venue with machines,
reservations, notifications and a browser session is backed up while commands flow, restored
into a new data dir (and database), and started with `plaza up`. There the board shows every
machine online with its restored credentials, accounts log in, the browser session's broker
account works, every reservation acknowledged before the backup began is there, and `plaza
check` finds nothing wrong."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from plaza.settings import Settings
from plaza.topics import Topics
from tests.integration.test_plaza_up_supervision import (
    DEVICES,
    RunningVenue,
    board_all_online,
    http,
    mqtt,
    running,
)
from venue import status
from venue.accounts import demo_fleet

pytestmark = pytest.mark.integration

MACHINES = [d.id for d in demo_fleet(DEVICES)]
#: the supervision tests' quick health probes would take a loaded machine's slow answer for a
#: wedged service and restart it mid-drill: the defaults here
CALM = {"PLAZA_HEALTH_INTERVAL": "5", "PLAZA_HEALTH_TIMEOUT": "2", "PLAZA_HEALTH_FAILURES": "3"}
LOAD = {**CALM, "PLAZA_MAX_ACTIVE_PER_PLAYER": "1000", "PLAZA_RATE_BURST": "100000"}


@pytest.fixture(params=["sqlite", "postgresql"])
def databases(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(the venue's database URL, an empty one to restore into); empty strings: SQLite in
    each data dir."""
    if request.param == "sqlite":
        yield "", ""
        return
    admin_url: str = request.getfixturevalue("pg_admin_url")
    names = [f"plaza_drill_{uuid.uuid4().hex[:10]}" for _ in range(2)]

    async def admin(*sql: str) -> None:
        engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                for statement in sql:
                    await conn.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(admin(*(f'CREATE DATABASE "{n}"' for n in names)))
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{names[0]}", f"{base}/{names[1]}"
    finally:
        asyncio.run(admin(*(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in names)))


def plaza(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "venue.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def login(v: RunningVenue, username: str, password: str) -> str:
    body = {"username": username, "password": password}
    return str(http(v, "POST", "/auth/login", body)["access_token"])


class Bookings:
    """Admin bookings for the demo players, each in a slot of its own (30 minutes apart, so
    no machine or player overlaps), recorded with the moment their reply arrived."""

    def __init__(self, v: RunningVenue, token: str, players: list[str]) -> None:
        self.v, self.token, self.players = v, token, players
        self.base = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=1)
        self.acked: list[tuple[str, float]] = []
        self.errors: list[Exception] = []
        self.n = 0

    def book(self) -> str:
        n, self.n = self.n, self.n + 1
        start = self.base + timedelta(minutes=30 * n)
        row = http(
            self.v,
            "POST",
            "/reservations",
            {
                "device_id": MACHINES[n % len(MACHINES)],
                "user": self.players[n % len(self.players)],
                "starts_at": start.isoformat(),
                "ends_at": (start + timedelta(minutes=20)).isoformat(),
            },
            self.token,
        )
        self.acked.append((str(row["id"]), time.monotonic()))
        return str(row["id"])

    def flow(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.book()
            except Exception as exc:  # reported by the test, not lost in the thread
                self.errors.append(exc)
                return


async def browser_account_connects(v: RunningVenue, creds: dict[str, Any]) -> None:
    async with mqtt(v, creds["username"], creds["password"], creds["client_id"]) as client:
        await client.subscribe(Topics().board(MACHINES[0]), qos=1)
        async with asyncio.timeout(5):
            async for _message in client.messages:
                return


def reservation_ids(v: RunningVenue, token: str) -> set[str]:
    found: set[str] = set()
    cursor = ""
    while True:
        page = http(v, "GET", f"/reservations?limit=200{cursor}", token=token)
        found |= {r["id"] for r in page["items"]}
        if not page.get("next_cursor"):
            return found
        cursor = f"&cursor={page['next_cursor']}"


def notification_count(v: RunningVenue, token: str) -> int:
    return len(http(v, "GET", "/me/notifications?after=0", token=token)["items"])


def test_a_venue_backed_up_while_commands_flow_comes_back_whole_in_a_new_data_dir(
    tmp_path: Path, databases: tuple[str, str]
) -> None:
    source_url, target_url = databases
    url_args = ["--database-url", source_url] if source_url else []
    archive = tmp_path / "backups" / "drill.tar.gz"
    with running(tmp_path / "a", *url_args, **LOAD) as a:
        creds = a.credentials()
        admin = login(a, "admin", creds["admin"]["password"])
        players = [p["username"] for p in creds["players"]]
        player = creds["players"][0]
        bookings = Bookings(a, admin, players)
        for _ in range(12):
            bookings.book()
        approved = bookings.acked[0][0]
        http(a, "POST", f"/reservations/{approved}/approve", None, admin)
        player_token = login(a, player["username"], player["password"])
        browser = http(a, "POST", "/auth/mqtt", {}, player_token)
        asyncio.run(browser_account_connects(a, browser))
        notes_before = notification_count(a, player_token)
        assert notes_before >= 4, "the player heard of the bookings made for them"

        stop = threading.Event()
        flow = threading.Thread(target=bookings.flow, args=(stop,))
        flow.start()
        try:
            deadline = time.monotonic() + 30
            while len(bookings.acked) < 20 and not bookings.errors:  # commands are flowing
                assert time.monotonic() < deadline, "bookings did not flow"
                time.sleep(0.01)
            began = time.monotonic()
            backed = plaza("backup", str(a.data), "--to", str(archive), *url_args)
            ended = time.monotonic()
            during = sum(began <= at <= ended for _, at in bookings.acked)
        finally:
            stop.set()
            flow.join(timeout=30)
        assert not bookings.errors, bookings.errors
        assert backed.returncode == 0, backed.stderr
        before = {rid for rid, at in bookings.acked if at < began}
        facts = status.gather(a.data, source_url, Settings(data_dir=a.data))  # (its CLI:
        screen = status.render(facts, status.assess(facts))  # tests/integration/test_status.py)
        assert status.assess(facts) == [], screen
        assert re.search(rf"^last backup   \d+s ago \({archive}, ", screen, re.M), screen
        assert f"machines      {DEVICES}/{DEVICES} online" in screen

    restored = tmp_path / "b"
    target_args = ["--database-url", target_url] if target_url else []
    back = plaza("restore", str(archive), "--data-dir", str(restored), *target_args)
    assert back.returncode == 0, back.stderr
    with running(restored, *target_args, **CALM) as b:  # waits until every machine is online
        asyncio.run(board_all_online(b))
        assert b.credentials() == creds, "the same accounts and passwords"
        admin = login(b, "admin", creds["admin"]["password"])
        kept = reservation_ids(b, admin)
        assert before <= kept, f"missing after the restore: {sorted(before - kept)}"
        player_token = login(b, player["username"], player["password"])
        assert notification_count(b, player_token) >= notes_before
        asyncio.run(browser_account_connects(b, browser))
        checked = plaza("check", "--data-dir", str(b.data), *target_args, "--settle", "0.5")
        assert checked.returncode == 0, checked.stdout + checked.stderr
    print(f"{len(before)} bookings before the backup, {during} during it")
