"""The venue web client in a real browser against a real venue (issue #7).

The scenario runs in one test because its steps build on each other (a reservation, its
conflict, its approval, its machine's crash, a broker restart), with three browser contexts
open throughout: two players and an admin. Smaller tests cover the language switch, the
markup, the wall screen, the REST fallback, maintenance and notices, a phone screen, and the
board's version rule. Screenshots go to tests/e2e/artifacts/.
"""

from __future__ import annotations

import re
import time
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, WebSocketRoute, expect

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
    venue = e2e_venue
    contexts = [new_context(browser) for _ in range(3)]
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
        pending.locator('button[data-action="approve"]').click()
        expect(pending).to_have_count(0)
        toast = p1.locator('.toast[data-type="reservation_approved"]')
        expect(toast).to_be_visible()
        code = mine.locator(".code").inner_text().split()[-1]
        expect(toast).to_contain_text(code)
        expect(p1.locator("#live-assertive")).to_contain_text(code)
        expect(mine).to_have_attribute("data-status", "approved")
        expect(p1.locator("#unread")).to_have_text("1")
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
        expect(alerts.and_(admin.locator(f'[data-device="{TARGET}"]'))).to_be_visible()
        admin.screenshot(path=artifacts / "admin-alert.png", full_page=True)
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
        page = log_in(context, e2e_venue, "player3", "?wall=1")
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
    context = new_context(browser)

    def refuse(ws: WebSocketRoute) -> None:
        ws.close(code=1011, reason="blocked by the test")

    try:
        context.route_web_socket(re.compile(".*"), refuse)
        page = context.new_page()
        page.goto(f"{e2e_venue.base_url}/?fallback=2")
        page.fill("#login-form [name=username]", "player3")
        page.fill("#login-form [name=password]", e2e_venue.password("player3"))
        page.click("#login-form button[type=submit]")
        expect(page.locator("#conn")).to_have_attribute("data-state", "degraded", timeout=6000)
        expect(page.locator('.tile[data-source="rest"]')).to_have_count(10)
        truth = e2e_venue.board()
        for device, entry in truth.items():
            expect(tile(page, device)).to_have_attribute("data-status", entry.status.value)
        book(page, "vr-01", minutes=30)
        page.select_option("#book-start", index=4)  # two hours from now: no clash with others
        page.click("#book-submit")
        expect(page.locator("#booking")).to_be_hidden()
        booked = page.locator('#mine .res[data-device="vr-01"]')
        expect(booked).to_have_attribute("data-status", "pending")
        page.screenshot(path=artifacts / "degraded.png", full_page=True)
        booked.locator("button[data-cancel]").click()
        expect(booked).to_have_count(0)
    finally:
        context.close()


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
  const lines = tileLines({...entry(6, "in_use"),
    session: {id: "s", started_at: 0, ends_at: now + 125},
    next_slot: {reservation_id: "r", starts_at: now + 3725, ends_at: now + 7325,
      status: "approved"}}, now);
  return {applied, status, removed: board.get("x") === undefined, lines};
}"""


def test_the_board_ignores_a_lower_version_and_an_empty_payload_removes_the_tile(
    e2e_venue: E2EVenue, browser: Browser
) -> None:
    context = new_context(browser)
    try:
        page = context.new_page()
        page.goto(f"{e2e_venue.base_url}/")
        assert page.evaluate(BOARD_RULES) == {
            "applied": [True, False, True],
            "status": "in_use",
            "removed": True,
            "lines": [["session", "남은 시간 2:05"], ["next", "다음 예약 1:02:05 후"]],
        }
    finally:
        context.close()


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
