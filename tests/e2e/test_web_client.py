"""The venue web client in a real browser against a real venue (issue #7).

The scenario runs in one test because its steps build on each other (a reservation, its
conflict, its approval, its machine's crash, a broker restart), with three browser contexts
open throughout: two players and an admin. Smaller tests cover the language switch, the
markup, the wall screen, the REST fallback, maintenance and notices, a phone screen, the
board's version rule, and the review findings on the client's own state: a session built
once per login, a stopped link, booking answers that arrive late or not at all, REST reloads
racing live updates, token expiry, and conflict texts. Screenshots go to
tests/e2e/artifacts/.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import (
    APIResponse,
    Browser,
    Error,
    Locator,
    Page,
    Route,
    WebSocket,
    WebSocketRoute,
    expect,
)

from tests.e2e.conftest import TARGET, E2EVenue, log_in, new_context

pytestmark = pytest.mark.e2e

WATCH_OPTIMISTIC = """() => {
  window.__optimistic = [];
  new MutationObserver((changes) => {
    for (const change of changes) for (const node of change.addedNodes) {
      if (node.dataset && node.dataset.optimistic === "true") {
        window.__optimistic.push({device: node.dataset.device, status: node.dataset.status});
      }
    }
  }).observe(document.querySelector("#mine"), {childList: true});
}"""


SEOUL = ZoneInfo("Asia/Seoul")  # the browser contexts' time zone (conftest.new_context)
STEP = 1800  # the booking form's start times: every half hour

SEED_OFFER = """({user, offer}) => {
  localStorage.setItem(`plaza.notifications.${user}`, JSON.stringify([{
    id: "offer-e2e", type: "device_offline_during_reservation", title: "예약 기기 오프라인",
    message: "예약한 기기가 꺼졌습니다.", priority: "high", ts: Date.now() / 1000, read: false,
    offer}]));
}"""


def at(k: int) -> int:
    """The form's k-th half-hour start after now (its option value), k >= 0."""
    return math.ceil(time.time() / STEP) * STEP + k * STEP


def clock_range(starts: float, ends: float) -> str:
    """How the page writes a slot (the day, when not today, comes in front)."""
    fmt = "%H:%M"
    return (
        f"{datetime.fromtimestamp(starts, SEOUL).strftime(fmt)}"
        f"\N{EN DASH}{datetime.fromtimestamp(ends, SEOUL).strftime(fmt)}"
    )


def auth(venue: E2EVenue, user: str) -> dict[str, str]:
    login = httpx.post(
        f"{venue.base_url}/auth/login", json={"username": user, "password": venue.password(user)}
    )
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def reserve(venue: E2EVenue, user: str, device: str, starts: int, minutes: int) -> str:
    """A reservation made over REST (another screen), returned by id."""
    body = {
        "device_id": device,
        "starts_at": datetime.fromtimestamp(starts, SEOUL).isoformat(),
        "ends_at": datetime.fromtimestamp(starts + minutes * 60, SEOUL).isoformat(),
    }
    made = httpx.post(
        f"{venue.base_url}/reservations", json=body, headers=auth(venue, user), timeout=10
    )
    assert made.status_code in (200, 201), made.text
    return str(made.json()["id"])


def active(venue: E2EVenue, user: str) -> list[dict[str, Any]]:
    query = "status=pending&status=approved&status=checked_in&limit=100"
    page = httpx.get(f"{venue.base_url}/reservations?{query}", headers=auth(venue, user))
    assert page.status_code == 200, page.text
    return list(page.json()["items"])


def cancel_all(venue: E2EVenue, user: str) -> None:
    """Leave no active reservation of ``user`` behind (players may hold three)."""
    headers = auth(venue, user)
    for r in active(venue, user):
        httpx.post(f"{venue.base_url}/reservations/{r['id']}/cancel", headers=headers, timeout=10)


def set_maintenance(venue: E2EVenue, device: str, *, on: bool) -> None:
    done = httpx.patch(
        f"{venue.base_url}/devices/{device}",
        json={"maintenance": on},
        headers=auth(venue, "admin"),
        timeout=10,
    )
    assert done.status_code == 200, done.text


def submit_login(page: Page, venue: E2EVenue, user: str) -> None:
    page.fill("#login-form [name=username]", user)
    page.fill("#login-form [name=password]", venue.password(user))
    page.click("#login-form button[type=submit]")


