"""How the venue's services log: bounded whatever a client sends, and per command.

A hostile client controls what most warnings are about (its topics, its payloads, how many
bad messages it sends), so a log that writes one line per bad message, with the topic in it,
is a disk the client can fill: one afternoon of 30 KB topics grew bridge.log to 34 MB.
:class:`LogLimits`, a filter on the process's log handler, bounds it:

- *excerpts*: every string, bytes or exception argument of a record is cut to
  ``PLAZA_LOG_EXCERPT_CHARS`` (500) characters, a traceback to eight times that;
- *sampling*: of the warnings (and worse) that share a message and a sender (the ``sender``
  a call passes in ``extra``, else none), the first ``PLAZA_LOG_SAMPLE_FIRST`` (5) of each
  ``PLAZA_LOG_SAMPLE_INTERVAL`` (60 s) are written and the rest counted; when the interval is
  over, one line says how many were left out. The metrics count every one.

Per command: :data:`REQUEST_ID` is the request id of the command being handled (set with
:func:`request_context` around one job's work); a record carries it as ``request_id``
(or takes the one a call passes in ``extra``). The text format appends
``request_id=…``; ``PLAZA_LOG_FORMAT=json`` writes one JSON object per line
(:class:`JsonFormatter`). :func:`setup_logging` puts it together for ``plaza``'s services.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

#: the request id of the command whose work is being done (None: none)
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "plaza_request_id", default=None
)
#: distinct (logger, message, sender) kinds tracked at once; more share one per message
MAX_KINDS = 10_000
_OTHERS = "(others)"


@contextlib.contextmanager
def request_context(request_id: str | None) -> Iterator[None]:
    """Log lines inside the block carry ``request_id``."""
    token = REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


def excerpt(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…(+{len(text) - limit} chars)"


def _cut(value: object, limit: int) -> object:
    if isinstance(value, str):
        return excerpt(value, limit)
    if isinstance(value, bytes | bytearray):
        return excerpt(repr(bytes(value[: limit + 1])), limit) if len(value) > limit else value
    if isinstance(value, BaseException):
        text = str(value)
        return excerpt(text, limit) if len(text) > limit else value
    return value


@dataclass
class _Window:
    started: float
    seen: int = 0


class LogLimits(logging.Filter):
    """Cuts long arguments, samples repeated warnings and tags records with their request
    id (see the module docstring). Put it on a handler; it writes its summaries there."""

    def __init__(
        self,
        *,
        first: int = 5,
        interval: float = 60.0,
        excerpt_chars: int = 500,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.first = first
        self.interval = interval
        self.excerpt_chars = excerpt_chars
        self._clock = clock
        self._windows: dict[tuple[str, str, str | None], _Window] = {}
        self._lock = threading.Lock()
        self._swept = clock()
        #: where summaries are written (set by :meth:`attach`)
        self.handler: logging.Handler | None = None
        #: records left out so far (all kinds)
        self.suppressed = 0

    def attach(self, handler: logging.Handler) -> LogLimits:
        handler.addFilter(self)
        self.handler = handler
        return self

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "plaza_summary", False):
            return True
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        if not hasattr(record, "sender"):
            record.sender = None
        self._shorten(record)
        if record.levelno < logging.WARNING:
            return True
        now = self._clock()
        with self._lock:
            keep, due = self._count(record, now)
            if now - self._swept >= 1.0:
                due += self._ended(now)
        for summary in due:
            self._write(summary)
        return keep

    def _shorten(self, record: logging.LogRecord) -> None:
        limit = self.excerpt_chars
        if isinstance(record.args, tuple):
            record.args = tuple(_cut(a, limit) for a in record.args)
        if isinstance(record.msg, str) and len(record.msg) > 4 * limit:
            record.msg = excerpt(record.msg, 4 * limit)
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = excerpt(text, 8 * limit)

    def _count(self, record: logging.LogRecord, now: float) -> tuple[bool, list[logging.LogRecord]]:
        """Whether to write ``record``, and the summary of its kind's last window if that
        window has just ended."""
        sender = getattr(record, "sender", None)
        sender = sender if isinstance(sender, str) else None
        key = (record.name, str(record.msg), sender)
        window = self._windows.get(key)
        if window is None and len(self._windows) >= MAX_KINDS:
            key = (record.name, str(record.msg), _OTHERS)
            window = self._windows.get(key)
        due = []
        if window is not None and now - window.started >= self.interval:
            if window.seen > self.first:
                due.append(self._summary(key, window.seen - self.first))
            window = None
        if window is None:
            window = self._windows[key] = _Window(now)
        window.seen += 1
        if window.seen <= self.first:
            return True, due
        self.suppressed += 1
        return False, due

    def _ended(self, now: float) -> list[logging.LogRecord]:
        """Summaries of the windows that are over (which are then forgotten)."""
        self._swept = now
        out = []
        for key, window in list(self._windows.items()):
            if now - window.started < self.interval:
                continue
            del self._windows[key]
            left_out = window.seen - self.first
            if left_out > 0:
                out.append(self._summary(key, left_out))
        return out

    def _summary(self, key: tuple[str, str, str | None], left_out: int) -> logging.LogRecord:
        name, msg, sender = key
        record = logging.LogRecord(
            name,
            logging.WARNING,
            "",
            0,
            "%d more like %r%s in the last %.0f s were not logged",
            (left_out, excerpt(msg, 120), f" from {sender}" if sender else "", self.interval),
            None,
        )
        record.plaza_summary = True
        record.request_id = None
        record.sender = sender
        return record

    def flush(self) -> None:
        """Write the summaries of every window that is over now (the sweep runs on the next
        warning anyway; a quiet process calls this to say the last interval's count)."""
        with self._lock:
            due = self._ended(self._clock())
        for summary in due:
            self._write(summary)

    def _write(self, record: logging.LogRecord) -> None:
        if self.handler is not None:
            self.handler.handle(record)


def flush_summaries() -> None:
    """Write the due summaries of every :class:`LogLimits` on the root logger's handlers
    (a service calls this every few seconds, so a flood's last count is said even when
    nothing else is logged after it)."""
    for handler in logging.getLogger().handlers:
        for limits in handler.filters:
            if isinstance(limits, LogLimits):
                limits.flush()


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message`` and `` request_id=…`` when the record has one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = getattr(record, "request_id", None)
        if not rid:
            return line
        first, sep, rest = line.partition("\n")  # after the message, before a traceback
        return f"{first} request_id={rid}{sep}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, and
    ``request_id``, ``sender`` and ``exc`` when there are."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("request_id", "sender"):
            value = getattr(record, name, None)
            if value:
                out[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, default=str)


LogFormat = Literal["text", "json"]


def setup_logging(
    *,
    verbose: bool = False,
    log_format: LogFormat = "text",
    first: int = 5,
    interval: float = 60.0,
    excerpt_chars: int = 500,
) -> LogLimits:
    """The root handler of a ``plaza`` process: stderr, the format, and the limits."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    limits = LogLimits(first=first, interval=interval, excerpt_chars=excerpt_chars)
    limits.attach(handler)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("aiomqtt").setLevel(logging.WARNING)
    # Alembic's own lines (plugins, dialect) say nothing to an operator; plaza.migrations logs
    # each upgrade itself
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return limits
