"""`plaza up` raises the open-file soft limit for the broker and simulator, or refuses."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from venue.broker import free_port
from venue.limits import HEADROOM

pytestmark = pytest.mark.integration


def up_with_limits(tmp_path: Path, soft: int, hard: int, devices: int) -> subprocess.Popen[str]:
    flags = ("--mqtt-port", "--ws-port", "--http-port", "--metrics-port")
    ports = [word for flag in flags for word in (flag, str(free_port()))]
    ports += ["--data-dir", str(tmp_path), "--devices", str(devices)]
    return subprocess.Popen(
        [sys.executable, "-m", "venue.cli", "up", *ports],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
    )


def test_plaza_up_stops_before_starting_when_the_hard_limit_is_too_low(tmp_path: Path) -> None:
    proc = up_with_limits(tmp_path, 256, 512, devices=1000)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    players = 8  # plaza up's default simulated players: one connection each
    assert (
        f"error: plaza up: 1,000 machines and {players} simulated players need about "
        f"{1000 + players + HEADROOM:,} open files per process (broker, simulator), but the "
        "hard limit (ulimit -Hn) is 512;"
    ) in out
    assert f"ask for at most {512 - HEADROOM - players} machines" in out
    assert not (tmp_path / "broker").exists(), "nothing was started or written"


def test_plaza_up_raises_a_low_soft_limit_and_says_so(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = min(hard, 4096)
    proc = up_with_limits(tmp_path, 64, hard, devices=3)
    assert proc.stdout is not None
    try:
        first = proc.stdout.readline()
        assert first.startswith(
            f"plaza up: raised the open-file soft limit from 64 to {hard:,} (the hard limit)"
        ), first
        for line in proc.stdout:
            if line.startswith("GamePlaza venue is up"):
                break
        else:
            pytest.fail("the venue did not come up")
        broker_pid = next(
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit()
            and (p / "cmdline").exists()
            and str(tmp_path) in (p / "cmdline").read_text(errors="replace")
            and "mosquitto" in (p / "cmdline").read_text(errors="replace")
        )
        limits = (Path("/proc") / str(broker_pid) / "limits").read_text()
        row = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        assert row.split()[3:5] == [str(hard), str(hard)], row
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
