"""The floor map and the occupancy heatmap in the browser (issue 18): the map view shows every
machine where its board entry places it, with its live status (text and icon, not colour
alone), and the wall screen shows the map; staff drag a machine (and move one with the
keyboard) and another browser sees it move; the heatmap and its figures render for the
week of history `plaza up` seeds, and the CSV downloads. Real venue, real chromium
(tests/e2e/conftest.py). The test's own player and admin; every machine moved is put back.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from tests.e2e.conftest import E2EVenue, in_thread, log_in, new_context
from venue.seed import create_admin

pytestmark = pytest.mark.e2e

MOVED = "console-02"


@dataclass(frozen=True)
class Person:
    user: str
    password: str

    def headers(self, venue: E2EVenue) -> dict[str, str]:
        login = httpx.post(
            f"{venue.base_url}/auth/login",
            json={"username": self.user, "password": self.password},
            timeout=10,
        )
        assert login.status_code == 200, login.text
        return {"Authorization": f"Bearer {login.json()['access_token']}"}


@pytest.fixture(scope="module")
def people(e2e_venue: E2EVenue) -> tuple[Person, Person]:
    """A player registered over REST and an admin made as `plaza admin create` makes one."""
    tag = uuid.uuid4().hex[:6]
    player = Person(f"mapfan{tag}", f"map-pw-{tag}")
    made = httpx.post(
        f"{e2e_venue.base_url}/auth/register",
        json={"username": player.user, "password": player.password},
        timeout=10,
    )
    assert made.status_code == 201, made.text
    admin = Person(f"mapboss{tag}", f"boss-pw-{tag}")
    url = e2e_venue.settings.db_url
    in_thread(lambda: asyncio.run(create_admin(url, admin.user, admin.password)))
    return player, admin


@pytest.fixture
def contexts(browser: Browser) -> Iterator[tuple[BrowserContext, BrowserContext]]:
    one, two = new_context(browser), new_context(browser)
    try:
        yield one, two
    finally:
        one.close()
        two.close()


def seat(page: Page, device: str, root: str = "#floor") -> Locator:
    return page.locator(f'{root} .seat[data-device="{device}"]')


def open_map(page: Page) -> None:
    page.click('[data-board-view="map"]')
    expect(page.locator("#floor")).to_be_visible()
    expect(page.locator("#board")).to_be_hidden()


def place_of(venue: E2EVenue, device: str, headers: dict[str, str]) -> tuple[float, float]:
    row = httpx.get(f"{venue.base_url}/devices/{device}", headers=headers, timeout=10).json()
    return row["x"], row["y"]


def move(venue: E2EVenue, device: str, headers: dict[str, str], **change: object) -> None:
    reply = httpx.patch(
        f"{venue.base_url}/devices/{device}", json=change, headers=headers, timeout=10
    )
    assert reply.status_code == 200, reply.text


def test_the_map_view_shows_every_machine_in_its_place_with_its_live_state(
    e2e_venue: E2EVenue,
    contexts: tuple[BrowserContext, BrowserContext],
    people: tuple[Person, Person],
    artifacts: Path,
) -> None:
    venue = e2e_venue
    player, admin = people
    one, two = contexts
    page = log_in(one, venue, player.user, password=player.password)
    open_map(page)
    truth = venue.board()
    assert len(truth) == 10
    expect(page.locator("#floor .seat")).to_have_count(10)
    expect(page.locator("#floor .floor-zone")).to_have_count(3)
    for device, entry in truth.items():
        assert entry.pos is not None, f"{device} has no place in the seed"
        here = seat(page, device)
        expect(here).to_have_attribute("data-x", str(entry.pos.x).removesuffix(".0"))
        expect(here).to_have_attribute("data-y", str(entry.pos.y).removesuffix(".0"))
        expect(here).to_have_attribute("data-status", entry.status.value)
        expect(here.locator(".seat-status")).not_to_be_empty()  # the status as text
        expect(here.locator(".seat-icon path, .seat-icon circle").first).to_be_attached()
    # a live change: maintenance shows on the map as it happens
    headers = admin.headers(venue)
    move(venue, MOVED, headers, maintenance=True)
    try:
        expect(seat(page, MOVED)).to_have_attribute("data-status", "maintenance")
        expect(seat(page, MOVED).locator(".seat-status")).to_have_text("점검 중")
    finally:
        move(venue, MOVED, headers, maintenance=False)
    expect(seat(page, MOVED)).not_to_have_attribute("data-status", "maintenance")
    # the choice is kept; the wall screen shows the map
    page.reload()
    page.wait_for_selector("#conn[data-state=live]")
    expect(page.locator("#floor")).to_be_visible()
    wall = log_in(two, venue, player.user, "?wall=1", password=player.password)
    expect(wall.locator("#floor .seat")).to_have_count(10)
    expect(wall.locator("#board")).to_be_hidden()
    expect(wall.locator("#board-views")).to_be_hidden()
    wall.screenshot(path=str(artifacts / "floormap-wall.png"))


def test_staff_drag_a_machine_and_another_screen_sees_it_move(
    e2e_venue: E2EVenue,
    contexts: tuple[BrowserContext, BrowserContext],
    people: tuple[Person, Person],
) -> None:
    venue = e2e_venue
    player, admin = people
    one, two = contexts
    headers = admin.headers(venue)
    start = place_of(venue, MOVED, headers)
    watcher = log_in(two, venue, player.user, password=player.password)
    open_map(watcher)
    staff = log_in(one, venue, admin.user, password=admin.password)
    staff.click('#nav [data-view="admin"]')
    mine = seat(staff, MOVED, "#floor-admin")
    expect(mine).to_have_attribute("data-x", str(start[0]).removesuffix(".0"))
    try:
        mine.scroll_into_view_if_needed()
        box = mine.bounding_box()
        assert box is not None
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        staff.mouse.move(cx, cy)
        staff.mouse.down()
        for step in range(1, 6):
            staff.mouse.move(cx + step * box["width"] * 0.6, cy + step * box["height"] * 0.2)
        staff.mouse.up()
        dragged_x = float(mine.get_attribute("data-x") or "nan")
        dragged_y = float(mine.get_attribute("data-y") or "nan")
        assert dragged_x > start[0] + 1, "the drag moved it right by a few metres"
        assert dragged_y > start[1]
        # the other screen follows (the bridge's board entry), and REST says the same
        expect(seat(watcher, MOVED)).to_have_attribute("data-x", f"{dragged_x:g}")
        expect(seat(watcher, MOVED)).to_have_attribute("data-y", f"{dragged_y:g}")
        assert place_of(venue, MOVED, headers) == (dragged_x, dragged_y)
        # the keyboard: focus it, two presses of the left arrow, half a metre each
        mine.focus()
        staff.keyboard.press("ArrowLeft")
        staff.keyboard.press("ArrowLeft")
        keyed = round(dragged_x - 1.0, 1)
        expect(seat(watcher, MOVED)).to_have_attribute("data-x", f"{keyed:g}")
        # a move past the floor's edge stops at the edge (y = 0), here and everywhere
        assert dragged_y < 6
        for _ in range(3):
            staff.keyboard.press("Shift+ArrowUp")
        expect(seat(watcher, MOVED)).to_have_attribute("data-y", "0")
        expect(seat(watcher, MOVED)).to_have_attribute("data-x", f"{keyed:g}")
    finally:
        move(venue, MOVED, headers, x=start[0], y=start[1])
    expect(seat(watcher, MOVED)).to_have_attribute("data-x", f"{start[0]:g}")


def test_the_heatmap_renders_the_seeded_week_and_the_csv_downloads(
    e2e_venue: E2EVenue,
    contexts: tuple[BrowserContext, BrowserContext],
    people: tuple[Person, Person],
    artifacts: Path,
) -> None:
    _player, admin = people
    one, _two = contexts
    staff = log_in(one, e2e_venue, admin.user, password=admin.password)
    staff.click('#nav [data-view="admin"]')
    cells = staff.locator("#heatmap .hm-cell")
    expect(cells).to_have_count(7 * 24)
    busy = staff.locator('#heatmap .hm-cell:not([data-occupancy="0"]):not([data-occupancy=""])')
    assert busy.count() > 20, "a week of seeded play fills many hours"
    expect(busy.first.locator("text")).not_to_be_empty()  # the value is printed in the cell
    sessions = staff.locator('#occupancy-summary [data-figure="sessions"] dd')
    expect(sessions).not_to_have_text("0")
    expect(staff.locator('#occupancy-summary [data-figure="no_show_rate"] dd')).to_contain_text("%")
    staff.locator("#floor-admin-card").screenshot(path=str(artifacts / "floormap-admin.png"))
    staff.locator("#occupancy").screenshot(path=str(artifacts / "floormap-heatmap.png"))
    staff.select_option("#occupancy-zone", "sim-bay")
    staff.click("#occupancy-form button[type=submit]")
    expect(staff.locator("#heatmap .hm-cell")).to_have_count(7 * 24)
    with staff.expect_download() as download:
        staff.click("#occupancy-csv")
    path = download.value.path()
    lines = path.read_text().splitlines()
    assert lines[0] == "zone,hour_start,machines,occupancy,in_use_minutes,booked_minutes"
    assert len(lines) == 1 + 7 * 24
    assert {line.split(",")[0] for line in lines[1:]} == {"sim-bay"}
