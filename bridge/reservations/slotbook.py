"""SlotBook: the in-memory facts of a batch, and the rules' Context for each of its jobs.

The one fact loader of both of the committer's paths (a batch, or one job in its savepoint).
:meth:`SlotBook.load` reads every fact the jobs can need with a handful of statements
(:class:`bridge.sql.BatchSql`): the replies already logged for their request keys, the
reservations their commands name (by id, or by the code typed on the machine) and the seats
of the parties those belong to, the waitlist entries they name (or whose offers they name),
their machines (the one a command came on, a move's destination, a party's, and every machine
of a kind a party or a line is about), the lines in question, the live reservations near
their slots (on those machines or of their players), each player's count of active
reservations and their no-show standing. :meth:`SlotBook.context` builds one job's
:class:`~plaza.rules.Context` from them, and :meth:`SlotBook.record` folds the decision back
in, so the next job of the batch sees it: a reservation made earlier in the batch blocks a
later overlapping one, and counts under its player's cap; a move frees its old slot; a party's
seats block every one of their machines; an offer takes its entry out of the running.

Correct because within one bridge the committer is the only writer, and it decides every job
(of any machine, or of the venue) one after another; across bridges, SQL constraints refuse
what a stale picture let through (the batch is then redone on the careful path).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from bridge.reservations.actors import Job
from bridge.reservations.effects import DeviceFacts
from bridge.reservations.slots import entry_of, slot_of
from bridge.sql import BatchSql, DeviceRow, FactsAsk
from plaza import rules
from plaza.messages import Reply
from plaza.waitlist import positions

Span = tuple[datetime, datetime]
#: ops whose player (the actor) must not clash with their own reservations
_BOOKS = frozenset({rules.Op.RESERVE, rules.Op.RESERVE_PARTY, rules.Op.JOIN_WAITLIST})
#: ops on a reservation whose owner's own reservations matter
_OWNER_CHECKS = frozenset({rules.Op.EXTEND, rules.Op.MOVE, rules.Op.TAKE})
#: ops that read a line of the waitlist
_LINE_OPS = frozenset({rules.Op.JOIN_WAITLIST, rules.Op.OFFER, rules.Op.MOVE_ENTRY})


def _fresh_id() -> str:
    return uuid.uuid4().hex[:16]


def _fresh_code() -> str:
    return f"{secrets.randbelow(10**6):06d}"


def make_context(
    policy: rules.Policy,
    now: datetime,
    device: DeviceFacts | None,
    device_slots: tuple[rules.Slot, ...],
    player_slots: tuple[rules.Slot, ...],
    target: rules.Slot | None,
    held: int | None = None,
    replaced: rules.Slot | None = None,
    **more: Any,
) -> rules.Context:
    """A command's facts, with a fresh id and check-in code for a reservation it may make."""
    return rules.Context(
        now=now,
        policy=policy,
        device_exists=device is not None,
        maintenance=bool(device and device.maintenance),
        auto_approve=bool(device and device.auto_approve),
        device_slots=device_slots,
        player_slots=player_slots,
        target=target,
        new_id=_fresh_id(),
        new_code=_fresh_code(),
        player_active_count=held,
        replaced=replaced,
        **more,
    )


def window(cmd: rules.Command, target: Any, now: datetime) -> tuple[datetime, datetime]:
    """The time span whose reservations matter to ``cmd``: the requested slot, else the
    target reservation's (a row or a Slot), else just now."""
    if cmd.op is rules.Op.RESERVE and cmd.starts_at and cmd.ends_at:
        return cmd.starts_at, cmd.ends_at
    if target is not None:
        return target.starts_at, target.ends_at
    return now, now


