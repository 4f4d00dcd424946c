// The booking form. Sending shows the reservation at once as pending (optimistic) in "My
// reservations"; the bridge's reply replaces it, or a refusal rolls it back and the form
// names the conflicting slot. While the form is open it watches plaza/events/reservations
// and the machine's board entry and warns, live, when someone else takes an overlapping slot.
// Without the live link the booking goes over REST (POST /reservations), same rules.

import { clock, day, has, range, t } from "./i18n.js";

const DURATIONS = [30, 60, 90, 120, 180, 240];
const STEP = 30 * 60;

let counter = 0;
export function requestId(prefix) {
  counter += 1;
  return `${prefix}-${Date.now().toString(36)}-${counter}-${Math.random().toString(36).slice(2, 8)}`;
}

function overlaps(a, b) {
  return a.starts_at < b.ends_at && b.starts_at < a.ends_at;
}

export class Booking {
  constructor(dialog, { board, realtime, rest, mine, notify }) {
    this.dialog = dialog;
    this.board = board;
    this.realtime = realtime;
    this.rest = rest;
    this.mine = mine;
    this.notify = notify;
    this.form = dialog.querySelector("form");
    this.device = dialog.querySelector("#book-device");
    this.start = dialog.querySelector("#book-start");
    this.length = dialog.querySelector("#book-duration");
    this.state = dialog.querySelector("#book-state");
    this.warning = dialog.querySelector("#book-warning");
    this.error = dialog.querySelector("#book-error");
    this.progress = dialog.querySelector("#book-progress");
    this.submitButton = dialog.querySelector("#book-submit");
    this.seen = new Map(); // reservation_id -> slot, from events while the form is open
    this.inFlight = false;
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    dialog.querySelector("#book-close").addEventListener("click", () => this.close());
    for (const el of [this.device, this.start, this.length]) {
      el.addEventListener("change", () => {
        this.error.hidden = true;
        this.describe();
        this.check();
      });
    }
    board.addEventListener("change", (e) => {
      if (this.isOpen && e.detail.device === this.device.value) {
        this.describe();
        this.check();
      }
    });
  }

  get isOpen() {
    return this.dialog.open;
  }

  open(deviceId) {
    this.fillDevices(deviceId);
    this.fillStarts();
    this.fillDurations();
    this.seen.clear();
    this.error.hidden = true;
    this.warning.hidden = true;
    this.progress.hidden = true;
    this.submitButton.disabled = false;
    this.describe();
    this.check();
    if (!this.dialog.open) this.dialog.showModal();
    this.start.focus();
  }

  close() {
    if (this.dialog.open) this.dialog.close();
  }

  /** Re-label the options after a language switch. */
  relabel() {
    if (!this.isOpen) return;
    const keep = [this.device.value, this.start.value, this.length.value];
    this.fillDevices(keep[0]);
    this.fillStarts();
    this.fillDurations();
    [this.device.value, this.start.value, this.length.value] = keep;
    this.describe();
    this.check();
  }

  fillDevices(selected) {
    this.device.replaceChildren(
      ...this.board.list().map((e) => new Option(e.name, e.device_id, false, e.device_id === selected)),
    );
  }

  fillStarts() {
    const now = Date.now() / 1000;
    const first = Math.ceil(now / STEP) * STEP;
    const options = [new Option(t("book.start_now"), "now")];
    const today = new Date().toDateString();
    for (let i = 0; i < 24; i += 1) {
      const at = first + i * STEP;
      const label = new Date(at * 1000).toDateString() === today ? clock(at) : `${day(at)} ${clock(at)}`;
      options.push(new Option(label, String(at)));
    }
    this.start.replaceChildren(...options);
  }

  fillDurations() {
    this.length.replaceChildren(
      ...DURATIONS.map((m) => {
        const label = m % 60 ? t("book.minutes", { minutes: m }) : t("book.hours", { hours: m / 60 });
        return new Option(label, String(m), false, m === 60);
      }),
    );
  }

  slot() {
    const starts = this.start.value === "now" ? Date.now() / 1000 : Number(this.start.value);
    return { starts_at: starts, ends_at: starts + Number(this.length.value) * 60 };
  }

  describe() {
    const entry = this.board.get(this.device.value);
    if (!entry) {
      this.state.textContent = "";
      return;
    }
    const parts = [t("book.status_now", { status: t(`status.${entry.status}`) })];
    const next = entry.next_slot;
    parts.push(next ? t("book.next_slot", { range: range(next.starts_at, next.ends_at) }) : t("book.no_next"));
    this.state.textContent = parts.join(" · ");
  }

