"""The batch runner never lets one job that keeps failing stall every machine."""

from __future__ import annotations

import asyncio

import pytest

from bridge.reservations.actors import Job, Outcome
from bridge.reservations.batch_runner import BatchRunner, Committed
from plaza import rules

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_job_that_always_fails_is_dropped_and_the_others_are_decided() -> None:
    decided: list[str] = []

    async def fake_commit(batch: list[Job]) -> Committed:
        if any(j.device_id == "poison" for j in batch):
            raise RuntimeError("value too long for type character varying(200)")
        decided.extend(j.device_id for j in batch)
        return [Outcome(None) for _ in batch], [], {}

    committer = BatchRunner(
        fake_commit,
        gate=asyncio.Lock(),
        batch_max=256,
        publish=lambda _rows: None,
        on_boards=lambda _d: None,
    )
    system = rules.Actor("system", rules.Role.SYSTEM)
    jobs = [
        Job(d, rules.Command(rules.Op.COMPLETE, system, d, reservation_id="r"))
        for d in ("pc-01", "poison", "pc-02", "pc-03")
    ]
    runner = asyncio.get_running_loop().create_task(committer.run())
    try:
        async with asyncio.timeout(30):
            results = await asyncio.gather(*(committer.submit(j) for j in jobs))
    finally:
        runner.cancel()
    assert results == [None, None, None, None]  # every job's future resolved
    assert sorted(decided) == ["pc-01", "pc-02", "pc-03"]
    assert committer.dropped == 1