def wait_until(page: Page, done: Callable[[], bool], seconds: float) -> None:
    """Poll ``done`` while the page (and Playwright's route handlers) keep running."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(100)


def go_online(page: Page) -> bool:
    """Say the network is back (the client then retries at once); true once live."""
    page.evaluate("dispatchEvent(new Event('online'))")
    return page.locator("#conn[data-state=live]").count() == 1


def tile(page: Page, device: str, status: str | None = None) -> Locator:
    selector = f'.tile[data-device="{device}"]'
    if status is not None:
        selector += f'[data-status="{status}"]'
    return page.locator(selector)


def assert_board_matches(page: Page, venue: E2EVenue) -> None:
    """Every tile shows what the retained board says, and nothing else is on the page."""
    truth = venue.board()
    assert len(truth) == 10
    expect(page.locator(".tile[data-device]")).to_have_count(len(truth))
    for device, entry in truth.items():
        expect(tile(page, device)).to_have_attribute("data-status", entry.status.value)
        expect(tile(page, device)).to_have_attribute("data-source", "live")


def book(page: Page, device: str, start: str = "now", minutes: int = 60) -> None:
    tile(page, device).click()
    expect(page.locator("#booking")).to_be_visible()
    page.select_option("#book-device", device)
    page.select_option("#book-start", start)
    page.select_option("#book-duration", str(minutes))


def test_the_venue_scenario_across_two_players_and_an_admin(
    e2e_venue: E2EVenue, browser: Browser, artifacts: Path
) -> None:
    venue_scenario(e2e_venue, browser, artifacts)


def test_the_venue_scenario_over_https_and_wss_with_the_venue_ca_trusted(
    e2e_tls_venue: E2EVenue, tls_browser: Browser, artifacts: Path
) -> None:
    """The same scenario on `plaza up --tls`'s shape: the page over https and the live link
    over wss (both through nginx, TLS 1.3), the broker over TLS behind it. The browser trusts
    the venue CA (conftest.tls_browser) and ignores no certificate error."""
    sockets: list[str] = []
    venue_scenario(e2e_tls_venue, tls_browser, artifacts / "tls", sockets)
    assert sockets, "the pages opened their live link"
    ws_port = e2e_tls_venue.settings.ws_port
    assert set(sockets) == {f"wss://127.0.0.1:{ws_port}/"}


def test_the_tls_browser_still_refuses_a_certificate_its_ca_did_not_sign(
    e2e_tls_venue: E2EVenue, tls_browser: Browser, tmp_path: Path
) -> None:
    """Trusting the venue CA is not ignoring errors: a server with another CA's certificate
    for the same name is refused."""
    from venue.tls import ensure_venue_tls

    other = ensure_venue_tls(tmp_path / "other", ["127.0.0.1", "localhost"])
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(other.cert, other.key)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def accept() -> None:
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                with contextlib.suppress(OSError, ssl.SSLError):
                    server.wrap_socket(conn, server_side=True).close()

        threading.Thread(target=accept, daemon=True).start()
        context = new_context(tls_browser)
        try:
            page = context.new_page()
            with pytest.raises(Error, match="ERR_CERT_AUTHORITY_INVALID"):
                page.goto(f"https://127.0.0.1:{port}/")
        finally:
            context.close()


def venue_scenario(
    venue: E2EVenue, browser: Browser, artifacts: Path, sockets: list[str] | None = None
) -> None:
    artifacts.mkdir(parents=True, exist_ok=True)
    contexts = [new_context(browser) for _ in range(3)]
    if sockets is not None:
        for context in contexts:
            context.on("page", lambda page: page.on("websocket", lambda ws: sockets.append(ws.url)))
    try:
        # 1. A player logs in; the board shows the ten machines with their live states.
        p1 = log_in(contexts[0], venue, "player1")
        assert_board_matches(p1, venue)
        expect(p1.locator(".zone")).to_have_count(3)  # grouped by zone, then kind
        p2 = log_in(contexts[1], venue, "player2")
        admin = log_in(contexts[2], venue, "admin")
        expect(tile(p2, TARGET, "available")).to_be_visible()

        # 2. Player 2 has the booking form of the same machine open; player 1 books it from
        # now on. Player 1 sees it pending at once; player 2's tile turns reserved within 1 s
        # and their open form warns about the overlapping booking.
        book(p2, TARGET)
        expect(p2.locator("#book-warning")).to_be_hidden()
        book(p1, TARGET)
        started = time.monotonic()
        p1.click("#book-submit")
        tile(p2, TARGET, "reserved").wait_for(timeout=1000)
        seen_after = time.monotonic() - started
        assert seen_after < 1.0, f"the other player saw the reservation after {seen_after:.2f} s"
        mine = p1.locator(f'#mine .res[data-device="{TARGET}"]')
        expect(mine).to_have_attribute("data-status", "pending")
        expect(mine).not_to_have_attribute("data-optimistic", "true")
        expect(mine.locator(".code")).to_have_text(re.compile(r"\d{6}"))
        reservation_id = mine.get_attribute("data-reservation")
        assert reservation_id
        assert not reservation_id.startswith("tmp-")
        expect(p2.locator("#book-warning")).to_be_visible()
        expect(tile(p1, TARGET, "reserved")).to_be_visible()
        expect(tile(admin, TARGET, "reserved")).to_be_attached()
        p1.screenshot(path=artifacts / "board.png", full_page=True)

        # 3. Player 2 books the overlapping slot anyway: the entry shows as pending at once,
        # the bridge answers with a conflict, the entry rolls back and the form names the slot.
        p2.evaluate(WATCH_OPTIMISTIC)
        p2.click("#book-submit")
        error = p2.locator("#book-error")
        expect(error).to_be_visible()
        expect(error).to_have_attribute("data-code", "conflict")
        expect(error).to_have_attribute("data-conflict", reservation_id)
        expect(p2.locator("#mine .res")).to_have_count(0)
        optimistic = p2.evaluate("window.__optimistic")
        assert optimistic == [{"device": TARGET, "status": "pending"}]
        p2.screenshot(path=artifacts / "booking-conflict.png")
        p2.click("#book-close")

        # 4. The admin approves the pending reservation over REST; player 1 gets the toast,
        # the unread count, and the notification in the list.
        admin.click("#nav-admin")
        pending = admin.locator(f'#pending-list li[data-reservation="{reservation_id}"]')
        expect(pending).to_be_visible()
        expect(admin.locator("#stat-online")).to_have_text("10 / 10")
        admin.screenshot(path=artifacts / "admin.png", full_page=True)
        with admin.expect_request(lambda r: r.url.endswith("/approve")) as approval:
            pending.locator('button[data-action="approve"]').click()
        key = approval.value.headers.get("idempotency-key", "")
        assert key.startswith(f"approve-{reservation_id}-"), "a retried decision applies once"
        expect(pending).to_have_count(0)
        toast = p1.locator('.toast[data-type="reservation_approved"]')
        expect(toast).to_be_visible()
        code = mine.locator(".code").inner_text().split()[-1]
        expect(toast).to_contain_text(code)
        expect(p1.locator("#live-assertive")).to_contain_text(code)
        expect(mine).to_have_attribute("data-status", "approved")
        try:
            expect(p1.locator("#unread")).to_have_text("1")
        except AssertionError as exc:  # a rare flake: say which notifications arrived
            held = p1.evaluate("localStorage.length && Object.keys(localStorage)")
            stored = [p1.evaluate(f"localStorage.getItem({k!r})") for k in held or []]
            raise AssertionError(f"{exc}\nstored notifications: {stored}") from exc
        p1.click("#nav-bell")
        expect(p1.locator('#notif-list li[data-type="reservation_approved"]')).to_be_visible()
        expect(p1.locator("#unread")).to_be_hidden()
        p1.keyboard.press("Escape")
        expect(p1.locator("#notifications")).to_be_hidden()

        # 5. The machine crashes (its socket closes without DISCONNECT): every page shows it
        # offline within 2 s. The outage pages the player (with a rebook offer) and staff.
        started = time.monotonic()
        venue.crash_sim("sim-target")
        for page in (p1, p2, admin):
            left = max(0.1, 2.0 - (time.monotonic() - started))
            tile(page, TARGET, "offline").wait_for(state="attached", timeout=left * 1000)
        offline_after = time.monotonic() - started
        assert offline_after < 2.0
        outage = p1.locator('.toast[data-type="device_offline_during_reservation"]')
        expect(outage).to_be_visible()
        expect(outage.locator("button[data-offer]")).to_be_visible()
        alerts = admin.locator("#alert-list li[data-type=device_down_reserved]")
        alert = alerts.and_(admin.locator(f'[data-device="{TARGET}"]')).first
        expect(alert).to_be_visible()
        expect(alert.locator("time")).to_have_text(re.compile(r"^\d+월 \d+일 \d\d:\d\d$"))
        admin.screenshot(path=artifacts / "admin-alert.png", full_page=True)
        alert.locator("button[data-ack]").click()  # POST /alerts/{id}/ack
        expect(alert).to_have_attribute("data-acknowledged", "true")
        expect(alert.locator("button[data-ack]")).to_have_count(0)
        admin.click('#nav [data-view="board"]')

        # 6. The broker restarts while the machine comes back: every page notices, reconnects
        # by itself (with fresh broker credentials: the old ones have expired by now) and
        # shows the right board afterwards, the machine reserved again.
        venue.wait_for_log("api", "browser broker passwords expired", timeout=15)
        venue.venue.broker.stop()
        for page in (p1, p2, admin):
            expect(page.locator("#conn")).not_to_have_attribute("data-state", "live")
        venue.start_sim("sim-target", [TARGET])
        time.sleep(1.0)
        venue.venue.broker.start()
        for page in (p1, p2, admin):
            expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=20_000)
            expect(tile(page, TARGET, "reserved")).to_be_attached(timeout=10_000)
        for page in (p1, p2, admin):
            assert_board_matches(page, venue)
        expect(mine).to_have_attribute("data-status", "approved")
    finally:
        for context in contexts:
            context.close()


def test_the_language_switch_relabels_everything_and_is_stored_on_the_account(
    e2e_venue: E2EVenue, browser: Browser
) -> None:
    context = new_context(browser)
    try:
        page = log_in(context, e2e_venue, "player3")
        expect(page.locator("html")).to_have_attribute("lang", "ko")
        expect(tile(page, "console-01").locator(".tile-status")).to_have_text(
            re.compile("이용 가능|사용 중|예약됨|오프라인|고장|점검 중")
        )
        page.select_option("#lang", "en")
        expect(page.locator("html")).to_have_attribute("lang", "en")
        expect(page.locator("#mine-title")).to_have_text("My reservations")
        expect(tile(page, "console-01").locator(".tile-status")).to_have_text(
            re.compile("Available|In use|Reserved|Offline|Fault|Maintenance")
        )
        token = page.evaluate("JSON.parse(sessionStorage.getItem('plaza.auth')).access_token")
        deadline = time.monotonic() + 5
        while True:
            me = httpx.get(
                f"{e2e_venue.base_url}/me", headers={"Authorization": f"Bearer {token}"}
            ).json()
            if me["locale"] == "en" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert me["locale"] == "en"
        page.reload()
        expect(page.locator("#mine-title")).to_have_text("My reservations")
        page.select_option("#lang", "ko")
        expect(page.locator("#mine-title")).to_have_text("내 예약")
    finally:
        context.close()


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.texts.append(data.strip())


def test_the_markup_holds_no_words_only_catalogue_keys(e2e_venue: E2EVenue) -> None:
    page = httpx.get(f"{e2e_venue.base_url}/")
    assert page.status_code == 200
    parser = _Text()
    parser.feed(page.text)
    assert parser.texts == []
    assert httpx.get(f"{e2e_venue.base_url}/vendor/mqtt/mqtt.esm.js").status_code == 200
    schema = httpx.get(f"{e2e_venue.base_url}/openapi.json").json()
    assert not any(p == "/" or p.startswith("/vendor") for p in schema["paths"])


def test_the_wall_screen_shows_the_board_only_with_large_tiles(
    e2e_venue: E2EVenue, browser: Browser, artifacts: Path
) -> None:
    context = new_context(browser, 1920, 1080)
    try:
        # the wall shows the floor map by default (test_web_client_floormap.py); the tiles here
        page = log_in(context, e2e_venue, "player3", "?wall=1&view=grid")
        expect(page.locator(".tile[data-device]")).to_have_count(10)
        expect(page.locator("#nav")).to_be_hidden()
        expect(page.locator("#side-mine")).to_be_hidden()
        expect(page.locator("#conn")).to_be_visible()
        assert page.locator("button.tile").count() == 0  # nothing to press on a wall
        box = page.locator(".tile").first.bounding_box()
        assert box is not None
        assert box["width"] >= 230
        page.screenshot(path=artifacts / "wall.png")
    finally:
        context.close()


def test_without_the_websocket_the_client_polls_rest_says_so_and_still_books(
    e2e_venue: E2EVenue, browser: Browser, artifacts: Path
) -> None:
    """Degraded mode: polled tiles say so; a booking whose answer is lost stays unconfirmed
    and is settled by the same request (same Idempotency-Key); a rebook offer keeps its
    `replaces`; when the link returns, a poll still on its way does not undo the live board."""
    venue = e2e_venue
    cancel_all(venue, "player3")
    slot = at(22)
    old = reserve(venue, "player3", "pc-05", slot, 30)
    offer = {"device_id": "pc-06", "name": "PC 6", "starts_at": slot, "ends_at": slot + 1800}
    context = new_context(browser)
    link = {"blocked": True}
    lost = {"post": True, "get": False}
    posts: list[dict[str, object]] = []
    held: list[tuple[Route, APIResponse]] = []
    hold = {"devices": False}

    def gate(ws: WebSocketRoute) -> None:
        if link["blocked"]:
            ws.close(code=1011, reason="blocked by the test")
        else:
            ws.connect_to_server()

    def reservations(route: Route) -> None:
        request = route.request
        if request.method == "POST":
            body: dict[str, object] = request.post_data_json or {}
            posts.append({"key": request.headers.get("idempotency-key"), **body})
            if lost["post"]:
                lost["post"] = False
                route.fetch()  # the api books it ...
                route.abort()  # ... and the answer never arrives
                return
        elif lost["get"]:
            route.abort()  # the settling's look-up fails too: it must send the same request
            return
        route.continue_()

    def devices(route: Route) -> None:
        if hold["devices"] and not held:
            held.append((route, route.fetch()))  # answered now, delivered later
            return
        route.continue_()

    try:
        context.route_web_socket(re.compile(".*"), gate)
        page = context.new_page()
        page.route(re.compile(r".*/reservations(\?.*)?$"), reservations)
        page.route(re.compile(r".*/devices$"), devices)
        page.goto(f"{venue.base_url}/?fallback=2")
        page.evaluate(SEED_OFFER, {"user": "player3", "offer": {**offer, "replaces": old}})
        submit_login(page, venue, "player3")
        expect(page.locator("#conn")).to_have_attribute("data-state", "degraded", timeout=6000)
        expect(page.locator('.tile[data-source="rest"]')).to_have_count(10)
        truth = venue.board()
        for device, entry in truth.items():
            expect(tile(page, device)).to_have_attribute("data-status", entry.status.value)
        # polled tiles say so and show no countdowns (REST does not keep them current)
        expect(page.locator('.tile[data-source="rest"] [data-line="polled"]')).to_have_count(10)
        expect(page.locator(".tile [data-line]:not([data-line=polled])")).to_have_count(0)

        # 1. The booking's answer is lost: the entry stays, unconfirmed, and the same request
        # (same Idempotency-Key) settles it.
        lost["get"] = True
        book(page, "vr-01", minutes=30)
        page.select_option("#book-start", index=4)  # two hours from now: no clash with others
        page.click("#book-submit")
        expect(page.locator("#booking")).to_be_hidden()
        booked = page.locator('#mine .res[data-device="vr-01"]')
        expect(booked).to_have_attribute("data-unconfirmed", "true")
        expect(booked).to_have_attribute("data-status", "pending")
        expect(booked).not_to_have_attribute("data-optimistic", "true", timeout=8000)
        lost["get"] = False
        reserve_posts = [p for p in posts if p["device_id"] == "vr-01"]
        assert len(reserve_posts) == 2
        assert reserve_posts[0]["key"] == reserve_posts[1]["key"]
        assert [r["device_id"] for r in active(venue, "player3")].count("vr-01") == 1
        page.screenshot(path=artifacts / "degraded.png", full_page=True)
        booked.locator("button[data-cancel]").click()
        expect(booked).to_have_count(0)

        # 2. A rebook offer taken over REST replaces the old booking in the same decision.
        page.click("#nav-bell")
        page.locator("#notif-list button[data-offer]").click()
        expect(page.locator('#mine .res[data-device="pc-06"]')).to_have_count(1)
        expect(page.locator('#mine .res[data-device="pc-05"]')).to_have_count(0)
        assert posts[-1]["replaces"] == old
        assert sorted(r["device_id"] for r in active(venue, "player3")) == ["pc-06"]
        page.keyboard.press("Escape")

        # 3. The link comes back while a poll is on its way; that poll's (older) answer must
        # not overwrite the retained board: pc-04 went into maintenance meanwhile.
        hold["devices"] = True
        wait_until(page, lambda: bool(held), 8)
        set_maintenance(venue, "pc-04", on=True)
        link["blocked"] = False
        wait_until(page, lambda: go_online(page), 20)
        expect(tile(page, "pc-04", "maintenance")).to_have_attribute("data-source", "live")
        route, answer = held[0]
        with page.expect_request_finished(lambda r: r.url.endswith("/devices")):
            route.fulfill(response=answer)
        page.wait_for_timeout(300)
        expect(page.locator('.tile[data-source="rest"]')).to_have_count(0)
        expect(tile(page, "pc-04")).to_have_attribute("data-status", "maintenance")
    finally:
        context.close()
        set_maintenance(venue, "pc-04", on=False)
        cancel_all(venue, "player3")


def test_an_admin_puts_a_machine_in_maintenance_and_broadcasts_a_notice_to_every_screen(
    e2e_venue: E2EVenue, browser: Browser
) -> None:
    contexts = [new_context(browser) for _ in range(2)]
    try:
        admin = log_in(contexts[0], e2e_venue, "admin")
        player = log_in(contexts[1], e2e_venue, "player3")
        admin.click("#nav-admin")
        box = admin.locator('input[data-maintenance="console-02"]')
        box.check()
        expect(tile(player, "console-02", "maintenance")).to_be_visible()
        badge = admin.locator('#device-list li[data-device="console-02"] .badge')
        expect(badge).to_have_attribute("data-board-status", "maintenance")
        box.uncheck()
        expect(tile(player, "console-02", "available")).to_be_visible()

        admin.fill("#notice-form [name=title]", "점검 안내")
        admin.fill("#notice-form [name=message]", "오늘 22시부터 VR 부스를 점검합니다.")
        admin.fill("#notice-form [name=title_en]", "Maintenance tonight")
        admin.fill("#notice-form [name=message_en]", "The VR booth closes for service at 22:00.")
        admin.click("#notice-form button[type=submit]")
        expect(player.locator("#notice-title")).to_have_text("점검 안내")
        expect(player.locator('.toast[data-type="system_notice"]')).to_be_visible()
        expect(admin.locator("#notice-title")).to_have_text("점검 안내")

        # Keyboard only: a tile is a button that opens the form; Escape closes it.
        tile(player, "console-01").focus()
        player.keyboard.press("Enter")
        expect(player.locator("#booking")).to_be_visible()
        player.keyboard.press("Escape")
        expect(player.locator("#booking")).to_be_hidden()
    finally:
        for context in contexts:
            context.close()


def test_on_a_phone_the_board_fits_the_screen_two_tiles_a_row(
    e2e_venue: E2EVenue, browser: Browser, artifacts: Path
) -> None:
    context = new_context(browser, 390, 844)
    try:
        page = log_in(context, e2e_venue, "player2")
        expect(page.locator(".tile[data-device]")).to_have_count(10)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        first, second = (tile(page, d).bounding_box() for d in ("pc-01", "pc-02"))
        assert first is not None
        assert second is not None
        assert first["y"] == second["y"]
        assert second["x"] > first["x"]
        page.screenshot(path=artifacts / "phone.png", full_page=True)
    finally:
        context.close()


BOARD_RULES = """async () => {
  const { Board, tileLines } = await import("/js/board.js");
  const board = new Board();
  const entry = (version, status) => ({device_id: "x", name: "X", kind: "pc", zone: "z",
    status, online: true, state: "idle", epoch: 1, version, since: 0, ts: 0});
  const applied = [
    board.apply("x", entry(5, "available")),
    board.apply("x", entry(4, "offline")),
    board.apply("x", entry(5, "in_use")),
  ];
  const status = board.get("x").status;
  board.apply("x", null);
  const now = 1000;
  const timed = {...entry(6, "in_use"),
    session: {id: "s", started_at: 0, ends_at: now + 125},
    next_slot: {reservation_id: "r", starts_at: now + 3725, ends_at: now + 7325,
      status: "approved"}};
  const lines = tileLines(timed, now);
  const polled = tileLines({...timed, polled: true}, now);
  return {applied, status, removed: board.get("x") === undefined, lines, polled};
}"""


def in_page(venue: E2EVenue, browser: Browser, script: str) -> Any:
    """Run ``script`` (the page's own modules, imported inside it) on a fresh page."""
    context = new_context(browser)
    try:
        page = context.new_page()
        page.goto(f"{venue.base_url}/")
        return page.evaluate(script)
    finally:
        context.close()


def test_the_board_ignores_a_lower_version_and_an_empty_payload_removes_the_tile(
    e2e_venue: E2EVenue, browser: Browser
) -> None:
    assert in_page(e2e_venue, browser, BOARD_RULES) == {
        "applied": [True, False, True],
        "status": "in_use",
        "removed": True,
        "lines": [["session", "남은 시간 2:05"], ["next", "다음 예약 1:02:05 후"]],
        # a polled tile says so and drops countdowns REST does not keep current
        "polled": [["polled", "주기 갱신 값 (실시간 아님)"]],
    }


def test_a_notification_sent_while_the_page_was_cut_off_arrives_after_it_reconnects(
    e2e_venue: E2EVenue, browser: Browser
) -> None:
    context = new_context(browser)
    links: list[tuple[WebSocketRoute, WebSocketRoute]] = []
    cut = False

    def through(ws: WebSocketRoute) -> None:
        if cut:
            ws.close(code=1011, reason="cut by the test")
            return
        links.append((ws, ws.connect_to_server()))

    try:
        context.route_web_socket(re.compile(".*"), through)
        page = log_in(context, e2e_venue, "player3")
        book(page, "racing-01", minutes=30)
        page.select_option("#book-start", index=6)  # three hours from now
        page.click("#book-submit")
        booked = page.locator('#mine .res[data-device="racing-01"]')
        expect(booked).to_have_attribute("data-status", "pending")
        expect(booked).not_to_have_attribute("data-optimistic", "true")
        reservation_id = booked.get_attribute("data-reservation")

        cut = True
        for browser_side, server_side in links:
            browser_side.close(code=1011, reason="cut by the test")
            server_side.close()
        expect(page.locator("#conn")).not_to_have_attribute("data-state", "live")
        login = httpx.post(
            f"{e2e_venue.base_url}/auth/login",
            json={"username": "admin", "password": e2e_venue.password("admin")},
        )
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        rejected = httpx.post(
            f"{e2e_venue.base_url}/reservations/{reservation_id}/reject", headers=headers
        )
        assert rejected.status_code == 200, rejected.text
        cut = False

        expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=20_000)
        toast = page.locator('.toast[data-type="reservation_rejected"]')
        expect(toast).to_have_count(1)
        expect(booked).to_have_count(0)
        expect(page.locator('#notif-list li[data-type="reservation_rejected"]')).to_have_count(1)
    finally:
        context.close()


