"""Reservations as the rules see them and as the wire shows them.

(Waitlist entries and offers: :func:`entry_of`, :func:`entry_public`, :func:`offer_of`, from
:mod:`plaza.lines`, which the api shares.)

:func:`policy_from` turns settings into the rules' :class:`~plaza.rules.Policy`;
:func:`slot_of` turns a row (ORM object or Core row) into a :class:`~plaza.rules.Slot`;
:func:`public` turns a slot into the wire's :class:`~plaza.messages.ReservationPublic`.
"""

from __future__ import annotations

from datetime import time as dtime
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from plaza import rules
from plaza.lines import entry_of, entry_public, offer_of
from plaza.messages import ReservationPublic
from plaza.settings import Settings


def policy_from(settings: Settings) -> rules.Policy:
    opens, closes = settings.opening_hours.split("-")
    h1, m1 = (int(x) for x in opens.split(":"))
    h2, m2 = (int(x) for x in closes.split(":"))
    return rules.Policy(
        max_minutes=settings.max_slot_minutes,
        min_minutes=settings.min_slot_minutes,
        max_active_per_player=settings.max_active_per_player,
        opens=dtime(h1 % 24, m1),
        closes=dtime(h2 % 24, m2),
        tz=ZoneInfo(settings.venue_timezone),  # type: ignore[arg-type]
        check_in_early=timedelta(seconds=settings.check_in_early),
        max_days_ahead=settings.max_days_ahead,
        max_party_seats=settings.max_party_seats,
        waitlist_hold=timedelta(seconds=settings.waitlist_hold),
        waitlist_max_length=settings.waitlist_max_length,
        waitlist_max_per_player=settings.waitlist_max_per_player,
        no_show_strikes=settings.no_show_strikes,
        no_show_window=timedelta(seconds=settings.no_show_window),
        no_show_suspension=timedelta(seconds=settings.no_show_suspension),
    )


def slot_of(row: Any) -> rules.Slot:
    """A reservation row (ORM object or Core row) as the rules see it."""
    return rules.Slot(
        row.id,
        row.device_id,
        row.player,
        row.starts_at,
        row.ends_at,
        rules.Status(row.status),
        row.code,
        party_id=getattr(row, "party_id", None) or "",
        hold_until=getattr(row, "hold_until", None),
    )


def public(slot: rules.Slot, *, private: bool) -> ReservationPublic:
    return ReservationPublic(
        id=slot.id,
        device_id=slot.device_id,
        starts_at=slot.starts_at.timestamp(),
        ends_at=slot.ends_at.timestamp(),
        status=slot.status.value,
        code=slot.code if private else None,
        user=slot.user if private else None,
        party_id=slot.party_id or None,
        hold_until=slot.hold_until.timestamp() if slot.hold_until else None,
    )


__all__ = ["entry_of", "entry_public", "offer_of", "policy_from", "public", "slot_of"]
