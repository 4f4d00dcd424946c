"""Open-file limits for the processes that hold one descriptor per machine.

Mosquitto holds a socket per connected machine and the simulator one per simulated machine.
Under the common default soft limit of 1,024 descriptors a venue of 2,000 machines stalls at
about 1,000; Mosquitto then logs the misleading "denied access by tcpd" (its accept() fails
with EMFILE). The soft limit may be raised by any process up to its hard limit, and children
inherit it, so `plaza up` (and `plaza sim`, `plaza bench`) raise their own soft limit before
starting anything; when the hard limit itself is too low they stop and say so.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

# Descriptors a process needs besides one per machine: the listeners, log and persistence
# files, the services' connections, the database, Python's own imports and pipes.
HEADROOM = 256


class LimitError(RuntimeError):
    """The hard limit is below what was asked for; the message says what to change."""


def needed_for(machines: int) -> int:
    """Descriptors the broker (and the simulator) need for ``machines`` connections."""
    return machines + HEADROOM


@dataclass(frozen=True, slots=True)
class Plan:
    soft: int  # the soft limit to set (unchanged when it is already enough)
    note: str | None  # what to tell the operator, None when nothing changed


def _text(limit: int) -> str:
    return "unlimited" if limit == resource.RLIM_INFINITY else f"{limit:,}"


def plan(needed: int, soft: int, hard: int, who: str, machines: int, players: int = 0) -> Plan:
    """What to do with limits (``soft``, ``hard``) for ``needed`` descriptors (pure);
    ``players``: the simulated players' connections counted in ``needed`` beside the
    machines'."""
    infinite = resource.RLIM_INFINITY
    asked = f"{machines:,} machines" + (f" and {players:,} simulated players" if players else "")
    if hard != infinite and hard < needed:
        raise LimitError(
            f"{who}: {asked} need about {needed:,} open files per process "
            f"(broker, simulator), but the hard limit (ulimit -Hn) is {hard:,}; raise it "
            f"(e.g. LimitNOFILE= in systemd, nofile in /etc/security/limits.conf, "
            f"`ulimit -Hn {needed}` as root) or ask for at most "
            f"{max(0, hard - HEADROOM - players):,} machines"
        )
    if soft != infinite and soft < needed:
        return Plan(
            hard,
            f"{who}: raised the open-file soft limit from {_text(soft)} to {_text(hard)} "
            f"(the hard limit) for the broker and the simulator ({asked} need "
            f"about {needed:,})",
        )
    return Plan(soft, None)


def raise_open_files(machines: int, who: str, players: int = 0) -> str | None:
    """Raise this process's soft RLIMIT_NOFILE (inherited by the children it starts) to the
    hard limit when ``machines`` need more than it; return the note to print, or None.
    Raises :class:`LimitError` before anything starts when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    decided = plan(needed_for(machines + players), soft, hard, who, machines, players)
    if decided.soft != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (decided.soft, hard))
    return decided.note