def test_a_page_back_within_seconds_gets_what_changed_not_the_whole_board_again(
    e2e_venue: E2EVenue, browser: Browser
) -> None:
    """A reconnect to the session the broker kept, before the page goes degraded, subscribes
    with retain handling 1: the queued changes come, the retained board is not sent again
    (after a broker restart, every screen re-sent every machine is the storm to avoid)."""
    context = new_context(browser)
    links: list[tuple[WebSocketRoute, WebSocketRoute]] = []
    board_publishes = {"first": 0, "again": 0}
    phase = ["first"]

    def through(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def from_server(message: str | bytes) -> None:
            if isinstance(message, bytes):
                board_publishes[phase[0]] += message.count(b"/board/")
            ws.send(message)

        server.on_message(from_server)
        links.append((ws, server))

    try:
        context.route_web_socket(re.compile(".*"), through)
        page = log_in(context, e2e_venue, "player2")
        assert_board_matches(page, e2e_venue)
        machines = page.locator(".tile[data-device]").count()
        assert board_publishes["first"] >= machines, "the first connect brings the whole board"

        phase[0] = "again"
        for browser_side, server_side in links:
            browser_side.close(code=1011, reason="cut by the test")
            server_side.close()
        expect(page.locator("#conn")).not_to_have_attribute("data-state", "live")
        expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=7_000)
        page.wait_for_timeout(1500)
        # at most the machines that changed meanwhile, not one entry per machine
        assert board_publishes["again"] < machines, board_publishes
        assert_board_matches(page, e2e_venue)
    finally:
        context.close()


