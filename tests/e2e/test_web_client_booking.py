"""Booking as venues know it, in the browser (issue 17): the waitlist (a place that moves, an
offer as a toast with a countdown, taken or left to lapse), a party of three with its three
codes, extending from "My reservations", and a suspension explained. Real venue, real
chromium (tests/e2e/conftest.py); each test leaves no booking behind.

The file runs after test_web_client.py (pytest's file order), on purpose: its players keep
notifications (a waitlist offer, approvals) in the session-wide e2e venue, and the venue
scenario there counts a fresh player's first notification.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Route, expect

from tests.e2e.conftest import E2EVenue, log_in, new_context
from tests.e2e.test_web_client import at, auth, book, cancel_all, clock_range, reserve, tile

pytestmark = pytest.mark.e2e


def api(venue: E2EVenue, method: str, path: str, user: str, **kw: Any) -> httpx.Response:
    reply = httpx.request(
        method, f"{venue.base_url}{path}", headers=auth(venue, user), timeout=10, **kw
    )
    assert reply.status_code == 200, reply.text
    return reply


def leave_every_line(venue: E2EVenue, user: str) -> None:
    headers = auth(venue, user)
    for entry in httpx.get(f"{venue.base_url}/waitlist", headers=headers).json():
        httpx.delete(f"{venue.base_url}/waitlist/{entry['id']}", headers=headers, timeout=10)


@pytest.fixture
def clean(e2e_venue: E2EVenue) -> Iterator[None]:
    yield
    for user in ("player1", "player2", "player3"):
        leave_every_line(e2e_venue, user)
        cancel_all(e2e_venue, user)


def test_joining_the_line_the_place_moves_and_the_offer_is_a_toast_with_a_countdown_taken(
    e2e_venue: E2EVenue, context: BrowserContext, clean: None
) -> None:
    venue = e2e_venue
    # the only racing rig is in use, so a line forms; player2 is first in it
    reserve(venue, "player3", "racing-01", int(time.time()), 60)
    ahead = api(venue, "POST", "/waitlist", "player2", json={"kind": "racing", "minutes": 30})
    page = log_in(context, venue, "player1")
    page.select_option("#wait-kind", "racing")
    page.select_option("#wait-minutes", "30")
    page.click("#wait-form button[type=submit]")
    mine = page.locator('#wait-list li[data-kind="racing"]')
    expect(mine).to_have_attribute("data-position", "2")
    expect(mine).to_contain_text("2")
    api(venue, "DELETE", f"/waitlist/{ahead.json()['id']}", "player2")
    expect(mine).to_have_attribute("data-position", "1")  # moved up, live
    cancel_all(venue, "player3")  # the rig frees up: it is held for player1
    toast = page.locator('.toast[data-type="waitlist_offer"]')
    expect(toast).to_be_visible()
    expect(toast.locator(".countdown")).to_contain_text(":")
    expect(tile(page, "racing-01")).to_have_attribute("data-status", "held")
    expect(mine).to_have_attribute("data-status", "offered")
    toast.locator("button[data-take]").click()
    booked = page.locator('#mine li[data-device="racing-01"]')
    expect(booked).to_have_attribute("data-status", "pending")
    expect(toast).to_have_count(0)
    expect(page.locator("#wait-list li.entry")).to_have_count(0)


def test_an_offer_left_alone_counts_down_and_lapses(
    e2e_venue: E2EVenue, context: BrowserContext, clean: None
) -> None:
    page = log_in(context, e2e_venue, "player2")
    page.select_option("#wait-kind", "vr")
    page.click("#wait-form button[type=submit]")  # the VR booth is free: held at once
    toast = page.locator('.toast[data-type="waitlist_offer"]')
    expect(toast).to_be_visible()
    first = toast.locator(".countdown").inner_text()
    page.wait_for_timeout(1500)
    assert toast.locator(".countdown").inner_text() != first, "the countdown runs"
    lapsed = page.locator('.toast[data-type="waitlist_offer_lapsed"]')
    expect(lapsed).to_be_visible(timeout=15_000)
    expect(page.locator("#wait-list li.entry")).to_have_count(0)
    expect(tile(page, "vr-01")).to_have_attribute("data-status", "available")


def test_a_party_of_three_shows_three_codes_and_cancels_whole(
    e2e_venue: E2EVenue, context: BrowserContext, clean: None
) -> None:
    page = log_in(context, e2e_venue, "player3")
    page.click("#party-open")
    page.select_option("#party-kind", "pc")
    page.select_option("#party-seats", "3")
    page.select_option("#party-start", str(at(6)))
    page.select_option("#party-duration", "60")
    page.click("#party-submit")
    codes = page.locator("#party-codes li")
    expect(codes).to_have_count(3)
    seen = [codes.nth(i).get_attribute("data-code") for i in range(3)]
    assert all(c and len(c) == 6 and c.isdigit() for c in seen)
    assert len(set(seen)) == 3, "each seat has its own code"
    page.click("#party-close")
    seats = page.locator("#mine li[data-party]")
    expect(seats).to_have_count(3)
    for i in range(3):
        expect(seats.nth(i).locator(".code")).to_contain_text(str(seen[i]))
    seats.first.locator("button[data-cancel-party]").click()
    expect(seats).to_have_count(0)


def test_extending_from_my_reservations_moves_the_end(
    e2e_venue: E2EVenue, context: BrowserContext, clean: None
) -> None:
    start = at(10)
    rid = reserve(e2e_venue, "player1", "pc-05", start, 60)
    page = log_in(context, e2e_venue, "player1")
    item = page.locator(f'#mine li[data-reservation="{rid}"]')
    expect(item).to_contain_text(clock_range(start, start + 3600))
    item.locator("button[data-extend]").click()
    expect(item).to_contain_text(clock_range(start, start + 5400))


def db_path(venue: E2EVenue) -> Path:
    return Path(venue.settings.db_url.split("///", 1)[1])


def test_a_suspended_player_is_told_why_and_until_when_and_sees_it_lifted(
    e2e_venue: E2EVenue, context: BrowserContext, clean: None
) -> None:
    venue = e2e_venue
    until = datetime.now(UTC) + timedelta(days=6)
    stamp = until.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    with sqlite3.connect(db_path(venue)) as db:  # as three no-shows would have left it
        db.execute(
            "INSERT OR REPLACE INTO player_standing (player, suspended_until, updated_at)"
            " VALUES ('player3', ?, ?)",
            (stamp, stamp),
        )
    try:
        page = log_in(context, venue, "player3")
        standing = page.locator("#standing")
        expect(standing).to_be_visible()
        expect(standing).to_have_attribute("data-state", "suspended")
        local = until.astimezone(ZoneInfo("Asia/Seoul"))  # the page's time zone
        expect(standing).to_contain_text(f"{local:%H:%M}")
        book(page, "pc-06", str(at(12)), 60)
        page.click("#book-submit")
        error = page.locator("#book-error")
        expect(error).to_have_attribute("data-code", "suspended")
        expect(error).to_be_visible()
        page.click("#book-close")
        api(venue, "DELETE", "/users/player3/suspension", "admin")
        expect(standing).to_be_hidden()  # told live (suspension_lifted)
    finally:
        httpx.delete(
            f"{venue.base_url}/users/player3/suspension", headers=auth(venue, "admin"), timeout=10
        )


def test_without_the_websocket_the_booking_commands_go_over_rest(
    e2e_venue: E2EVenue, browser: Browser, clean: None
) -> None:
    """Degraded mode: +30 min and joining the line go over REST, each with its request id as
    the Idempotency-Key, and the place in line shows from the REST answer."""
    venue = e2e_venue
    start = at(14)
    rid = reserve(venue, "player1", "pc-04", start, 60)
    context = new_context(browser)
    sent: list[tuple[str, str | None]] = []
    try:
        context.route_web_socket(re.compile(".*"), lambda ws: ws.close(code=1011, reason="blocked"))
        page = context.new_page()

        def record(route: Route) -> None:
            request = route.request
            if request.method in ("POST", "DELETE"):
                sent.append((request.url.split("/", 3)[3], request.headers.get("idempotency-key")))
            route.continue_()

        page.route(re.compile(r".*/(reservations|waitlist).*"), record)
        page.goto(f"{venue.base_url}/?fallback=2")
        page.fill("#login-form [name=username]", "player1")
        page.fill("#login-form [name=password]", venue.password("player1"))
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#conn[data-state=degraded]")
        item = page.locator(f'#mine li[data-reservation="{rid}"]')
        item.locator("button[data-extend]").click()
        expect(item).to_contain_text(clock_range(start, start + 5400))
        api(
            venue,
            "POST",
            "/reservations",
            "player2",
            json={"device_id": "racing-01", **iso_slot(int(time.time()), 60)},
        )
        page.select_option("#wait-kind", "racing")
        page.click("#wait-form button[type=submit]")
        expect(page.locator('#wait-list li[data-kind="racing"]')).to_have_attribute(
            "data-position", "1"
        )
        paths = [p for p, _ in sent]
        assert f"reservations/{rid}/extend" in paths
        assert "waitlist" in paths
        assert all(key for _, key in sent), "every command carries its Idempotency-Key"
    finally:
        context.close()


def iso_slot(starts: int, minutes: int) -> dict[str, str]:
    return {
        "starts_at": datetime.fromtimestamp(starts, UTC).isoformat(),
        "ends_at": datetime.fromtimestamp(starts + minutes * 60, UTC).isoformat(),
    }
