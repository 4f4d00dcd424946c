"""The venue floor in the browser (issue 18): the session_ending notification comes as a
toast with an "extend" button, and the button extends the booking to the offer's end; a
machine kept free for a booking says so on its tile. Real venue, real chromium
(tests/e2e/conftest.py).

The file runs after test_web_client.py (pytest's file order), like the booking file: its
player keeps a notification in the session-wide e2e venue.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import BrowserContext, expect

from tests.e2e.conftest import E2EVenue, log_in
from tests.e2e.test_web_client import auth, cancel_all, reserve, tile
from tests.e2e.test_web_client_booking import db_path

pytestmark = pytest.mark.e2e
SEOUL = ZoneInfo("Asia/Seoul")
DEVICE = "console-02"


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def test_the_session_ending_toast_offers_an_extension_and_its_button_extends(
    e2e_venue: E2EVenue, context: BrowserContext
) -> None:
    venue = e2e_venue
    page = log_in(context, venue, "player2")
    now = datetime.now(UTC)
    rid = uuid.uuid4().hex[:16]
    ends = now + timedelta(minutes=4)  # inside the 10-minute warning: due on the next tick
    with sqlite3.connect(db_path(venue)) as db:  # player2 checked in 20 minutes ago
        db.execute(
            "INSERT INTO reservation (id, device_id, player, starts_at, ends_at, status, code,"
            " request_key, created_at, updated_at) VALUES (?, ?, 'player2', ?, ?, 'checked_in',"
            " '515151', ?, ?, ?)",
            (
                rid,
                DEVICE,
                stamp(now - timedelta(minutes=20)),
                stamp(ends),
                f"player2:e2e-{rid}",
                stamp(now),
                stamp(now),
            ),
        )
    try:
        toast = page.locator('.toast[data-type="session_ending"]')
        expect(toast).to_be_visible(timeout=10_000)
        until = ends + timedelta(hours=1)  # nothing booked after it: PLAZA_EXTENSION_OFFER
        button = toast.locator("button[data-extend-offer]")
        expect(button).to_contain_text(until.astimezone(SEOUL).strftime("%H:%M"))
        button.click()
        expect(toast.locator("button[data-extend-offer]")).to_have_count(0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with sqlite3.connect(db_path(venue)) as db:
                (end,) = db.execute(
                    "SELECT ends_at FROM reservation WHERE id = ?", (rid,)
                ).fetchone()
            if end.startswith(stamp(until)[:16]):
                break
            time.sleep(0.2)
        assert end.startswith(stamp(until)[:16]), f"extended to {until}, not {end}"
        item = page.locator(f'#mine li[data-reservation="{rid}"]')
        expect(item).to_contain_text(until.astimezone(SEOUL).strftime("%H:%M"))
    finally:
        # leave no session behind: the slot ends in a second, and the bridge completes it (the
        # board follows, for the files after this one)
        soon = stamp(datetime.now(UTC) + timedelta(seconds=1))
        with sqlite3.connect(db_path(venue)) as db:
            db.execute("UPDATE reservation SET ends_at = ? WHERE id = ?", (soon, rid))
        deadline = time.monotonic() + 10
        status = ""
        while status != "completed" and time.monotonic() < deadline:
            time.sleep(0.3)
            with sqlite3.connect(db_path(venue)) as db:
                query = "SELECT status FROM reservation WHERE id = ?"
                (status,) = db.execute(query, (rid,)).fetchone()
        assert status == "completed"


def test_a_machine_kept_free_for_a_booking_says_so_on_its_tile_until_the_booking_is_cancelled(
    e2e_venue: E2EVenue, context: BrowserContext
) -> None:
    venue = e2e_venue
    page = log_in(context, venue, "player1")
    device = "pc-06"
    expect(tile(page, device, "available")).to_be_visible()
    starts = int(time.time()) + 5 * 60  # within PLAZA_PRE_SLOT_LOCK (10 minutes)
    rid = reserve(venue, "player3", device, starts, 30)
    try:
        approved = httpx.post(
            f"{venue.base_url}/reservations/{rid}/approve",
            headers=auth(venue, "admin"),
            timeout=10,
        )
        assert approved.status_code == 200, approved.text
        locked = tile(page, device, "reserved").locator('[data-line="locked"]')
        expect(locked).to_have_text("예약석 잠김")  # in words, not colour alone
        assert "예약석 잠김" in (tile(page, device).get_attribute("aria-label") or "")
    finally:
        cancel_all(venue, "player3")
    expect(tile(page, device, "available")).to_be_visible()
    expect(tile(page, device).locator('[data-line="locked"]')).to_have_count(0)