class SlotBook:
    """The facts of one batch (see the module docstring)."""

    def __init__(self, policy: rules.Policy, now: datetime) -> None:
        self.policy = policy
        self.now = now
        self.slots: dict[str, rules.Slot] = {}
        self.by_device: dict[str, set[str]] = {}
        self.by_player: dict[str, set[str]] = {}
        #: a party's seats, or a reservation of its own, by its group (rules.Slot.group)
        self.by_group: dict[str, set[str]] = {}
        #: per player: active reservations that have not ended, a party counting once (the cap)
        self.held: dict[str, int] = {}
        #: replies already given, by request key (a retry is answered with the same one)
        self.logged: dict[str, Reply] = {}
        self.devices: dict[str, DeviceRow] = {}
        #: (machine, code) -> the reservation a check-in by that code on that machine names
        self.by_code: dict[tuple[str, str], str] = {}
        #: waitlist entries, and which entry an offer (held reservation) is for
        self.entries: dict[str, rules.Entry] = {}
        self.by_offer: dict[str, str] = {}
        #: kinds whose every machine is loaded, and whose every live entry is
        self.kinds: set[str] = set()
        self.lines: set[str] = set()
        #: per player: (suspended until, strikes) as SQL (and this batch) left them
        self.standing: dict[str, tuple[datetime | None, int]] = {}
        self._names: dict[str, str] | None = None

    @classmethod
    def load(
        cls, sql: BatchSql, jobs: Sequence[Job], policy: rules.Policy, now: datetime
    ) -> SlotBook:
        book = cls(policy, now)
        keys = [j.request_key for j in jobs if j.request_key]
        device_ids = {j.device_id for j in jobs}
        cmds = [j.command for j in jobs if j.command is not None]
        target_ids = {c.reservation_id for c in cmds if c.reservation_id}
        target_ids |= {c.replaces for c in cmds if c.replaces}
        if not all(_plain(c) for c in cmds):
            return book._load_in_turn(sql, jobs, keys, cmds, target_ids)
        players = {c.actor.user for c in cmds if c.op is rules.Op.RESERVE}
        starts = [c.starts_at for c in cmds if c.starts_at]
        ends = [c.ends_at for c in cmds if c.ends_at]
        facts = sql.facts(
            FactsAsk(
                keys,
                device_ids,
                target_ids,
                players,
                min(starts, default=None),
                max(ends, default=None),
                now,
            )
        )
        book.logged = {key: Reply.model_validate_json(text) for key, text in facts.logged}
        book.devices = {d.id: d for d in facts.devices}
        for row in facts.targets + facts.near:
            if row.id not in book.slots:
                book.add(slot_of(row))
        book.held = dict(facts.held)
        if any(s.party_id or s.status is rules.Status.HELD for s in book.slots.values()):
            # a target that is a party's seat or a waitlist offer: its party and entry too
            book._load_booking(sql, jobs, cmds)
        book._load_standing(sql, cmds)
        return book

    def _load_in_turn(
        self,
        sql: BatchSql,
        jobs: Sequence[Job],
        keys: list[str],
        cmds: list[rules.Command],
        target_ids: set[str],
    ) -> SlotBook:
        """:meth:`load` statement by statement, for batches with booking commands (parties,
        the waitlist, extend and move: what they read depends on what the first reads
        found) or a check-in by code (its row, found first, widens the window)."""
        now = self.now
        self.logged = {key: Reply.model_validate_json(text) for key, text in sql.logged(keys)}
        if target_ids:
            for row in sql.targets(target_ids):
                self.add(slot_of(row))
        for cmd in cmds:
            if _by_code(cmd) and cmd.code and (cmd.device_id, cmd.code) not in self.by_code:
                self._find_by_code(sql, cmd.device_id, cmd.code)
        self._load_booking(sql, jobs, cmds)
        spans = [s for s in (self.span(c) for c in cmds) if s is not None]
        players = {p for p in (self.person(c) for c in cmds) if p}
        players |= {e.user for kind in self._offered_kinds(cmds) for e in self.line(kind)}
        if spans:
            start = min(s[0] for s in spans)
            end = max(s[1] for s in spans)
            for row in sql.near(set(self.devices), players, start, end):
                if row.id not in self.slots:
                    self.add(slot_of(row))
        counted = {c.actor.user for c in cmds if c.op in _BOOKS}
        counted |= {t.user for c in cmds if c.op is rules.Op.TAKE and (t := self.target(c))}
        if counted:
            self.held = dict(sql.held(counted, now))
        self._load_standing(sql, cmds)
        return self

    def _load_standing(self, sql: BatchSql, cmds: list[rules.Command]) -> None:
        """The no-show standing of the players whose booking it may stop or change."""
        standing = {c.actor.user for c in cmds if c.op in rules.BOOKING_OPS}
        standing |= {e.user for kind in self._offered_kinds(cmds) for e in self.line(kind)}
        standing |= {t.user for c in cmds if c.op is rules.Op.NO_SHOW and (t := self.target(c))}
        if standing:
            window_start = self.now - self.policy.no_show_window
            for stand in sql.standing(standing, window_start):
                self.standing[stand.player] = (stand.suspended_until, stand.strikes)

    def _load_booking(self, sql: BatchSql, jobs: Sequence[Job], cmds: list[rules.Command]) -> None:
        """Waitlist entries, party seats and machines (see the module docstring): statements
        only a batch with such commands runs."""
        entry_ids = {c.entry_id for c in cmds if c.entry_id}
        offers = {s.id for s in self.slots.values() if s.status is rules.Status.HELD}
        for found in sql.entries(entry_ids, offers):
            self.add_entry(entry_of(found))
        holds = {
            e.offer_id
            for e in self.entries.values()
            if e.offer_id and e.offer_id not in self.slots and e.status is rules.EntryStatus.OFFERED
        }
        if holds:
            for row in sql.targets(holds):
                self.add(slot_of(row))
        parties = {c.party_id for c in cmds if c.party_id}
        parties |= {s.party_id for s in self.slots.values() if s.party_id}
        for row in sql.party_seats(parties):
            if row.id not in self.slots:
                self.add(slot_of(row))
        wanted = {j.device_id for j in jobs}
        for cmd in cmds:
            wanted.update(cmd.devices)
            if cmd.to_device:
                wanted.add(cmd.to_device)
        wanted |= {s.device_id for s in self.slots.values()}
        self.devices = {d.id: d for d in sql.devices(wanted)}
        kinds = {c.kind for c in cmds if c.kind and c.op in _BOOKS and not c.devices}
        kinds |= self._offered_kinds(cmds)
        kinds |= {e.kind for c in cmds if (e := self.entry(c)) is not None}
        for device in sql.kind_devices(kinds):
            self.devices[device.id] = device
        self.kinds |= kinds
        lines = {k for c in cmds if c.op in _LINE_OPS and (k := self._line_kind(c))}
        joiners = {c.actor.user for c in cmds if c.op is rules.Op.JOIN_WAITLIST}
        for waiting in sql.live_entries(lines, joiners):
            if waiting.id not in self.entries:
                self.add_entry(entry_of(waiting))
        self.lines |= lines

    def _offered_kinds(self, cmds: list[rules.Command]) -> set[str]:
        return {
            self.devices[c.device_id].kind
            for c in cmds
            if c.op is rules.Op.OFFER and c.device_id in self.devices
        }

    def _find_by_code(self, sql: BatchSql, device: str, code: str) -> None:
        """The machine's approved reservation with this code, else its current approved one
        (so a wrong code is answered ``bad_code``, not ``not_found``)."""
        rows = sql.check_in_rows(device, self.now + self.policy.check_in_early, self.now)
        row = next((r for r in rows if r.code == code), rows[0] if rows else None)
        if row is not None:
            self.add(slot_of(row))
            self.by_code[(device, code)] = row.id

    def names(self) -> dict[str, str]:
        """The machines' names by id (what notifications call them)."""
        if self._names is None:
            self._names = {d.id: d.name for d in self.devices.values()}
        return self._names

    # -- the facts ------------------------------------------------------------------------------
    def add(self, slot: rules.Slot) -> None:
        """Know ``slot`` (new, or as it is now: a move leaves its old machine)."""
        old = self.slots.get(slot.id)
        if old is not None and old.device_id != slot.device_id:
            self.by_device.get(old.device_id, set()).discard(slot.id)
        self.slots[slot.id] = slot
        self.by_device.setdefault(slot.device_id, set()).add(slot.id)
        self.by_player.setdefault(slot.user, set()).add(slot.id)
        self.by_group.setdefault(slot.group, set()).add(slot.id)

    def add_entry(self, entry: rules.Entry) -> None:
        self.entries[entry.id] = entry
        if entry.offer_id:
            self.by_offer[entry.offer_id] = entry.id

    def _near(self, ids: set[str], span: Span) -> tuple[rules.Slot, ...]:
        return tuple(
            slot
            for slot in (self.slots[i] for i in ids)
            if slot.status in rules.ACTIVE and slot.overlaps(*span)
        )

    def target(self, cmd: rules.Command) -> rules.Slot | None:
        """The reservation ``cmd`` names: by id, or for a check-in on the machine by code, or
        for leaving the waitlist the entry's held machine."""
        if cmd.reservation_id:
            return self.slots.get(cmd.reservation_id)
        if _by_code(cmd) and cmd.code:
            found = self.by_code.get((cmd.device_id, cmd.code))
            return self.slots.get(found) if found else None
        if cmd.op is rules.Op.LEAVE_WAITLIST and (entry := self.entry(cmd)) is not None:
            return self.slots.get(entry.offer_id) if entry.offer_id else None
        return None

    def entry(self, cmd: rules.Command) -> rules.Entry | None:
        """The waitlist entry ``cmd`` names, or whose offer its target is."""
        if cmd.entry_id:
            return self.entries.get(cmd.entry_id)
        if cmd.reservation_id and cmd.reservation_id in self.by_offer:
            return self.entries.get(self.by_offer[cmd.reservation_id])
        return None

    def line(self, kind: str) -> list[rules.Entry]:
        """The live entries of ``kind``'s line, in order."""
        live = (e for e in self.entries.values() if e.status in rules.LIVE_ENTRIES)
        return sorted((e for e in live if e.kind == kind), key=lambda e: (e.rank, e.id))

    def position(self, entry: rules.Entry | None) -> int | None:
        """``entry``'s place in its line as the batch stands (None: not in a loaded line)."""
        if entry is None or entry.kind not in self.lines:
            return None
        return positions(self.line(entry.kind)).get(entry.id)

    def _line_kind(self, cmd: rules.Command) -> str | None:
        if cmd.op is rules.Op.JOIN_WAITLIST:
            return cmd.kind
        if cmd.op is rules.Op.OFFER:
            device = self.devices.get(cmd.device_id)
            return device.kind if device else None
        entry = self.entry(cmd)
        return entry.kind if entry else None

    def person(self, cmd: rules.Command) -> str | None:
        """Whose own reservations ``cmd`` is checked against."""
        if cmd.op in _BOOKS:
            return cmd.actor.user
        if cmd.op in _OWNER_CHECKS and (target := self.target(cmd)) is not None:
            return target.user
        return None

    def span(self, cmd: rules.Command) -> Span | None:
        """The time span whose reservations matter to ``cmd`` (None: none do)."""
        target = self.target(cmd)
        op = cmd.op
        if op in (rules.Op.RESERVE, rules.Op.RESERVE_PARTY):
            if cmd.starts_at and cmd.ends_at:
                return cmd.starts_at, cmd.ends_at
            return None
        if op is rules.Op.OFFER:
            kind = self._line_kind(cmd)
            longest = max((e.minutes for e in self.line(kind)), default=0) if kind else 0
            return self.now, self.now + timedelta(minutes=longest)
        if target is None:
            seats = self._party(cmd, None)
            if not seats:
                return None
            return min(s.starts_at for s in seats), max(s.ends_at for s in seats)
        start, end = target.starts_at, target.ends_at
        if op is rules.Op.EXTEND and cmd.ends_at:
            end = max(end, cmd.ends_at)
        if op is rules.Op.MOVE:
            new_start = cmd.starts_at or start
            new_end = cmd.ends_at or new_start + (end - start)
            start, end = min(start, new_start), max(end, new_end)
        for seat in self._party(cmd, target):
            start, end = min(start, seat.starts_at), max(end, seat.ends_at)
        return start, end

    def _party(self, cmd: rules.Command, target: rules.Slot | None) -> list[rules.Slot]:
        group = cmd.party_id or (target.party_id if target else "")
        if not group:
            return []
        return sorted((self.slots[i] for i in self.by_group.get(group, ())), key=lambda s: s.id)

    def _machines(
        self, cmd: rules.Command, target: rules.Slot | None, span: Span
    ) -> dict[str, rules.Machine]:
        """The machines ``cmd`` may touch, with their active slots in ``span``."""
        ids = {cmd.device_id, *cmd.devices}
        if cmd.to_device:
            ids.add(cmd.to_device)
        if target is not None:
            ids.add(target.device_id)
        ids |= {s.device_id for s in self._party(cmd, target)}
        kind = cmd.kind if cmd.op in _BOOKS and not cmd.devices else None
        if kind is not None:
            ids |= {d.id for d in self.devices.values() if d.kind == kind}
        machines = {}
        for device_id in ids:
            device = self.devices.get(device_id)
            if device is None:
                continue
            machines[device_id] = rules.Machine(
                device.id,
                device.kind,
                device.zone,
                bool(device.maintenance),
                bool(device.auto_approve),
                self._near(self.by_device.get(device_id, set()), span),
                None if device.x is None or device.y is None else (device.x, device.y),
            )
        return machines

    def context(self, job: Job, cmd: rules.Command) -> rules.Context:
        """The facts of ``cmd`` (``job``'s command) as the batch stands now."""
        target = self.target(cmd)
        span = self.span(cmd) or window(cmd, target, self.now)
        person = self.person(cmd)
        mine = self.by_player.get(person, set()) if person else set()
        more = self._standing_of(cmd, target)
        if not _touches_more(cmd, target):  # the hot path: one machine's facts
            held: int | None = self.held.get(cmd.actor.user, 0)
            more["replaced"] = self.slots.get(cmd.replaces) if cmd.replaces else None
        else:
            held = self.held.get(person, 0) if person else None
            more.update(self._booking_facts(cmd, target, span))
        return make_context(
            self.policy,
            self.now,
            self.devices.get(job.device_id),
            self._near(self.by_device.get(job.device_id, set()), span),
            self._near(mine, span),
            target,
            held=held,
            **more,
        )

    def _booking_facts(
        self, cmd: rules.Command, target: rules.Slot | None, span: Span
    ) -> dict[str, Any]:
        """What the booking ops need beyond one machine: the machines they touch, a party's
        seats, fresh ids and codes for a party, the waitlist entry and line."""
        kind = self._line_kind(cmd)
        line = tuple(self.line(kind)) if kind else ()
        player_entries: tuple[rules.Entry, ...] = ()
        if cmd.op is rules.Op.JOIN_WAITLIST:
            live = (e for e in self.entries.values() if e.status in rules.LIVE_ENTRIES)
            player_entries = tuple(e for e in live if e.user == cmd.actor.user)
        line_slots: tuple[rules.Slot, ...] = ()
        suspended: frozenset[str] = frozenset()
        if cmd.op is rules.Op.OFFER:
            waiting = {e.user for e in line}
            line_slots = tuple(
                s for user in waiting for s in self._near(self.by_player.get(user, set()), span)
            )
            suspended = frozenset(
                user
                for user in waiting
                if (until := self.standing.get(user, (None, 0))[0]) is not None and until > self.now
            )
        fresh = 0
        if cmd.op is rules.Op.RESERVE_PARTY:
            fresh = min(cmd.seats or len(cmd.devices) or 1, self.policy.max_party_seats)
        return {
            "machines": self._machines(cmd, target, span),
            "party": tuple(self._party(cmd, target)),
            "new_ids": tuple(_fresh_id() for _ in range(fresh)),
            "new_codes": tuple(_fresh_code() for _ in range(fresh)),
            "entry": self.entry(cmd),
            "line": line,
            "player_entries": player_entries,
            "line_slots": line_slots,
            "suspended": suspended,
        }

    def _standing_of(self, cmd: rules.Command, target: rules.Slot | None) -> dict[str, Any]:
        facts: dict[str, Any] = {}
        until, _ = self.standing.get(cmd.actor.user, (None, 0))
        if until is not None:
            facts["suspended_until"] = until
        if cmd.op is rules.Op.NO_SHOW and target is not None:
            facts["strikes"] = self.standing.get(target.user, (None, 0))[1]
        return facts

    # -- folding a decision back in -------------------------------------------------------------
    def _counts(self, user: str, group: str) -> int:
        """1 if ``group`` (a party, or a reservation) is active for ``user`` and not over."""
        return int(
            any(
                s.user == user and s.status in rules.ACTIVE and s.ends_at > self.now
                for s in (self.slots[i] for i in self.by_group.get(group, ()))
            )
        )

    def record(self, cmd: rules.Command, decision: rules.Decision) -> None:
        """Fold ``decision`` (of ``cmd``, decided on :meth:`context`) into the facts, so later
        commands in this batch see it."""
        changes = decision.changes()
        groups = {(c.after.user, c.after.group) for c in changes}
        groups |= {(c.before.user, c.before.group) for c in changes if c.before is not None}
        was = {g: self._counts(*g) for g in groups}
        for change in changes:
            self.add(change.after)
        for user, group in groups:
            delta = self._counts(user, group) - was[(user, group)]
            if delta:
                self.held[user] = max(0, self.held.get(user, 0) + delta)
        if decision.entry is not None:
            self.add_entry(decision.entry)
        if decision.suspend_until is not None and decision.after is not None:
            self.standing[decision.after.user] = (decision.suspend_until, 0)
        elif cmd.op is rules.Op.NO_SHOW and decision.after is not None:
            until, strikes = self.standing.get(decision.after.user, (None, 0))
            self.standing[decision.after.user] = (until, strikes + 1)
        if decision.lifted is not None:
            self.standing[decision.lifted] = (None, 0)


