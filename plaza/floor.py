"""The venue floor's rules (issue 18), pure: keeping a reserved seat free, and sessions that
end on time.

Theory of operation
-------------------
Three clock moments belong to every reservation, each acted on once (a marker column on the
reservation says it was, so a restarted bridge never repeats one; see
bridge/reservations/floor_clock.py):

- ``pre_slot_lock`` (a setting) before an *approved* slot, the machine is **locked** for it
  (``lock`` with reason ``reservation``: no walk-in may start). A machine in a
  walk-in session (in use without a reservation code) also gets ``session_warning`` with the
  minutes left before the slot.
- at the slot's start, a walk-in still playing is **ended** (``end_session`` with reason
  ``reservation``) under the ``strict`` policy of its kind of machine, or left
  playing while staff get an alert under ``soft`` (:func:`at_slot_start`).
- ``session_end_warning`` (a setting) before the end of a *checked-in* slot, the player gets
  ``session_ending`` and the machine ``session_warning``; the notification offers an
  extension up to :func:`extension_until` when the machine is free after the slot.

The lock is lifted (``unlock``, same reason) when the player checks in, and when the
reservation leaves its lock window otherwise (:func:`lock_released`: cancelled, no-show,
moved to another machine or a later start). A machine keeps every lock it was given by
reason: lifting the reservation's lock does not lift staff's maintenance lock.

Walk-in policy per kind of machine (:func:`parse_walkin_policy`): ``PLAZA_WALKIN_POLICY`` is
a default and per-kind overrides, ``"strict"`` or ``"strict,console=soft,vr=soft"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from plaza.rules import Policy, Slot, Status

#: PLAZA_WALKIN_POLICY: at most this many per-kind overrides, this long in all
MAX_POLICY_KINDS = 32
MAX_POLICY_LENGTH = 1000
_KIND = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class WalkinPolicy(StrEnum):
    #: lock before the slot, warn the walk-in, end the walk-in's session at the slot's start
    STRICT = "strict"
    #: lock before the slot and warn the walk-in; at the start alert staff, end nothing
    SOFT = "soft"


@dataclass(frozen=True, slots=True)
class WalkinPolicies:
    """The walk-in policy of every kind of machine: ``default`` unless ``kinds`` says."""

    default: WalkinPolicy = WalkinPolicy.STRICT
    kinds: tuple[tuple[str, WalkinPolicy], ...] = ()

    def of(self, kind: str) -> WalkinPolicy:
        return dict(self.kinds).get(kind, self.default)


def parse_walkin_policy(text: str) -> WalkinPolicies:
    """``"strict"``, ``"soft"``, or a default followed by ``kind=policy`` overrides, comma
    separated (``"strict,console=soft"``; a list of overrides alone keeps ``strict`` as the
    default). Raises ValueError with what is wrong."""
    if len(text) > MAX_POLICY_LENGTH:
        raise ValueError(f"walk-in policy longer than {MAX_POLICY_LENGTH} characters")
    default, kinds = WalkinPolicy.STRICT, dict[str, WalkinPolicy]()
    parts = [p.strip() for p in text.split(",") if p.strip()]
    for i, part in enumerate(parts):
        kind, eq, value = part.partition("=")
        if not eq:
            if i != 0:
                raise ValueError(f"walk-in policy: the default {part!r} must come first")
            default = _policy(part)
            continue
        kind = kind.strip()
        if not _KIND.match(kind):
            raise ValueError(f"walk-in policy: {kind!r} is not a machine kind")
        if kind in kinds:
            raise ValueError(f"walk-in policy: {kind!r} given twice")
        kinds[kind] = _policy(value.strip())
    if len(kinds) > MAX_POLICY_KINDS:
        raise ValueError(f"walk-in policy: at most {MAX_POLICY_KINDS} kinds")
    return WalkinPolicies(default, tuple(sorted(kinds.items())))


def _policy(value: str) -> WalkinPolicy:
    try:
        return WalkinPolicy(value)
    except ValueError:
        raise ValueError(f"walk-in policy {value!r}: expected strict or soft") from None


SlotStartAction = Literal["end_session", "alert"]


def at_slot_start(policy: WalkinPolicy) -> SlotStartAction:
    """What a walk-in still playing at a reserved slot's start gets."""
    return "end_session" if policy is WalkinPolicy.STRICT else "alert"


def is_walk_in(in_use: bool, reservation_code: str | None) -> bool:
    """A session nobody checked in for: in use without a reservation code."""
    return in_use and not reservation_code


def in_lock_window(slot: Slot, now: datetime, lead: timedelta) -> bool:
    """An approved slot whose machine is kept free for it now (from ``lead`` before its
    start until it is checked in or released)."""
    return slot.status is Status.APPROVED and slot.starts_at - lead <= now < slot.ends_at


def lock_released(before: Slot, after: Slot, now: datetime, lead: timedelta) -> bool:
    """Whether a change lifts the lock of ``before``'s machine: the reservation was in its
    lock window and no longer is there (cancelled, no-show, rejected, moved to another
    machine or out of the window). Check-in lifts it too, with the session it starts."""
    if not in_lock_window(before, now, lead):
        return False
    if after.status is Status.CHECKED_IN:
        return True
    return after.device_id != before.device_id or not in_lock_window(after, now, lead)


def minutes_left(until: datetime, now: datetime) -> int:
    """Whole minutes from ``now`` to ``until``, rounded (never below 0)."""
    return max(0, round((until - now).total_seconds() / 60))


def extension_until(
    slot: Slot, next_start: datetime | None, policy: Policy, *, horizon: timedelta
) -> datetime | None:
    """The latest end ``slot`` could be extended to: up to the machine's next booking (or
    ``horizon`` past its end when there is none), within the longest slot and the opening
    hours; None when that leaves less than the shortest slot (``min_minutes``) to add."""
    until = slot.ends_at + horizon
    if next_start is not None:
        until = min(until, next_start)
    until = min(until, slot.starts_at + timedelta(minutes=policy.max_minutes))
    step = timedelta(minutes=policy.min_minutes)
    if until - slot.ends_at < step:
        return None
    if not policy.within_hours(slot.starts_at, until):
        # shorten to the closing time in whole steps of the shortest slot
        end = slot.ends_at + step
        if not policy.within_hours(slot.starts_at, end):
            return None
        while end + step <= until and policy.within_hours(slot.starts_at, end + step):
            end += step
        until = end
    return until