  /** A reservation event while the form is open (anyone's; events carry no identity). */
  onEvent(ev) {
    if (!this.isOpen || ev.device_id !== this.device.value) return;
    const data = ev.data || {};
    if (["reservation_created", "reservation_approved", "reservation_checked_in"].includes(ev.type)) {
      this.seen.set(ev.reservation_id, { starts_at: data.starts_at, ends_at: data.ends_at });
    } else {
      this.seen.delete(ev.reservation_id);
    }
    this.check();
  }

  /** Show the live warning when someone else holds an overlapping slot. */
  check() {
    if (!this.isOpen || this.inFlight) return;
    const wanted = this.slot();
    const foreign = (id) => id && !this.mine.has(id);
    let message = null;
    let kind = null;
    for (const [id, slot] of this.seen) {
      if (foreign(id) && slot.starts_at && overlaps(wanted, slot)) {
        message = t("book.warning", { range: range(slot.starts_at, slot.ends_at) });
        kind = "event";
      }
    }
    const entry = this.board.get(this.device.value);
    for (const slot of [entry?.current_slot, entry?.next_slot]) {
      if (!message && slot && foreign(slot.reservation_id) && overlaps(wanted, slot)) {
        message = t("book.warning_board", { range: range(slot.starts_at, slot.ends_at) });
        kind = "board";
      }
    }
    this.warning.hidden = !message;
    this.warning.textContent = message || "";
    if (kind) this.warning.dataset.kind = kind;
  }

  async submit() {
    if (this.inFlight) return;
    const device = this.device.value;
    const slot = this.slot();
    const id = requestId(this.realtime.slot || "web");
    const temp = `tmp-${id}`;
    this.inFlight = true;
    this.error.hidden = true;
    this.warning.hidden = true;
    this.progress.hidden = false;
    this.progress.textContent = this.realtime.live ? t("book.sending") : t("book.fallback");
    this.submitButton.disabled = true;
    this.mine.addOptimistic(temp, { device_id: device, ...slot });
    let reply;
    try {
      reply = await this.command(device, { request_id: id, op: "reserve", ...slot });
    } catch (err) {
      reply = { ok: false, error: { code: err.code || "network" } };
    }
    this.inFlight = false;
    this.progress.hidden = true;
    this.submitButton.disabled = false;
    if (reply.ok) {
      this.mine.settle(temp, reply.reservation);
      this.close();
      const name = this.board.get(device)?.name || device;
      this.notify(t("book.requested", { name, range: range(slot.starts_at, slot.ends_at) }));
      return;
    }
    this.mine.settle(temp, null); // roll back
    this.showError(reply.error || { code: "generic" });
    this.check();
  }

  /** A reservation command: over MQTT while live, else over REST (same rules, same ids). */
  async command(device, body) {
    if (this.realtime.live) return this.realtime.request(device, body);
    try {
      let r;
      if (body.op === "reserve") {
        r = await this.rest.post(
          "/reservations",
          {
            device_id: device,
            starts_at: new Date(body.starts_at * 1000).toISOString(),
            ends_at: new Date(body.ends_at * 1000).toISOString(),
          },
          { "Idempotency-Key": body.request_id },
        );
      } else {
        const path = `/reservations/${encodeURIComponent(body.reservation_id)}/${body.op}`;
        r = await this.rest.post(path, undefined, { "Idempotency-Key": body.request_id });
      }
      return { ok: true, reservation: r };
    } catch (err) {
      return { ok: false, error: { code: err.code, conflict: err.body?.conflict } };
    }
  }

  showError(error) {
    const c = error.conflict;
    let text;
    if (error.code === "conflict" && c) {
      text = t("error.conflict", { range: range(c.starts_at, c.ends_at), status: t(`res.${c.status}`) });
      this.error.dataset.conflict = c.reservation_id;
    } else if (error.code === "conflict") {
      text = t("error.conflict_plain");
    } else {
      const key = `error.${error.code}`;
      text = has(key) ? t(key) : t("error.generic", { code: error.code });
      delete this.error.dataset.conflict;
    }
    this.error.dataset.code = error.code;
    this.error.textContent = text;
    this.error.hidden = false;
  }
}