def commands_sent(sent: list[bytes], op: str) -> int:
    """How many reservation commands ``op`` went out in the MQTT frames a page sent (each
    PUBLISH; the bridge answers in milliseconds, long before the client's 3 s retry)."""
    return sum(frame.count(f'"op":"{op}"'.encode()) for frame in sent)


def test_after_logging_out_and_in_as_someone_else_each_command_is_sent_once(
    e2e_venue: E2EVenue, browser: Browser
) -> None:
    """Every login used to attach the views' listeners again: after a user switch one click
    sent two cancels. Logging out also forgets the account's notifications (check-in codes)
    in this browser, and a network error at login is not called a wrong password."""
    venue = e2e_venue
    cancel_all(venue, "player2")
    starts = at(12)
    context = new_context(browser)
    sent: list[bytes] = []

    def watch(ws: WebSocket) -> None:
        ws.on(
            "framesent",
            lambda payload: sent.append(
                payload if isinstance(payload, bytes) else payload.encode()
            ),
        )

    try:
        page = log_in(context, venue, "player3")
        page.on("websocket", watch)
        page.evaluate(
            "localStorage.setItem('plaza.notifications.player3', JSON.stringify([{id: 'n1',"
            " seq: 1, type: 'reservation_approved', message: '체크인 코드 123456', ts: 1}]))"
        )
        page.click("#logout")
        expect(page.locator("#login-form")).to_be_visible()
        expect(page.locator("#login-notice")).to_be_hidden()
        kept = "Object.keys(localStorage).filter((k) => k.startsWith('plaza.notifications.'))"
        assert page.evaluate(kept) == []

        page.route("**/auth/login", lambda route: route.abort())
        submit_login(page, venue, "player2")
        expect(page.locator("#login-error")).to_have_text("서버에 연결할 수 없습니다.")
        page.unroute("**/auth/login")
        submit_login(page, venue, "player2")
        expect(page.locator("#conn")).to_have_attribute("data-state", "live")

        book(page, "pc-03", start=str(starts), minutes=30)
        page.click("#book-submit")
        booked = page.locator('#mine .res[data-device="pc-03"]')
        expect(booked).to_have_attribute("data-status", "pending")
        expect(booked).not_to_have_attribute("data-optimistic", "true")
        booked.locator("button[data-cancel]").click()
        expect(booked).to_have_count(0)
        page.wait_for_timeout(300)  # a second copy would go out at the same moment
        assert commands_sent(sent, "reserve") == 1
        assert commands_sent(sent, "cancel") == 1
        assert active(venue, "player2") == []
    finally:
        context.close()
        cancel_all(venue, "player2")


