"""Calling staff: the rules of a player's help call (pure; no I/O, no clock).

A call is ``open`` until a member of staff acknowledges it (``acknowledged``: someone is on the
way), then ``resolved``; staff may resolve an open call directly. The transitions are a table
(:data:`TRANSITIONS`); anything else is refused and leaves the call as it was.

Caps per player (:func:`decide_call`):
- one call at a time: a call while one is open or acknowledged answers with that call
  (deduplicated: no second alert);
- at most ``per_hour`` calls in any hour: past it, ``too_many_help_calls`` with the seconds
  until the oldest call of the hour ages out.

The call follows the player (:func:`follows`): when they check in on another machine, the
open or acknowledged call moves there, so staff walk to where the player is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

WINDOW = timedelta(hours=1)


class HelpStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


#: still waiting for staff (counts as the player's one call)
WAITING = frozenset({HelpStatus.OPEN, HelpStatus.ACKNOWLEDGED})

StaffOp = Literal["ack", "resolve"]
TRANSITIONS: dict[HelpStatus, dict[StaffOp, HelpStatus]] = {
    HelpStatus.OPEN: {"ack": HelpStatus.ACKNOWLEDGED, "resolve": HelpStatus.RESOLVED},
    HelpStatus.ACKNOWLEDGED: {"resolve": HelpStatus.RESOLVED},
    HelpStatus.RESOLVED: {},
}


@dataclass(frozen=True, slots=True)
class CallDecision:
    """What a ``call_staff`` comes to: ``new`` (a call to open), ``existing`` (the player's
    open call, answered again) or ``refused`` with ``retry_after`` seconds."""

    outcome: Literal["new", "existing", "refused"]
    existing: str | None = None
    retry_after: float | None = None


def decide_call(
    waiting: str | None, recent: Sequence[datetime], now: datetime, per_hour: int
) -> CallDecision:
    """``waiting``: the id of the player's open or acknowledged call, if any; ``recent``: when
    each of their calls of the last hour was made (any status)."""
    if waiting is not None:
        return CallDecision("existing", existing=waiting)
    within = sorted(t for t in recent if now - t < WINDOW)
    if len(within) >= per_hour:
        # the call that must age out before one more fits in the hour
        frees = within[len(within) - per_hour] + WINDOW
        return CallDecision("refused", retry_after=max(1.0, (frees - now).total_seconds()))
    return CallDecision("new")


def staff_step(status: HelpStatus, op: StaffOp) -> HelpStatus | None:
    """The call's status after staff's ``op``, or None when ``op`` does not apply."""
    return TRANSITIONS[status].get(op)


def follows(status: HelpStatus, call_device: str, checked_in_at: str) -> bool:
    """Whether a call on ``call_device`` moves to ``checked_in_at`` (its player checked in
    there): a waiting call on another machine does."""
    return status in WAITING and call_device != checked_in_at
