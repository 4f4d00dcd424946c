"""SlotBook: the in-memory facts of a batch, and the rules' Context for each of its jobs.

The one fact loader of both of the committer's paths (a batch, or one job in its savepoint).
:meth:`SlotBook.load` reads every fact the jobs can need with a handful of statements
(:class:`bridge.sql.BatchSql`): the replies already logged for their request keys, their
machines, the reservations their commands name (by id, or by the code typed on the machine),
the live reservations near their slots (on their machines or of their players) and each
player's count of active reservations. :meth:`SlotBook.context`
builds one job's :class:`~plaza.rules.Context` from them, and :meth:`SlotBook.record` folds the
decision back in, so the next job of the batch sees it: a reservation made earlier in the batch
blocks a later overlapping one, and counts under its player's cap.

Correct because within one bridge the committer is the only writer; across bridges, SQL
constraints refuse what a stale picture let through (the batch is then redone on the careful
path).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bridge.reservations.actors import Job
from bridge.reservations.effects import DeviceFacts
from bridge.reservations.slots import slot_of
from bridge.sql import BatchSql, FactsAsk
from plaza import rules
from plaza.messages import Reply


def make_context(
    policy: rules.Policy,
    now: datetime,
    device: DeviceFacts | None,
    device_slots: tuple[rules.Slot, ...],
    player_slots: tuple[rules.Slot, ...],
    target: rules.Slot | None,
    held: int | None = None,
    replaced: rules.Slot | None = None,
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
        new_id=uuid.uuid4().hex[:16],
        new_code=f"{secrets.randbelow(10**6):06d}",
        player_active_count=held,
        replaced=replaced,
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
        #: per player: active reservations that have not ended (what the cap counts)
        self.held: dict[str, int] = {}
        #: replies already given, by request key (a retry is answered with the same one)
        self.logged: dict[str, Reply] = {}
        self.devices: dict[str, DeviceFacts] = {}
        #: (machine, code) -> the reservation a check-in by that code on that machine names
        self.by_code: dict[tuple[str, str], str] = {}

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
        players = {c.actor.user for c in cmds if c.op is rules.Op.RESERVE}
        if any(_by_code(c) and c.code for c in cmds):
            return book._load_in_turn(sql, keys, device_ids, cmds, target_ids, players)
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
        return book

    def _load_in_turn(
        self,
        sql: BatchSql,
        keys: list[str],
        device_ids: set[str],
        cmds: list[rules.Command],
        target_ids: set[str],
        players: set[str],
    ) -> SlotBook:
        """:meth:`load` for jobs that name a reservation by its check-in code: its row,
        found first, widens the window of the near reservations."""
        self.logged = {key: Reply.model_validate_json(text) for key, text in sql.logged(keys)}
        self.devices = {d.id: d for d in sql.devices(device_ids)}
        if target_ids:
            for row in sql.targets(target_ids):
                self.add(slot_of(row))
        for cmd in cmds:
            if _by_code(cmd) and cmd.code and (cmd.device_id, cmd.code) not in self.by_code:
                self._find_by_code(sql, cmd.device_id, cmd.code)
        starts = [c.starts_at for c in cmds if c.starts_at]
        starts += [r.starts_at for r in self.slots.values()]
        ends = [c.ends_at for c in cmds if c.ends_at] + [r.ends_at for r in self.slots.values()]
        if starts and ends:
            for row in sql.near(device_ids, players, min(starts), max(ends)):
                if row.id not in self.slots:
                    self.add(slot_of(row))
        if players:
            self.held = dict(sql.held(players, self.now))
        return self

    def _find_by_code(self, sql: BatchSql, device: str, code: str) -> None:
        """The machine's approved reservation with this code, else its current approved one
        (so a wrong code is answered ``bad_code``, not ``not_found``)."""
        rows = sql.check_in_rows(device, self.now + self.policy.check_in_early, self.now)
        row = next((r for r in rows if r.code == code), rows[0] if rows else None)
        if row is not None:
            self.add(slot_of(row))
            self.by_code[(device, code)] = row.id

    def add(self, slot: rules.Slot) -> None:
        """Know ``slot`` (new, or as it is now)."""
        self.slots[slot.id] = slot
        self.by_device.setdefault(slot.device_id, set()).add(slot.id)
        self.by_player.setdefault(slot.user, set()).add(slot.id)

    def _near(self, ids: set[str], span: tuple[datetime, datetime]) -> tuple[rules.Slot, ...]:
        return tuple(
            slot
            for slot in (self.slots[i] for i in ids)
            if slot.status in rules.ACTIVE and slot.overlaps(*span)
        )

    def target(self, cmd: rules.Command) -> rules.Slot | None:
        """The reservation ``cmd`` names: by id, or for a check-in on the machine by code."""
        if cmd.reservation_id:
            return self.slots.get(cmd.reservation_id)
        if _by_code(cmd) and cmd.code:
            found = self.by_code.get((cmd.device_id, cmd.code))
            return self.slots.get(found) if found else None
        return None

    def context(self, job: Job, cmd: rules.Command) -> rules.Context:
        """The facts of ``cmd`` (``job``'s command) as the batch stands now."""
        target = self.target(cmd)
        span = window(cmd, target, self.now)
        mine = self.by_player.get(cmd.actor.user, set()) if cmd.op is rules.Op.RESERVE else set()
        return make_context(
            self.policy,
            self.now,
            self.devices.get(job.device_id),
            self._near(self.by_device.get(job.device_id, set()), span),
            self._near(mine, span),
            target,
            held=self.held.get(cmd.actor.user, 0),
            replaced=self.slots.get(cmd.replaces) if cmd.replaces else None,
        )

    def record(self, cmd: rules.Command, decision: rules.Decision) -> None:
        """Fold ``decision`` (of ``cmd``, decided on :meth:`context`) into the facts, so later
        commands in this batch see it."""
        target = self.target(cmd)
        after = decision.after
        if decision.released is not None:
            self.add(decision.released)
            self.held[cmd.actor.user] = max(0, self.held.get(cmd.actor.user, 0) - 1)
        if after is not None:
            if target is None:
                self.held[after.user] = self.held.get(after.user, 0) + 1
            elif (
                target.status in rules.ACTIVE
                and after.status not in rules.ACTIVE
                and target.ends_at > self.now  # only those were counted
            ):
                self.held[after.user] = max(0, self.held.get(after.user, 0) - 1)
            self.add(after)


def _by_code(cmd: rules.Command) -> bool:
    """A check-in that names its reservation by the code typed on the machine."""
    return cmd.op is rules.Op.CHECK_IN and not cmd.reservation_id
