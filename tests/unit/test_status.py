"""`plaza status` decides from its facts alone: what needs attention, and the screen."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from venue.runstate import ProcessState, SupervisorState
from venue.status import Facts, assess, render

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0


def healthy() -> Facts:
    processes = [
        ProcessState(name, True, 100 + i, NOW - 3600, 0)
        for i, name in enumerate(("mosquitto", "bridge", "api", "sim"))
    ]
    return Facts(
        now=NOW,
        head="0011",
        data_dir=Path("/srv/plaza"),
        supervisor=SupervisorState(
            pid=99, started_at=NOW - 7200, updated_at=NOW - 1, database_url="", processes=processes
        ),
        supervisor_alive=True,
        database="sqlite+aiosqlite:////srv/plaza/plaza.db",
        machines_online=18,
        machines=20,
        commands_last_minute=42,
        p99_seconds=0.005,
        revision="0011",
        database_bytes=5 * 1024 * 1024,
        last_backup={"at": NOW - 3 * 3600, "file": "/backups/plaza-1.tar.gz", "bytes": 2048},
    )


def test_a_healthy_venue_needs_nothing_and_shows_every_figure() -> None:
    facts = healthy()
    assert assess(facts) == []
    screen = render(facts, [])
    for line in (
        "plaza up      up 2h00m (pid 99)",
        "  bridge      up 60m       restarts 0",
        "machines      18/20 online",
        "commands      42/min, p99 <= 5 ms (last minute, bridge metrics)",
        "alerts        0 unacknowledged",
        "dead letters  0",
        "schema        revision 0011 (this release: 0011)",
        "database      sqlite, 5.0 MiB",
        "last backup   3h00m ago (/backups/plaza-1.tar.gz, 2.0 KiB)",
        "all well",
    ):
        assert line in screen.splitlines(), screen


def test_each_thing_that_needs_staff_gets_its_own_attention_line() -> None:
    facts = healthy()
    assert facts.supervisor is not None
    down = replace(
        facts.supervisor.processes[1],
        up=False,
        started_at=None,
        restarts=3,
        last_exit="was killed by SIGKILL",
    )
    facts = replace(
        facts,
        supervisor=replace(facts.supervisor, processes=[facts.supervisor.processes[0], down]),
        unacknowledged_alerts=2,
        oldest_alert_at=NOW - 600,
        dead_letters=1,
        revision="0010",
        last_backup={"at": NOW - 3 * 86400},
    )
    attention = assess(facts)
    assert [a.split(" ", 2)[:2] for a in attention] == [
        ["bridge", "is"],
        ["2", "unacknowledged"],
        ["1", "dead-lettered"],
        ["schema", "revision"],
        ["the", "last"],
    ]
    screen = render(facts, attention)
    assert "  bridge      DOWN         restarts 3 (last: was killed by SIGKILL)" in screen
    assert "alerts        2 unacknowledged (oldest 10m ago)" in screen
    assert "attention: the last backup is 3d00h old (more than 26h00m)" in screen


def test_a_supervisor_that_stopped_writing_is_down_and_no_backup_at_all_is_said() -> None:
    facts = healthy()
    assert facts.supervisor is not None
    stale = replace(
        facts, supervisor=replace(facts.supervisor, updated_at=NOW - 60), last_backup=None
    )
    attention = assess(stale)
    assert attention[0] == "plaza up is not running: start the venue (`plaza up`)"
    assert attention[-1].startswith("no backup yet")
    assert "plaza up      DOWN: gone, last seen 60s ago" in render(stale, attention)
    # without a data dir (a URL only) neither processes nor backups are known or asked for
    url_only = replace(healthy(), data_dir=None, supervisor=None, last_backup=None)
    assert assess(url_only) == []
    assert "processes     not known" in render(url_only, [])


def test_an_unreadable_database_is_said_and_nothing_else_is_guessed() -> None:
    facts = replace(healthy(), database_error="connection refused")
    attention = assess(facts)
    assert attention == ["the database cannot be read: connection refused"]
    assert "database      UNREADABLE: connection refused" in render(facts, attention)