def _touches_more(cmd: rules.Command, target: rules.Slot | None) -> bool:
    """A command whose facts reach past its own machine (the booking ops)."""
    return bool(
        cmd.op in rules.VENUE_OPS
        or cmd.op in (rules.Op.MOVE, rules.Op.OFFER, rules.Op.TAKE, rules.Op.LAPSE)
        or (target is not None and target.party_id)
    )


#: ops a batch reads for in one go (:meth:`bridge.sql.BatchSql.facts`), when nothing else
#: about them (a party, a kind, an entry, another machine) matters
_PLAIN_OPS = frozenset(
    {
        rules.Op.RESERVE,
        rules.Op.CANCEL,
        rules.Op.APPROVE,
        rules.Op.REJECT,
        rules.Op.CHECK_IN,
        rules.Op.COMPLETE,
        rules.Op.NO_SHOW,
    }
)


def _plain(cmd: rules.Command) -> bool:
    return (
        cmd.op in _PLAIN_OPS
        and not (_by_code(cmd) and cmd.code)
        and not (cmd.party_id or cmd.kind or cmd.entry_id or cmd.to_device or cmd.devices)
    )


def _by_code(cmd: rules.Command) -> bool:
    """A check-in that names its reservation by the code typed on the machine."""
    return cmd.op is rules.Op.CHECK_IN and not cmd.reservation_id
