"""`plaza up` supervises (issue 13, findings 6, 7 and 10): a killed or wedged service comes
back while the rest keeps running, a killed broker comes back with every account even when it
died rewriting its account file, and every log it writes is rotated."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from plaza.messages import BoardEntry, Reply
from plaza.mqtt import NODELAY
from plaza.topics import Topics
from tests.integration.test_plaza_up import children_of
from venue import runstate
from venue.accounts import demo_fleet
from venue.broker import free_port, last_good_path

pytestmark = pytest.mark.integration

DEVICES = 4
T = Topics()
FAST = {
    "PLAZA_RESTART_BACKOFF_MIN": "0.2",
    "PLAZA_RESTART_BACKOFF_MAX": "1",
    "PLAZA_RECONNECT_MAX": "1",
    "PLAZA_HEALTH_INTERVAL": "0.5",
    "PLAZA_HEALTH_TIMEOUT": "0.5",
    "PLAZA_HEALTH_FAILURES": "3",
}


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


class RunningVenue:
    """`plaza up` in a subprocess; its output collected by a thread."""

    def __init__(self, data: Path, *args: str, **env: str) -> None:
        self.data = data
        self.ports: list[int] = []
        while len(set(self.ports)) < 4:
            self.ports = [free_port() for _ in range(4)]
        self.mqtt_port, self.ws_port, self.http_port, metrics = self.ports
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "venue.cli",
                "up",
                "--devices",
                str(DEVICES),
                "--consoles",  # the simulated machines only: these tests count them
                "0",
                "--data-dir",
                str(data),
                "--mqtt-port",
                str(self.mqtt_port),
                "--ws-port",
                str(self.ws_port),
                "--http-port",
                str(self.http_port),
                "--metrics-port",
                str(metrics),
                *args,
            ],
            env={**os.environ, **FAST, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.proc.poll() is None, self.output
            assert time.monotonic() < deadline, f"{text!r} not in:\n{self.output}"
            time.sleep(0.1)

    def pid(self, name: str) -> int:
        """The pid of the child running ``name`` (mosquitto, bridge, api, sim)."""
        for pid in children_of(self.proc.pid):
            args = cmdline(pid)
            if (name == "mosquitto" and args and args[0].endswith("mosquitto")) or (
                len(args) > 3 and args[1:3] == ["-m", "venue.cli"] and args[3] == name
            ):
                return pid
        raise LookupError(name)

    def wait_new_pid(self, name: str, old: int, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid = self.pid(name)
            except LookupError:
                pid = old
            if pid != old:
                return pid
            time.sleep(0.1)
        raise AssertionError(f"{name} did not come back:\n{self.output}")

    def credentials(self) -> dict[str, Any]:
        return dict(json.loads((self.data / "credentials.json").read_text()))

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)
        self._reader.join(timeout=10)
        return self.output


@contextlib.contextmanager
def running(data: Path, *args: str, **env: str) -> Iterator[RunningVenue]:
    """`plaza up` until its summary; stopped with Ctrl-C at the end, which must end well."""
    v = RunningVenue(data, *args, **env)
    try:
        v.wait_for("Press Ctrl-C")
        yield v
    finally:
        out = v.stop()
        assert v.proc.returncode == 0, out
        assert "venue stopped." in out


@pytest.fixture
def venue(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RunningVenue]:
    with running(tmp_path, **getattr(request, "param", {})) as v:
        yield v


def mqtt(v: RunningVenue, username: str, password: str, client_id: str = "") -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        v.mqtt_port,
        username=username,
        password=password,
        identifier=client_id or f"{username}-{uuid.uuid4().hex[:6]}",
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=NODELAY,
        timeout=5,
    )


async def reserve(v: RunningVenue, timeout: float = 30) -> Reply:
    """player1 reserves a machine over MQTT like a phone does; the same request id is sent
    again every 2 s until the bridge answers (the protocol's retry)."""
    player = v.credentials()["players"][0]
    user = player["username"]
    device = demo_fleet(DEVICES)[0].id
    start = time.time() + 3600 + 600 * (uuid.uuid4().int % 50)
    body = json.dumps(
        {
            "request_id": uuid.uuid4().hex,
            "op": "reserve",
            "starts_at": start,
            "ends_at": start + 1800,
        }
    ).encode()
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = T.replies(user)
    props.CorrelationData = b"c1"
    async with (
        asyncio.timeout(timeout),
        mqtt(v, user, player["password"], player.get("client_id", "")) as client,
    ):
        await client.subscribe(T.replies(user), qos=1)
        while True:
            await client.publish(T.request(device, user), body, qos=1, properties=props)
            try:
                async with asyncio.timeout(2):
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        return Reply.model_validate_json(message.payload)
            except TimeoutError:
                continue


async def board_all_online(v: RunningVenue, timeout: float = 30) -> None:
    observer = v.credentials()["observer"]
    online: dict[str, bool] = {}
    versions: dict[str, int] = {}
    async with (
        asyncio.timeout(timeout),
        mqtt(
            v, observer["username"], observer["password"], observer.get("client_id", "")
        ) as client,
    ):
        await client.subscribe(T.all_board, qos=1)
        async for message in client.messages:
            if isinstance(message.payload, bytes) and message.payload:
                entry = BoardEntry.model_validate_json(message.payload)
                if entry.version >= versions.get(entry.device_id, -1):
                    versions[entry.device_id] = entry.version
                    online[entry.device_id] = entry.online
            if len(online) == DEVICES and all(online.values()):
                return


def http(v: RunningVenue, method: str, path: str, body: Any = None, token: str = "") -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{v.http_port}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {token}"} if token else {}),
    )
    with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 - our own URL
        return json.loads(reply.read() or b"null")


