"""What `plaza up` records of itself for `plaza status` and `plaza backup`: ``DIR/supervisor.json``.

The supervisor rewrites it about every second (temporary file, rename): its own pid, when it
started, the database URL its services use, their ports, and per process (mosquitto, nginx
under TLS, bridge, api, sim) whether it runs, since when, how often it was restarted and how
it last ended. A file whose ``updated_at`` is old, or whose pid is gone, is a supervisor that
died; a clean stop says ``stopped``. Times are Unix seconds.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FILE = "supervisor.json"


@dataclass(frozen=True, slots=True)
class ProcessState:
    name: str
    up: bool
    pid: int | None
    #: when the running process started (Unix seconds); None while it is down
    started_at: float | None
    restarts: int = 0
    #: how it last ended ("was killed by SIGKILL", "exited with code 1"), if it ever did
    last_exit: str | None = None


@dataclass(frozen=True, slots=True)
class SupervisorState:
    pid: int
    started_at: float
    updated_at: float
    database_url: str
    ports: dict[str, int] = field(default_factory=dict)
    processes: list[ProcessState] = field(default_factory=list)
    stopped: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SupervisorState:
        processes = [ProcessState(**p) for p in data.get("processes", [])]
        return cls(**{**data, "processes": processes})


def write(data_dir: Path, state: SupervisorState) -> None:
    path = data_dir / FILE
    tmp = path.with_name(f".{FILE}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state.to_json(), fh, indent=1)
    tmp.replace(path)


def read(data_dir: Path) -> SupervisorState | None:
    """The recorded state, or None when there is none (never run here) or it is unreadable."""
    try:
        return SupervisorState.from_json(json.loads((data_dir / FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