STOP_WHILE_CONNECTING = """async () => {
  const { Realtime } = await import("/js/realtime.js");
  const creds = {topic_root: "plaza", user: "probe", ws_url: "ws://127.0.0.1:9/mqtt",
    client_id: "web-probe-e2e", username: "probe~e2e", password: "x"};
  const rest = {user: {username: "probe"}, post: async () => creds};
  window.__link = new Realtime(rest, {fallbackAfter: 60});
  window.__states = [];
  window.__link.addEventListener("state", (e) => window.__states.push(e.detail.state));
  window.__link.start();
}"""


def test_stopping_the_link_ends_a_connection_still_being_set_up(
    e2e_venue: E2EVenue, browser: Browser
) -> None:
    """The broker never answers CONNECT; stop() must close that socket at once, ignore a
    CONNACK that comes later, and give the client-id lease back."""
    context = new_context(browser)
    sockets: list[WebSocketRoute] = []
    closed: list[int | None] = []

    def broker(ws: WebSocketRoute) -> None:
        sockets.append(ws)
        ws.on_message(lambda message: None)  # CONNECT arrives; no CONNACK yet
        ws.on_close(lambda code, reason: closed.append(code))

    try:
        context.route_web_socket("ws://127.0.0.1:9/mqtt", broker)
        page = context.new_page()
        page.goto(f"{e2e_venue.base_url}/")
        page.evaluate(STOP_WHILE_CONNECTING)
        wait_until(page, lambda: bool(sockets), 5)
        page.evaluate("window.__link.stop()")
        wait_until(page, lambda: bool(closed), 2)
        with contextlib.suppress(Error):  # closed already: nothing to deliver
            sockets[0].send(bytes([0x20, 0x03, 0x00, 0x00, 0x00]))  # CONNACK, too late
        page.wait_for_timeout(300)
        assert page.evaluate("window.__states") == ["connecting"]
        assert page.evaluate("window.__link.client") is None
        assert page.evaluate("localStorage.getItem('plaza.clients.probe')") is None
    finally:
        context.close()


