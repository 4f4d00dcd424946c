// The admin view. Staff read the live feeds over MQTT (their broker role writes nothing) and
// act through REST: approve / reject (POST /reservations/{id}/approve|reject), notices
// (POST /notices), maintenance (PATCH /devices/{id}). Figures come from GET /admin/stats
// every few seconds and show "–" when the endpoint or a figure is missing. The p99 is a
// histogram bucket's upper bound, so it shows as "≤ N ms". Alerts are acknowledged with
// POST /alerts/{id}/ack. The waitlist (every line, GET /waitlist) is reloaded on every
// plaza/events/waitlist event; staff move an entry to the front or remove it.
// The pending list is reloaded over REST on every reservation event;
// a reload merges and never undoes a change that arrived after it was asked (freshness.js).

import { LocalChanges } from "./freshness.js";
import { currentLocale, dateTime, number, range, t, tOr } from "./i18n.js";
import { normalise } from "./reservations.js";

const DASH = "–";
const STATS_EVERY = 5000;

function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

export class AdminPanel {
  constructor(root, { rest, nameOf, notify, fail }) {
    this.root = root;
    this.rest = rest;
    this.nameOf = nameOf;
    this.notify = notify;
    this.fail = fail;
    this.pending = new Map();
    this.pendingChanges = new LocalChanges();
    this.alerts = [];
    this.alertTotal = 0;
    this.devices = [];
    this.stats = null;
    this.timer = null;
    this.running = false;
    this.reloadPending = debounce(() => this.loadPending(), 150);
    this.reloadDevices = debounce(() => {
      this.loadDevices();
      this.loadStats();
    }, 150);
    root.querySelector("#pending-list").addEventListener("click", (e) => {
      const button = e.target.closest("button[data-action]");
      if (button) this.act(button.dataset.action, button.dataset.reservation, button);
    });
    root.querySelector("#alert-list").addEventListener("click", (e) => {
      const button = e.target.closest("button[data-ack]");
      if (button) this.acknowledge(button.dataset.ack, button);
    });
    root.querySelector("#device-list").addEventListener("change", (e) => {
      const box = e.target.closest("input[data-maintenance]");
      if (box) this.setMaintenance(box.dataset.maintenance, box.checked, box);
    });
    root.querySelector("#notice-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.sendNotice(e.target);
    });
    this.waitlist = [];
    this.reloadWaitlist = debounce(() => this.loadWaitlist(), 150);
    root.querySelector("#waitlist-admin").addEventListener("click", (e) => {
      const button = e.target.closest("button[data-line]");
      if (button) this.moveInLine(button.dataset.line, button.dataset.entry, button);
    });
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.resync();
    this.timer = setInterval(() => this.loadStats(), STATS_EVERY);
  }

  stop() {
    this.running = false;
    clearInterval(this.timer);
  }

  resync() {
    return Promise.allSettled([
      this.loadPending(),
      this.loadAlerts(),
      this.loadStats(),
      this.loadDevices(),
      this.loadWaitlist(),
    ]);
  }

  /** Every live waitlist entry, each line in order (GET /waitlist as staff). */
  async loadWaitlist() {
    try {
      this.waitlist = await this.rest.get("/waitlist");
    } catch (err) {
      return;
    }
    this.renderWaitlist();
  }

  onWaitlistEvent() {
    this.reloadWaitlist();
  }

  /** Staff move an entry to the head of its line, or remove it (the player is told). */
  async moveInLine(action, id, button) {
    button.disabled = true;
    try {
      const path = `/waitlist/${encodeURIComponent(id)}`;
      if (action === "front") await this.rest.post(`${path}/move`, { position: 1 });
      else await this.rest.del(path);
      this.notify(t(action === "front" ? "admin.waitlist.moved" : "admin.waitlist.removed"));
    } catch (err) {
      this.fail(err);
    } finally {
      button.disabled = false;
      this.loadWaitlist();
    }
  }

  renderWaitlist() {
    const list = this.root.querySelector("#waitlist-admin");
    list.replaceChildren();
    if (!this.waitlist.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = t("admin.waitlist.empty");
      list.append(li);
      return;
    }
    for (const e of this.waitlist) {
      const li = document.createElement("li");
      li.dataset.entry = e.id;
      li.dataset.user = e.user;
      li.dataset.position = String(e.position);
      const text = document.createElement("span");
      text.className = "grow";
      const kind = tOr(`kind.${e.kind}`, e.kind);
      const key = e.offer ? "admin.waitlist.offered" : "admin.waitlist.item";
      const held = e.offer ? this.nameOf(e.offer.device_id) : "";
      text.textContent = t(key, { position: e.position, user: e.user, kind, minutes: e.minutes, name: held });
      li.append(text);
      for (const action of ["front", "remove"]) {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "secondary";
        b.dataset.line = action;
        b.dataset.entry = e.id;
        b.disabled = action === "front" && e.position === 1;
        b.textContent = t(`admin.waitlist.${action}`);
        b.setAttribute("aria-label", t(`admin.waitlist.${action}_label`, { user: e.user, kind }));
        li.append(" ", b);
      }
      list.append(li);
    }
  }

  async loadPending() {
    const changes = this.pendingChanges;
    const ticket = changes.begin();
    let page;
    try {
      page = await this.rest.get("/reservations?status=pending&limit=100");
    } catch (err) {
      changes.finish(ticket, false);
      return;
    }
    if (!changes.current(ticket)) {
      changes.finish(ticket, false);
      return;
    }
    const fresh = new Map(page.items.map((r) => [r.id, normalise(r)]));
    for (const id of [...this.pending.keys()]) {
      if (!fresh.has(id) && !changes.newer(id, ticket)) this.pending.delete(id);
    }
    for (const [id, r] of fresh) {
      if (!changes.newer(id, ticket)) this.pending.set(id, r);
    }
    changes.finish(ticket, true);
    this.renderPending();
  }

  async loadAlerts() {
    let page;
    try {
      page = await this.rest.get("/alerts?limit=20");
    } catch (err) {
      return;
    }
    // Live alerts that came while this was on its way stay (merged by id, newest first).
    const listed = page.items.map((a) => ({ ...a, ts: Date.parse(a.created_at) / 1000 }));
    const newest = listed.length ? listed[0].ts : 0;
    const ids = new Set(listed.map((a) => a.id));
    const later = this.alerts.filter((a) => !ids.has(a.id) && a.ts > newest);
    this.alerts = [...later, ...listed].slice(0, 20);
    this.alertTotal = page.total + later.length;
    this.renderAlerts();
  }

  async loadStats() {
    try {
      this.stats = await this.rest.get("/admin/stats");
    } catch (err) {
      this.stats = null; // 404 until the endpoint exists; any failure shows dashes
    }
    this.renderStats();
  }

  async loadDevices() {
    try {
      this.devices = await this.rest.get("/devices");
    } catch (err) {
      return;
    }
    this.renderDevices();
  }

  onEvent(ev) {
    if (ev.type !== "reservation_created") {
      this.pendingChanges.touch(ev.reservation_id);
      if (this.pending.delete(ev.reservation_id)) this.renderPending();
    }
    this.reloadPending();
  }

  onDeviceEvent() {
    this.reloadDevices();
  }

  onAlert(alert) {
    if (this.alerts.some((a) => a.id === alert.id)) return;
    this.alerts.unshift({ ...alert, ts: alert.timestamp });
    this.alerts = this.alerts.slice(0, 20);
    this.alertTotal += 1;
    this.renderAlerts();
  }

  async act(action, id, button) {
    button.disabled = true;
    // One key per decision: pressing again after a lost answer is applied once.
    const key = (button.dataset.key ||= `${action}-${id}-${Date.now().toString(36)}`);
    try {
      await this.rest.post(`/reservations/${encodeURIComponent(id)}/${action}`, undefined, {
        "Idempotency-Key": key,
      });
      this.pendingChanges.touch(id);
      this.pending.delete(id);
      this.renderPending();
      this.notify(t(action === "approve" ? "admin.approved" : "admin.rejected"));
    } catch (err) {
      button.disabled = false;
      this.fail(err);
      this.reloadPending();
    }
  }

  async acknowledge(id, button) {
    button.disabled = true;
    try {
      const row = await this.rest.post(`/alerts/${encodeURIComponent(id)}/ack`);
      const at = row?.acknowledged_at ?? new Date().toISOString();
      this.alerts = this.alerts.map((a) => (a.id === id ? { ...a, acknowledged_at: at } : a));
      this.renderAlerts();
    } catch (err) {
      button.disabled = false;
      this.fail(err);
    }
  }

  async setMaintenance(device, on, box) {
    box.disabled = true;
    try {
      const row = await this.rest.patch(`/devices/${encodeURIComponent(device)}`, { maintenance: on });
      this.devices = this.devices.map((d) => (d.id === row.id ? row : d));
      this.notify(t("admin.saved"));
    } catch (err) {
      box.checked = !on;
      this.fail(err);
    } finally {
      box.disabled = false;
    }
  }

  async sendNotice(form) {
    const data = Object.fromEntries(new FormData(form).entries());
    const body = { title: data.title, message: data.message, priority: data.priority };
    if (data.title_en) body.title_en = data.title_en;
    if (data.message_en) body.message_en = data.message_en;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await this.rest.post("/notices", body);
      form.reset();
      this.notify(t("admin.notice.sent"));
    } catch (err) {
      this.fail(err);
    } finally {
      button.disabled = false;
    }
  }

  render() {
    this.renderPending();
    this.renderAlerts();
    this.renderStats();
    this.renderDevices();
    this.renderWaitlist();
  }

  renderStats() {
    const s = this.stats;
    const set = (id, value) => {
      this.root.querySelector(id).textContent = value;
    };
    const known = (v) => v !== null && v !== undefined;
    set("#stat-online", s && known(s.machines_online) ? `${s.machines_online} / ${s.machines_total ?? DASH}` : DASH);
    set("#stat-cpm", s && known(s.commands_per_minute) ? String(s.commands_per_minute) : DASH);
    set(
      "#stat-p99",
      s && known(s.command_p99_ms) ? t("admin.stats.p99_value", { value: number(Number(s.command_p99_ms)) }) : DASH,
    );
  }

  renderPending() {
    const list = this.root.querySelector("#pending-list");
    const items = [...this.pending.values()].sort((a, b) => a.starts_at - b.starts_at);
    list.replaceChildren();
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = t("admin.pending.empty");
      list.append(li);
      return;
    }
    for (const r of items) {
      const name = this.nameOf(r.device_id);
      const when = range(r.starts_at, r.ends_at);
      const li = document.createElement("li");
      li.dataset.reservation = r.id;
      li.dataset.device = r.device_id;
      const text = document.createElement("span");
      text.textContent = t("admin.pending.item", { user: r.user, name, range: when });
      li.append(text);
      for (const action of ["approve", "reject"]) {
        const b = document.createElement("button");
        b.type = "button";
        b.className = action === "approve" ? "" : "secondary";
        b.dataset.action = action;
        b.dataset.reservation = r.id;
        b.textContent = t(`admin.${action}`);
        b.setAttribute("aria-label", t(`admin.${action}_label`, { user: r.user, name, range: when }));
        li.append(b);
      }
      list.append(li);
    }
  }

  renderAlerts() {
    const list = this.root.querySelector("#alert-list");
    this.root.querySelector("#alert-total").textContent = t("admin.alerts.total", {
      total: this.alertTotal,
    });
    list.replaceChildren();
    if (!this.alerts.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = t("admin.alerts.empty");
      list.append(li);
      return;
    }
    for (const a of this.alerts) {
      const li = document.createElement("li");
      li.dataset.alert = a.id;
      li.dataset.type = a.type;
      li.dataset.device = a.device_id || "";
      li.dataset.severity = a.severity;
      li.dataset.acknowledged = String(Boolean(a.acknowledged_at));
      const sev = document.createElement("span");
      sev.className = "badge";
      sev.dataset.severity = a.severity;
      sev.textContent = t(`admin.severity.${a.severity}`);
      const time = document.createElement("time");
      time.dateTime = new Date(a.ts * 1000).toISOString();
      time.textContent = dateTime(a.ts);
      const msg = document.createElement("span");
      msg.className = "grow";
      const text = alertText(a);
      msg.textContent = text;
      li.append(sev, " ", time, " ", msg);
      if (a.acknowledged_at) {
        const done = document.createElement("span");
        done.className = "acked muted";
        done.textContent = t("admin.alerts.acked");
        li.append(" ", done);
      } else {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "secondary";
        b.dataset.ack = a.id;
        b.textContent = t("admin.alerts.ack");
        b.setAttribute("aria-label", t("admin.alerts.ack_label", { message: text }));
        li.append(" ", b);
      }
      list.append(li);
    }
  }

  renderDevices() {
    const list = this.root.querySelector("#device-list");
    list.replaceChildren();
    for (const d of this.devices) {
      const li = document.createElement("li");
      li.dataset.device = d.id;
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.dataset.maintenance = d.id;
      box.checked = d.maintenance;
      box.setAttribute("aria-label", t("admin.maintenance_label", { name: d.name }));
      const name = document.createElement("span");
      name.className = "grow";
      name.textContent = d.name;
      const status = document.createElement("span");
      status.className = "badge";
      status.dataset.boardStatus = d.status;
      status.textContent = t(`status.${d.status}`);
      label.append(box, name, status);
      li.append(label);
      list.append(li);
    }
  }
}

/** The bridge writes each alert in Korean (`message`) and English (`message_en`). */
function alertText(a) {
  return currentLocale() === "en" && a.message_en ? a.message_en : a.message;
}
