"""The intake's flood budget, its fair queue and its drop path (pure; no broker)."""

from __future__ import annotations

import asyncio

import pytest

from bridge.flood import COOLING_OFF, OVER_BUDGET, FairQueue, FloodGate
from plaza import fast_receive
from plaza.topics import Topics

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def gate(**kw: object) -> tuple[FloodGate, list[str]]:
    flagged: list[str] = []
    options: dict[str, object] = {"burst": 3, "rate": 1.0, "disable_after": 4, **kw}
    return FloodGate(on_flood=flagged.append, exempt=frozenset({b"api"}), **options), flagged  # type: ignore[arg-type]


# -- the budget ---------------------------------------------------------------------------------
def test_every_message_costs_its_sender_a_token_and_past_the_burst_it_is_dropped() -> None:
    g, _ = gate()
    assert [g.admit(b"p1", 0.0) for _ in range(5)] == [True, True, True, False, False]
    assert g.dropped[OVER_BUDGET] == 2
    assert g.admit(b"p2", 0.0), "another sender has a budget of its own"


def test_the_budget_refills_at_the_rate_up_to_the_burst() -> None:
    g, _ = gate()
    for _ in range(3):
        g.admit(b"p1", 0.0)
    assert not g.admit(b"p1", 0.5)
    assert g.admit(b"p1", 1.0), "one token a second"
    assert not g.admit(b"p1", 1.0)
    assert [g.admit(b"p1", 100.0) for _ in range(4)] == [True, True, True, False], "capped"


def test_a_sender_is_flagged_once_after_so_many_drops_in_a_row() -> None:
    g, flagged = gate()
    for _ in range(3 + 3):  # the burst, then three drops
        g.admit(b"p1", 0.0)
    assert flagged == []
    g.admit(b"p1", 0.0)
    assert flagged == ["p1"]
    for _ in range(100):
        g.admit(b"p1", 0.0)
    assert flagged == ["p1"], "flagged once until released"


def test_a_message_let_through_ends_the_streak_so_a_slow_sender_is_never_flagged() -> None:
    g, flagged = gate(disable_after=3)
    now = 0.0
    for _ in range(200):  # two a second against a refill of one: half dropped, never 3 in a row
        g.admit(b"p1", now)
        now += 0.5
    assert flagged == []
    assert g.dropped[OVER_BUDGET] > 50


def test_disable_after_zero_never_flags() -> None:
    g, flagged = gate(disable_after=0)
    for _ in range(1000):
        g.admit(b"p1", 0.0)
    assert flagged == []


def test_the_api_and_service_topics_are_never_charged() -> None:
    g, flagged = gate()
    assert all(g.admit(b"api", 0.0) for _ in range(1000))
    assert all(g.admit(None, 0.0) for _ in range(1000))
    assert flagged == []
    assert g.dropped[OVER_BUDGET] == 0


def test_a_sender_cooling_off_is_dropped_and_released_with_a_fresh_budget() -> None:
    g, flagged = gate()
    g.cooling(["p1"])
    assert not g.admit(b"p1", 0.0)
    assert g.dropped[COOLING_OFF] == 1
    assert g.is_cooling("p1")
    g.release("p1")
    assert [g.admit(b"p1", 0.0) for _ in range(4)] == [True, True, True, False]
    for _ in range(10):
        g.admit(b"p1", 0.0)
    assert flagged == ["p1"], "flagged again after a release"


def test_pruning_forgets_only_senders_whose_bucket_has_refilled() -> None:
    g, _ = gate()
    g.admit(b"quiet", 0.0)
    for _ in range(3):
        g.admit(b"busy", 2.5)
    assert g.prune(3.0) == 1  # quiet refilled (burst 3 at 1/s takes 3 s); busy has not
    assert len(g) == 1


# -- the sender of a topic ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("topic", "sender"),
    [
        (b"plaza/devices/pc-01/requests/player1", b"player1"),
        (b"plaza/devices/pc-01/requests/acks", b"acks"),
        (b"plaza/users/player2/acks", b"player2"),
        (b"plaza/venue/requests/player3", b"player3"),
        (b"plaza/devices/pc-01/requests/requests", b"requests"),
        (b"plaza/admin/requests", None),
        (b"plaza/devices/pc-01/presence", None),
    ],
)
def test_the_sender_is_read_from_the_raw_topic(topic: bytes, sender: bytes | None) -> None:
    assert Topics.sender_of(topic) == sender


# -- the fair queue ----------------------------------------------------------------------------
def sender_of(item: str) -> str:
    return item.split(":")[0]


async def test_the_fair_queue_serves_senders_round_robin_each_in_its_own_order() -> None:
    queue: FairQueue[str] = FairQueue(key=sender_of)
    for i in range(1000):
        queue.put_nowait(f"flood:{i}")
    queue.put_nowait("p2:a")
    queue.put_nowait("p3:a")
    queue.put_nowait("p2:b")
    assert queue.qsize() == 1003
    assert queue.senders() == 3
    taken = [queue.get_nowait() for _ in range(6)]
    assert taken == ["flood:0", "p2:a", "p3:a", "flood:1", "p2:b", "flood:2"]
    rest = [queue.get_nowait() for _ in range(queue.qsize())]
    assert rest == [f"flood:{i}" for i in range(3, 1000)]
    assert queue.empty()


async def test_a_consumer_waiting_on_the_fair_queue_is_woken_by_a_put() -> None:
    queue: FairQueue[str] = FairQueue(key=sender_of)
    waiting = asyncio.get_running_loop().create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("p1:x")
    assert await asyncio.wait_for(waiting, 1) == "p1:x"


# -- the drop path's reading of a raw packet ------------------------------------------------------
def publish_body(topic: bytes, payload: bytes, *, qos: int, props: bytes = b"") -> bytes:
    """A PUBLISH's variable header and payload (what paho keeps as ``_in_packet['packet']``)."""
    mid = b"\x00\x07" if qos else b""
    return len(topic).to_bytes(2, "big") + topic + mid + bytes([len(props)]) + props + payload


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize(
    ("payload", "props", "empty"),
    [
        (b"", b"", True),
        (b"{}", b"", False),
        (b"", b"\x09\x00\x02ab", True),
        (b"x", b"\x09\x00\x01a", False),
    ],
)
def test_an_empty_payload_is_told_from_the_raw_packet(
    qos: int, payload: bytes, props: bytes, empty: bool
) -> None:
    topic = b"plaza/users/p1/acks"
    packet = publish_body(topic, payload, qos=qos, props=props)
    assert fast_receive._payload_empty(packet, 2 + len(topic) + (2 if qos else 0), True) is empty
