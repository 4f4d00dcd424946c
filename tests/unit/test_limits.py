"""venue.limits: the open-file soft limit is raised up to the hard limit, or refused."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from venue.limits import HEADROOM, LimitError, needed_for, plan


def test_a_soft_limit_below_what_the_machines_need_is_raised_to_the_hard_limit() -> None:
    decided = plan(needed_for(2000), 1024, 524288, "plaza up", 2000)
    assert decided.soft == 524288
    assert decided.note == (
        "plaza up: raised the open-file soft limit from 1,024 to 524,288 (the hard limit) for "
        f"the broker and the simulator (2,000 machines need about {2000 + HEADROOM:,})"
    )


def test_a_soft_limit_that_is_enough_is_left_alone_and_nothing_is_said() -> None:
    decided = plan(needed_for(20), 1024, 4096, "plaza up", 20)
    assert decided.soft == 1024
    assert decided.note is None


def test_an_unlimited_hard_limit_is_raised_to() -> None:
    decided = plan(needed_for(5000), 1024, resource.RLIM_INFINITY, "plaza up", 5000)
    assert decided.soft == resource.RLIM_INFINITY
    assert decided.note is not None
    assert "to unlimited" in decided.note


def test_a_hard_limit_too_low_for_the_machines_says_exactly_that() -> None:
    with pytest.raises(LimitError) as caught:
        plan(needed_for(2000), 1024, 1500, "plaza up", 2000)
    message = str(caught.value)
    assert message.startswith(
        f"plaza up: 2,000 machines need about {2000 + HEADROOM:,} open files per process "
        "(broker, simulator), but the hard limit (ulimit -Hn) is 1,500;"
    )
    assert f"ask for at most {1500 - HEADROOM:,} machines" in message


def _limits_in_child(soft: int, hard: int, machines: int) -> subprocess.CompletedProcess[str]:
    code = (
        "import resource\n"
        "from venue.limits import raise_open_files\n"
        f"print(raise_open_files({machines}, 'plaza sim'))\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
    )


def test_the_process_limit_really_changes_and_children_would_inherit_it() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = min(hard, 8192)
    done = _limits_in_child(300, hard, 500)
    assert done.returncode == 0, done.stderr
    note, limits = done.stdout.splitlines()
    assert note.startswith(f"plaza sim: raised the open-file soft limit from 300 to {hard:,}")
    assert limits == f"({hard}, {hard})"
