// The venue board: one tile per machine, grouped by zone and kind, from the retained
// plaza/board/{device} entries. A client keeps the highest `version` it has seen per machine
// and ignores lower ones; an empty retained payload removes the machine. While the live link
// is down, GET /devices refreshes statuses (marked as polled: the tile says so and drops its
// session and slot countdowns, which REST does not keep current) until the board returns.

import { duration, range, t, tOr } from "./i18n.js";
import { icon } from "./icons.js";

export class Board extends EventTarget {
  constructor() {
    super();
    this.entries = new Map();
    this.versions = new Map();
  }

  /** Apply a board message; returns false for a stale (lower) version. */
  apply(device, entry) {
    if (entry === null) {
      this.entries.delete(device);
      this.versions.delete(device);
      this.changed(device, true);
      return true;
    }
    const seen = this.versions.get(device);
    if (seen !== undefined && entry.version < seen) return false;
    const fresh = !this.entries.has(device);
    this.versions.set(device, entry.version);
    this.entries.set(device, { ...entry, polled: false });
    this.changed(device, fresh);
    return true;
  }

  /** Statuses from GET /devices (the degraded mode): newer than any board entry we hold.
   * Every tile is marked polled; the retained board (equal or higher version) takes over
   * again when the live link is back. */
  applyRest(devices) {
    const ids = new Set();
    for (const d of devices) {
      ids.add(d.id);
      const old = this.entries.get(d.id);
      const since = Date.parse(d.since) / 1000;
      const entry = {
        ...(old || {}),
        device_id: d.id,
        name: d.name,
        kind: d.kind,
        zone: d.zone,
        status: d.status,
        online: d.online,
        since,
        polled: true,
      };
      if (d.agent === false) entry.managed = "staff"; // no agent: staff set its state
      if (d.x !== undefined) entry.pos = d.x === null ? undefined : { x: d.x, y: d.y }; // the floor map
      if (d.status !== "in_use") delete entry.session;
      const samePlace = old?.pos?.x === entry.pos?.x && old?.pos?.y === entry.pos?.y;
      const same = old?.polled && samePlace && old.status === entry.status && old.name === entry.name;
      if (same && old.online === entry.online && old.zone === entry.zone && old.kind === entry.kind) continue;
      this.entries.set(d.id, entry);
      this.changed(d.id, !old);
    }
    for (const id of [...this.entries.keys()]) {
      if (!ids.has(id)) this.apply(id, null);
    }
  }

  changed(device, structural) {
    this.dispatchEvent(new CustomEvent("change", { detail: { device, structural } }));
  }

  get(device) {
    return this.entries.get(device);
  }

  list() {
    return [...this.entries.values()].sort(compareTiles);
  }
}

function compareTiles(a, b) {
  return (
    a.zone.localeCompare(b.zone) ||
    a.kind.localeCompare(b.kind) ||
    a.device_id.localeCompare(b.device_id, undefined, { numeric: true })
  );
}

/** The timer lines of a tile: the session's remaining time, the current or next slot; for a
 * polled tile only that it is polled (its slots and session may be stale). */
export function tileLines(entry, now = Date.now() / 1000) {
  if (entry.polled) return [["polled", t("board.stale")]];
  const lines = entry.managed === "staff" ? [["managed", t("board.managed")]] : [];
  // kept free for a booking (issue 18): no walk-in may start; said in words, not colour
  if (entry.locked === "reservation") lines.push(["locked", t("board.locked")]);
  if (entry.status === "in_use" && entry.session?.ends_at) {
    lines.push(["session", t("board.session_left", { time: duration(entry.session.ends_at - now) })]);
  }
  const current = entry.current_slot;
  if (current && current.ends_at > now && current.starts_at <= now) {
    lines.push(["slot", t("board.slot_now", { range: range(current.starts_at, current.ends_at) })]);
  }
  const next = entry.next_slot;
  if (next && next.starts_at > now) {
    const soon = next.starts_at - now < 24 * 3600;
    lines.push([
      "next",
      soon
        ? t("board.next_in", { time: duration(next.starts_at - now) })
        : t("board.next_at", { range: range(next.starts_at, next.ends_at) }),
    ]);
  }
  return lines;
}

