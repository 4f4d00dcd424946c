// The admin view. Staff read the live feeds over MQTT (their broker role writes nothing) and
// act through REST: approve / reject (POST /reservations/{id}/approve|reject), notices
// (POST /notices), maintenance (PATCH /devices/{id}). Figures come from GET /admin/stats
// every few seconds and show "–" when the endpoint or a figure is missing.

import { clock, range, t } from "./i18n.js";
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
    root.querySelector("#device-list").addEventListener("change", (e) => {
      const box = e.target.closest("input[data-maintenance]");
      if (box) this.setMaintenance(box.dataset.maintenance, box.checked, box);
    });
    root.querySelector("#notice-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.sendNotice(e.target);
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
    ]);
  }

  async loadPending() {
    try {
      const page = await this.rest.get("/reservations?status=pending&limit=100");
      this.pending = new Map(page.items.map((r) => [r.id, normalise(r)]));
    } catch (err) {
      return;
    }
    this.renderPending();
  }

  async loadAlerts() {
    try {
      const page = await this.rest.get("/alerts?limit=20");
      this.alerts = page.items.map((a) => ({ ...a, ts: Date.parse(a.created_at) / 1000 }));
      this.alertTotal = page.total;
    } catch (err) {
      return;
    }
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
    if (ev.type !== "reservation_created" && this.pending.delete(ev.reservation_id)) {
      this.renderPending();
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
    try {
      await this.rest.post(`/reservations/${encodeURIComponent(id)}/${action}`);
      this.pending.delete(id);
      this.renderPending();
      this.notify(t(action === "approve" ? "admin.approved" : "admin.rejected"));
    } catch (err) {
      button.disabled = false;
      this.fail(err);
      this.reloadPending();
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
      s && known(s.command_p99_ms) ? t("admin.stats.ms", { value: Number(s.command_p99_ms).toFixed(1) }) : DASH,
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
      const sev = document.createElement("span");
      sev.className = "badge";
      sev.dataset.severity = a.severity;
      sev.textContent = t(`admin.severity.${a.severity}`);
      const time = document.createElement("time");
      time.textContent = clock(a.ts);
      const msg = document.createElement("span");
      msg.textContent = a.message;
      li.append(sev, " ", time, " ", msg);
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
