"""When a machine tries to connect again: jittered exponential backoff, kept short while
nothing listens (docs/protocol.md, "Reconnecting").

A connection that was up and ended: the first attempt after ``U(base/2, base)``. Every failed
attempt doubles the ceiling up to ``cap`` and the delay is drawn from ``U(base/2, ceiling)``
(full jitter, as the services' :class:`plaza.mqtt.Backoff`), except after an attempt the
broker's host *refused* (ECONNREFUSED: nothing listens on the port, so the broker is stopped
or restarting; or the connection closed before any CONNACK, as the machine's relay does when
its own connect is refused). A refused connect costs the broker nothing (the kernel answers
it), so that delay is at most ``refused_cap``: a machine that kept trying through a broker
restart tries again within ``refused_cap`` of the broker listening again, not after the
several seconds its backoff would have grown to meanwhile, and the machines' arrivals are
spread over that window by the jitter. Any other failure (the broker took the TCP connection
but refused the CONNECT, did not answer it in time, or dropped it during the set-up) means a
live but unwilling broker: those delays grow to ``cap``, so a struggling broker is not
hammered.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import aiomqtt

#: the first delay after a connection ends, the ceiling while nothing listens, and the cap
BASE = 0.2
REFUSED_CAP = 1.0
CAP = 10.0


class ClosedBeforeConnack(aiomqtt.MqttError):
    """The connection closed before the broker's CONNACK (the machine's relay, whose own
    connect to the broker was refused; a broker shutting down)."""

    def __init__(self) -> None:
        super().__init__("the connection closed before the broker's CONNACK")


def refused(exc: BaseException) -> bool:
    """True when ``exc`` (what aiomqtt's ``__aenter__`` raised) is a refused TCP connect, or
    a connection closed before the broker said anything (:class:`ClosedBeforeConnack`)."""
    return never_sent(exc) or any(isinstance(e, ClosedBeforeConnack) for e in _chain(exc))


def never_sent(exc: BaseException) -> bool:
    """The TCP connect itself was refused: nothing reached the broker, not even the CONNECT
    and its will (so the attempt's epoch is still unused).

    aiomqtt 2.5 turns the socket's OSError into ``MqttError(str(exc)) from None``: the
    OSError is still the exception's ``__context__`` (``from None`` only hides it)."""
    return any(isinstance(e, ConnectionRefusedError) for e in _chain(exc))


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


@dataclass
class Reconnect:
    base: float = BASE
    refused_cap: float = REFUSED_CAP
    cap: float = CAP
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def connected(self) -> None:
        """A connection was up: the next loss starts the schedule again from ``base``."""
        self.attempt = 0

    def next_delay(self, *, refused: bool = False) -> float:
        """The wait before the next attempt; ``refused``: the last one was refused."""
        ceiling = min(self.cap, self.base * 2**self.attempt)
        if refused:
            ceiling = min(ceiling, self.refused_cap)
        self.attempt = min(self.attempt + 1, 32)  # 2**32 * base is far past any cap
        return self.rng.uniform(self.base / 2, max(ceiling, self.base / 2))
