"""Calling staff in the browser (issue 18): a player's call appears in the admin view within
1 s (the help_requested alert, live over MQTT), staff say they are on the way and then resolve
it, and each step reaches the player's page. Real venue, real chromium
(tests/e2e/conftest.py); the player is registered here, so no other file's state matters.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.e2e.conftest import E2EVenue, log_in, new_context

pytestmark = pytest.mark.e2e


def register(venue: E2EVenue) -> tuple[str, str]:
    """A fresh player of this file's own."""
    user, password = f"helpme{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    made = httpx.post(
        f"{venue.base_url}/auth/register",
        json={"username": user, "password": password},
        timeout=10,
    )
    assert made.status_code == 201, made.text
    return user, password


def log_in_as(context: BrowserContext, venue: E2EVenue, user: str, password: str) -> Page:
    page = context.new_page()
    page.goto(f"{venue.base_url}/")
    page.fill("#login-form [name=username]", user)
    page.fill("#login-form [name=password]", password)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#conn[data-state=live]")
    return page


def test_a_call_for_staff_reaches_the_admin_view_within_a_second_and_its_steps_the_player(
    e2e_venue: E2EVenue, browser: Browser, artifacts: Path
) -> None:
    user, password = register(e2e_venue)
    context, staff_context = new_context(browser), new_context(browser)
    try:
        staff = log_in(staff_context, e2e_venue, "admin")
        staff.click("#nav-admin")
        calls = staff.locator("#help-calls li[data-call]").filter(has_text=user)
        expect(calls).to_have_count(0)
        page = log_in_as(context, e2e_venue, user, password)
        expect(page.locator("#help")).to_be_visible()
        expect(page.locator("#help-device option")).not_to_have_count(0)
        page.select_option("#help-device", "pc-02")
        page.select_option("#help-topic", "hardware")
        page.fill("#help-message", "헤드셋이 안 들려요")
        started = time.monotonic()
        page.click("#help-call")
        calls.first.wait_for(timeout=1000)
        appeared = time.monotonic() - started
        assert appeared < 1.0, f"the call appeared in the admin view after {appeared:.2f} s"
        call = calls.first
        expect(call).to_have_attribute("data-status", "open")
        expect(call).to_contain_text("헤드셋이 안 들려요")
        expect(page.locator("#help-status")).to_have_attribute("data-status", "open")
        # a second press while the call is open: the same call, not a second one
        page.click("#help-call")
        expect(page.locator("#help-status")).to_have_attribute("data-status", "open")
        expect(calls).to_have_count(1)

        staff.screenshot(path=artifacts / "admin-help-call.png", full_page=True)
        call.locator('button[data-help="ack"]').click()
        expect(page.locator("#help-status")).to_have_attribute("data-status", "acknowledged")
        expect(page.locator("#help-status")).to_contain_text("admin")
        expect(call).to_have_attribute("data-status", "acknowledged")
        expect(call.locator('button[data-help="ack"]')).to_have_count(0)
        page.screenshot(path=artifacts / "player-help-on-the-way.png", full_page=True)

        call.locator('button[data-help="resolve"]').click()
        expect(page.locator("#help-status")).to_have_attribute("data-status", "resolved")
        expect(calls).to_have_count(0)  # the list holds the waiting calls only
        page.click("#nav-bell")
        for kind in ("help_acknowledged", "help_resolved"):
            expect(page.locator(f'#notif-list li[data-type="{kind}"]')).to_have_count(1)
    finally:
        staff_context.close()
        context.close()


def test_staff_set_a_machine_without_an_agent_from_the_desk_and_every_board_shows_it(
    e2e_venue: E2EVenue, browser: Browser
) -> None:
    """A console provisioned with ``agent: false`` (removed again at the end, so the other
    files' ten tiles stay ten): staff-managed on the tiles, never offline, its state set from
    the desk card."""
    user, password = register(e2e_venue)
    admin = {"Authorization": f"Bearer {login_token(e2e_venue)}"}
    made = httpx.post(
        f"{e2e_venue.base_url}/devices",
        json={"id": "desk-e2e", "name": "Desk E2E", "kind": "console", "agent": False},
        headers=admin,
        timeout=10,
    )
    assert made.status_code == 201, made.text
    context, staff_context = new_context(browser), new_context(browser)
    try:
        page = log_in_as(context, e2e_venue, user, password)
        tile = page.locator('.tile[data-device="desk-e2e"]')
        expect(tile).to_have_attribute("data-status", "available")
        expect(tile.locator('[data-line="managed"]')).to_have_text("직원 관리")
        staff = log_in(staff_context, e2e_venue, "admin")
        staff.click("#nav-admin")
        row = staff.locator('#managed-list li[data-device="desk-e2e"]')
        row.locator('button[data-state="fault"]').click()
        expect(tile).to_have_attribute("data-status", "fault")
        expect(row.locator('button[data-state="fault"]')).to_have_attribute("aria-pressed", "true")
        row.locator('button[data-state="idle"]').click()
        expect(tile).to_have_attribute("data-status", "available")
    finally:
        staff_context.close()
        context.close()
        gone = httpx.delete(f"{e2e_venue.base_url}/devices/desk-e2e", headers=admin, timeout=10)
        assert gone.status_code == 204, gone.text


def login_token(venue: E2EVenue) -> str:
    login = httpx.post(
        f"{venue.base_url}/auth/login",
        json={"username": "admin", "password": venue.password("admin")},
        timeout=10,
    )
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    assert isinstance(token, str)
    return token
