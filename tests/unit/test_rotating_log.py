"""venue.logs: every log `plaza up` writes is capped and rotated (issue 13, finding 10)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from venue.logs import MAX_LINE, RotatingLog, pump

pytestmark = pytest.mark.unit


def files(log: RotatingLog) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(log.path.parent.iterdir())}


def test_a_log_rotates_before_passing_its_size_and_keeps_only_its_backups(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "bridge.log", max_bytes=100, backups=2)
    lines = [f"line {i:03d} {'x' * 20}\n".encode() for i in range(20)]  # 30 bytes each
    for line in lines:
        log.write(line)
    log.close()
    kept = files(log)
    assert sorted(kept) == ["bridge.log", "bridge.log.1", "bridge.log.2"]
    assert all(len(data) <= 100 for data in kept.values())
    # whole lines only, oldest in .2, newest in bridge.log, nothing lost inside what is kept
    kept_in_order = kept["bridge.log.2"] + kept["bridge.log.1"] + kept["bridge.log"]
    assert b"".join(lines).endswith(kept_in_order)
    assert all(data.endswith(b"\n") and len(data) % 30 == 0 for data in kept.values())
    assert kept["bridge.log"].endswith(lines[-1])


def test_a_reopened_log_counts_what_is_already_there(tmp_path: Path) -> None:
    path = tmp_path / "api.log"
    path.write_bytes(b"y" * 90)
    log = RotatingLog(path, max_bytes=100, backups=1)
    log.write(b"0123456789abc\n")
    log.close()
    assert (tmp_path / "api.log.1").read_bytes() == b"y" * 90
    assert path.read_bytes() == b"0123456789abc\n"


def test_log_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "sim.log"
    path.write_bytes(b"")
    os.chmod(path, 0o644)
    log = RotatingLog(path, max_bytes=10, backups=1)
    log.write(b"a line longer than ten\n")
    log.write(b"another\n")
    log.close()
    for p in (path, tmp_path / "sim.log.1"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_a_child_s_output_is_pumped_whole_lines_including_its_dying_traceback(
    tmp_path: Path,
) -> None:
    log = RotatingLog(tmp_path / "child.log", max_bytes=1_000_000, backups=1)
    code = "print('hello'); print('z' * 70000); raise SystemExit('bye')"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    thread = pump(proc.stdout, log)
    proc.wait(timeout=10)
    thread.join(timeout=5)
    log.close()
    everything = (tmp_path / "child.log").read_bytes()
    assert everything.startswith(b"hello\n")
    assert everything.endswith(b"bye\n")
    assert everything.count(b"z") == 70000, "a line longer than MAX_LINE is split, not lost"
    assert MAX_LINE < 70000


def test_nonsense_limits_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        RotatingLog(tmp_path / "x.log", max_bytes=0, backups=1)