def ready_status(v: RunningVenue) -> int:
    try:
        http(v, "GET", "/readyz")
    except urllib.error.HTTPError as not_ready:
        return not_ready.code
    return 200


def test_a_killed_bridge_is_restarted_while_broker_api_and_machines_keep_running(
    venue: RunningVenue,
) -> None:
    pids = {name: venue.pid(name) for name in ("mosquitto", "bridge", "api", "sim")}
    assert asyncio.run(reserve(venue)).ok

    os.kill(pids["bridge"], signal.SIGKILL)
    venue.wait_for("bridge was killed by SIGKILL")
    new_bridge = venue.wait_new_pid("bridge", pids["bridge"])
    venue.wait_for(f"bridge started again (pid {new_bridge})")

    reply = asyncio.run(reserve(venue))
    assert reply.ok, reply
    for name in ("mosquitto", "api", "sim"):
        assert venue.pid(name) == pids[name], f"{name} was restarted too"
    log = (venue.data / "logs" / "bridge.log").read_text()
    assert "--- plaza up: bridge was killed by SIGKILL" in log
    # what `plaza status` reads: the restart, how it ended, the new process
    deadline = time.monotonic() + 5
    while True:
        state = runstate.read(venue.data)
        assert state is not None
        bridge = next(p for p in state.processes if p.name == "bridge")
        if bridge.pid == new_bridge or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (bridge.up, bridge.pid, bridge.restarts) == (True, new_bridge, 1)
    assert bridge.last_exit == "was killed by SIGKILL"
    assert [p.restarts for p in state.processes if p.name != "bridge"] == [0, 0, 0]


def test_a_wedged_bridge_whose_metrics_stop_answering_is_killed_and_restarted(
    venue: RunningVenue,
) -> None:
    pids = {name: venue.pid(name) for name in ("mosquitto", "bridge", "api")}
    os.kill(pids["bridge"], signal.SIGSTOP)  # alive, but its event loop answers nothing
    venue.wait_for("bridge is wedged", timeout=20)
    venue.wait_for("bridge was killed by SIGKILL")
    venue.wait_new_pid("bridge", pids["bridge"])
    assert asyncio.run(reserve(venue)).ok
    assert venue.pid("mosquitto") == pids["mosquitto"]
    assert venue.pid("api") == pids["api"]


