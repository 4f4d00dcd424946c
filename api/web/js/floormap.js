// The floor map: the venue drawn in plain SVG, zones with their outlines (GET /floor, loaded
// at start and on every reconnect) and every placed machine where it stands (`pos` in its
// retained board entry, metres), with its status as text and as an icon of its own shape
// and a border style, as the tiles have: never colour alone. Machines without a place are
// listed under the map.
//
// Staff (`editable`) move a machine by dragging it (pointer events: mouse, pen, touch) or
// with the keyboard: focus it, arrows move 0.5 m (Shift: 2 m). The move is shown at once and
// saved with PATCH /devices/{id} {x, y} when the drag ends (for keys: 400 ms after the last
// press); the bridge then publishes the board entry, which every screen applies. A refused
// move (out of bounds) snaps back and says why.
//
// The zones come from GET /floor (load(), at start and on every reconnect) and live from a
// floor event (setFloor(), on events/floor when staff change them); a load that an event
// overtook is dropped. Staff edit the outlines with js/zoneedit.js, which draws its handles
// over this map (afterRender) and decides what an incoming floor does to a draft (accept).
// A zone shows the name staff gave it; the demo seed's names ("Pc Zone") are translated.

import { t, tOr } from "./i18n.js";
import { icon } from "./icons.js";

const SVG = "http://www.w3.org/2000/svg";
const SEAT = 1.8; // metres: a machine's square on the map (the demo floor's pitch is 2 m)
const NAME_FITS = 7; // characters; a longer name is squeezed into the square
const STEP = 0.5;
const BIG_STEP = 2;
const KEY_SAVE_AFTER = 400;

function el(name, attrs = {}) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function clamp(value, low, high) {
  return Math.min(high, Math.max(low, value));
}

function snap(value) {
  return Math.round(value * 10) / 10;
}

export class FloorMap {
  constructor(container, board, { rest, editable = false, fail = () => {}, label = "" }) {
    this.container = container;
    this.board = board;
    this.rest = rest;
    this.editable = editable;
    this.fail = fail;
    this.size = 200;
    this.zones = [];
    this.limits = { zones: 32, min_points: 3, max_points: 32 }; // GET /floor says them
    this.floorSeq = 0; // floors applied: a GET answered after a newer event is dropped
    this.accept = (floor) => this.setFloor(floor);
    this.afterRender = () => {};
    this.moving = new Map(); // device -> {x, y} shown while a move is unsaved
    this.keyTimers = new Map();
    this.drag = null;
    this.frame = null;
    this.svg = el("svg", { class: "floor-svg", role: "group" });
    if (label) this.svg.setAttribute("aria-label", label);
    this.zoneLayer = el("g", { class: "floor-zones" });
    this.seatLayer = el("g", { class: "floor-seats" });
    this.svg.append(this.zoneLayer, this.seatLayer);
    this.unplaced = document.createElement("p");
    this.unplaced.className = "muted floor-unplaced";
    container.replaceChildren(this.svg, this.unplaced);
    board.addEventListener("change", (e) => this.update(e.detail.device));
    if (editable) this.listen();
  }

  async load() {
    const asked = this.floorSeq;
    try {
      const floor = await this.rest.get("/floor");
      if (this.floorSeq === asked) return this.accept(floor);
    } catch {
      // the machines still show where they stand; the outlines come with the next load
    }
    this.render();
  }

  /** A floor as GET /floor answers it (from a load or an `events/floor` event). */
  setFloor(floor) {
    this.floorSeq += 1;
    this.size = floor.size;
    this.zones = floor.zones;
    if (floor.limits) this.limits = floor.limits;
    this.render();
  }

  zoneName(zone) {
    // the demo seed names a zone after its id (Python's str.title()): translate those
    const seeded = zone.id
      .split("-")
      .map((w) => w.charAt(0).toUpperCase() + w.slice(1).toLowerCase())
      .join(" ");
    return zone.name === seeded ? tOr(`zone.${zone.id}`, zone.name) : zone.name;
  }

