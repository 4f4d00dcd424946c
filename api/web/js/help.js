// Calling staff, and the desk (issue 18).
//
// Players: a "call staff" card. The call goes over the venue's request topic (op call_staff on
// plaza/venue/requests/{me}) while live, else over REST (POST /help, the request id as its
// Idempotency-Key). A second call while one is open returns it (no second alert). The card
// shows the call's state: waiting, someone on the way (the help_acknowledged notification),
// resolved (help_resolved); GET /help restores it after a reload.
//
// Staff: a help-calls card (GET /admin/help: the waiting calls, newest first), reloaded on
// every help_* admin alert (plaza/admin/alerts, live over MQTT), with "on my way" and
// "resolved" (POST /admin/help/{id}/ack|resolve). The desk card: check a player in by their
// reservation's code (POST /admin/reservations/check-in), and set the state of machines
// without an agent (board entries with managed "staff"; PUT /admin/devices/{id}/state).

import { errorText } from "./errors.js";
import { clock, t } from "./i18n.js";
import { icon } from "./icons.js";

export const TOPICS = ["hardware", "software", "payment", "other"];
const MESSAGE_MAX = 280;
const STATES = ["idle", "in_use", "fault"];
/** Each state of a call has its own shape (and its words), never colour alone. */
const ICON = { open: "bell", acknowledged: "in_use", resolved: "available" };

/** `el` holds the call's icon and then `text`. */
function withIcon(el, status, text) {
  el.innerHTML = icon(ICON[status] || "bell", "icon help-icon");
  const span = document.createElement("span");
  span.textContent = text;
  el.append(span);
}

function seconds(value) {
  if (value === null || value === undefined) return null;
  return typeof value === "number" ? value : Date.parse(value) / 1000;
}

/** A call from a reply or notification (Unix seconds) or REST (ISO times), in one shape. */
export function normaliseCall(c) {
  return {
    id: c.id,
    user: c.user,
    device_id: c.device_id,
    topic: c.topic,
    message: c.message ?? null,
    status: c.status,
    created_at: seconds(c.created_at),
    acknowledged_by: c.acknowledged_by ?? null,
  };
}

function newId() {
  return crypto.randomUUID().replaceAll("-", "");
}

function option(value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  return o;
}

