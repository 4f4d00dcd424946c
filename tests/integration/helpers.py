"""Helpers of the integration tests: simulated machines and what their boards say."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from plaza.messages import BoardEntry
from plaza_sim.epochs import EpochStore
from plaza_sim.machine import Machine, MachineConfig
from tests.conftest import BrokerHandle, Seen


def board_of(seen: Seen) -> BoardEntry:
    return BoardEntry.model_validate_json(seen.payload)


def is_board(
    device: str, online: bool | None = None, status: str | None = None
) -> Callable[[Seen], bool]:
    def check(seen: Seen) -> bool:
        if seen.topic != f"plaza/board/{device}" or not seen.payload:
            return False
        entry = board_of(seen)
        return (online is None or entry.online is online) and (
            status is None or entry.status.value == status
        )

    return check


def machine(broker: BrokerHandle, device: str, tmp_path: Path, **kw: object) -> Machine:
    keepalive = int(kw.pop("keepalive", 10))  # type: ignore[call-overload]
    via_relay = bool(kw.pop("via_relay", False))
    cfg = MachineConfig(
        device,
        broker.device_password(device),
        broker.host,
        broker.port,
        keepalive=keepalive,
        via_relay=via_relay,
    )
    return Machine(cfg, EpochStore(tmp_path / "epochs.json"), autoplay=False)


async def start(m: Machine) -> asyncio.Task[None]:
    task = asyncio.get_running_loop().create_task(m.run())
    await asyncio.wait_for(m.connected.wait(), 5)
    return task


async def stop(m: Machine, task: asyncio.Task[None]) -> None:
    await m.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
