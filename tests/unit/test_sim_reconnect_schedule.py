"""The machines' reconnect schedule (plaza_sim.reconnect; docs/protocol.md, "Reconnecting").

While the broker is down its port refuses connects: the delay stays within REFUSED_CAP, so a
machine is back within REFUSED_CAP of the broker listening again, however long it was down
(it had grown to 6.4-10 s). Failures of a broker that answers grow to CAP. A connection that
was up starts the schedule again (it never did: the old loop reset its delay only when a
connection ended without an error, which none does).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import socket
from pathlib import Path

import aiomqtt
import pytest

from plaza_sim.epochs import EpochStore
from plaza_sim.machine import Machine, MachineConfig
from plaza_sim.reconnect import BASE, CAP, REFUSED_CAP, ClosedBeforeConnack, Reconnect, refused

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_refused_attempts_wait_at_most_the_refused_cap_however_many() -> None:
    schedule = Reconnect(rng=random.Random(1))
    delays = [schedule.next_delay(refused=True) for _ in range(200)]
    assert max(delays) <= REFUSED_CAP
    assert min(delays) >= BASE / 2
    assert max(delays) > REFUSED_CAP * 0.9  # the ceiling is reached: still jittered over it


def test_failures_of_a_broker_that_answers_grow_to_the_cap() -> None:
    schedule = Reconnect(rng=random.Random(2))
    delays = [schedule.next_delay() for _ in range(200)]
    assert delays[0] <= BASE
    assert max(delays) <= CAP
    assert max(delays[-50:]) > CAP * 0.9


def test_a_refused_attempt_after_grown_failures_still_waits_at_most_the_refused_cap() -> None:
    schedule = Reconnect(rng=random.Random(3))
    for _ in range(10):
        schedule.next_delay()
    assert all(schedule.next_delay(refused=True) <= REFUSED_CAP for _ in range(50))
    assert max(schedule.next_delay() for _ in range(20)) > REFUSED_CAP  # still grown


def test_a_connection_that_was_up_starts_the_schedule_again() -> None:
    schedule = Reconnect(rng=random.Random(4))
    for _ in range(10):
        schedule.next_delay()
    schedule.connected()
    assert schedule.next_delay() <= BASE


def test_machines_refused_together_are_spread_over_the_window_not_bunched() -> None:
    """2,000 machines lose the broker at once: their next refused attempts (the ones that
    land when the broker is back) spread over the window; none bunch in a tenth of it."""
    delays = []
    for seed in range(2000):
        schedule = Reconnect(rng=random.Random(seed))
        for _ in range(6):
            schedule.next_delay(refused=True)
        delays.append(schedule.next_delay(refused=True))
    buckets = [0] * 10
    for d in delays:
        buckets[min(9, int((d - BASE / 2) / (REFUSED_CAP - BASE / 2) * 10))] += 1
    assert max(buckets) < 2000 * 0.2


async def test_a_connect_to_a_port_nothing_listens_on_reads_as_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connects are refused
        with pytest.raises(aiomqtt.MqttError) as caught:
            async with aiomqtt.Client("127.0.0.1", port, timeout=5):
                pass
    assert refused(caught.value)
    assert refused(ClosedBeforeConnack())
    assert not refused(aiomqtt.MqttError("Operation timed out"))
    assert not refused(aiomqtt.MqttCodeError(0x86, "bad user name or password"))


async def test_refused_attempts_retry_within_the_cap_and_use_no_new_epoch(tmp_path: Path) -> None:
    """A machine whose broker refuses (nothing listens): it tries again at least every
    REFUSED_CAP, and every attempt after the first reuses the first one's epoch (none of
    them reached the broker), so the epoch file is not rewritten per attempt."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        epochs = EpochStore(tmp_path / "epochs.json")
        m = Machine(MachineConfig("pc-01", "pw", port=port), epochs, autoplay=False)
        attempts: list[float] = []
        real_client_for = m._client_for

        def counted(epoch: int) -> aiomqtt.Client:
            attempts.append(asyncio.get_running_loop().time())
            assert epoch == 1
            return real_client_for(epoch)

        m._client_for = counted  # type: ignore[method-assign]
        task = asyncio.get_running_loop().create_task(m.run())
        await asyncio.sleep(3 * REFUSED_CAP)
        m._stopping = True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(attempts) >= 3
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert max(gaps) < REFUSED_CAP + 0.5  # the delay, plus a refused connect
    assert epochs.current("pc-01") == 1
    assert json.loads((tmp_path / "epochs.json").read_text()) == {"pc-01": 1}