def test_a_booking_answer_goes_to_the_form_that_sent_it_and_warnings_stay_with_their_machine(
    e2e_venue: E2EVenue, browser: Browser
) -> None:
    venue = e2e_venue
    cancel_all(venue, "player2")
    cancel_all(venue, "player3")
    context = new_context(browser)
    hold = {"on": False}
    held: list[tuple[WebSocketRoute, str | bytes]] = []

    def proxy(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def from_page(message: str | bytes) -> None:
            if hold["on"] and isinstance(message, bytes) and b'"op":"reserve"' in message:
                hold["on"] = False
                held.append((server, message))
                return
            server.send(message)

        ws.on_message(from_page)

    own = at(14)
    try:
        reserve(venue, "player2", "pc-04", own, 30)
        context.route_web_socket(re.compile(".*"), proxy)
        page = log_in(context, venue, "player2")

        # 1. A booking that collides with the player's own slot is held on its way; its
        # form is closed meanwhile.
        book(page, "pc-05", start=str(own), minutes=30)
        hold["on"] = True
        page.click("#book-submit")
        wait_until(page, lambda: bool(held), 5)
        page.click("#book-close")

        # 2. A new form is not blocked by the booking still on its way, and books.
        book(page, "pc-06", start=str(at(16)), minutes=30)
        expect(page.locator("#book-submit")).to_be_enabled()
        page.click("#book-submit")
        expect(page.locator("#booking")).to_be_hidden()
        expect(page.locator('#mine .res[data-device="pc-06"]')).not_to_have_attribute(
            "data-optimistic", "true"
        )

        # 3. With another form open, the held booking is refused: the refusal is a toast
        # naming the slot; the open form is neither closed nor written into.
        book(page, "console-01", start=str(at(18)), minutes=30)
        server, message = held[0]
        server.send(message)
        toast = page.locator('.toast[data-type="error"]')
        expect(toast).to_contain_text("PC 5")
        expect(toast).to_contain_text(clock_range(own, own + 1800))
        expect(page.locator('#mine .res[data-device="pc-05"]')).to_have_count(0)
        expect(page.locator("#booking")).to_be_visible()
        expect(page.locator("#book-error")).to_be_hidden()
        page.click("#book-close")

        # 4. The live warning belongs to the machine it was seen on.
        taken = at(20)
        book(page, "pc-02", start=str(taken), minutes=60)
        expect(page.locator("#book-warning")).to_be_hidden()
        reserve(venue, "player3", "pc-02", taken, 60)
        expect(page.locator("#book-warning")).to_be_visible()
        page.select_option("#book-device", "console-01")
        expect(page.locator("#book-warning")).to_be_hidden()
    finally:
        context.close()
        cancel_all(venue, "player2")
        cancel_all(venue, "player3")


STORED_FOR_LONG = """() =>
  JSON.parse(sessionStorage.getItem("plaza.auth")).local_expires_at > Date.now() / 1000 + 600"""


def test_a_token_near_its_end_is_refreshed_on_return_and_an_expired_one_says_so(
    e2e_venue: E2EVenue, browser: Browser
) -> None:
    venue = e2e_venue
    context = new_context(browser)
    expire_in = """(seconds) => {
      const auth = JSON.parse(sessionStorage.getItem("plaza.auth"));
      auth.expires_at = auth.local_expires_at = Date.now() / 1000 + seconds;
      sessionStorage.setItem("plaza.auth", JSON.stringify(auth));
    }"""
    expired = "세션이 만료되었습니다. 다시 로그인하세요."
    try:
        page = log_in(context, venue, "player1")
        # A background tab's timer has not fired; coming back (focus) refreshes at once.
        page.evaluate(expire_in, 90)
        page.reload()
        expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        with page.expect_response(lambda r: r.url.endswith("/auth/refresh"), timeout=3000) as r:
            page.evaluate("dispatchEvent(new Event('focus'))")
        assert r.value.ok
        page.wait_for_function(STORED_FOR_LONG)  # the new token is stored

        # A token that lapsed while the page was away: the login form says why.
        page.evaluate(expire_in, -5)
        page.reload()
        expect(page.locator("#login-form")).to_be_visible()
        expect(page.locator("#login-notice")).to_have_text(expired)

        # A token the api refuses mid-session: the same.
        submit_login(page, venue, "player1")
        expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        page.evaluate(
            """() => {
              const auth = JSON.parse(sessionStorage.getItem("plaza.auth"));
              auth.access_token = "not-a-token";
              sessionStorage.setItem("plaza.auth", JSON.stringify(auth));
            }"""
        )
        page.reload()
        expect(page.locator("#login-notice")).to_have_text(expired)
        expect(page.locator("#login-form")).to_be_visible()
    finally:
        context.close()


def test_the_admin_is_told_which_slot_an_approval_collides_with(
    e2e_venue: E2EVenue, browser: Browser
) -> None:
    """Approval conflicts only arise from races the venue cannot stage on demand, so the
    api's answer (problem+json with `conflict`) is given to the page; p99 likewise."""
    venue = e2e_venue
    cancel_all(venue, "player1")
    starts = at(21)
    pending = reserve(venue, "player1", "pc-03", starts, 30)
    conflict = {
        "type": "/problems/conflict",
        "title": "Conflict",
        "status": 409,
        "detail": "approving overlaps an approved reservation",
        "code": "conflict",
        "conflict": {  # REST times are ISO 8601 (the bridge's MQTT replies: Unix seconds)
            "reservation_id": "0123456789abcdef",
            "starts_at": datetime.fromtimestamp(starts - 900, UTC).isoformat(),
            "ends_at": datetime.fromtimestamp(starts + 900, UTC).isoformat(),
            "status": "approved",
        },
    }
    stats = {
        "machines_online": 10,
        "machines_total": 10,
        "commands_per_minute": 4,
        "command_p99_ms": 25.0,
        "p99_window_seconds": 60.0,
    }
    context = new_context(browser)
    try:
        context.route(
            f"**/reservations/{pending}/approve",
            lambda route: route.fulfill(
                status=409, content_type="application/problem+json", body=json.dumps(conflict)
            ),
        )
        context.route("**/admin/stats", lambda route: route.fulfill(json=stats))
        page = log_in(context, venue, "admin")
        page.click("#nav-admin")
        expect(page.locator("#stat-p99")).to_have_text("≤ 25 ms")  # a bucket's upper bound
        page.click(f'#pending-list button[data-action=approve][data-reservation="{pending}"]')
        toast = page.locator('.toast[data-type="error"]')
        expect(toast).to_contain_text(clock_range(starts - 900, starts + 900))
        expect(toast).to_contain_text("승인됨")
    finally:
        context.close()
        cancel_all(venue, "player1")


MERGE_RULES = """async () => {
  const { MyReservations } = await import("/js/reservations.js");
  const mine = new MyReservations(document.createElement("ul"), {nameOf: (d) => d, onCancel() {}});
  const r = (id, status, starts_at) => ({id, device_id: "pc-02", starts_at, ends_at: starts_at + 60,
    status, code: "123456", user: "p"});
  let answer;
  const rest = {get: () => new Promise((resolve) => { answer = resolve; })};
  mine.upsert(r("a", "pending", 1000));
  const loading = mine.load(rest);
  mine.upsert(r("a", "cancelled", 1000)); // a reply overtakes the reload ...
  mine.upsert(r("b", "approved", 2000)); // ... and a new booking arrives meanwhile
  answer({items: [r("a", "pending", 1000)]}); // the answer was read before both
  await loading;
  const afterRace = [...mine.items.keys()].sort();
  const next = mine.load(rest);
  answer({items: [r("b", "approved", 2000), r("c", "pending", 3000)]});
  await next;
  return {afterRace, afterQuiet: [...mine.items.keys()].sort()};
}"""


def test_a_reload_of_my_reservations_does_not_undo_newer_live_changes(
    e2e_venue: E2EVenue, browser: Browser
) -> None:
    assert in_page(e2e_venue, browser, MERGE_RULES) == {
        "afterRace": ["b"],
        "afterQuiet": ["b", "c"],
    }
