"""The README's first command: `plaza up` runs the venue, reports it, and stops cleanly."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from venue.broker import free_port, port_is_free

pytestmark = pytest.mark.integration


def plaza(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "venue.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def test_plaza_up_runs_the_venue_prints_one_summary_and_stops_every_child(
    tmp_path: Path,
) -> None:
    ports = [free_port() for _ in range(3)]
    proc = plaza(
        "up",
        "--devices",
        "4",
        "--data-dir",
        str(tmp_path),
        "--mqtt-port",
        str(ports[0]),
        "--ws-port",
        str(ports[1]),
        "--http-port",
        str(ports[2]),
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Press Ctrl-C"):
            break
    output = "".join(lines)
    assert "GamePlaza venue is up" in output, output
    # the 4 simulated machines and the demo's 2 desk consoles (no agent: always online)
    assert "6 machines online" in output
    assert f"mqtt://127.0.0.1:{ports[0]}" in output
    assert f"ws://127.0.0.1:{ports[1]}/" in output
    assert f"http://127.0.0.1:{ports[2]}" in output
    creds = json.loads((tmp_path / "credentials.json").read_text())
    assert set(creds) == {"observer", "admin", "players"}
    assert [p["username"] for p in creds["players"]] == ["player1", "player2", "player3"]
    assert oct((tmp_path / "credentials.json").stat().st_mode & 0o777) == "0o600"

    children = children_of(proc.pid)
    assert len(children) == 4, "mosquitto, bridge, api and sim run as children"
    # Watch it live with plain mosquitto_sub, as the summary says, under the bound client id.
    observer = creds["observer"]
    assert observer["client_id"] == "plaza-observer"
    watch = ["mosquitto_sub", "-p", str(ports[0]), "-u", "observer", "-P", observer["password"]]
    live = ["-t", "plaza/board/+", "-C", "4", "-W", "5"]
    sub = subprocess.run(
        [*watch, "-i", observer["client_id"], *live], capture_output=True, text=True, check=False
    )
    assert sub.returncode == 0, sub.stderr
    assert len(sub.stdout.splitlines()) == 4
    unbound = subprocess.run([*watch, *live], capture_output=True, text=True, check=False)
    assert unbound.returncode != 0, "any other client id is refused"
    assert "not authorised" in unbound.stderr.lower(), unbound.stderr
    anonymous = subprocess.run(
        ["mosquitto_sub", "-p", str(ports[0]), "-t", "#", "-C", "1", "-W", "2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert anonymous.returncode != 0
    assert "not authorised" in anonymous.stderr.lower()

    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    assert "venue stopped." in rest
    for pid in children:
        assert not Path(f"/proc/{pid}").exists(), f"child {pid} outlived plaza up"
    assert port_is_free(ports[0]), "the broker's port is free again"


def test_plaza_up_refuses_a_busy_port_that_was_asked_for_and_names_the_flag(
    tmp_path: Path,
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = plaza("up", "--data-dir", str(tmp_path), "--mqtt-port", str(port))
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert f"port {port} for MQTT is busy; choose another with --mqtt-port" in out


def test_plaza_up_moves_off_a_busy_default_port_and_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from venue.up import choose_port

    taken: set[int] = set()
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))  # noqa: S104
        busy.listen()
        default = busy.getsockname()[1]
        chosen = choose_port("MQTT", "--mqtt-port", None, default, taken)
    assert chosen != default
    assert taken == {chosen}
    note = capsys.readouterr().out
    assert (
        f"MQTT default port {default} is busy; using {chosen} (set --mqtt-port to choose)" in note
    )


def test_plaza_ups_demo_players_book_and_the_simulated_desk_approves_them(
    tmp_path: Path,
) -> None:
    """Issue 18: a fresh venue has simulated players with their own accounts (not the ones
    handed to people) who book machines a little ahead, and staff at the simulated desk
    who approve those bookings through the api."""
    ports = [free_port() for _ in range(3)]
    proc = plaza(
        "up",
        "--devices",
        "3",
        "--players",
        "3",
        "--data-dir",
        str(tmp_path),
        "--mqtt-port",
        str(ports[0]),
        "--ws-port",
        str(ports[1]),
        "--http-port",
        str(ports[2]),
    )
    assert proc.stdout is not None
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (lines and lines[-1].startswith("Press")):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        output = "".join(lines)
        assert "Simulated players 3 book ahead" in output, output
        players = json.loads((tmp_path / "players.json").read_text())
        assert sorted(players) == ["sim-player-001", "sim-player-002", "sim-player-003"]
        assert oct((tmp_path / "players.json").stat().st_mode & 0o777) == "0o600"
        creds = json.loads((tmp_path / "credentials.json").read_text())
        assert [p["username"] for p in creds["players"]] == ["player1", "player2", "player3"]
        approved: list[tuple[str, str]] = []
        deadline = time.monotonic() + 60  # players spread their first booking over 30 s
        while time.monotonic() < deadline and not approved:
            time.sleep(1)
            with contextlib.closing(sqlite3.connect(tmp_path / "plaza.db")) as db:
                approved = db.execute(
                    "SELECT player, status FROM reservation "
                    "WHERE player LIKE 'sim-player-%' AND status = 'approved'"
                ).fetchall()
        assert approved, (tmp_path / "logs" / "sim.log").read_text()[-3000:]
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    sim_log = (tmp_path / "logs" / "sim.log").read_text()
    assert "and 3 players against" in sim_log
    assert "desk: " in sim_log
