"""The venue floor's pure rules (plaza/floor.py) and the board's lock, as tables."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone

import pytest
from pydantic import ValidationError

from bridge.notifier import Note, _texts
from bridge.presence.board import DeviceView
from plaza.floor import (
    MAX_POLICY_KINDS,
    MAX_POLICY_LENGTH,
    WalkinPolicies,
    WalkinPolicy,
    at_slot_start,
    extension_until,
    in_lock_window,
    is_walk_in,
    lock_released,
    minutes_left,
    parse_walkin_policy,
)
from plaza.messages import AlertSeverity, ExtendOffer, MachineState, Slot
from plaza.rules import Policy, Status
from plaza.rules import Slot as RuleSlot
from plaza.settings import Settings

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
LEAD = timedelta(minutes=10)
STRICT, SOFT = WalkinPolicy.STRICT, WalkinPolicy.SOFT


def slot(
    start_in: float, minutes: float = 60, status: Status = Status.APPROVED, device: str = "pc-01"
) -> RuleSlot:
    """A reservation starting ``start_in`` minutes from NOW."""
    starts = NOW + timedelta(minutes=start_in)
    return RuleSlot("r1", device, "ana", starts, starts + timedelta(minutes=minutes), status)


# -- the walk-in policy setting ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "default", "kinds"),
    [
        ("strict", STRICT, {}),
        ("soft", SOFT, {}),
        ("", STRICT, {}),
        ("strict,console=soft", STRICT, {"console": SOFT}),
        ("soft, pc=strict , vr=soft", SOFT, {"pc": STRICT, "vr": SOFT}),
        ("console=soft", STRICT, {"console": SOFT}),
    ],
)
def test_the_walk_in_policy_is_a_default_and_per_kind_overrides(
    text: str, default: WalkinPolicy, kinds: dict[str, WalkinPolicy]
) -> None:
    policies = parse_walkin_policy(text)
    assert policies.default is default
    assert dict(policies.kinds) == kinds
    for kind, policy in kinds.items():
        assert policies.of(kind) is policy
    assert policies.of("arcade") is default


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("lenient", "expected strict or soft"),
        ("pc=lenient", "expected strict or soft"),
        ("console=soft,strict", "must come first"),
        ("console=soft,console=strict", "given twice"),
        ("Console!=soft", "not a machine kind"),
        (
            ",".join(f"k{i}=soft" for i in range(MAX_POLICY_KINDS + 1)),
            f"at most {MAX_POLICY_KINDS}",
        ),
        ("strict" + ",pc=soft" * 200, f"longer than {MAX_POLICY_LENGTH}"),
    ],
)
def test_a_bad_walk_in_policy_is_refused_with_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_walkin_policy(text)


def test_the_settings_refuse_a_bad_walk_in_policy_at_start() -> None:
    with pytest.raises(ValidationError, match="expected strict or soft"):
        Settings(walkin_policy="strict,console=maybe")
    good = Settings(walkin_policy="soft,pc=strict")
    assert good.walkin_policies == WalkinPolicies(SOFT, (("pc", STRICT),))


@pytest.mark.parametrize(("policy", "action"), [(STRICT, "end_session"), (SOFT, "alert")])
def test_a_walk_in_still_playing_at_the_start_is_ended_or_staff_alerted(
    policy: WalkinPolicy, action: str
) -> None:
    assert at_slot_start(policy) == action


@pytest.mark.parametrize(
    ("in_use", "code", "walk_in"),
    [(True, None, True), (True, "", True), (True, "424242", False), (False, None, False)],
)
def test_a_walk_in_is_a_session_without_a_reservation_code(
    in_use: bool, code: str | None, walk_in: bool
) -> None:
    assert is_walk_in(in_use, code) is walk_in


# -- the lock window -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reservation", "inside"),
    [
        (slot(11), False),  # more than the lead away
        (slot(10), True),  # exactly the lead away
        (slot(3), True),
        (slot(-5), True),  # under way, nobody checked in yet
        (slot(-60), False),  # over
        (slot(3, status=Status.PENDING), False),  # not approved: nothing kept
        (slot(3, status=Status.CHECKED_IN), False),  # its player is there
    ],
)
def test_an_approved_slot_keeps_its_machine_from_the_lead_time_until_it_is_over(
    reservation: RuleSlot, inside: bool
) -> None:
    assert in_lock_window(reservation, NOW, LEAD) is inside


@pytest.mark.parametrize(
    ("before", "after", "released"),
    [
        (slot(5), slot(5, status=Status.CHECKED_IN), True),  # check-in
        (slot(-1), slot(-1, status=Status.NO_SHOW), True),  # no-show release
        (slot(5), slot(5, status=Status.CANCELLED), True),  # cancel
        (slot(5), slot(5, device="pc-02"), True),  # moved to another machine
        (slot(5), slot(90), True),  # moved out of the window
        (slot(5), slot(7), False),  # moved within it: still kept
        (slot(5), slot(5, minutes=120), False),  # extended
        (slot(30), slot(30, status=Status.CANCELLED), False),  # never locked
        (slot(5, status=Status.PENDING), slot(5), False),  # approved now: the clock locks it
    ],
)
def test_a_lock_is_lifted_when_its_reservation_leaves_the_window(
    before: RuleSlot, after: RuleSlot, released: bool
) -> None:
    assert lock_released(before, after, NOW, LEAD) is released


@pytest.mark.parametrize(
    ("until", "minutes"),
    [
        (NOW + timedelta(minutes=10), 10),
        (NOW + timedelta(seconds=89), 1),
        (NOW + timedelta(seconds=20), 0),
        (NOW - timedelta(minutes=3), 0),
    ],
)
def test_minutes_left_are_whole_and_never_negative(until: datetime, minutes: int) -> None:
    assert minutes_left(until, NOW) == minutes


# -- the extension offer -------------------------------------------------------------------------
KST = timezone(timedelta(hours=9))
HOUR = timedelta(hours=1)


@pytest.mark.parametrize(
    ("reservation", "next_start", "policy", "until"),
    [
        # nothing next: the horizon past the end
        (slot(-50), None, Policy(), NOW + timedelta(minutes=10) + HOUR),
        # the next booking 30 min after the end: up to it
        (slot(-50), NOW + timedelta(minutes=40), Policy(), NOW + timedelta(minutes=40)),
        # next booking right after the end, or less than the shortest slot after it: none
        (slot(-50), NOW + timedelta(minutes=10), Policy(), None),
        (slot(-50), NOW + timedelta(minutes=15), Policy(min_minutes=10), None),
        # the longest slot caps it (60 + 30 = 90 minutes)
        (slot(-50), None, Policy(max_minutes=90), NOW + timedelta(minutes=40)),
        (slot(-50), None, Policy(max_minutes=60), None),
        # closing at 21:30 KST (12:30 UTC): whole shortest slots up to closing
        (
            slot(-50),
            None,
            Policy(opens=time(10), closes=time(21, 30), tz=KST),
            NOW + timedelta(minutes=30),
        ),
    ],
)
def test_the_extension_offer_runs_to_the_next_booking_within_the_rules(
    reservation: RuleSlot, next_start: datetime | None, policy: Policy, until: datetime | None
) -> None:
    assert extension_until(reservation, next_start, policy, horizon=HOUR) == until


# -- the board shows the lock --------------------------------------------------------------------
def wire(start_in: float, status: str = "approved") -> Slot:
    starts = NOW.timestamp() + start_in * 60
    return Slot(reservation_id="r1", starts_at=starts, ends_at=starts + 3600, status=status)


@pytest.mark.parametrize(
    ("changes", "locked", "status"),
    [
        ({"next_slot": wire(30)}, None, "available"),
        ({"next_slot": wire(8)}, "reservation", "reserved"),
        ({"next_slot": wire(8, "pending")}, None, "available"),
        ({"current_slot": wire(-2)}, "reservation", "reserved"),
        ({"current_slot": wire(-2, "checked_in")}, None, "reserved"),
        (
            {"next_slot": wire(8), "state": MachineState.IN_USE},
            "reservation",
            "in_use",
        ),  # a walk-in still playing: locked against the next one, shown in use
        ({"maintenance": True}, "maintenance", "maintenance"),
    ],
)
def test_a_board_shows_a_machine_kept_free_as_reserved_and_locked(
    changes: dict[str, object], locked: str | None, status: str
) -> None:
    view = DeviceView(id="pc-01", name="PC 1", kind="pc", zone="main", online=True)
    after = view.advanced(1, NOW.timestamp(), lock_lead=600.0, **changes)
    assert after.locked == locked
    assert after.status.value == status
    entry = after.entry(NOW.timestamp())
    assert entry.locked == locked


# -- the session_ending texts --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extend", "next_starts_at", "ko", "en"),
    [
        (ExtendOffer(reservation_id="r1", until=1.0), None, "20:10까지 연장", "until 20:10"),
        (None, 2.0, "다음 예약이 19:30에", "next booking starts at 19:30"),
        (None, None, "연장할 수 없습니다", "cannot be extended"),
    ],
)
def test_the_session_ending_message_offers_the_extension_or_says_why_not(
    extend: ExtendOffer | None, next_starts_at: float | None, ko: str, en: str
) -> None:
    note = Note(
        user="ana",
        topic="plaza/users/ana/notifications",
        type="session_ending",
        priority=AlertSeverity.HIGH,
        params={"name": "PC 7", "minutes": 10, "until": "20:10", "next": "19:30"},
        extend=extend,
        next_starts_at=next_starts_at,
    )
    title_ko, message_ko = _texts(note, "ko")
    title_en, message_en = _texts(note, "en")
    assert (title_ko, title_en) == ("이용 시간 임박", "Session ending")
    assert message_ko.startswith("PC 7 이용 시간이 10분 남았습니다. ")
    assert ko in message_ko
    assert message_en.startswith("Your time on PC 7 ends in 10 min. ")
    assert en in message_en
