"""The bridge's metrics, in Prometheus form, each bridge with its own registry.

Three kinds, chosen by what they cost on the hot path:

- plain int counters on :class:`BridgeMetrics` that the presence and device paths increment
  (no lock, no label lookup), exported as ``plaza_bridge_<field>_total`` at scrape time;
- :class:`CommandMeter`: ``commands_total{op,result}`` and the ``command_seconds`` histogram,
  prometheus_client objects because they carry labels and buckets, and the last minute's
  count and p99 (:class:`RecentLatency`), for `plaza status`;
- live values (machines online, actor queues, committer and outbox counters) read from the
  running service at scrape time by :class:`BridgeCollector`: nothing to keep in step.

Every :class:`BridgeMetrics` owns a :class:`~prometheus_client.CollectorRegistry`, never the
global default one, so several bridges in one process (the tests) do not clash.
:mod:`bridge.metrics_http` serves it.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from plaza.broker_stats import BrokerStats
from plaza.broker_stats import register as register_broker_stats
from plaza.messages import Reply

#: why the intake dropped a message unread (bridge.flood)
DROP_REASONS = ("over_budget", "cooling_off", "retained")

PREFIX = "plaza_bridge_"
#: command latency buckets, seconds: a decision takes ~1 ms on SQLite, a batch under load tens
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
#: the op label of a request whose payload could not be parsed
UNKNOWN_OP = "unknown"


class RecentLatency:
    """Command latencies of the last ``window`` seconds, as counts per latency bucket in one
    slot per second (a fixed ``window`` x buckets of integers, whatever the rate): what
    `plaza status` shows as commands per minute and their p99."""

    def __init__(
        self,
        window: int = 60,
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window, self.buckets, self._clock = window, buckets, clock
        self._second = [-1] * window
        self._counts = [[0] * (len(buckets) + 1) for _ in range(window)]

    def observe(self, seconds: float) -> None:
        now = int(self._clock())
        slot = now % self.window
        if self._second[slot] != now:
            self._second[slot] = now
            self._counts[slot] = [0] * (len(self.buckets) + 1)
        self._counts[slot][bisect.bisect_left(self.buckets, seconds)] += 1

    def _totals(self) -> list[int]:
        now = int(self._clock())
        totals = [0] * (len(self.buckets) + 1)
        for second, counts in zip(self._second, self._counts, strict=True):
            if now - self.window < second <= now:
                totals = [a + b for a, b in zip(totals, counts, strict=True)]
        return totals

    def count(self) -> int:
        return sum(self._totals())

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding quantile ``q`` (``inf`` past the last one);
        None with nothing observed."""
        totals = self._totals()
        total = sum(totals)
        if not total:
            return None
        seen = 0
        for bound, n in zip((*self.buckets, math.inf), totals, strict=True):
            seen += n
            if seen >= q * total:
                return bound
        return math.inf


def _counter(help_text: str) -> int:
    return field(default=0, metadata={"help": help_text})


