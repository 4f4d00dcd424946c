"""The log a client cannot grow: excerpts, sampled repeats, request ids (plaza.logs)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from plaza.logs import JsonFormatter, LogLimits, TextFormatter, request_context

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def out() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def log(out: io.StringIO, clock: Clock) -> Iterator[logging.Logger]:
    """A logger whose handler has the limits `plaza` services run with (first 3 per 60 s)."""
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter())
    LogLimits(first=3, interval=60, excerpt_chars=50, clock=clock).attach(handler)
    logger = logging.getLogger(f"test.limits.{id(out)}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger
    logger.removeHandler(handler)


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_a_repeated_warning_from_one_sender_is_written_three_times_a_minute(
    log: logging.Logger, out: io.StringIO, clock: Clock
) -> None:
    for _ in range(1000):
        log.warning("bad request from %s", "mallory", extra={"sender": "mallory"})
    log.warning("bad request from %s", "alice", extra={"sender": "alice"})
    assert len(lines(out)) == 4
    assert lines(out)[-1].endswith("bad request from alice")  # another sender is not muted


def test_after_the_interval_one_line_counts_what_was_left_out(
    log: logging.Logger, out: io.StringIO, clock: Clock
) -> None:
    for _ in range(10):
        log.warning("bad request from %s", "mallory", extra={"sender": "mallory"})
    clock.now += 61
    log.warning("bad request from %s", "mallory", extra={"sender": "mallory"})
    written = lines(out)
    assert len(written) == 5
    assert "7 more like 'bad request from %s' from mallory in the last 60 s" in written[3]
    assert written[4].endswith("bad request from mallory")  # a new interval begins


def test_a_quiet_log_still_says_the_last_count_when_flushed(
    log: logging.Logger, out: io.StringIO, clock: Clock
) -> None:
    for _ in range(5):
        log.warning("dropped message on unknown topic: %s", "t")
    limits = next(f for f in log.handlers[0].filters if isinstance(f, LogLimits))
    limits.flush()
    assert len(lines(out)) == 3  # the interval is not over yet
    clock.now += 60
    limits.flush()
    assert "2 more like" in lines(out)[-1]


def test_info_and_debug_lines_are_not_sampled(log: logging.Logger, out: io.StringIO) -> None:
    for _ in range(10):
        log.info("bridge connected")
    assert len(lines(out)) == 10


def test_long_topics_payloads_and_exceptions_are_cut_to_an_excerpt(
    log: logging.Logger, out: io.StringIO
) -> None:
    topic = "plaza/devices/" + "x" * 30_000 + "/requests/p"
    log.warning("unknown topic %s: %s", topic, ValueError(f"bad id {topic!r}"))
    log.warning("payload %r", b"y" * 70_000)
    try:
        raise RuntimeError("z" * 50_000)
    except RuntimeError:
        log.exception("handling failed")
    text = out.getvalue()
    assert len(text) < 2_000
    assert "…(+" in lines(out)[0]


def test_a_line_carries_the_request_id_of_the_command_being_handled(
    log: logging.Logger, out: io.StringIO
) -> None:
    with request_context("r-42"):
        log.debug("reserve on pc-01 decided: ok")
    log.warning("bad request", extra={"request_id": "r-43"})
    log.info("no command here")
    first, second, third = lines(out)
    assert first.endswith("decided: ok request_id=r-42")
    assert second.endswith("bad request request_id=r-43")
    assert "request_id" not in third


def test_the_json_format_is_one_object_per_line_with_the_request_id(clock: Clock) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    LogLimits(clock=clock).attach(handler)
    logger = logging.getLogger("test.limits.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with request_context("r-7"):
            logger.warning("bad request from %s", "ana", extra={"sender": "ana"})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed\non two lines")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "bad request from ana"
    assert (first["level"], first["request_id"], first["sender"]) == ("WARNING", "r-7", "ana")
    assert second["message"] == "failed\non two lines"
    assert "ValueError: boom" in second["exc"]
    assert "request_id" not in second


def test_the_kinds_it_tracks_are_bounded(log: logging.Logger, out: io.StringIO) -> None:
    limits = next(f for f in log.handlers[0].filters if isinstance(f, LogLimits))
    for n in range(12_000):  # as many senders as an attacker can name
        log.warning("bad read receipt from %s", n, extra={"sender": f"s{n}"})
    assert len(limits._windows) <= 10_001