export class BoardView {
  constructor(container, board, { interactive, onSelect, summary }) {
    this.container = container;
    this.board = board;
    this.interactive = interactive;
    this.onSelect = onSelect;
    this.summary = summary;
    this.mine = new Set();
    board.addEventListener("change", (e) => {
      if (e.detail.structural) this.render();
      else this.update(e.detail.device);
    });
    container.addEventListener("click", (e) => {
      const tile = e.target.closest("[data-device]");
      if (tile && this.interactive) this.onSelect(tile.dataset.device);
    });
  }

  setMine(ids) {
    this.mine = new Set(ids);
    for (const entry of this.board.entries.values()) this.update(entry.device_id);
  }

  render() {
    const entries = this.board.list();
    this.container.replaceChildren();
    if (!entries.length) {
      const empty = document.createElement("p");
      empty.className = "empty";
      empty.textContent = t("board.empty");
      this.container.append(empty);
      this.renderSummary();
      return;
    }
    let zoneEl = null;
    let kindEl = null;
    let zone = null;
    let kind = null;
    for (const entry of entries) {
      if (entry.zone !== zone) {
        zone = entry.zone;
        kind = null;
        zoneEl = document.createElement("section");
        zoneEl.className = "zone";
        zoneEl.dataset.zone = zone;
        const h = document.createElement("h2");
        h.textContent = tOr(`zone.${zone}`, zone);
        zoneEl.append(h);
        this.container.append(zoneEl);
      }
      if (entry.kind !== kind) {
        kind = entry.kind;
        const group = document.createElement("div");
        group.className = "kind";
        group.dataset.kind = kind;
        const h = document.createElement("h3");
        h.textContent = tOr(`kind.${kind}`, kind);
        kindEl = document.createElement("div");
        kindEl.className = "tiles";
        group.append(h, kindEl);
        zoneEl.append(group);
      }
      kindEl.append(this.tile(entry));
    }
    this.renderSummary();
  }

  tile(entry) {
    const el = document.createElement(this.interactive ? "button" : "div");
    if (this.interactive) el.type = "button";
    el.className = "tile";
    el.dataset.device = entry.device_id;
    this.fill(el, entry);
    return el;
  }

  fill(el, entry) {
    const status = t(`status.${entry.status}`);
    el.dataset.status = entry.status;
    el.dataset.source = entry.polled ? "rest" : "live";
    const slotIds = [entry.current_slot?.reservation_id, entry.next_slot?.reservation_id];
    el.dataset.mine = String(slotIds.some((id) => id && this.mine.has(id)));
    el.innerHTML =
      `<span class="tile-head">${icon(entry.status, "icon tile-icon")}` +
      `<span class="tile-name"></span></span><span class="tile-status"></span>` +
      `<span class="tile-lines"></span>`;
    el.querySelector(".tile-name").textContent = entry.name;
    el.querySelector(".tile-status").textContent = status;
    this.fillLines(el, entry);
  }

  fillLines(el, entry) {
    const lines = tileLines(entry);
    const box = el.querySelector(".tile-lines");
    box.replaceChildren(
      ...lines.map(([kind, text]) => {
        const span = document.createElement("span");
        span.className = "tile-line";
        span.dataset.line = kind;
        span.textContent = text;
        return span;
      }),
    );
    const label = [t("board.tile.label", { name: entry.name, status: t(`status.${entry.status}`) })];
    label.push(...lines.map(([, text]) => text));
    if (this.interactive) label.push(t("board.book_hint"));
    el.setAttribute("aria-label", label.join(", "));
  }

  update(device) {
    const entry = this.board.get(device);
    const el = this.container.querySelector(`[data-device="${CSS.escape(device)}"]`);
    if (!entry || !el) return this.render();
    if (el.closest(".zone")?.dataset.zone !== entry.zone) return this.render();
    if (el.closest(".kind")?.dataset.kind !== entry.kind) return this.render();
    this.fill(el, entry);
    this.renderSummary();
  }

  tick() {
    for (const el of this.container.querySelectorAll("[data-device]")) {
      const entry = this.board.get(el.dataset.device);
      if (entry) this.fillLines(el, entry);
    }
  }

  renderSummary() {
    if (!this.summary) return;
    const all = [...this.board.entries.values()];
    const available = all.filter((e) => e.status === "available").length;
    this.summary.textContent = all.length ? t("board.count", { available, total: all.length }) : "";
  }
}
