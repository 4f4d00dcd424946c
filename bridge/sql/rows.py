"""What the batched path's statements return, and the interface both ways of running them share."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from bridge.models import Outbound, Stored


class SlotRow(NamedTuple):
    id: str
    device_id: str
    player: str
    starts_at: datetime
    ends_at: datetime
    status: str
    code: str


class DeviceRow(NamedTuple):
    id: str
    name: str
    maintenance: bool
    auto_approve: bool


class BatchSql(Protocol):
    def logged(self, keys: Collection[str]) -> list[tuple[str, str]]: ...
    def devices(self, ids: Collection[str]) -> list[DeviceRow]: ...
    def targets(self, ids: Collection[str]) -> list[SlotRow]: ...
    def near(
        self,
        devices: Collection[str],
        players: Collection[str],
        after: datetime,
        before: datetime,
    ) -> list[SlotRow]: ...
    def held(self, players: Collection[str], now: datetime) -> list[tuple[str, int]]: ...
    def check_in_rows(self, device: str, early: datetime, now: datetime) -> list[SlotRow]:
        """The machine's approved reservations under way or starting by ``early``, earliest
        first (a check-in by code picks among them)."""
        ...

    def board_rows(
        self, devices: Collection[str], now: datetime, horizon: datetime
    ) -> list[SlotRow]: ...
    def insert_reservations(self, rows: list[dict[str, Any]]) -> None: ...
    def insert_logs(self, rows: list[dict[str, Any]]) -> None: ...
    def insert_outbox(
        self, messages: list[Outbound], now: datetime, max_packet: int
    ) -> list[Stored]: ...