/** The player's card. */
export class HelpCall {
  constructor(root, { board, realtime, rest, mine, nameOf, notify, fail }) {
    this.root = root;
    this.mine = mine;
    this.board = board;
    this.realtime = realtime;
    this.rest = rest;
    this.nameOf = nameOf;
    this.notify = notify;
    this.fail = fail;
    this.call = null;
    this.busy = false;
    this.form = root.querySelector("#help-form");
    this.device = root.querySelector("#help-device");
    this.topic = root.querySelector("#help-topic");
    this.message = root.querySelector("#help-message");
    this.message.maxLength = MESSAGE_MAX;
    this.status = root.querySelector("#help-status");
    this.device.addEventListener("change", () => {
      this.device.dataset.picked = "1";
    });
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.send();
    });
    board.addEventListener("change", (e) => {
      if (e.detail.structural) this.fillDevices();
    });
    mine?.addEventListener("change", () => this.preferMine());
  }

  /** Until the player picks one: the machine they are checked in at, if any. */
  preferMine() {
    if (this.device.dataset.picked) return;
    const here = [...(this.mine?.items.values() ?? [])].find((r) => r.status === "checked_in");
    if (here && [...this.device.options].some((o) => o.value === here.device_id)) {
      this.device.value = here.device_id;
    }
  }

  relabel() {
    const chosen = this.topic.value;
    this.topic.replaceChildren(...TOPICS.map((k) => option(k, t(`help.topic.${k}`))));
    if (chosen) this.topic.value = chosen;
    this.fillDevices();
    this.render();
  }

  fillDevices() {
    const chosen = this.device.value;
    const entries = this.board.list();
    this.device.replaceChildren(...entries.map((e) => option(e.device_id, e.name)));
    if (chosen && entries.some((e) => e.device_id === chosen)) this.device.value = chosen;
    this.preferMine();
  }

  async load() {
    const calls = await this.rest.get("/help");
    const waiting = calls.find((c) => c.status !== "resolved");
    this.call = waiting ? normaliseCall(waiting) : null;
    this.render();
  }

  async send() {
    if (this.busy || !this.device.value) return;
    this.busy = true;
    this.render();
    const body = {
      request_id: newId(),
      op: "call_staff",
      device_id: this.device.value,
      topic: this.topic.value || "other",
    };
    const text = this.message.value.trim();
    if (text) body.message = text.slice(0, MESSAGE_MAX);
    try {
      const reply = await this.command(body);
      if (!reply.ok) {
        this.fail(errorText(reply.error));
        return;
      }
      const again = this.call?.id === reply.help.id;
      this.call = normaliseCall(reply.help);
      this.message.value = "";
      const name = this.nameOf(this.call.device_id);
      this.notify(t(again ? "help.already" : "help.sent", { name }));
    } finally {
      this.busy = false;
      this.render();
    }
  }

  /** Over MQTT while live, else REST; resolves with a reply ({ok, help} or {ok, error}). */
  async command(body) {
    try {
      if (this.realtime.live) return await this.realtime.request(null, body);
      const payload = { device_id: body.device_id, topic: body.topic };
      if (body.message) payload.message = body.message;
      const help = await this.rest.post("/help", payload, { "Idempotency-Key": body.request_id });
      return { ok: true, help };
    } catch (err) {
      return { ok: false, error: { code: err.code || "network", status: err.status ?? 0 } };
    }
  }

  /** A notification: staff are on the way, or the call is resolved. */
  onNotification(n) {
    if (!n.help || (n.type !== "help_acknowledged" && n.type !== "help_resolved")) return;
    this.call = normaliseCall(n.help);
    this.render();
  }

  render() {
    const call = this.call;
    const button = this.form.querySelector("button[type=submit]");
    button.disabled = this.busy;
    this.root.dataset.help = call?.status ?? "none";
    if (!call) {
      this.status.hidden = true;
      return;
    }
    const params = {
      name: this.nameOf(call.device_id),
      time: call.created_at ? clock(call.created_at) : "",
      staff: call.acknowledged_by || "",
    };
    withIcon(this.status, call.status, t(`help.state.${call.status}`, params));
    this.status.dataset.status = call.status;
    this.status.hidden = false;
  }
}

/** The staff's cards: help calls, and the desk (check-in by code, machines without an agent). */
export class StaffDesk {
  constructor(root, { board, rest, nameOf, notify, fail }) {
    this.root = root;
    this.board = board;
    this.rest = rest;
    this.nameOf = nameOf;
    this.notify = notify;
    this.fail = fail;
    this.calls = [];
    this.list = root.querySelector("#help-calls");
    this.managed = root.querySelector("#managed-list");
    this.checkIn = root.querySelector("#desk-form");
    this.checkInDevice = root.querySelector("#desk-device");
    this.list.addEventListener("click", (e) => {
      const button = e.target.closest("button[data-help]");
      if (button) this.step(button.dataset.help, button.dataset.call, button);
    });
    this.managed.addEventListener("click", (e) => {
      const button = e.target.closest("button[data-state]");
      if (button) this.setState(button.dataset.device, button.dataset.state, button);
    });
    this.checkIn.addEventListener("submit", (e) => {
      e.preventDefault();
      this.deskCheckIn();
    });
    board.addEventListener("change", (e) => {
      if (e.detail.structural) this.fillDevices();
      this.renderManaged();
    });
  }

  async load() {
    this.calls = (await this.rest.get("/admin/help")).map(normaliseCall);
    this.renderCalls();
  }

  /** Any help_* admin alert: the list as SQL now has it. */
  onAlert(alert) {
    if (alert?.type?.startsWith("help_")) this.load().catch(() => {});
  }

