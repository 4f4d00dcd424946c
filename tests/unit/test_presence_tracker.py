"""bridge.presence.tracker.PresenceTracker and bridge.presence.board.DeviceView, in the style
of h11's test_state: feed presences and states, assert the effects (published messages, view,
alerts, metrics)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.metrics import BridgeMetrics
from bridge.models import Outbound
from bridge.presence.board import GENERATION_SHIFT, DeviceView
from bridge.presence.tracker import Effects, PresenceTracker
from plaza.messages import (
    AdminAlert,
    AlertSeverity,
    BoardEntry,
    BoardStatus,
    DeviceState,
    DeviceStatusEvent,
    MachineState,
    Presence,
    Session,
    Slot,
)
from plaza.topics import Topics

pytestmark = pytest.mark.unit

T = Topics()
DEVICE = "pc-01"
GEN = 3
_clock = itertools.count(1000)


def tick() -> float:
    return float(next(_clock))


def view(device: str = DEVICE, **kw: object) -> DeviceView:
    return DeviceView(id=device, name="PC 1", kind="pc", zone="pc-zone", **kw)  # type: ignore[arg-type]


def tracker(generation: int = GEN, *views: DeviceView) -> PresenceTracker:
    known = {v.id: v for v in views} if views else {DEVICE: view()}
    return PresenceTracker(T, known, generation, BridgeMetrics())


def birth(epoch: int) -> Presence:
    return Presence(online=True, epoch=epoch, ts=1.0, fw="1.0.0")


def will(epoch: int) -> Presence:
    return Presence(online=False, epoch=epoch)


def state(
    s: MachineState,
    epoch: int,
    seq: int,
    *,
    fault: str | None = None,
    session: Session | None = None,
) -> DeviceState:
    return DeviceState(state=s, epoch=epoch, seq=seq, fault=fault, session=session, ts=1.0)


def boards(effects: Effects) -> list[BoardEntry]:
    return [
        BoardEntry.model_validate_json(o.payload)
        for o in effects.publish
        if o.topic.startswith("plaza/board/")
    ]


def events(effects: Effects) -> list[DeviceStatusEvent]:
    return [
        DeviceStatusEvent.model_validate_json(o.payload)
        for o in effects.publish
        if o.topic == T.device_events
    ]


def alerts(effects: Effects) -> list[AdminAlert]:
    return [
        AdminAlert.model_validate_json(o.payload)
        for o in effects.publish
        if o.topic == T.admin_alerts
    ]


def board(effects: Effects) -> BoardEntry:
    (entry,) = boards(effects)
    return entry


NOTHING = Effects()


# -- presence --------------------------------------------------------------------------------
def test_a_birth_turns_the_board_online_and_available_and_announces_device_online() -> None:
    tr = tracker()
    ts = tick()
    fx = tr.on_presence(DEVICE, birth(5), ts)

    entry = board(fx)
    assert (entry.online, entry.status, entry.epoch) == (True, BoardStatus.AVAILABLE, 5)
    assert (entry.device_id, entry.name, entry.kind, entry.zone) == (
        DEVICE,
        "PC 1",
        "pc",
        "pc-zone",
    )
    assert entry.version == GEN * GENERATION_SHIFT + 1
    assert (entry.since, entry.ts) == (ts, ts)
    (event,) = events(fx)
    assert (event.type, event.device_id, event.status) == ("device_online", DEVICE, "available")
    assert event.metadata == {"epoch": 5, "previous": "offline"}
    assert fx.alerts == []
    assert fx.status_changed is True
    assert fx.view == tr.views[DEVICE]
    assert tr.metrics.presence_applied == 1


def test_the_board_is_published_retained_at_qos_1_and_the_event_is_not_retained() -> None:
    fx = tracker().on_presence(DEVICE, birth(1), tick())
    board_out, event_out = fx.publish
    assert (board_out.topic, board_out.qos, board_out.retain) == (T.board(DEVICE), 1, True)
    assert (event_out.topic, event_out.qos, event_out.retain) == (T.device_events, 1, False)


def test_a_retained_copy_of_a_birth_already_applied_has_no_effects() -> None:
    tr = tracker()
    tr.on_presence(DEVICE, birth(5), tick())
    assert tr.on_presence(DEVICE, birth(5), tick()) == NOTHING
    assert tr.metrics.presence_applied == 1
    assert tr.metrics.fenced_presences == 0


def test_a_late_will_from_an_older_epoch_is_fenced_with_no_effects_and_is_counted() -> None:
    tr = tracker()
    tr.on_presence(DEVICE, birth(2), tick())
    live = tr.views[DEVICE]

    assert tr.on_presence(DEVICE, will(1), tick()) == NOTHING
    assert tr.metrics.fenced_presences == 1
    assert tr.views[DEVICE] == live
    assert tr.views[DEVICE].online is True


def test_a_late_birth_from_an_older_epoch_is_fenced_too() -> None:
    tr = tracker()
    tr.on_presence(DEVICE, will(4), tick())
    assert tr.on_presence(DEVICE, birth(3), tick()) == NOTHING
    assert tr.views[DEVICE].online is False
    assert tr.metrics.fenced_presences == 1


def test_a_will_from_the_current_epoch_turns_the_board_offline_and_announces_it() -> None:
    tr = tracker()
    first = board(tr.on_presence(DEVICE, birth(2), tick()))
    ts = tick()
    fx = tr.on_presence(DEVICE, will(2), ts)

    entry = board(fx)
    assert (entry.online, entry.status, entry.epoch) == (False, BoardStatus.OFFLINE, 2)
    assert entry.version == first.version + 1
    assert entry.since == ts
    (event,) = events(fx)
    assert (event.type, event.status) == ("device_offline", "offline")
    assert event.metadata["previous"] == "available"


def test_a_birth_of_a_newer_epoch_after_a_will_brings_the_board_back_online() -> None:
    tr = tracker()
    tr.on_presence(DEVICE, birth(1), tick())
    tr.on_presence(DEVICE, will(1), tick())
    fx = tr.on_presence(DEVICE, birth(2), tick())
    assert (board(fx).online, board(fx).epoch) == (True, 2)
    assert [e.type for e in events(fx)] == ["device_online"]


def test_a_will_of_a_newer_epoch_whose_birth_was_never_seen_is_applied() -> None:
    tr = tracker()
    tr.on_presence(DEVICE, birth(1), tick())
    fx = tr.on_presence(DEVICE, will(3), tick())
    assert (board(fx).online, board(fx).epoch) == (False, 3)
    assert tr.metrics.fenced_presences == 0


def test_a_presence_of_an_unknown_machine_creates_a_default_view() -> None:
    tr = tracker()
    fx = tr.on_presence("vr-09", birth(1), tick())
    entry = board(fx)
    assert (entry.device_id, entry.name, entry.kind, entry.zone) == ("vr-09", "vr-09", "pc", "main")
    assert fx.publish[0].topic == T.board("vr-09")
    assert set(tr.views) == {DEVICE, "vr-09"}


# -- state -----------------------------------------------------------------------------------
def online_tracker(epoch: int = 1) -> PresenceTracker:
    tr = tracker()
    tr.on_presence(DEVICE, birth(epoch), tick())
    return tr


def test_states_are_applied_in_epoch_then_seq_order_and_stale_ones_are_counted() -> None:
    tr = online_tracker()
    feed = [
        (state(MachineState.IN_USE, 1, 5), True),
        (state(MachineState.IDLE, 1, 4), False),  # older seq
        (state(MachineState.IDLE, 1, 5), False),  # same (epoch, seq): a duplicate
        (state(MachineState.IDLE, 2, 0), True),  # new epoch, seq starts over
        (state(MachineState.IN_USE, 1, 99), False),  # high seq of an old epoch
        (state(MachineState.IN_USE, 2, 1), True),
    ]
    for msg, applied in feed:
        fx = tr.on_state(DEVICE, msg, tick())
        assert (fx != NOTHING) is applied, msg
    assert tr.metrics.states_applied == 3
    assert tr.metrics.stale_states == 3
    v = tr.views[DEVICE]
    assert (v.state, v.state_epoch, v.state_seq) == (MachineState.IN_USE, 2, 1)


def test_an_in_use_state_puts_the_session_on_the_board_and_announces_device_in_use() -> None:
    tr = online_tracker()
    session = Session(id="s-1", started_at=10.0, ends_at=3610.0)
    fx = tr.on_state(DEVICE, state(MachineState.IN_USE, 1, 1, session=session), tick())
    entry = board(fx)
    assert (entry.status, entry.state, entry.session) == (
        BoardStatus.IN_USE,
        MachineState.IN_USE,
        session,
    )
    assert [e.type for e in events(fx)] == ["device_in_use"]
    fx = tr.on_state(DEVICE, state(MachineState.IDLE, 1, 2), tick())
    assert (board(fx).status, board(fx).session) == (BoardStatus.AVAILABLE, None)
    assert [e.type for e in events(fx)] == ["device_available"]


def test_a_state_change_that_keeps_the_status_republishes_the_board_without_an_event() -> None:
    tr = online_tracker()
    tr.on_state(
        DEVICE, state(MachineState.IN_USE, 1, 1, session=Session(id="a", started_at=1)), 5.0
    )
    fx = tr.on_state(
        DEVICE, state(MachineState.IN_USE, 1, 2, session=Session(id="b", started_at=2)), 9.0
    )
    assert board(fx).session == Session(id="b", started_at=2)
    assert board(fx).since == 5.0, "since marks the last status change, not the last update"
    assert events(fx) == []
    assert fx.status_changed is False


def test_a_fault_raises_one_admin_alert_and_no_other_while_the_machine_stays_faulted() -> None:
    tr = online_tracker()
    fx = tr.on_state(DEVICE, state(MachineState.FAULT, 1, 1, fault="gpu overheated"), tick())
    assert board(fx).status is BoardStatus.FAULT
    assert [e.type for e in events(fx)] == ["device_fault"]
    (alert,) = alerts(fx)
    assert fx.alerts == [alert]
    assert (alert.type, alert.severity, alert.device_id) == (
        "device_fault",
        AlertSeverity.HIGH,
        DEVICE,
    )
    assert "gpu overheated" in alert.message
    assert "pc-01" in alert.message

    still = tr.on_state(DEVICE, state(MachineState.FAULT, 1, 2, fault="gpu still hot"), tick())
    assert board(still).status is BoardStatus.FAULT
    assert alerts(still) == []
    assert still.alerts == []
    assert events(still) == []

    recovered = tr.on_state(DEVICE, state(MachineState.IDLE, 1, 3), tick())
    assert board(recovered).status is BoardStatus.AVAILABLE
    assert alerts(recovered) == []
    assert tr.views[DEVICE].fault is None, "the fault text goes with the fault state"

    again = tr.on_state(DEVICE, state(MachineState.FAULT, 1, 4), tick())
    (second,) = alerts(again)
    assert second.id != alert.id
    assert second.message.endswith("고장 보고: 내용 없음")
    assert (second.message_en or "").endswith("reports a fault: unspecified")


def test_a_fault_alert_is_published_on_the_admin_alerts_topic_not_retained() -> None:
    tr = online_tracker()
    fx = tr.on_state(DEVICE, state(MachineState.FAULT, 1, 1), tick())
    (out,) = [o for o in fx.publish if o.topic == T.admin_alerts]
    assert (out.qos, out.retain) == (1, False)


# -- maintenance -----------------------------------------------------------------------------
def test_maintenance_overrides_every_other_status_and_switching_it_twice_is_a_no_op() -> None:
    tr = online_tracker()
    fx = tr.set_maintenance(DEVICE, True, tick())
    assert board(fx).status is BoardStatus.MAINTENANCE
    assert [e.type for e in events(fx)] == ["device_maintenance"]
    assert tr.set_maintenance(DEVICE, True, tick()) == NOTHING

    offline = tr.on_presence(DEVICE, will(1), tick())
    assert (board(offline).online, board(offline).status) == (False, BoardStatus.MAINTENANCE)
    assert events(offline) == [], "still in maintenance: no status change to announce"

    tr.on_presence(DEVICE, birth(2), tick())
    fx = tr.set_maintenance(DEVICE, False, tick())
    assert board(fx).status is BoardStatus.AVAILABLE
    assert [e.type for e in events(fx)] == ["device_available"]
    assert tr.set_maintenance(DEVICE, False, tick()) == NOTHING


def test_a_machine_that_reports_maintenance_itself_shows_maintenance() -> None:
    tr = online_tracker()
    fx = tr.on_state(DEVICE, state(MachineState.MAINTENANCE, 1, 1), tick())
    assert board(fx).status is BoardStatus.MAINTENANCE
    assert alerts(fx) == []


# -- derived status (a table, like h11's) ----------------------------------------------------
SLOT = Slot(reservation_id="r1", starts_at=0.0, ends_at=1.0, status="approved")


@pytest.mark.parametrize(
    ("maintenance", "online", "machine", "slot", "expected"),
    [
        (True, True, MachineState.IDLE, None, BoardStatus.MAINTENANCE),
        (True, False, MachineState.FAULT, SLOT, BoardStatus.MAINTENANCE),
        (False, True, MachineState.MAINTENANCE, None, BoardStatus.MAINTENANCE),
        (False, False, MachineState.MAINTENANCE, None, BoardStatus.MAINTENANCE),
        (False, False, MachineState.IDLE, None, BoardStatus.OFFLINE),
        (False, False, MachineState.FAULT, None, BoardStatus.OFFLINE),
        (False, False, MachineState.IN_USE, SLOT, BoardStatus.OFFLINE),
        (False, True, MachineState.FAULT, SLOT, BoardStatus.FAULT),
        (False, True, MachineState.IN_USE, SLOT, BoardStatus.IN_USE),
        (False, True, MachineState.IDLE, SLOT, BoardStatus.RESERVED),
        (False, True, MachineState.IDLE, None, BoardStatus.AVAILABLE),
    ],
)
def test_the_board_status_is_derived_from_maintenance_presence_state_and_slot(
    maintenance: bool, online: bool, machine: MachineState, slot: Slot | None, expected: BoardStatus
) -> None:
    v = view(maintenance=maintenance, online=online, state=machine, current_slot=slot)
    assert v.derive_status() is expected


# -- versions --------------------------------------------------------------------------------
def test_every_published_board_entry_has_a_strictly_higher_version_than_the_one_before() -> None:
    tr = tracker()
    steps: list[Callable[[], Effects]] = [
        lambda: tr.on_presence(DEVICE, birth(1), tick()),
        lambda: tr.on_state(DEVICE, state(MachineState.IN_USE, 1, 1), tick()),
        lambda: tr.on_state(DEVICE, state(MachineState.FAULT, 1, 2), tick()),
        lambda: tr.set_maintenance(DEVICE, True, tick()),
        lambda: tr.on_presence(DEVICE, will(1), tick()),
        lambda: tr.set_maintenance(DEVICE, False, tick()),
        lambda: tr.on_presence(DEVICE, birth(2), tick()),
    ]
    versions = [board(step()).version for step in steps]
    assert versions == list(range(GEN * GENERATION_SHIFT + 1, GEN * GENERATION_SHIFT + 8))


@given(
    low=st.integers(min_value=0, max_value=10_000),
    bump=st.integers(min_value=1, max_value=10_000),
    updates=st.integers(min_value=1, max_value=50),
)
def test_a_higher_generation_gives_higher_versions_than_any_version_of_a_lower_generation(
    low: int, bump: int, updates: int
) -> None:
    old = tracker(low)
    for epoch in range(updates):
        old.on_presence(DEVICE, birth(epoch) if epoch % 2 else will(epoch), tick())
    old_version = old.views[DEVICE].version
    assert low * GENERATION_SHIFT < old_version < (low + 1) * GENERATION_SHIFT

    # A restarted bridge (next generation) loads the views the old one persisted.
    new = PresenceTracker(T, dict(old.views), low + bump, BridgeMetrics())
    fx = new.on_presence(DEVICE, birth(updates + 1), tick())
    assert board(fx).version > old_version
    # A machine the old bridge never touched starts in the new generation too.
    fresh = new.on_presence("pc-99", birth(1), tick())
    assert board(fresh).version > old_version


def test_a_view_persisted_by_a_higher_generation_still_gets_a_higher_version() -> None:
    # e.g. views loaded from SQL written by a bridge whose generation row was later restored
    ahead = view(version=9 * GENERATION_SHIFT + 7)
    nxt = ahead.advanced(generation=2, ts=1.0, online=True)
    assert nxt.version == 9 * GENERATION_SHIFT + 8


def test_advancing_a_view_rederives_the_status_and_keeps_since_when_the_status_holds() -> None:
    v = view(online=True, status=BoardStatus.AVAILABLE, since=5.0)
    same = v.advanced(1, 9.0, state=MachineState.IDLE)
    assert (same.status, same.since) == (BoardStatus.AVAILABLE, 5.0)
    changed = v.advanced(1, 9.0, state=MachineState.IN_USE)
    assert (changed.status, changed.since) == (BoardStatus.IN_USE, 9.0)


# -- removal ---------------------------------------------------------------------------------
def test_forgetting_a_machine_clears_its_retained_board_presence_and_state() -> None:
    tr = online_tracker()
    out = tr.forget(DEVICE)
    assert out == [
        Outbound(T.board(DEVICE), b"", qos=1, retain=True),
        Outbound(T.presence(DEVICE), b"", qos=1, retain=True),
        Outbound(T.state(DEVICE), b"", qos=1, retain=True),
    ]
    assert DEVICE not in tr.views


def test_forgetting_an_unknown_machine_still_clears_its_topics() -> None:
    tr = tracker()
    assert [o.topic for o in tr.forget("pc-42")] == [
        T.board("pc-42"),
        T.presence("pc-42"),
        T.state("pc-42"),
    ]


# -- property --------------------------------------------------------------------------------
presences = st.lists(
    st.tuples(st.integers(min_value=0, max_value=6), st.booleans()), min_size=1, max_size=40
)


@given(feed=presences, generation=st.integers(min_value=0, max_value=2**20))
def test_for_any_interleaving_of_presences_the_board_follows_the_latest_presence_of_the_max_epoch(
    feed: list[tuple[int, bool]], generation: int
) -> None:
    tr = tracker(generation)
    published: list[BoardEntry] = []
    max_epoch = -1
    latest_online = False
    fenced = 0
    for epoch, online in feed:
        if epoch < max_epoch:
            fenced += 1
        else:
            if epoch > max_epoch:
                max_epoch = epoch
            latest_online = online
        fx = tr.on_presence(DEVICE, Presence(online=online, epoch=epoch), tick())
        published += boards(fx)
        assert (tr.views[DEVICE].online, tr.views[DEVICE].epoch) == (latest_online, max_epoch)

    assert published, "the first presence always reaches the board"
    assert (published[-1].online, published[-1].epoch) == (latest_online, max_epoch)
    assert published[-1].status is (BoardStatus.AVAILABLE if latest_online else BoardStatus.OFFLINE)
    versions = [b.version for b in published]
    assert all(a < b for a, b in itertools.pairwise(versions)), versions
    assert tr.metrics.fenced_presences == fenced
    online_events = [
        json.loads(o.payload)["type"]
        for o in tr.on_presence(DEVICE, Presence(online=False, epoch=max_epoch + 1), tick()).publish
        if o.topic == T.device_events
    ]
    assert online_events == (["device_offline"] if latest_online else [])


# -- flapping ---------------------------------------------------------------------------------
def flap_tracker() -> PresenceTracker:
    return PresenceTracker(T, {DEVICE: view()}, GEN, BridgeMetrics(), flap_count=3, flap_window=60)


def test_a_machine_coming_back_flap_count_times_in_the_window_raises_one_alert() -> None:
    t = flap_tracker()
    alerts: list[AdminAlert] = []
    for epoch, at in enumerate((0.0, 10.0, 20.0, 30.0, 40.0), start=1):
        alerts += t.on_presence(DEVICE, birth(epoch), at).alerts
        t.on_presence(DEVICE, will(epoch), at + 1)
    assert [(a.type, a.severity) for a in alerts] == [("device_flapping", AlertSeverity.MEDIUM)]
    assert "3 times" in (alerts[0].message_en or "")
    assert "3번" in alerts[0].message


def test_births_spread_wider_than_the_window_are_not_flapping() -> None:
    t = flap_tracker()
    alerts: list[AdminAlert] = []
    for epoch, at in enumerate((0.0, 40.0, 80.0, 120.0), start=1):
        alerts += t.on_presence(DEVICE, birth(epoch), at).alerts
        t.on_presence(DEVICE, will(epoch), at + 1)
    assert alerts == []


def test_a_machine_that_keeps_flapping_is_reported_again_after_the_window() -> None:
    t = flap_tracker()
    alerts: list[AdminAlert] = []
    for epoch in range(1, 13):  # a birth every 10 s for two minutes
        at = epoch * 10.0
        alerts += t.on_presence(DEVICE, birth(epoch), at).alerts
        t.on_presence(DEVICE, will(epoch), at + 1)
    assert len(alerts) == 2