  /** The drawing's extent: the zones and the machines, with a margin. */
  extent() {
    const xs = [];
    const ys = [];
    for (const z of this.zones) for (const [x, y] of z.outline) xs.push(x), ys.push(y);
    for (const e of this.board.entries.values()) {
      const p = this.place(e);
      if (p) xs.push(p.x - SEAT, p.x + SEAT), ys.push(p.y - SEAT, p.y + SEAT);
    }
    if (!xs.length) return [0, 0, 20, 12];
    const x0 = Math.max(0, Math.min(...xs) - 1);
    const y0 = Math.max(0, Math.min(...ys) - 1);
    return [x0, y0, Math.max(...xs) + 1 - x0, Math.max(...ys) + 1 - y0];
  }

  place(entry) {
    return this.moving.get(entry.device_id) || entry.pos || null;
  }

  render() {
    this.svg.setAttribute("viewBox", this.extent().join(" "));
    this.zoneLayer.replaceChildren(
      ...this.zones.map((z) => {
        const g = el("g", { class: "floor-zone", "data-zone": z.id });
        g.append(el("polygon", { points: z.outline.map((p) => p.join(",")).join(" ") }));
        const [x, y] = z.outline.reduce((a, p) => [Math.min(a[0], p[0]), Math.min(a[1], p[1])], [
          Infinity,
          Infinity,
        ]);
        const name = el("text", { x, y: y - 0.25, class: "floor-zone-name" });
        name.textContent = this.zoneName(z);
        g.append(name);
        return g;
      }),
    );
    this.seatLayer.replaceChildren();
    const unplaced = [];
    for (const entry of this.board.list()) {
      if (this.place(entry)) this.seatLayer.append(this.seat(entry));
      else unplaced.push(entry.name);
    }
    this.unplaced.textContent = unplaced.length
      ? t("floor.unplaced", { names: unplaced.join(", ") })
      : "";
    this.unplaced.hidden = !unplaced.length;
    this.afterRender();
  }

  seat(entry) {
    const g = el("g", { class: "seat", "data-device": entry.device_id });
    if (this.editable) {
      g.setAttribute("tabindex", "0");
      g.setAttribute("role", "button");
    } else {
      g.setAttribute("role", "img");
    }
    this.fill(g, entry);
    return g;
  }

  fill(g, entry) {
    const p = this.place(entry);
    const status = t(`status.${entry.status}`);
    g.dataset.status = entry.status;
    g.dataset.x = String(p.x);
    g.dataset.y = String(p.y);
    g.setAttribute("transform", `translate(${p.x} ${p.y})`);
    const half = SEAT / 2;
    g.innerHTML =
      `<rect class="seat-box" x="${-half}" y="${-half}" width="${SEAT}" height="${SEAT}" rx="0.2"/>` +
      `<svg class="seat-icon" x="${-0.3}" y="${-half + 0.1}" width="0.6" height="0.6" viewBox="0 0 24 24" aria-hidden="true">` +
      `${icon(entry.status).replace(/^<svg[^>]*>|<\/svg>$/g, "")}</svg>` +
      `<text class="seat-name" x="0" y="0.2" text-anchor="middle"></text>` +
      `<text class="seat-status" x="0" y="${half - 0.2}" text-anchor="middle"></text>`;
    const name = g.querySelector(".seat-name");
    name.textContent = entry.name;
    if (entry.name.length > NAME_FITS) {
      name.setAttribute("textLength", String(SEAT - 0.2));
      name.setAttribute("lengthAdjust", "spacingAndGlyphs");
    }
    g.querySelector(".seat-status").textContent = status;
    const where = t("floor.at", { x: p.x, y: p.y });
    const hint = this.editable ? `, ${t("floor.move_hint")}` : "";
    g.setAttribute("aria-label", `${t("board.tile.label", { name: entry.name, status })}, ${where}${hint}`);
  }