class CommandMeter:
    """Reservation requests by op and result, and how long each took to decide.

    ``result`` is ``ok`` or the reply's error code (``conflict``, ``invalid``, ``rate_limited``,
    ``forbidden``, ...); ``dropped`` when the committer gave up on a job that kept failing (its
    requester hears nothing and retries)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.total = Counter(
            f"{PREFIX}commands",
            "Reservation requests by op and result (ok or the error code)",
            ("op", "result"),
            registry=registry,
        )
        self.seconds = Histogram(
            f"{PREFIX}command_seconds",
            "From the desk accepting a request to its reply being decided (committed)",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        #: the last minute's latencies (`plaza status`)
        self.recent = RecentLatency()

    def refused(self, op: str, code: str) -> None:
        """A request answered by the desk itself, before any actor saw it."""
        self.total.labels(op, code).inc()

    def follow(self, op: str, decided: asyncio.Future[Reply | None], started: float) -> None:
        """Count the request and observe its latency (from ``started``, a
        :func:`time.perf_counter` reading) once ``decided`` has its reply."""

        def done(future: asyncio.Future[Reply | None]) -> None:
            if future.cancelled():  # the bridge is stopping: nothing was decided
                return
            if future.exception() is not None:
                result = "error"
            else:
                reply = future.result()
                if reply is None:
                    result = "dropped"
                elif reply.ok:
                    result = "ok"
                else:
                    result = reply.error.code if reply.error else "error"
            took = time.perf_counter() - started
            self.seconds.observe(took)
            self.recent.observe(took)
            self.total.labels(op, result).inc()

        decided.add_done_callback(done)


@dataclass
class BridgeMetrics:
    presence_applied: int = _counter("Presence messages that changed a machine's view")
    #: presences older than the machine's current epoch (a late will of a dead connection)
    fenced_presences: int = _counter(
        "Presences ignored because their epoch is older than the machine's current one"
    )
    states_applied: int = _counter("Machine state messages applied")
    stale_states: int = _counter("Machine state messages ignored as older than the current one")
    bad_payloads: int = _counter("Device messages dropped because their payload was invalid")
    unknown_topics: int = _counter("Messages dropped because the bridge does not handle the topic")
    reconnects: int = _counter("Times the bridge lost the broker and reconnected")
    board_republished: int = _counter(
        "Board entries published again after connecting because the broker lacked them"
    )
    db_batches: int = _counter("Device view batches written to SQL")
    db_errors: int = _counter("Device view batches that failed to write (retried)")
    board_published: int = _counter("Retained board entries published")
    #: messages whose handling raised (a bug, logged with its traceback; the loop goes on)
    handler_errors: int = _counter("Messages whose handling raised (a bug; see the log)")
    #: outbox rows the broker could not take (too large, refused, dropping the connection)
    dead_letters: int = _counter("Outbox messages set aside as dead letters (never sent)")
    unsendable: int = _counter("Live messages not published: too large for the broker or refused")
    wedged: int = _counter(
        "Connections closed because a publish was not acknowledged in time while they looked up"
    )
    #: players disabled in the broker for flooding (bridge.cooloff)
    senders_disabled: int = _counter("Players disabled in the broker for flooding (cooling-off)")
    #: messages dropped unread by the intake's flood budget, by reason (bridge.flood)
    dropped: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(DROP_REASONS, 0), repr=False, compare=False
    )
    registry: CollectorRegistry = field(
        default_factory=CollectorRegistry, repr=False, compare=False
    )
    commands: CommandMeter = field(init=False, repr=False, compare=False)
    #: the broker's own $SYS figures, exported as ``plaza_broker_*`` (plaza.broker_stats)
    broker: BrokerStats = field(default_factory=BrokerStats, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.commands = CommandMeter(self.registry)
        register_broker_stats(self.registry, self.broker)

    def counters(self) -> Iterator[tuple[str, str, int]]:
        """(name, help, value) of every int counter, for export."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int):
                yield f.name, str(f.metadata.get("help", f.name.replace("_", " "))), value

    def watch(self, bridge: LiveBridge, *, process: bool = True) -> None:
        """Export ``bridge``'s live values (and this process's CPU, memory, fds) too."""
        self.registry.register(BridgeCollector(self, bridge))
        if process:
            ProcessCollector(registry=self.registry)


# -- what the collector reads of the running service: small protocols, not its classes ------
class _View(Protocol):
    @property
    def online(self) -> bool: ...


class _Tracker(Protocol):
    @property
    def views(self) -> Mapping[str, _View]: ...


class _Actors(Protocol):
    @property
    def queues(self) -> Mapping[str, object]: ...

    def depth(self) -> int: ...


class _DeskCounts(Protocol):
    @property
    def requests(self) -> int: ...


class _Desk(Protocol):
    @property
    def actors(self) -> _Actors: ...

    @property
    def metrics(self) -> _DeskCounts: ...


class _Timers(Protocol):
    @property
    def submitted(self) -> int: ...


