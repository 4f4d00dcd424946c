"""`plaza bench abuse`: other players' commands while one player floods the bridge.

Set-up: a private mosquitto from broker-config/, the bridge as its own process (SQLite, the
production flood budget), machines seeded in SQL, P players sending reserve commands that
conflict with nothing at a paced rate (each one commits), and one more player, the flooder,
in a process of its own: a raw MQTT 5 socket that writes pre-built PUBLISH packets of ``{}``
on its own request topic as fast as its one connection takes them (QoS 0: back to back; QoS 1:
as many in flight as the broker's Receive Maximum allows).

Phases, each ``--seconds`` long, in one run, each flood from a flooder account of its own:

- ``unflooded``: the players alone (the reference);
- ``flood QoS 0`` and ``flood QoS 1``: the production settings: the bridge drops the flood
  unread and disables the flooder in the broker (its time to the cut-off is reported); the
  target (other players' p99 < 100 ms, none lost) is for these;
- ``never disabled, QoS 0 / QoS 1``: a bridge with ``PLAZA_FLOOD_DISABLE_AFTER=0``, so the
  flood goes on for the whole phase: what the drop path and the fair intake do alone, and
  where that ends (the broker's queue to the bridge, shared by every sender).

After each phase the bench waits until the bridge has read what the flood left queued.
Per phase: the players' round trips (p50 / p99 / max), how many got no reply within 30 s
(lost), what the flooder pushed, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from venue.accounts import demo_fleet
from venue.bench_reservations import TOPICS, Load, join_players, paced
from venue.benchkit import BenchVenue, machine_line, percentile, write_report
from venue.broker import free_port

#: one flooder account per flood phase (a disabled one stays disabled for the cooling-off)
FLOODERS = 4
#: packets written per sendall by the QoS 0 flooder
CHUNK = 1000


# -- the flooder (its own process) ---------------------------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("!H", len(raw)) + raw


def flooder_account(n: int) -> tuple[str, str]:
    return f"flooder{n}", f"flooder-pw-{n}"


def connect_packet(client_id: str, user: str, password: str) -> bytes:
    body = _string("MQTT") + bytes([5, 0xC2]) + struct.pack("!H", 60) + b"\x00"
    body += _string(client_id) + _string(user) + _string(password)
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, qos: int, mid: int = 0) -> bytes:
    body = _string(topic) + (struct.pack("!H", mid) if qos else b"") + b"\x00" + payload
    return bytes([0x30 | (qos << 1)]) + _varint(len(body)) + body


def _read_packet(sock: socket.socket) -> tuple[int, bytes]:
    """One MQTT packet: (first byte, the rest after the remaining length)."""
    head = sock.recv(1)
    if not head:
        raise ConnectionError("closed")
    length, shift = 0, 0
    while True:
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError("closed")
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return head[0], body


def _receive_maximum(connack: bytes) -> int:
    """The Receive Maximum (property 0x21) of a CONNACK body, else MQTT's default."""
    pos = 2
    length, shift = 0, 0
    while True:
        byte = connack[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    end = pos + length
    sizes = {0x11: 4, 0x12: -1, 0x13: 2, 0x1F: -1, 0x21: 2, 0x22: 2, 0x24: 1, 0x25: 1}
    sizes |= {0x26: -2, 0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1, 0x1A: -1, 0x1C: -1, 0x15: -1}
    while pos < end:
        ident = connack[pos]
        pos += 1
        size = sizes.get(ident, 0)
        if ident == 0x21:
            return int(struct.unpack("!H", connack[pos : pos + 2])[0])
        if size > 0:
            pos += size
        elif size == -1:  # a string or binary
            pos += 2 + struct.unpack("!H", connack[pos : pos + 2])[0]
        elif size == -2:  # a user property: two strings
            for _ in range(2):
                pos += 2 + struct.unpack("!H", connack[pos : pos + 2])[0]
        else:
            break
    return 65535


def flood(port: int, user: str, password: str, topic: str, qos: int, seconds: float) -> None:
    """Publish ``{}`` on ``topic`` as fast as one connection takes it, for ``seconds``; print
    how many went out and whether (and when) the broker cut the connection. The account's
    client id is its name (every player's account is bound to it)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(connect_packet(user, user, password))
    kind, connack = _read_packet(sock)
    if kind >> 4 != 2 or connack[1] != 0:
        print(f"refused {connack[1]:#x}", flush=True)
        return
    # connected: wait for the word (so that starting Python is not part of the measurement)
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.monotonic()
    deadline = started + seconds
    sent = 0
    cut: float | None = None
    try:
        if qos == 0:
            chunk = publish_packet(topic, b"{}", 0) * CHUNK
            while time.monotonic() < deadline:
                sock.sendall(chunk)
                sent += CHUNK
        else:
            window = threading.Semaphore(min(_receive_maximum(connack), 1000))
            closed = threading.Event()

            def acks() -> None:
                with contextlib.suppress(OSError, ConnectionError):
                    while True:
                        kind, _ = _read_packet(sock)
                        if kind >> 4 == 4:  # PUBACK
                            window.release()
                closed.set()
                for _ in range(1000):
                    window.release()

            threading.Thread(target=acks, daemon=True).start()
            mid = 0
            while time.monotonic() < deadline and not closed.is_set():
                if not window.acquire(timeout=0.5):
                    continue
                mid = mid % 65535 + 1
                sock.sendall(publish_packet(topic, b"{}", 1, mid))
                sent += 1
            if closed.is_set():
                cut = time.monotonic() - started
    except OSError:
        cut = time.monotonic() - started
    took = time.monotonic() - started
    with contextlib.suppress(OSError):
        sock.close()
    print(f"sent {sent} in {took:.2f}s cut {cut if cut is not None else -1:.3f}", flush=True)


#: the label of the phases whose bridge never disables the flooder
SUSTAINED = "never disabled, "


# -- the run -----------------------------------------------------------------------------------
@dataclass
class Phase:
    label: str
    round_trips: list[float]
    lost: int
    load: float
    flood_sent: int = 0
    flood_seconds: float = 0.0
    #: seconds from the flood's start until the broker cut the flooder off (-1: never)
    cut_after: float = -1.0
    dropped: dict[str, str] = field(default_factory=dict)
    #: flood messages that reached the bridge in this phase (all dropped there unread)
    reached: int = 0


async def _flooder(
    port: int, n: int, device: str, qos: int, seconds: float
) -> asyncio.subprocess.Process:
    user, password = flooder_account(n)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "venue.bench_abuse",
        "--flood",
        str(port),
        user,
        password,
        TOPICS.request(device, user),
        str(qos),
        str(seconds),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def _phase(
    label: str,
    load: Load,
    args: argparse.Namespace,
    venue: BenchVenue,
    flood: tuple[int, int] | None = None,
) -> Phase:
    """The players' paced commands for ``args.seconds``, with flooder ``flood`` = (account
    number, QoS) pushing all along; then wait until the bridge has read what is left."""
    failures = load.failures
    before = _total(await _dropped(venue))
    flooder = None
    if flood is not None:
        n, qos = flood
        flooder = await _flooder(venue.broker.port, n, load.devices[0], qos, args.seconds)
        assert flooder.stdin is not None
        assert flooder.stdout is not None
        assert (await asyncio.wait_for(flooder.stdout.readline(), 30)).strip() == b"ready"
        asyncio.get_running_loop().call_later(0.1, flooder.stdin.write, b"go\n")
    times = await paced(args.rate, args.seconds, load.one)
    phase = Phase(label, times, load.failures - failures, os.getloadavg()[0])
    if flooder is not None:
        assert flooder.stdout is not None
        out = (await asyncio.wait_for(flooder.stdout.read(), 60)).decode().split()
        await flooder.wait()
        if out and out[0] == "sent":
            phase.flood_sent, phase.flood_seconds = int(out[1]), float(out[3].rstrip("s"))
            phase.cut_after = float(out[5])
    phase.dropped = await _settled(venue)
    phase.reached = _total(phase.dropped) - before
    return phase


def _total(counters: dict[str, str]) -> int:
    """Messages the intake dropped, all reasons."""
    return sum(int(float(v)) for k, v in counters.items() if k.startswith("dropped_messages"))


async def _settled(venue: BenchVenue) -> dict[str, str]:
    """The bridge's counters once they stop moving (the flood's backlog read to the end),
    so the next phase starts from a quiet intake."""
    last: dict[str, str] = {}
    for _ in range(600):
        now = await _dropped(venue)
        if now == last:
            return now
        last = now
        await asyncio.sleep(0.5)
    return last


async def _dropped(venue: BenchVenue) -> dict[str, str]:
    """The bridge's dropped-message counters, from its /metrics."""
    port = venue.bridge_env.get("PLAZA_BRIDGE_METRICS_PORT")
    if not port:
        return {}
    reader, writer = await asyncio.open_connection("127.0.0.1", int(port))
    writer.write(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
    await writer.drain()
    body = (await reader.read()).decode()
    writer.close()
    found = {}
    for line in body.splitlines():
        for name in ("dropped_messages_total", "senders_disabled_total"):
            if line.startswith(f"plaza_bridge_{name}"):
                key, value = line.rsplit(" ", 1)
                found[key.removeprefix("plaza_bridge_")] = value
    return found


async def run(args: argparse.Namespace, work: Path) -> list[Phase]:
    fleet = demo_fleet(args.machines)
    env = {
        "PLAZA_MAX_ACTIVE_PER_PLAYER": "100000000",
        "PLAZA_RATE_BURST": "100000000",
        "PLAZA_RATE_PER_MINUTE": "1000000000",
        "PLAZA_MAX_DAYS_AHEAD": "3650",
        "PLAZA_TIMER_TICK": "5",
        "PLAZA_BRIDGE_METRICS_PORT": str(free_port()),
    }
    phases: list[Phase] = []
    venue = BenchVenue(work, fleet, players=args.players, bridge_env=env, seed_devices=True)
    for n in range(FLOODERS):
        user, password = flooder_account(n)
        venue.secrets.players[user] = password
    async with venue:
        await venue.wait_bridge_ready()
        async with contextlib.AsyncExitStack() as stack:
            tg = await stack.enter_async_context(asyncio.TaskGroup())
            players, pumps = await join_players(venue, args.players, stack, tg)
            load = Load(players, [d.id for d in fleet], time.time() + 3600)
            await paced(args.rate, 1, load.one)  # warm-up
            phases.append(await _phase("unflooded", load, args, venue))
            phases.append(await _phase("flood QoS 0", load, args, venue, (0, 0)))
            phases.append(await _phase("flood QoS 1", load, args, venue, (1, 1)))
            # the drop path alone: a bridge that never disables anyone
            venue.bridge_env["PLAZA_FLOOD_DISABLE_AFTER"] = "0"
            venue.bridge_env["PLAZA_BRIDGE_METRICS_PORT"] = str(free_port())
            await venue.kill_bridge()
            await venue.start_bridge()
            await venue.wait_bridge_ready()
            await paced(args.rate, 1, load.one)
            phases.append(await _phase(SUSTAINED + "QoS 0", load, args, venue, (2, 0)))
            phases.append(await _phase(SUSTAINED + "QoS 1", load, args, venue, (3, 1)))
            for task in pumps:
                task.cancel()
    return phases


def _ms(values: list[float]) -> str:
    if not values:
        return "- | - | -"
    return f"{statistics.median(values):.1f} | {percentile(values, 99):.1f} | {max(values):.1f}"


def report(phases: list[Phase], args: argparse.Namespace, command: str) -> str:
    lines = [
        "## Abuse (`plaza bench abuse`)",
        "",
        f"{machine_line()}; {args.machines} machines seeded, {args.players} players sending "
        f"reserve commands (each commits) at {args.rate:.0f}/s in all, one flooder (a raw MQTT 5 "
        "socket writing `{}` on its request topic as fast as its one connection takes it: "
        "QoS 0 back to back, QoS 1 as many in flight as the broker's Receive Maximum). Bridge "
        "as its own process (uvloop), SQLite, the production flood budget (50 burst, 5/s). "
        "*Wrote*: what the flooder's socket took (with QoS 0 most of it is still in the "
        "kernel's buffers when the broker closes the connection); *reached the bridge*: what "
        "the bridge's drop path read and dropped; *lost*: no reply within 30 s; load avg: "
        "the host's 1-minute load average at the end of the phase (the flooder runs on the "
        "same 2 cores).",
        "",
        f"Command: `{command}`",
        "",
        "| phase | commands | p50 ms | p99 ms | max ms | lost | flooder wrote (msg/s) "
        "| reached the bridge | flooder cut off after | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in phases:
        rate = f"{p.flood_sent} ({p.flood_sent / p.flood_seconds:,.0f}/s)" if p.flood_sent else "-"
        cut = f"{p.cut_after * 1000:.0f} ms" if p.cut_after >= 0 else "-"
        lines.append(
            f"| {p.label} | {len(p.round_trips)} | {_ms(p.round_trips)} | {p.lost} | {rate} "
            f"| {p.reached if p.flood_sent else '-'} | {cut} | {p.load:.1f} |"
        )
    verdicts = []
    reference = percentile(phases[0].round_trips, 99)
    for p in phases[1:]:
        p99 = percentile(p.round_trips, 99) if p.round_trips else float("inf")
        met = p99 < 100 and p.lost == 0
        target = (
            "(the drop path alone, past what the target asks)"
            if p.label.startswith(SUSTAINED)
            else f"target p99 < 100 ms with none lost: {'met' if met else 'NOT met'}"
        )
        counters = ", ".join(f"{k} {float(v):.0f}" for k, v in p.dropped.items()) or "n/a"
        verdicts.append(
            f"- {p.label}: other players' p99 {p99:.1f} ms (unflooded {reference:.1f} ms), "
            f"{p.lost} lost; {target}. Bridge counters after it: {counters}."
        )
    return "\n".join([*lines, "", *verdicts, ""])


def run_abuse_bench(args: argparse.Namespace) -> int:
    command = (
        f"plaza bench abuse --machines {args.machines} --players {args.players} "
        f"--rate {args.rate:.0f} --seconds {args.seconds:g}"
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="plaza-bench-abuse-") as tmp:
        phases = asyncio.run(run(args, Path(tmp)))
    section = report(phases, args, command)
    print(section)
    print(f"bench took {time.monotonic() - started:.1f}s; report in {args.output}")
    if args.output:
        write_report(Path(args.output), section)
    production = [p for p in phases if not p.label.startswith(SUSTAINED)]
    worst = max(percentile(p.round_trips, 99) if p.round_trips else 1e9 for p in production)
    return 0 if worst < 100 and all(p.lost == 0 for p in production) else 1


if __name__ == "__main__" and len(sys.argv) == 8 and sys.argv[1] == "--flood":
    flood(
        int(sys.argv[2]),
        sys.argv[3],
        sys.argv[4],
        sys.argv[5],
        int(sys.argv[6]),
        float(sys.argv[7]),
    )
