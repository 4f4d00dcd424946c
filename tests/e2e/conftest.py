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
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from plaza.messages import BoardEntry
from plaza.mqtt import client_options
from plaza.settings import Settings
from plaza.topics import Topics
from venue.accounts import API_USER, BRIDGE_USER, OBSERVER_CLIENT_ID, OBSERVER_USER
from venue.broker import free_port
from venue.up import UpOptions, Venue, prepare, wait_board_online, wait_http_ready

T = TypeVar("T")
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
    "PLAZA_WAITLIST_HOLD": "6",
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
        proc = self.venue.children.pop(name).proc
        assert proc is not None
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
        settings.mqtt_host,
        settings.mqtt_port,
        username=OBSERVER_USER,
        password=password,
        identifier=OBSERVER_CLIENT_ID,
        **client_options(settings),
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


def in_thread(fn: Callable[..., T], *args: Any) -> T:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


@contextlib.contextmanager
def running_venue(data: Path, *, tls: bool) -> Iterator[E2EVenue]:
    """The venue `plaza up` prepares (with ``tls``: the venue CA, TLS 1.3 on the broker and
    nginx in front), started part by part."""
    mqtt_port, ws_port, http_port, metrics_port = distinct_free_ports(4)
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        # in a thread: a sync Playwright started earlier keeps an event loop running in this
        # one, and prepare() seeds the database with asyncio.run
        venue = in_thread(
            prepare,
            UpOptions(
                data_dir=data,
                devices=DEVICES,
                mqtt_port=mqtt_port,
                ws_port=ws_port,
                http_port=http_port,
                metrics_port=metrics_port,
                tls=tls,
            ),
        )
    finally:
        os.umask(umask)  # prepare() makes plaza up's files private; not this test process's
    handle = E2EVenue(venue, f"{'https' if tls else 'http'}://127.0.0.1:{http_port}")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in SERVICE_ENV.items():
            mp.setenv(key, value)
        try:
            venue.start_broker()
            venue.spawn("bridge", ["bridge"], BRIDGE_USER, venue.secrets.bridge)
            venue.spawn(
                "api", ["api"], API_USER, venue.secrets.api, PLAZA_HTTP_PORT=str(venue.api_port)
            )
            handle.start_sim("sim-target", [TARGET])
            handle.start_sim("sim-rest", [d for d in venue.device_ids if d != TARGET])
            deadline = time.monotonic() + 40
            ready = f"http://127.0.0.1:{venue.api_port}/readyz"
            wait_http_ready(ready, deadline, venue.dead_child)
            in_thread(lambda: asyncio.run(wait_board_online(venue, deadline)))
            yield handle
        finally:
            venue.stop()


@pytest.fixture(scope="session")
def e2e_venue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EVenue]:
    with running_venue(tmp_path_factory.mktemp("venue").resolve(), tls=False) as venue:
        yield venue


@pytest.fixture(scope="session")
def e2e_tls_venue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EVenue]:
    with running_venue(tmp_path_factory.mktemp("tls-venue").resolve(), tls=True) as venue:
        yield venue


def launch(p: Playwright, env: dict[str, str | float | bool] | None = None) -> Browser:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed (scripts/setup.sh installs it)")
    return p.chromium.launch(
        executable_path=executable,
        args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"],
        env=env,
    )


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    """One Playwright for the session: a second sync Playwright cannot start in this thread."""
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = launch(playwright)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="session")
def tls_browser(
    playwright: Playwright, e2e_tls_venue: E2EVenue, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Browser]:
    """chromium that trusts the venue CA, as a venue's own screens are set up: the CA is
    added to the NSS database of the browser's (temporary) home with certutil, trusted for
    TLS servers. No certificate error is ignored; any other certificate still fails."""
    home = tmp_path_factory.mktemp("browser-home")
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    ca = e2e_tls_venue.data / "tls" / "ca.crt"
    for args in (
        ["-N", "--empty-password"],
        ["-A", "-t", "C,,", "-n", "GamePlaza venue CA", "-i", str(ca)],
    ):
        subprocess.run(["certutil", "-d", f"sql:{nssdb}", *args], check=True, capture_output=True)
    b = launch(playwright, env={**os.environ, "HOME": str(home)})
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


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser context for one test (its own storage and cookies), closed after."""
    ctx = new_context(browser)
    try:
        yield ctx
    finally:
        ctx.close()


def log_in(
    context: BrowserContext, venue: E2EVenue, user: str, query: str = "", password: str = ""
) -> Page:
    """Open the web client, log in over its form, and wait until the live link is up
    (``password``: an account the test made; else a demo account's)."""
    page = context.new_page()
    page.goto(f"{venue.base_url}/{query}")
    page.fill("#login-form [name=username]", user)
    page.fill("#login-form [name=password]", password or venue.password(user))
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#conn[data-state=live]")
    return page
