"""The flood budget and the fair intake: what a player's messages cost before they are read.

Every message a player sends on the bridge's intake connection (a reservation request or a
read receipt, well-formed or not, retained or not) is charged to its sender, named by its
topic (:meth:`plaza.topics.Topics.sender_of`), before anything else is spent on it:

- :class:`FloodGate` keeps a token bucket per sender (``PLAZA_FLOOD_BURST``, refilled at
  ``PLAZA_FLOOD_RATE`` per second). A message without a token is dropped where the raw packet
  is read (:mod:`plaza.fast_receive`): never decoded, never answered. Silence is the answer
  far over budget. ``PLAZA_FLOOD_DISABLE_AFTER`` drops in a row (no message let through in
  between) flag the sender once: the cooling-off (:mod:`bridge.cooloff`) disables it in the
  broker, which also disconnects it. While it cools off every message of its is dropped.
  The api (a trusted service, which speaks for staff) and the admin topic are never charged.
- :class:`FairQueue` holds what was let through, one queue per sender, served round-robin,
  so one sender's backlog never delays another's command.

The commands budget (``PLAZA_RATE_BURST``, answered ``rate_limited``) is still applied by
the desk to what the flood budget lets through.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from bridge.metrics import DROP_REASONS

T = TypeVar("T")

#: why a message was dropped unread (``plaza_bridge_dropped_messages_total{reason}``)
OVER_BUDGET, COOLING_OFF, RETAINED = DROP_REASONS


@dataclass(slots=True)
class _Budget:
    tokens: float
    at: float
    #: messages dropped since the last one let through
    streak: int = 0
    #: reported as flooding (once, until released)
    flagged: bool = False


@dataclass
class FloodGate:
    """Per-sender flood budgets. ``on_flood(sender)`` is called once when a sender reaches
    ``disable_after`` drops in a row (0: never); the sender stays flagged until
    :meth:`release`. Senders in ``exempt`` are never charged."""

    burst: int
    rate: float
    disable_after: int
    on_flood: Callable[[str], None] = field(default=lambda _sender: None)
    exempt: frozenset[bytes] = frozenset()
    #: messages dropped unread, by reason
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    _senders: dict[bytes, _Budget] = field(default_factory=dict, repr=False)
    _cooling: set[bytes] = field(default_factory=set, repr=False)

    def admit(self, sender: bytes | None, now: float) -> bool:
        """Charge one message to ``sender`` (None: a service topic, not charged); whether
        it may be read. Kept to a dict lookup and some arithmetic: it runs for every
        message of a flood."""
        if sender is None or sender in self.exempt:
            return True
        if sender in self._cooling:
            self.dropped[COOLING_OFF] += 1
            return False
        budget = self._senders.get(sender)
        if budget is None:
            budget = self._senders[sender] = _Budget(float(self.burst), now)
        tokens = budget.tokens + (now - budget.at) * self.rate
        budget.tokens = tokens if tokens < self.burst else float(self.burst)
        budget.at = now
        if budget.tokens >= 1.0:
            budget.tokens -= 1.0
            budget.streak = 0
            return True
        budget.streak += 1
        self.dropped[OVER_BUDGET] += 1
        if self.disable_after and budget.streak >= self.disable_after and not budget.flagged:
            budget.flagged = True
            self.on_flood(sender.decode(errors="replace"))
        return False

    def cooling(self, users: Iterable[str]) -> None:
        """Drop everything these senders send (they are disabled in the broker)."""
        self._cooling.update(u.encode() for u in users)

    def release(self, user: str) -> None:
        """The sender's cooling-off is over (or disabling failed): a fresh budget."""
        key = user.encode()
        self._cooling.discard(key)
        self._senders.pop(key, None)

    def is_cooling(self, user: str) -> bool:
        return user.encode() in self._cooling

    def prune(self, now: float) -> int:
        """Forget senders whose bucket has refilled (they cost nothing to forget); return
        how many. Keeps the table as small as the set of recently busy senders."""
        full = self.burst / self.rate
        idle = [k for k, b in self._senders.items() if not b.flagged and now - b.at >= full]
        for key in idle:
            del self._senders[key]
        return len(idle)

    def __len__(self) -> int:
        return len(self._senders)


class _RoundRobin(Generic[T]):
    """A deque per key, served one item per key in turn (the keys in the order they last
    became non-empty or were served)."""

    def __init__(self, key: Callable[[T], Hashable]) -> None:
        self._key = key
        self._queues: OrderedDict[Hashable, deque[T]] = OrderedDict()
        self._count = 0

    def append(self, item: T) -> None:
        k = self._key(item)
        queue = self._queues.get(k)
        if queue is None:
            queue = self._queues[k] = deque()
        queue.append(item)
        self._count += 1

    def popleft(self) -> T:
        k, queue = next(iter(self._queues.items()))
        item = queue.popleft()
        if queue:
            self._queues.move_to_end(k)
        else:
            del self._queues[k]
        self._count -= 1
        return item

    def __len__(self) -> int:
        return self._count

    def senders(self) -> int:
        return len(self._queues)


class FairQueue(asyncio.Queue[T]):
    """An :class:`asyncio.Queue` that serves its items round-robin by ``key(item)`` (the
    sender): one item of each waiting sender in turn, each sender's own in order. aiomqtt
    takes it as its incoming queue (``queue_type``)."""

    def __init__(self, maxsize: int = 0, *, key: Callable[[T], Hashable]) -> None:
        self._fair_key = key
        super().__init__(maxsize)

    # asyncio.Queue keeps its items in ``self._queue`` and reaches them only through these
    def _init(self, maxsize: int) -> None:
        self._queue: Any = _RoundRobin(self._fair_key)

    def _put(self, item: T) -> None:
        self._queue.append(item)

    def _get(self) -> T:
        item: T = self._queue.popleft()
        return item

    def senders(self) -> int:
        """Senders with something queued."""
        count: int = self._queue.senders()
        return count