class _Runner(Protocol):
    @property
    def batches(self) -> int: ...

    @property
    def dropped(self) -> int: ...


class _Publisher(Protocol):
    @property
    def published(self) -> int: ...


class _Partitions(Protocol):
    def figures(self) -> list[tuple[str, str, float, bool]]: ...


class LiveBridge(Protocol):
    """What :class:`BridgeCollector` reads of the running service; each part is None until
    the service has started it."""

    @property
    def tracker(self) -> _Tracker | None: ...

    @property
    def desk(self) -> _Desk | None: ...

    @property
    def timers(self) -> _Timers | None: ...

    @property
    def runner(self) -> _Runner | None: ...

    @property
    def publisher(self) -> _Publisher | None: ...

    @property
    def partitions(self) -> _Partitions | None: ...


class BridgeCollector(Collector):
    """Reads the counters and the live values at scrape time."""

    def __init__(self, metrics: BridgeMetrics, bridge: LiveBridge) -> None:
        self.metrics = metrics
        self.bridge = bridge

    def collect(self) -> Iterator[Metric]:
        for name, help_text, value in self.metrics.counters():
            yield CounterMetricFamily(f"{PREFIX}{name}", help_text, value=value)
        recent = self.metrics.commands.recent
        yield _gauge(
            "commands_last_minute", "Reservation commands decided in the last 60 s", recent.count()
        )
        p99 = recent.quantile(0.99)
        yield _gauge(
            "command_seconds_p99_last_minute",
            "The last 60 s's 99th percentile command latency (a bucket's upper bound; NaN: none)",
            math.nan if p99 is None else p99,
        )
        dropped = CounterMetricFamily(
            f"{PREFIX}dropped_messages",
            "Messages the intake dropped unread: over the sender's flood budget, from a sender "
            "cooling off, or retained",
            labels=("reason",),
        )
        for reason, count in self.metrics.dropped.items():
            dropped.add_metric((reason,), count)
        yield dropped
        tracker, desk = self.bridge.tracker, self.bridge.desk
        views = list(tracker.views.values()) if tracker is not None else []
        yield _gauge("devices", "Machines the bridge knows", len(views))
        yield _gauge(
            "devices_online", "Machines whose presence says online", sum(v.online for v in views)
        )
        actors = desk.actors if desk is not None else None
        yield _gauge(
            "actor_queue_depth",
            "Reservation jobs queued in device actors, all machines",
            actors.depth() if actors is not None else 0,
        )
        yield _gauge(
            "actors",
            "Device actors alive (one per machine with recent work)",
            len(actors.queues) if actors is not None else 0,
        )
        if desk is not None:
            yield CounterMetricFamily(
                f"{PREFIX}requests", "Reservation requests received", value=desk.metrics.requests
            )
        timers = self.bridge.timers
        if timers is not None:
            yield CounterMetricFamily(
                f"{PREFIX}timer_jobs",
                "Timer jobs submitted (reminders, no-show release, end of slot)",
                value=timers.submitted,
            )
        runner = self.bridge.runner
        if runner is not None:
            yield CounterMetricFamily(
                f"{PREFIX}commit_batches",
                "Reservation batches committed (group commit)",
                value=runner.batches,
            )
            yield CounterMetricFamily(
                f"{PREFIX}commit_dropped",
                "Reservation jobs dropped after failing again and again (nothing committed)",
                value=runner.dropped,
            )
        partitions = self.bridge.partitions
        for name, help_text, figure, counter in partitions.figures() if partitions else []:
            if counter:
                yield CounterMetricFamily(f"{PREFIX}{name}", help_text, value=figure)
            else:
                yield _gauge(name, help_text, figure)
        publisher = self.bridge.publisher
        if publisher is not None:
            yield CounterMetricFamily(
                f"{PREFIX}outbox_published",
                "Outbox messages published to the broker",
                value=publisher.published,
            )


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}{name}", help_text, value=value)
