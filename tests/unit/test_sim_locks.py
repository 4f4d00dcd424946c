"""The simulated machine keeps its locks by reason (plaza_sim/machine.py): a reservation's
unlock does not lift staff's maintenance lock, nor the other way round."""

from __future__ import annotations

from pathlib import Path

import pytest

from plaza.messages import CommandName, DeviceCommand
from plaza_sim.epochs import EpochStore
from plaza_sim.machine import Machine, MachineConfig

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


def cmd(name: CommandName, reason: str | None) -> bytes:
    return DeviceCommand(cmd=name, ts=0.0, reason=reason).encode()


@pytest.mark.parametrize(
    ("commands", "locks"),
    [
        ([(CommandName.LOCK, "reservation")], {"reservation"}),
        ([(CommandName.LOCK, "reservation"), (CommandName.UNLOCK, "reservation")], set()),
        (
            [
                (CommandName.LOCK, "maintenance"),
                (CommandName.LOCK, "reservation"),
                (CommandName.UNLOCK, "reservation"),
            ],
            {"maintenance"},
        ),
        (
            [
                (CommandName.LOCK, "reservation"),
                (CommandName.LOCK, "maintenance"),
                (CommandName.UNLOCK, "maintenance over"),
            ],
            {"reservation"},
        ),
        ([(CommandName.LOCK, None), (CommandName.UNLOCK, None)], set()),
    ],
)
async def test_a_machine_keeps_each_lock_until_its_own_unlock(
    tmp_path: Path, commands: list[tuple[CommandName, str | None]], locks: set[str]
) -> None:
    m = Machine(MachineConfig("pc-01", "pw"), EpochStore(tmp_path / "e.json"), autoplay=False)
    for name, reason in commands:
        await m._on_command(cmd(name, reason))
    assert m.locks == locks
    assert m.locked is bool(locks)
    if locks:
        assert await m.walk_in() is False, "no walk-in while any lock is on"
