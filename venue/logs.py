"""Size-capped, rotated log files for what `plaza up` runs.

Every child of `plaza up` (mosquitto, bridge, api, simulator) writes to a pipe; a pump thread
per child copies whole lines into a :class:`RotatingLog`, which keeps the current file under
``max_bytes`` and ``backups`` older files beside it (``bridge.log.1`` is the newest), like
:class:`logging.handlers.RotatingFileHandler`. The pipe catches everything a child writes, its
logging, its prints and a traceback it dies with, and the child needs no logging set-up of its
own. The disk a venue's logs can take is bounded: ``max_bytes * (backups + 1)`` per log, plus
at most one line (a line is at most :data:`MAX_LINE` bytes; longer ones are split).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import IO

#: the pump reads at most this much as one line
MAX_LINE = 64 * 1024


class RotatingLog:
    """An append-only file of whole lines, rotated before it would pass ``max_bytes``.

    Thread-safe: a restarted child's pump may write while the old one drains its pipe."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        if max_bytes < 1 or backups < 1:
            raise ValueError("a rotating log needs max_bytes >= 1 and backups >= 1")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self._open()
        self._size = self._fh.tell()

    def _open(self) -> IO[bytes]:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)  # logs hold user names and addresses: owner only
        return os.fdopen(fd, "ab")

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._fh.closed:
                return
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            self._fh.write(data)
            self._fh.flush()
            self._size += len(data)

    def _rotate(self) -> None:
        self._fh.close()
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._fh = self._open()
        self._size = 0

    def note(self, text: str) -> None:
        """A line from the supervisor itself (a restart, a wedge), marked as such."""
        self.write(f"--- plaza up: {text}\n".encode())

    def close(self) -> None:
        with self._lock:
            self._fh.close()


def pump(stream: IO[bytes], log: RotatingLog) -> threading.Thread:
    """Copy ``stream`` (a child's stdout) into ``log`` line by line until it ends."""

    def run() -> None:
        try:
            while line := stream.readline(MAX_LINE):
                log.write(line)
        except (OSError, ValueError):
            pass  # the pipe or the log was closed under us at shutdown
        finally:
            stream.close()

    thread = threading.Thread(target=run, name=f"log-{log.path.name}", daemon=True)
    thread.start()
    return thread
