// The zone editor (staff): the floor map editor's zones, their outlines and names, changed
// in place and saved with PUT /floor (the whole floor; the api announces it on events/floor
// and every screen redraws it).
//
// Select a zone (click its outline, or pick it in the list), then:
// - drag a corner (pointer: mouse, pen, touch), or focus it and use the arrow keys: 0.5 m a
//   press (Shift: 2 m), saved 400 ms after the last press;
// - add a corner: drag the "+" on the middle of an edge, or press Insert (or +) on a corner,
//   or "Add corner" (after the selected corner);
// - remove a corner: Delete (or Backspace) on it, or "Remove corner";
// - rename it; delete it when no machine is in it (GET /devices says so, not only the board);
// - add a new zone: a 4 m square beside the others, named as staff say.
// GET /floor's `limits` (corners per outline, zones per floor) are kept before asking; every
// other check (bounds, ids, area) is the server's: a refusal is shown with its code and the
// server's words, and the outlines go back to what the server holds. Nothing is colour
// alone: the selected zone is drawn solid and thick (the others dashed), corners are
// numbered squares, the "+" handles carry a plus sign, and errors start with a warning sign.

import { errorText } from "./errors.js";
import { t } from "./i18n.js";

const SVG = "http://www.w3.org/2000/svg";
const STEP = 0.5;
const BIG_STEP = 2;
const KEY_SAVE_AFTER = 400;
const NEW_SIDE = 4; // metres: a new zone's square
const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

function el(name, attrs = {}) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function html(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text) node.textContent = text;
  return node;
}

function clamp(value, low, high) {
  return Math.min(high, Math.max(low, value));
}

function snap(value) {
  return Math.round(value * 10) / 10;
}

function clone(zones) {
  return zones.map((z) => ({ id: z.id, name: z.name, outline: z.outline.map(([x, y]) => [x, y]) }));
}

export class ZoneEditor {
  /** `map`: the editable FloorMap (js/floormap.js); `panel`: where the controls go. */
  constructor(map, panel, { rest }) {
    this.map = map;
    this.rest = rest;
    this.saved = []; // the zones as the server last said
    this.selected = null; // a zone id
    this.named = null; // the zone whose name the name field holds
    this.listed = null; // what the zone list holds now
    this.corner = null; // the selected corner's index
    this.drag = null;
    this.keyTimer = null;
    this.pending = 0; // saves sent, not answered
    this.queue = Promise.resolve();
    this.layer = el("g", { class: "zone-handles" });
    map.svg.append(this.layer);
    map.accept = (floor) => this.receive(floor);
    map.afterRender = () => this.draw();
    this.build(panel);
    this.listen();
  }

