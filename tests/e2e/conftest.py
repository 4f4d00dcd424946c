"""A real venue for the browser tests, and a real browser (Debian's chromium, headless).

The venue is the one `plaza up` runs, but supervised here part by part, because the
scenario crashes one machine and restarts the broker under running clients: Mosquitto from
broker-config/ (LocalBroker), then `plaza bridge`, `plaza api` and two `plaza sim` processes,
one for the machine the scenario crashes (``TARGET``) and one for the other nine. Settings are
small so that time-based behaviour is quick: browser broker passwords expire after 10 s (so a
reconnect that reuses an old password fails), services reconnect within half a second.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from plaza.messages import BoardEntry
from plaza.mqtt import NODELAY
from plaza.settings import Settings
from plaza.topics import Topics
from venue.broker import LocalBroker, free_port
from venue.fleet import API_USER, BRIDGE_USER, OBSERVER_CLIENT_ID, OBSERVER_USER
from venue.up import UpOptions, Venue, init_venue, wait_board_online, wait_http_ready

DEVICES = 10
TARGET = "pc-01"
ARTIFACTS = Path(os.environ.get("PLAZA_E2E_ARTIFACTS", Path(__file__).parent / "artifacts"))
SERVICE_ENV = {
    "PLAZA_MQTT_CREDENTIAL_TTL": "10",
    "PLAZA_RECONNECT_MIN": "0.05",
    "PLAZA_RECONNECT_MAX": "0.5",
    "PLAZA_DEVICE_KEEPALIVE": "5",
    "PLAZA_LOGIN_BURST": "50",
    "PLAZA_TIMER_TICK": "0.5",
    "PLAZA_OUTAGE_GRACE": "1",
    "PLAZA_DIGEST_INTERVAL": "2",
}


@dataclass
class E2EVenue:
    venue: Venue
    base_url: str

    @property
    def data(self) -> Path:
        return self.venue.options.data_dir

    @property
    def settings(self) -> Settings:
        return self.venue.settings

    def password(self, user: str) -> str:
        secrets = self.venue.secrets
        return secrets.admin if user == "admin" else secrets.players[user]

    def start_sim(self, name: str, devices: list[str]) -> None:
        """`plaza sim` for ``devices`` only, without walk-in play (states stay put)."""
        sim_dir = self.data / name
        sim_dir.mkdir(exist_ok=True)
        devices_file = sim_dir / "devices.json"
        devices_file.write_text(json.dumps({d: self.venue.secrets.devices[d] for d in devices}))
        args = ["sim", "--data-dir", str(sim_dir), "--devices-file", str(devices_file), "--no-play"]
        self.venue.spawn(name, args, None, None)

    def crash_sim(self, name: str) -> None:
        """SIGKILL: the machines' sockets close without DISCONNECT, the broker sends wills."""
        proc = self.venue.children.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def restart_broker(self, down_for: float = 0.0) -> None:
        self.venue.broker.stop()  # a clean stop saves retained messages and sessions
        time.sleep(down_for)
        self.venue.broker.start()

    def board(self, timeout: float = 5.0) -> dict[str, BoardEntry]:
        """The retained board as the observer reads it: the truth the pages must show. (In a
        thread: sync Playwright keeps an event loop running in this one.)"""
        password = self.venue.secrets.observer
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(
                lambda: asyncio.run(read_board(self.settings, password, timeout))
            ).result()

    def log(self, name: str) -> str:
        path = self.venue.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_log(self, name: str, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log(name):
            assert time.monotonic() < deadline, (
                f"{text!r} not in {name}.log:\n{self.log(name)[-3000:]}"
            )
            time.sleep(0.2)


async def read_board(settings: Settings, password: str, timeout: float) -> dict[str, BoardEntry]:
    topics = Topics(settings.topic_root)
    board: dict[str, BoardEntry] = {}
    client = aiomqtt.Client(
        "127.0.0.1",
        settings.mqtt_port,
        username=OBSERVER_USER,
        password=password,
        identifier=OBSERVER_CLIENT_ID,
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=NODELAY,
    )
    async with client:
        await client.subscribe(topics.all_board, qos=1)
        try:
            async with asyncio.timeout(timeout):
                async for message in client.messages:
                    if isinstance(message.payload, bytes) and message.payload:
                        entry = BoardEntry.model_validate_json(message.payload)
                        board[entry.device_id] = entry
                    if len(board) >= DEVICES:
                        # retained messages come in one burst; a short quiet period ends it
                        await asyncio.sleep(0.2)
                        break
        except TimeoutError:
            pass
    return board


def distinct_free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


@pytest.fixture(scope="session")
def e2e_venue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EVenue]:
    data = tmp_path_factory.mktemp("venue").resolve()
    mqtt_port, ws_port, http_port, metrics_port = distinct_free_ports(4)
    settings = Settings(
        data_dir=data,
        mqtt_port=mqtt_port,
        ws_port=ws_port,
        http_port=http_port,
        bridge_metrics_port=metrics_port,
    )
    secrets, device_ids = init_venue(settings, DEVICES)
    broker = LocalBroker(data / "broker", mqtt_port, ws_port)
    broker.configure(secrets.broker_clients(settings), secrets.roles(Topics(settings.topic_root)))
    venue = Venue(UpOptions(data_dir=data, devices=DEVICES), settings, secrets, device_ids, broker)
    handle = E2EVenue(venue, f"http://127.0.0.1:{http_port}")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in SERVICE_ENV.items():
            mp.setenv(key, value)
        try:
            broker.start()
            venue.spawn("bridge", ["bridge"], BRIDGE_USER, secrets.bridge)
            venue.spawn("api", ["api"], API_USER, secrets.api)
            handle.start_sim("sim-target", [TARGET])
            handle.start_sim("sim-rest", [d for d in device_ids if d != TARGET])
            deadline = time.monotonic() + 40
            wait_http_ready(f"{handle.base_url}/readyz", deadline)
            asyncio.run(wait_board_online(venue, deadline))
            yield handle
        finally:
            venue.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed (scripts/setup.sh installs it)")
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def new_context(browser: Browser, width: int = 1280, height: int = 860) -> BrowserContext:
    context = browser.new_context(
        viewport={"width": width, "height": height}, timezone_id="Asia/Seoul", locale="ko-KR"
    )
    context.set_default_timeout(10_000)
    return context


def log_in(context: BrowserContext, venue: E2EVenue, user: str, query: str = "") -> Page:
    """Open the web client, log in over its form, and wait until the live link is up."""
    page = context.new_page()
    page.goto(f"{venue.base_url}/{query}")
    page.fill("#login-form [name=username]", user)
    page.fill("#login-form [name=password]", venue.password(user))
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#conn[data-state=live]")
    return page