  update(device) {
    const entry = this.board.get(device);
    const pending = this.moving.get(device);
    if (entry && pending?.savedAt !== undefined && entry.version > pending.savedAt) {
      this.moving.delete(device); // the bridge's entry carries the move now
    }
    const g = this.seatLayer.querySelector(`[data-device="${CSS.escape(device)}"]`);
    if (!entry || !g || !this.place(entry)) return this.renderSoon();
    if (this.drag?.device !== device) this.fill(g, entry);
  }

  /** One render per frame, however many machines arrive (the retained board at connect). */
  renderSoon() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      this.render();
    });
  }

  // -- moving (staff) ------------------------------------------------------------------------
  listen() {
    this.svg.addEventListener("pointerdown", (e) => {
      const g = e.target.closest(".seat");
      if (!g || e.button !== 0) return;
      e.preventDefault();
      g.setPointerCapture(e.pointerId);
      const start = this.toFloor(e);
      const at = { x: Number(g.dataset.x), y: Number(g.dataset.y) };
      this.drag = { device: g.dataset.device, g, start, at, moved: false, pointer: e.pointerId };
      g.classList.add("dragging");
    });
    this.svg.addEventListener("pointermove", (e) => {
      const d = this.drag;
      if (!d || e.pointerId !== d.pointer) return;
      const p = this.toFloor(e);
      const x = snap(clamp(d.at.x + p.x - d.start.x, 0, this.size));
      const y = snap(clamp(d.at.y + p.y - d.start.y, 0, this.size));
      d.moved = d.moved || x !== d.at.x || y !== d.at.y;
      this.show(d.device, { x, y });
    });
    const finish = (e) => {
      const d = this.drag;
      if (!d || e.pointerId !== d.pointer) return;
      this.drag = null;
      d.g.classList.remove("dragging");
      if (d.moved) this.save(d.device);
      else this.moving.delete(d.device);
    };
    this.svg.addEventListener("pointerup", finish);
    this.svg.addEventListener("pointercancel", finish);
    this.svg.addEventListener("keydown", (e) => {
      const g = e.target.closest(".seat");
      const delta = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] }[e.key];
      if (!g || !delta) return;
      e.preventDefault();
      const step = e.shiftKey ? BIG_STEP : STEP;
      const x = snap(clamp(Number(g.dataset.x) + delta[0] * step, 0, this.size));
      const y = snap(clamp(Number(g.dataset.y) + delta[1] * step, 0, this.size));
      const device = g.dataset.device;
      this.show(device, { x, y });
      clearTimeout(this.keyTimers.get(device));
      this.keyTimers.set(device, setTimeout(() => this.save(device), KEY_SAVE_AFTER));
    });
  }

  toFloor(e) {
    const point = new DOMPoint(e.clientX, e.clientY).matrixTransform(this.svg.getScreenCTM().inverse());
    return { x: point.x, y: point.y };
  }

  show(device, pos) {
    this.moving.set(device, pos);
    const entry = this.board.get(device);
    const g = this.seatLayer.querySelector(`[data-device="${CSS.escape(device)}"]`);
    if (entry && g) this.fill(g, entry);
  }

  async save(device) {
    const pos = this.moving.get(device);
    if (!pos) return;
    this.keyTimers.delete(device);
    const before = this.board.get(device)?.version ?? 0;
    try {
      await this.rest.patch(`/devices/${encodeURIComponent(device)}`, { x: pos.x, y: pos.y });
      // shown here until the bridge's board entry (a higher version) brings the move
      if (this.moving.get(device) === pos) pos.savedAt = before;
    } catch (err) {
      this.fail(err);
      if (this.moving.get(device) === pos) this.moving.delete(device); // back where it stands
    }
    this.update(device);
  }
}