  // -- the controls -------------------------------------------------------------------------
  build(panel) {
    const f = (this.fields = {});
    f.pick = html("select", { id: "zone-select" });
    f.name = html("input", { id: "zone-name", maxlength: 80, autocomplete: "off" });
    f.rename = html("button", { type: "button", id: "zone-rename" });
    f.addCorner = html("button", { type: "button", id: "zone-add-corner" });
    f.removeCorner = html("button", { type: "button", id: "zone-remove-corner" });
    f.remove = html("button", { type: "button", id: "zone-delete", class: "danger" });
    f.newId = html("input", { id: "zone-new-id", maxlength: 40, required: "", autocomplete: "off" });
    f.newName = html("input", { id: "zone-new-name", maxlength: 80, required: "", autocomplete: "off" });
    f.add = html("button", { type: "submit", id: "zone-add" });
    f.error = html("p", { id: "zone-error", class: "error zone-error", role: "alert", hidden: "" });
    f.status = html("p", { id: "zone-status", class: "muted", role: "status", "aria-live": "polite" });
    f.pickLabel = html("span");
    f.nameLabel = html("span");
    f.newIdLabel = html("span");
    f.newNameLabel = html("span");
    f.newTitle = html("span", { class: "zone-new-title" });
    f.hint = html("p", { class: "muted hint" });

    const label = (span, input) => {
      const l = html("label");
      l.append(span, input);
      return l;
    };
    const edit = html("div", { class: "zone-edit-row" });
    edit.append(label(f.pickLabel, f.pick), label(f.nameLabel, f.name));
    edit.append(f.rename, f.addCorner, f.removeCorner, f.remove);
    const form = html("form", { id: "zone-new", class: "zone-edit-row" });
    form.append(f.newTitle, label(f.newIdLabel, f.newId), label(f.newNameLabel, f.newName), f.add);
    panel.replaceChildren(f.hint, edit, form, f.error, f.status);

    f.pick.addEventListener("change", () => this.select(f.pick.value || null));
    f.rename.addEventListener("click", () => this.rename());
    f.addCorner.addEventListener("click", () => {
      const zone = this.zone();
      if (zone) this.addCorner(this.corner ?? zone.outline.length - 1);
    });
    f.removeCorner.addEventListener("click", () => this.removeCorner(this.corner));
    f.remove.addEventListener("click", () => this.deleteZone());
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.addZone(f.newId.value.trim(), f.newName.value.trim());
    });
    this.relabel();
  }

  relabel() {
    const f = this.fields;
    f.hint.textContent = t("zone.hint");
    f.pickLabel.textContent = t("zone.pick");
    f.nameLabel.textContent = t("zone.name");
    f.rename.textContent = t("zone.rename");
    f.addCorner.textContent = t("zone.add_corner");
    f.removeCorner.textContent = t("zone.remove_corner");
    f.remove.textContent = t("zone.delete");
    f.newTitle.textContent = t("zone.new");
    f.newIdLabel.textContent = t("zone.new_id");
    f.newNameLabel.textContent = t("zone.new_name");
    f.add.textContent = t("zone.add");
    this.controls();
  }

  /** The list of zones and which controls apply now. */
  controls() {
    const f = this.fields;
    const zones = this.map.zones;
    const labels = zones.map((z) => [z.id, `${this.map.zoneName(z)} (${z.id})`]);
    const listed = JSON.stringify([t("zone.none"), labels]);
    if (listed !== this.listed) {
      // rebuilt only when the zones or their names change (not under an open list)
      this.listed = listed;
      const options = [html("option", { value: "" }, t("zone.none"))];
      for (const [id, text] of labels) options.push(html("option", { value: id }, text));
      f.pick.replaceChildren(...options);
    }
    f.pick.value = this.zone() ? this.selected : "";
    const zone = this.zone();
    for (const b of [f.name, f.rename, f.addCorner, f.removeCorner, f.remove]) b.disabled = !zone;
    // the name field follows the selection, not every redraw (staff may be typing in it)
    if (this.named !== (zone?.id ?? null)) {
      this.named = zone?.id ?? null;
      f.name.value = zone ? zone.name : "";
    }
  }

  zone(zones = this.map.zones) {
    return zones.find((z) => z.id === this.selected) || null;
  }

  select(id, corner = null) {
    this.selected = id;
    this.corner = corner;
    this.draw();
  }

  // -- drawing over the map -----------------------------------------------------------------
  handleSize() {
    const box = (this.map.svg.getAttribute("viewBox") || "0 0 20 12").split(" ").map(Number);
    return Math.max(0.35, Math.max(box[2], box[3]) / 60);
  }

  draw() {
    this.controls();
    for (const g of this.map.zoneLayer.querySelectorAll(".floor-zone")) {
      g.classList.toggle("selected", g.dataset.zone === this.selected);
    }
    const zone = this.zone();
    const focused = this.layer.contains(document.activeElement);
    if (!zone) return this.layer.replaceChildren();
    const s = this.handleSize();
    const n = zone.outline.length;
    const nodes = [];
    zone.outline.forEach(([x, y], i) => {
      const [nx, ny] = zone.outline[(i + 1) % n];
      const mid = el("g", { class: "zone-midpoint", "data-edge": i, "aria-hidden": "true" });
      mid.append(
        el("circle", { r: s * 0.45 }),
        el("path", { d: `M${-s * 0.25} 0H${s * 0.25}M0 ${-s * 0.25}V${s * 0.25}` }),
      );
      mid.setAttribute("transform", `translate(${(x + nx) / 2} ${(y + ny) / 2})`);
      nodes.push(mid);
    });
    zone.outline.forEach((point, i) => nodes.push(this.cornerNode(zone, i, s)));
    this.layer.replaceChildren(...nodes);
    if (focused) this.refocus(); // a redraw (a machine that moved, say) keeps the focus
  }

  cornerNode(zone, i, s) {
    const [x, y] = zone.outline[i];
    const g = el("g", {
      class: `zone-corner${i === this.corner ? " selected" : ""}`,
      "data-corner": i,
      "data-x": x,
      "data-y": y,
      tabindex: 0,
      role: "button",
      transform: `translate(${x} ${y})`,
      "aria-label": t("zone.corner", {
        n: i + 1,
        count: zone.outline.length,
        zone: this.map.zoneName(zone),
        x,
        y,
      }),
    });
    g.append(
      el("rect", { x: -s / 2, y: -s / 2, width: s, height: s }),
      Object.assign(el("text", { x: 0, y: s * 0.28, "text-anchor": "middle", "font-size": s * 0.75 }), {
        textContent: String(i + 1),
      }),
    );
    return g;
  }

  /** During a drag: move the outline and the dragged handles, nothing rebuilt. */
  reshape() {
    const zone = this.zone();
    const g = this.map.zoneLayer.querySelector(`[data-zone="${CSS.escape(zone.id)}"] polygon`);
    g?.setAttribute("points", zone.outline.map((p) => p.join(",")).join(" "));
    const n = zone.outline.length;
    zone.outline.forEach(([x, y], i) => {
      const corner = this.layer.querySelector(`.zone-corner[data-corner="${i}"]`);
      if (corner) {
        corner.setAttribute("transform", `translate(${x} ${y})`);
        corner.dataset.x = String(x);
        corner.dataset.y = String(y);
      }
      const [nx, ny] = zone.outline[(i + 1) % n];
      this.layer
        .querySelector(`.zone-midpoint[data-edge="${i}"]`)
        ?.setAttribute("transform", `translate(${(x + nx) / 2} ${(y + ny) / 2})`);
    });
  }

  refocus() {
    if (this.corner === null) return;
    this.layer.querySelector(`.zone-corner[data-corner="${this.corner}"]`)?.focus();
  }

  // -- editing ------------------------------------------------------------------------------
  /** Change a copy of the zones with `change(zones)`; show it; save it unless `later`. */
  edit(change, what, { later = false, saved = () => {} } = {}) {
    const zones = clone(this.map.zones);
    if (change(zones) === false) return;
    this.map.zones = zones;
    this.map.render();
    if (!later) this.save(what, saved);
  }

  say(text) {
    this.fields.error.hidden = true;
    this.fields.status.textContent = text;
  }

  refuse(text, code = "") {
    const e = this.fields.error;
    e.textContent = `⚠ ${text}`;
    e.dataset.code = code;
    e.hidden = false;
    this.fields.status.textContent = "";
  }

  /** A corner in the middle of the edge after corner `after`, selected; false (and said
   * why) when the outline has as many as the floor allows. */
  insert(after, { later = false } = {}) {
    const zone = this.zone();
    if (zone.outline.length >= this.map.limits.max_points) {
      this.refuse(t("zone.max_points", { n: this.map.limits.max_points }), "max_points");
      return false;
    }
    const n = zone.outline.length;
    const [x, y] = zone.outline[after];
    const [nx, ny] = zone.outline[(after + 1) % n];
    this.corner = after + 1;
    this.edit(
      (zones) => {
        this.zone(zones).outline.splice(after + 1, 0, [snap((x + nx) / 2), snap((y + ny) / 2)]);
      },
      t("zone.corner_added"),
      { later },
    );
    return true;
  }

  addCorner(after) {
    if (!this.zone() || after === null || after === undefined || after < 0) return;
    if (this.insert(after)) this.refocus();
  }

  removeCorner(index) {
    const zone = this.zone();
    if (!zone || index === null || index === undefined) return;
    if (zone.outline.length <= this.map.limits.min_points) {
      return this.refuse(t("zone.min_points", { n: this.map.limits.min_points }), "min_points");
    }
    this.corner = Math.min(index, zone.outline.length - 2);
    this.edit((zones) => {
      this.zone(zones).outline.splice(index, 1);
    }, t("zone.corner_removed"));
    this.refocus();
  }

  rename() {
    const name = this.fields.name.value.trim();
    const zone = this.zone();
    if (!zone || !name || name === zone.name) return;
    this.edit(
      (zones) => {
        this.zone(zones).name = name;
      },
      t("zone.renamed", { name }),
      { saved: () => (this.named = null) }, // the field shows the name the server keeps
    );
  }

  async deleteZone() {
    const zone = this.zone();
    if (!zone) return;
    let inside;
    try {
      inside = (await this.rest.get("/devices")).filter((d) => d.zone === zone.id);
    } catch (err) {
      return this.refuse(errorText(err), err.code);
    }
    if (inside.length) {
      const names = inside.map((d) => d.name).join(", ");
      return this.refuse(t("zone.not_empty", { n: inside.length, names }), "not_empty");
    }
    const id = zone.id;
    this.selected = null;
    this.corner = null;
    this.edit((zones) => {
      zones.splice(zones.findIndex((z) => z.id === id), 1);
    }, t("zone.deleted", { name: this.map.zoneName(zone) }));
  }

  addZone(id, name) {
    if (!id || !name) return;
    if (this.map.zones.length >= this.map.limits.zones) {
      return this.refuse(t("zone.max_zones", { n: this.map.limits.zones }), "max_zones");
    }
    // beside the others, on the first row: the extent's right edge plus a metre
    const xs = this.map.zones.flatMap((z) => z.outline.map(([x]) => x));
    const ys = this.map.zones.flatMap((z) => z.outline.map(([, y]) => y));
    const size = this.map.size;
    const x0 = snap(clamp(xs.length ? Math.max(...xs) + 1 : 1, 0, size - NEW_SIDE));
    const y0 = snap(clamp(ys.length ? Math.min(...ys) : 1, 0, size - NEW_SIDE));
    const outline = [
      [x0, y0],
      [x0 + NEW_SIDE, y0],
      [x0 + NEW_SIDE, y0 + NEW_SIDE],
      [x0, y0 + NEW_SIDE],
    ];
    this.selected = id;
    this.corner = null;
    this.edit(
      (zones) => {
        zones.push({ id, name, outline });
      },
      t("zone.added", { name }),
      { saved: () => (this.fields.newId.value = this.fields.newName.value = "") },
    );
  }

  /** PUT /floor with the zones as shown now; in order, one at a time. A refusal puts back
   * what the server holds. */
  save(what, saved = () => {}) {
    const zones = clone(this.map.zones);
    this.pending += 1;
    this.queue = this.queue.then(async () => {
      try {
        const floor = await this.rest.request("PUT", "/floor", { zones });
        this.saved = clone(floor.zones);
        this.say(what);
        if (this.pending === 1 && !this.drag && !this.keyTimer) this.show(floor);
        if (this.selected && !floor.zones.some((z) => z.id === this.selected)) this.select(null);
        saved(floor);
      } catch (err) {
        const words = err.message && err.message !== err.code ? ` (${err.message})` : "";
        this.refuse(`${errorText(err)}${words}`, err.code);
        if (this.selected && !this.saved.some((z) => z.id === this.selected)) this.selected = null;
        this.show({ size: this.map.size, zones: clone(this.saved), limits: this.map.limits });
      } finally {
        this.pending -= 1;
      }
    });
    return this.queue;
  }

  show(floor) {
    this.map.setFloor({ ...floor, zones: clone(floor.zones) }); // edited in place: our own copy
  }

  /** A floor from GET /floor or an event: shown unless staff are in the middle of an edit
   * (a drag, keys not yet saved, a save not answered), which the next save settles. */
  receive(floor) {
    this.saved = clone(floor.zones);
    if (this.drag || this.keyTimer || this.pending) {
      this.map.size = floor.size;
      if (floor.limits) this.map.limits = floor.limits;
      return;
    }
    if (this.selected && !floor.zones.some((z) => z.id === this.selected)) this.selected = null;
    this.show(floor);
  }

  // -- pointer and keys ---------------------------------------------------------------------
  listen() {
    const svg = this.map.svg;
    svg.addEventListener("pointerdown", (e) => {
      if (e.button !== 0 || e.target.closest(".seat")) return;
      const corner = e.target.closest(".zone-corner");
      const mid = e.target.closest(".zone-midpoint");
      const zoneG = e.target.closest(".floor-zone");
      if (corner || mid) {
        e.preventDefault();
        let index = Number(corner ? corner.dataset.corner : mid.dataset.edge);
        let inserted = false;
        if (mid) {
          if (!this.insert(index, { later: true })) return; // saved when the drag ends
          index += 1;
          inserted = true;
        } else {
          this.corner = index;
          for (const c of this.layer.querySelectorAll(".zone-corner")) {
            c.classList.toggle("selected", Number(c.dataset.corner) === index);
          }
        }
        const [x, y] = this.zone().outline[index];
        svg.setPointerCapture(e.pointerId);
        const start = this.map.toFloor(e);
        this.drag = { index, pointer: e.pointerId, start, at: { x, y }, moved: inserted, inserted };
        this.layer.querySelector(`.zone-corner[data-corner="${index}"]`)?.classList.add("dragging");
        return;
      }
      if (zoneG) this.select(zoneG.dataset.zone);
    });
    svg.addEventListener("pointermove", (e) => {
      const d = this.drag;
      if (!d || e.pointerId !== d.pointer) return;
      const p = this.map.toFloor(e);
      const x = snap(clamp(d.at.x + p.x - d.start.x, 0, this.map.size));
      const y = snap(clamp(d.at.y + p.y - d.start.y, 0, this.map.size));
      const point = this.zone()?.outline[d.index];
      if (!point || (point[0] === x && point[1] === y)) return;
      point[0] = x;
      point[1] = y;
      d.moved = true;
      this.reshape();
    });
    const finish = (e) => {
      const d = this.drag;
      if (!d || e.pointerId !== d.pointer) return;
      this.drag = null;
      if (!d.moved) return;
      this.map.render(); // the extent may have grown
      this.save(d.inserted ? t("zone.corner_added") : t("zone.corner_moved"));
    };
    svg.addEventListener("pointerup", finish);
    svg.addEventListener("pointercancel", finish);
    svg.addEventListener("focusin", (e) => {
      const corner = e.target.closest?.(".zone-corner");
      if (!corner) return;
      this.corner = Number(corner.dataset.corner);
      for (const c of this.layer.querySelectorAll(".zone-corner")) {
        c.classList.toggle("selected", c === corner);
      }
    });
    svg.addEventListener("keydown", (e) => {
      const corner = e.target.closest(".zone-corner");
      if (!corner) return;
      const index = Number(corner.dataset.corner);
      if (e.key === "Delete" || e.key === "Backspace") {
        e.preventDefault();
        return this.removeCorner(index);
      }
      if (e.key === "Insert" || e.key === "+") {
        e.preventDefault();
        return this.addCorner(index);
      }
      const delta = ARROWS[e.key];
      if (!delta) return;
      e.preventDefault();
      const step = e.shiftKey ? BIG_STEP : STEP;
      const point = this.zone().outline[index];
      point[0] = snap(clamp(point[0] + delta[0] * step, 0, this.map.size));
      point[1] = snap(clamp(point[1] + delta[1] * step, 0, this.map.size));
      this.corner = index;
      this.reshape();
      clearTimeout(this.keyTimer);
      this.keyTimer = setTimeout(() => {
        this.keyTimer = null;
        this.map.render();
        this.refocus();
        this.save(t("zone.corner_moved"));
      }, KEY_SAVE_AFTER);
    });
  }
}
