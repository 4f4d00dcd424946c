// The floor views of a session: the board's grid/map toggle (the choice is kept per browser;
// the wall screen, ?wall=1, shows the map unless ?view=grid), and for staff the floor editor
// (machines: js/floormap.js; zones: js/zoneedit.js) and the occupancy card. app.js calls
// reload() at start and on every (re)connect (the zones; the occupancy figures the first time
// only), apply() with every `events/floor` event (the zones changed: every map redraws them,
// a late event older than one already applied is ignored), relabel() when the language
// changes.

import { Occupancy } from "./heatmap.js";
import { FloorMap } from "./floormap.js";
import { t } from "./i18n.js";
import { ZoneEditor } from "./zoneedit.js";

const VIEW_KEY = "plaza.boardView";

export function startFloorViews({ board, rest, admin, wall, fail }) {
  const $ = (selector) => document.querySelector(selector);
  const map = new FloorMap($("#floor"), board, { rest, label: t("floor.map") });
  const editor = admin
    ? new FloorMap($("#floor-admin"), board, { rest, editable: true, fail, label: t("floor.admin") })
    : null;
  const zones = editor ? new ZoneEditor(editor, $("#zone-edit"), { rest }) : null;
  const occupancy = admin ? new Occupancy($("#occupancy"), { rest, fail }) : null;
  const asked = new URLSearchParams(location.search).get("view");
  let view = wall ? (asked === "grid" ? "grid" : "map") : localStorage.getItem(VIEW_KEY) || "grid";

  function choose(next) {
    view = next === "map" ? "map" : "grid";
    $("#board").hidden = view === "map";
    $("#floor").hidden = view !== "map";
    for (const b of document.querySelectorAll("[data-board-view]")) {
      b.setAttribute("aria-pressed", String(b.dataset.boardView === view));
    }
    if (view === "map") map.render();
  }
  for (const b of document.querySelectorAll("[data-board-view]")) {
    b.addEventListener("click", () => {
      choose(b.dataset.boardView);
      localStorage.setItem(VIEW_KEY, view);
    });
  }
  $("#board-views").hidden = wall;
  choose(view);

  let figures = false; // the occupancy figures load once; staff press "Show" for fresh ones
  async function reload() {
    await Promise.all([map.load(), editor?.load()]);
    if (occupancy && !figures) {
      figures = true;
      const zones = map.zones.length
        ? map.zones.map((z) => [z.id, z.name])
        : [...new Set([...board.entries.values()].map((e) => e.zone))].map((z) => [z, z]);
      occupancy.setZones(zones);
      await occupancy.load();
    }
  }

  let lastFloor = 0; // the newest event's timestamp
  function apply(event) {
    if (event?.type !== "floor_changed" || !event.floor) return;
    if (event.timestamp < lastFloor) return;
    lastFloor = event.timestamp;
    map.accept(event.floor);
    editor?.accept(event.floor);
  }

  function relabel() {
    map.render();
    editor?.render();
    zones?.relabel();
    occupancy?.render();
  }

  return { map, editor, zones, occupancy, reload, apply, relabel };
}
