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
    party_id: str | None = None
    hold_until: datetime | None = None


class DeviceRow(NamedTuple):
    id: str
    name: str
    maintenance: bool
    auto_approve: bool
    kind: str = "pc"
    zone: str = "main"


class EntryRow(NamedTuple):
    """A waitlist entry."""

    id: str
    player: str
    kind: str
    zone: str | None
    minutes: int
    rank: float
    status: str
    offer_id: str | None


class StandingRow(NamedTuple):
    """A player's no-show standing: the suspension (if any), and the strikes that count."""

    player: str
    suspended_until: datetime | None
    strikes: int


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
    def held(self, players: Collection[str], now: datetime) -> list[tuple[str, int]]:
        """Per player, the live reservations that have not ended, a party counting once."""
        ...

    def check_in_rows(self, device: str, early: datetime, now: datetime) -> list[SlotRow]:
        """The machine's approved reservations under way or starting by ``early``, earliest
        first (a check-in by code picks among them)."""
        ...

    def board_rows(
        self, devices: Collection[str], now: datetime, horizon: datetime
    ) -> list[SlotRow]: ...
    # the booking statements (parties, the waitlist, no-show standing): rarer, so one Core
    # implementation serves both databases (bridge/sql/core.py, ``BookingSql``)
    def party_seats(self, parties: Collection[str]) -> list[SlotRow]:
        """Every seat of the parties, in any status."""
        ...

    def kind_devices(self, kinds: Collection[str]) -> list[DeviceRow]:
        """Every machine of the kinds."""
        ...

    def entries(self, ids: Collection[str], offers: Collection[str]) -> list[EntryRow]:
        """Waitlist entries by id, or by the id of the offer (held reservation) they got."""
        ...

    def live_entries(self, kinds: Collection[str], players: Collection[str]) -> list[EntryRow]:
        """The live (waiting, offered) entries of the kinds' lines, or of the players."""
        ...

    def standing(self, players: Collection[str], window_start: datetime) -> list[StandingRow]:
        """Players with a suspension or strikes: no-shows since ``window_start`` (and since
        their strikes were last reset)."""
        ...

    def insert_reservations(self, rows: list[dict[str, Any]]) -> None: ...
    def insert_logs(self, rows: list[dict[str, Any]]) -> None: ...
    def insert_outbox(
        self, messages: list[Outbound], now: datetime, max_packet: int
    ) -> list[Stored]: ...
