"""The intake connection's backoff is cut short when the main connection comes back.

Both connections lose the broker when it restarts; the intake waits for the main one, and its
own backoff grew while the broker was down. Waited out, it kept the bridge not ready (no
requests read) 12 s after the broker was back in `plaza bench storm`.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from bridge.connections import Connections

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def pause(main_up: asyncio.Event, delay: float) -> float:
    t0 = time.monotonic()
    await Connections._intake_pause(SimpleNamespace(main_up=main_up), delay)  # type: ignore[arg-type]
    return time.monotonic() - t0


async def test_the_main_connection_coming_back_ends_the_intake_s_backoff() -> None:
    main_up = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, main_up.set)
    assert await pause(main_up, 10.0) < 2.0


async def test_the_main_connection_going_down_and_back_ends_it_too() -> None:
    main_up = asyncio.Event()
    main_up.set()
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, main_up.clear)
    loop.call_later(0.3, main_up.set)
    assert await pause(main_up, 10.0) < 2.0


async def test_while_the_main_connection_stays_up_the_backoff_is_waited_out() -> None:
    main_up = asyncio.Event()
    main_up.set()
    assert await pause(main_up, 0.5) >= 0.5
