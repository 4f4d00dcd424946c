"""The simulated machine keeps its locks by reason and reservation (plaza_sim/machine.py): a
reservation's unlock lifts its own lock, not staff's maintenance lock nor another slot's, and
staff's unlock leaves the reservations' locks on."""

from __future__ import annotations

from pathlib import Path

import pytest

from plaza.messages import CommandName, DeviceCommand
from plaza_sim.epochs import EpochStore
from plaza_sim.machine import Machine, MachineConfig

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


def cmd(name: CommandName, reason: str | None, reservation: str | None = None) -> bytes:
    return DeviceCommand(cmd=name, ts=0.0, reason=reason, reservation_id=reservation).encode()


LOCK, UNLOCK = CommandName.LOCK, CommandName.UNLOCK


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
        # back-to-back slots: A's check-in (its unlock) leaves B's lock on
        ([(LOCK, "reservation", "b"), (UNLOCK, "reservation", "a")], {"reservation:b"}),
        (
            [(LOCK, "reservation", "a"), (LOCK, "reservation", "b"), (UNLOCK, "reservation", "a")],
            {"reservation:b"},
        ),
        ([(LOCK, "reservation", "b"), (UNLOCK, "reservation", "b")], set()),
        (
            [(LOCK, "reservation", "b"), (LOCK, "maintenance"), (UNLOCK, "maintenance over")],
            {"reservation:b"},
        ),
    ],
)
async def test_a_machine_keeps_each_lock_until_its_own_unlock(
    tmp_path: Path, commands: list[tuple[CommandName, ...]], locks: set[str]
) -> None:
    m = Machine(MachineConfig("pc-01", "pw"), EpochStore(tmp_path / "e.json"), autoplay=False)
    for name, *args in commands:
        await m._on_command(cmd(name, *args))
    assert m.locks == locks
    assert m.locked is bool(locks)
    if locks:
        assert await m.walk_in() is False, "no walk-in while any lock is on"
