"""What the batched path's statements return, and the interface every way of running them
shares.

Besides one method per statement, a :class:`BatchSql` answers two whole phases of a batch:
:meth:`~BatchSql.facts` (every read the batch's decisions need) and
:meth:`~BatchSql.write_batch` (the rows it writes, then the boards of the machines it
changed). :class:`InTurn` runs them statement by statement; the PostgreSQL implementation sends
each phase as one pipeline, one server round trip.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, NamedTuple, Protocol, cast

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
    #: its place on the floor map (metres), if placed
    x: float | None = None
    y: float | None = None


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


class FactsAsk(NamedTuple):
    """What a batch's decisions need to know (see :meth:`BatchSql.facts`)."""

    #: request keys whose logged replies are wanted
    keys: Collection[str]
    devices: Collection[str]
    #: reservations the commands name by id
    targets: Collection[str]
    #: players who reserve (their live reservations near the window, and their count)
    players: Collection[str]
    #: the earliest start and the latest end the commands ask for (None: no such command)
    after: datetime | None
    before: datetime | None
    now: datetime


class Facts(NamedTuple):
    logged: list[tuple[str, str]]
    devices: list[DeviceRow]
    targets: list[SlotRow]
    #: the live reservations on ``devices`` or of ``players`` in the window from the earliest
    #: to the latest of the commands' and the targets' times (empty if there is none)
    near: list[SlotRow]
    held: list[tuple[str, int]]


class BoardAsk(NamedTuple):
    devices: Collection[str]
    now: datetime
    horizon: datetime


class BatchWrites(NamedTuple):
    """What a batch writes, and the boards it reads after (see :meth:`BatchSql.write_batch`)."""

    reservations: list[dict[str, Any]]
    logs: list[dict[str, Any]]
    messages: list[Outbound]
    now: datetime
    #: the broker's maximum packet size: a larger outbox message is written dead-lettered
    max_packet: int
    #: the boards to read as the writes leave them (None: none)
    board: BoardAsk | None


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
    def facts(self, ask: FactsAsk) -> Facts:
        """Every read of :class:`FactsAsk` at once."""
        ...

    def write_batch(
        self, writes: BatchWrites, *, commit: bool = False
    ) -> tuple[list[Stored], list[SlotRow]]:
        """Insert the reservations, the log rows and the outbox messages of ``writes`` (as
        :meth:`insert_outbox`), then read its ``board`` as the writes leave it. ``commit``:
        the caller commits the transaction right after, so an implementation may send the
        COMMIT with the writes (the caller's own commit is then a no-op)."""
        ...


class InTurn:
    """:meth:`BatchSql.facts` and :meth:`BatchSql.write_batch` one statement at a time."""

    def facts(self, ask: FactsAsk) -> Facts:
        sql = cast("BatchSql", self)
        targets = sql.targets(ask.targets) if ask.targets else []
        starts = [ask.after] if ask.after else []
        ends = [ask.before] if ask.before else []
        starts += [r.starts_at for r in targets]
        ends += [r.ends_at for r in targets]
        near = []
        if starts and ends:
            near = sql.near(ask.devices, ask.players, min(starts), max(ends))
        return Facts(
            sql.logged(ask.keys) if ask.keys else [],
            sql.devices(ask.devices),
            targets,
            near,
            sql.held(ask.players, ask.now) if ask.players else [],
        )

    def write_batch(
        self, writes: BatchWrites, *, commit: bool = False
    ) -> tuple[list[Stored], list[SlotRow]]:
        sql, board = cast("BatchSql", self), writes.board
        sql.insert_reservations(writes.reservations)
        sql.insert_logs(writes.logs)
        stored = sql.insert_outbox(writes.messages, writes.now, writes.max_packet)
        return stored, sql.board_rows(*board) if board and board.devices else []
