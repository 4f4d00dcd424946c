"""Per-machine connection epochs, persisted across simulator restarts (a JSON file)."""

from __future__ import annotations

import json
import os
from pathlib import Path


class EpochStore:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._epochs: dict[str, int] = {}
        if path is not None and path.exists():
            self._epochs = {k: int(v) for k, v in json.loads(path.read_text()).items()}

    def current(self, device: str) -> int:
        return self._epochs.get(device, 0)

    def bump(self, device: str) -> int:
        """The epoch for a new connection: one more than any epoch used before."""
        epoch = self._epochs.get(device, 0) + 1
        self._epochs[device] = epoch
        self._save()
        return epoch

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._epochs))
        os.replace(tmp, self.path)