  async step(action, id, button) {
    button.disabled = true;
    try {
      await this.rest.post(`/admin/help/${encodeURIComponent(id)}/${action}`);
      this.notify(t(action === "ack" ? "help.admin.acked" : "help.admin.resolved"));
      await this.load();
    } catch (err) {
      this.fail(err);
      button.disabled = false;
    }
  }

  renderCalls() {
    if (!this.calls.length) {
      const empty = document.createElement("li");
      empty.className = "muted";
      empty.textContent = t("help.admin.empty");
      this.list.replaceChildren(empty);
      return;
    }
    this.list.replaceChildren(
      ...this.calls.map((c) => {
        const li = document.createElement("li");
        li.dataset.call = c.id;
        li.dataset.status = c.status;
        const text = document.createElement("span");
        const what = t("help.admin.item", {
          state: t(`help.status.${c.status}`),
          user: c.user,
          name: this.nameOf(c.device_id),
          topic: t(`help.topic.${c.topic}`),
          time: c.created_at ? clock(c.created_at) : "",
        });
        const state = c.status === "acknowledged" ? ` · ${t("help.admin.on_the_way", { staff: c.acknowledged_by || "" })}` : "";
        withIcon(text, c.status, what + state + (c.message ? ` — ${c.message}` : ""));
        li.append(text);
        const actions = c.status === "open" ? ["ack", "resolve"] : ["resolve"];
        for (const action of actions) {
          const b = document.createElement("button");
          b.type = "button";
          b.dataset.help = action;
          b.dataset.call = c.id;
          b.textContent = t(`help.admin.${action}`);
          b.setAttribute("aria-label", t(`help.admin.${action}_label`, { user: c.user }));
          li.append(b);
        }
        return li;
      }),
    );
  }

  fillDevices() {
    const chosen = this.checkInDevice.value;
    const entries = this.board.list();
    this.checkInDevice.replaceChildren(...entries.map((e) => option(e.device_id, e.name)));
    const firstManaged = entries.find((e) => e.managed === "staff");
    if (chosen && entries.some((e) => e.device_id === chosen)) this.checkInDevice.value = chosen;
    else if (firstManaged) this.checkInDevice.value = firstManaged.device_id;
  }

  renderManaged() {
    const entries = this.board.list().filter((e) => e.managed === "staff");
    if (!entries.length) {
      const empty = document.createElement("li");
      empty.className = "muted";
      empty.textContent = t("desk.managed.empty");
      this.managed.replaceChildren(empty);
      return;
    }
    this.managed.replaceChildren(
      ...entries.map((e) => {
        const li = document.createElement("li");
        li.dataset.device = e.device_id;
        const label = document.createElement("span");
        label.textContent = `${e.name}: ${t(`status.${e.status}`)}`;
        li.append(label);
        for (const state of STATES) {
          const b = document.createElement("button");
          b.type = "button";
          b.className = "secondary";
          b.dataset.device = e.device_id;
          b.dataset.state = state;
          b.textContent = t(`desk.state.${state}`);
          b.setAttribute("aria-pressed", String(e.state === state));
          b.setAttribute("aria-label", t("desk.state_label", { name: e.name, state: t(`desk.state.${state}`) }));
          li.append(b);
        }
        return li;
      }),
    );
  }

  async setState(device, state, button) {
    button.disabled = true;
    try {
      await this.rest.request("PUT", `/admin/devices/${encodeURIComponent(device)}/state`, { state });
    } catch (err) {
      this.fail(err);
    } finally {
      button.disabled = false;
    }
  }

  async deskCheckIn() {
    const code = this.checkIn.querySelector("#desk-code");
    const device = this.checkInDevice.value;
    if (!device || !code.value.trim()) return;
    try {
      await this.rest.post("/admin/reservations/check-in", { device_id: device, code: code.value.trim() });
      this.notify(t("desk.checked_in", { name: this.nameOf(device) }));
      code.value = "";
    } catch (err) {
      this.fail(err);
    }
  }

  relabel() {
    this.renderCalls();
    this.renderManaged();
  }
}