@pytest.mark.parametrize("damage", ["empty", "half-written"])
def test_a_broker_killed_while_saving_its_accounts_comes_back_with_every_account(
    venue: RunningVenue, damage: str
) -> None:
    # An account made at run time: a new player, and the broker account of their browser.
    http(venue, "POST", "/auth/register", {"username": "walkin1", "password": "walk-in-pw-1"})
    token = http(venue, "POST", "/auth/login", {"username": "walkin1", "password": "walk-in-pw-1"})
    browser = http(venue, "POST", "/auth/mqtt", token=token["access_token"])
    dynsec = venue.data / "broker" / "dynamic-security.json"
    deadline = time.monotonic() + 10
    while browser["username"] not in last_good_path(dynsec).read_text():
        assert time.monotonic() < deadline, "the supervisor keeps a last-good copy"
        time.sleep(0.1)
    pids = {name: venue.pid(name) for name in ("mosquitto", "bridge", "api", "sim")}

    # Mosquitto 2.0.11 truncates the file and writes it again: killed in between.
    raw = dynsec.read_bytes()
    dynsec.write_bytes(b"" if damage == "empty" else raw[: len(raw) // 2])
    os.kill(pids["mosquitto"], signal.SIGKILL)
    venue.wait_for("mosquitto was killed by SIGKILL")
    venue.wait_for("mosquitto started again")
    assert "probably stopped while saving it. Restored" in venue.output
    assert "Traceback" not in venue.output
    assert venue.pid("mosquitto") != pids["mosquitto"]

    # Every account works: the machines (the simulator reconnected), the observer, the bridge
    # and a player (a command is answered), the api (ready), the run-time browser account.
    asyncio.run(board_all_online(venue))
    assert asyncio.run(reserve(venue)).ok
    deadline = time.monotonic() + 20
    while ready_status(venue) != 200:  # 503 while its link reconnects
        assert time.monotonic() < deadline, "the api reconnected"
        time.sleep(0.2)

    async def browser_connects() -> None:
        async with mqtt(venue, browser["username"], browser["password"], browser["client_id"]):
            pass

    asyncio.run(browser_connects())
    for name in ("bridge", "api", "sim"):
        assert venue.pid(name) == pids[name], f"{name} should have reconnected, not restarted"


@pytest.mark.parametrize(
    "venue", [{"PLAZA_LOG_MAX_BYTES": "1024", "PLAZA_LOG_BACKUPS": "2"}], indirect=True
)
def test_every_log_plaza_up_writes_is_rotated_at_its_size_cap(venue: RunningVenue) -> None:
    asyncio.run(reserve(venue))
    bridge_logs = venue.data / "logs"
    for starts in (2, 3):  # each restart appends to the same rotated log
        old = venue.pid("bridge")
        os.kill(old, signal.SIGKILL)
        venue.wait_new_pid("bridge", old)
        deadline = time.monotonic() + 20
        while (
            sum(p.read_text().count("bridge connected") for p in bridge_logs.glob("bridge.log*"))
            < starts
        ):
            assert time.monotonic() < deadline, venue.output
            time.sleep(0.1)
    logs = [venue.data / "logs" / f"{n}.log" for n in ("bridge", "api", "sim")]
    logs.append(venue.data / "broker" / "mosquitto.log")
    for log in logs:
        kept = sorted(p.name for p in log.parent.glob(log.name + "*"))
        assert kept[0] == log.name
        assert set(kept) <= {log.name, f"{log.name}.1", f"{log.name}.2"}, kept
        for name in kept:
            data = (log.parent / name).read_bytes()
            assert len(data) <= 1024 or data.count(b"\n") == 1, (name, len(data))
    for rotated in ("mosquitto.log", "bridge.log"):
        parent = venue.data / ("broker" if rotated == "mosquitto.log" else "logs")
        assert (parent / f"{rotated}.1").exists(), f"{rotated} was rotated"


def test_plaza_up_starts_on_an_account_file_left_empty_with_every_account_working(
    tmp_path: Path,
) -> None:
    """The reported case: the broker died saving, then `plaza up` crashed on JSONDecodeError
    and a plain mosquitto on that file refused everyone."""
    with running(tmp_path) as first:
        http(first, "POST", "/auth/register", {"username": "walkin2", "password": "walk-in-pw-2"})
        token = http(
            first, "POST", "/auth/login", {"username": "walkin2", "password": "walk-in-pw-2"}
        )
        browser = http(first, "POST", "/auth/mqtt", token=token["access_token"])
        dynsec = tmp_path / "broker" / "dynamic-security.json"
        deadline = time.monotonic() + 10
        while browser["username"] not in last_good_path(dynsec).read_text():
            assert time.monotonic() < deadline
            time.sleep(0.1)
    dynsec.write_bytes(b"")

    with running(tmp_path) as second:
        assert "was empty: the broker was probably stopped while saving it" in second.output
        assert "Traceback" not in second.output
        assert asyncio.run(reserve(second)).ok

        async def browser_connects() -> None:
            async with mqtt(second, browser["username"], browser["password"], browser["client_id"]):
                pass

        asyncio.run(browser_connects())
