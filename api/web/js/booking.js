// The booking form. Sending shows the reservation at once as pending (optimistic) in "My
// reservations"; the bridge's reply replaces it, or a refusal rolls it back and the form
// names the conflicting slot. While the form is open it watches plaza/events/reservations
// and the machine's board entry and warns, live, when someone else takes an overlapping slot.
// Without the live link the booking goes over REST (POST /reservations), same rules.
//
// Each opening of the form is a ticket; a booking remembers the ticket it was sent from, and
// its outcome goes to that form only while it is still open, else to a toast. An outcome that
// is not known (no reply, a lost answer) keeps the entry as unconfirmed and settles it later:
// GET /reservations, else the same request again (same request_id: applied once).

import { conflictOf, errorText, outcomeUnknown } from "./errors.js";
import { clock, day, range, t } from "./i18n.js";
import { normalise, sameSlot } from "./reservations.js";

const DURATIONS = [30, 60, 90, 120, 180, 240];
const STEP = 30 * 60;
const SETTLE_MAX_MS = 30000;
const HOLDING_EVENTS = ["reservation_created", "reservation_approved", "reservation_checked_in"];

let counter = 0;
export function requestId(prefix) {
  counter += 1;
  return `${prefix}-${Date.now().toString(36)}-${counter}-${Math.random().toString(36).slice(2, 8)}`;
}

/** The start options of a booking form: now, or the next 24 half-hours. */
export function startOptions() {
  const now = Date.now() / 1000;
  const first = Math.ceil(now / STEP) * STEP;
  const options = [new Option(t("book.start_now"), "now")];
  const today = new Date().toDateString();
  for (let i = 0; i < 24; i += 1) {
    const at = first + i * STEP;
    const label = new Date(at * 1000).toDateString() === today ? clock(at) : `${day(at)} ${clock(at)}`;
    options.push(new Option(label, String(at)));
  }
  return options;
}

/** The length options of a booking form (30 min to 4 h; 1 h chosen). */
export function durationOptions() {
  return DURATIONS.map((m) => {
    const label = m % 60 ? t("book.minutes", { minutes: m }) : t("book.hours", { hours: m / 60 });
    return new Option(label, String(m), false, m === 60);
  });
}

/** The slot a start and a length select say, in Unix seconds. */
export function slotOf(start, length) {
  const starts = start.value === "now" ? Date.now() / 1000 : Number(start.value);
  return { starts_at: starts, ends_at: starts + Number(length.value) * 60 };
}

function overlaps(a, b) {
  return a.starts_at < b.ends_at && b.starts_at < a.ends_at;
}

function iso(unix) {
  return new Date(unix * 1000).toISOString();
}

export class Booking {
  constructor(dialog, { board, realtime, rest, mine, notify, fail }) {
    this.dialog = dialog;
    this.board = board;
    this.realtime = realtime;
    this.rest = rest;
    this.mine = mine;
    this.notify = notify;
    this.fail = fail;
    this.form = dialog.querySelector("form");
    this.device = dialog.querySelector("#book-device");
    this.start = dialog.querySelector("#book-start");
    this.length = dialog.querySelector("#book-duration");
    this.state = dialog.querySelector("#book-state");
    this.warning = dialog.querySelector("#book-warning");
    this.error = dialog.querySelector("#book-error");
    this.progress = dialog.querySelector("#book-progress");
    this.submitButton = dialog.querySelector("#book-submit");
    this.ticket = null; // this opening of the form (null: closed)
    this.seen = new Map(); // reservation_id -> {device, starts_at, ends_at}, from events while open
    this.jobs = new Map(); // request_id -> a booking sent and not settled yet
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    dialog.querySelector("#book-close").addEventListener("click", () => this.close());
    dialog.addEventListener("close", () => {
      if (!dialog.open) this.ticket = null; // Esc closes a <dialog> too
    });
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
    this.ticket = { sending: false };
    this.fillDevices(deviceId);
    this.fillStarts();
    this.fillDurations();
    this.seen.clear();
    this.error.hidden = true;
    this.warning.hidden = true;
    this.progress.hidden = true;
    this.submitButton.disabled = false;
    if (!this.dialog.open) this.dialog.showModal();
    this.describe();
    this.check();
    this.start.focus();
  }

  close() {
    this.ticket = null;
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
    this.start.replaceChildren(...startOptions());
  }

  fillDurations() {
    this.length.replaceChildren(...durationOptions());
  }

  slot() {
    return slotOf(this.start, this.length);
  }

  describe() {
    const entry = this.board.get(this.device.value);
    if (!entry) {
      this.state.textContent = "";
      return;
    }
    const parts = [t("book.status_now", { status: t(`status.${entry.status}`) })];
    const next = entry.next_slot;
    if (entry.polled) parts.push(t("board.stale"));
    else parts.push(next ? t("book.next_slot", { range: range(next.starts_at, next.ends_at) }) : t("book.no_next"));
    this.state.textContent = parts.join(" · ");
  }

  /** A reservation event while the form is open (anyone's; events carry no identity). Kept
   * per machine, so switching machines in the form never warns about another one's slot. */
  onEvent(ev) {
    if (!this.isOpen) return;
    const data = ev.data || {};
    if (HOLDING_EVENTS.includes(ev.type)) {
      this.seen.set(ev.reservation_id, { device: ev.device_id, starts_at: data.starts_at, ends_at: data.ends_at });
    } else {
      this.seen.delete(ev.reservation_id);
    }
    if (ev.device_id === this.device.value) this.check();
  }

  /** A reply on our tree that nobody waits for any more: it may settle an unconfirmed one. */
  onReply(reply) {
    const job = this.jobs.get(reply?.request_id);
    if (job?.unconfirmed) this.finish(job, reply);
  }

  /** One of our own bookings still on its way (its events come before its reply). */
  ownInFlight(device, slot) {
    for (const job of this.jobs.values()) {
      if (sameSlot({ device_id: device, ...slot }, { device_id: job.device, ...job.slot })) return true;
    }
    return false;
  }

  /** Show the live warning when someone else holds an overlapping slot on this machine. */
  check() {
    if (!this.isOpen || this.ticket?.sending) return;
    const device = this.device.value;
    const wanted = this.slot();
    const foreign = (id, slot) => id && !this.mine.has(id) && !this.ownInFlight(device, slot);
    let message = null;
    let kind = null;
    for (const [id, slot] of this.seen) {
      if (slot.device === device && slot.starts_at && foreign(id, slot) && overlaps(wanted, slot)) {
        message = t("book.warning", { range: range(slot.starts_at, slot.ends_at) });
        kind = "event";
      }
    }
    const entry = this.board.get(device);
    for (const slot of [entry?.current_slot, entry?.next_slot]) {
      if (!message && slot && foreign(slot.reservation_id, slot) && overlaps(wanted, slot)) {
        message = t("book.warning_board", { range: range(slot.starts_at, slot.ends_at) });
        kind = "board";
      }
    }
    this.warning.hidden = !message;
    this.warning.textContent = message || "";
    if (kind) this.warning.dataset.kind = kind;
  }

  async submit() {
    const ticket = this.ticket;
    if (!ticket || ticket.sending) return;
    const device = this.device.value;
    const slot = this.slot();
    const id = requestId(this.realtime.slot || "web");
    const job = {
      id,
      device,
      slot,
      ticket,
      temp: `tmp-${id}`,
      body: { request_id: id, op: "reserve", ...slot },
      unconfirmed: false,
      tries: 0,
      timer: null,
    };
    ticket.sending = true;
    this.error.hidden = true;
    this.warning.hidden = true;
    this.progress.hidden = false;
    this.progress.textContent = this.realtime.live ? t("book.sending") : t("book.fallback");
    this.submitButton.disabled = true;
    this.jobs.set(id, job);
    this.mine.addOptimistic(job.temp, { device_id: device, ...slot });
    const reply = await this.command(device, job.body);
    ticket.sending = false;
    if (this.ticket === ticket) {
      this.progress.hidden = true;
      this.submitButton.disabled = false;
    }
    this.finish(job, reply);
  }

  /** Where a booking's outcome goes: its own form while that is open, else a toast. */
  finish(job, reply) {
    if (this.jobs.get(job.id) !== job) return; // settled already
    const here = this.ticket === job.ticket && this.isOpen;
    const name = this.board.get(job.device)?.name || job.device;
    const when = range(job.slot.starts_at, job.slot.ends_at);
    if (reply.ok) {
      this.forget(job);
      this.mine.settle(job.temp, reply.reservation);
      if (here) this.close();
      this.notify(t("book.requested", { name, range: when }));
      return;
    }
    if (outcomeUnknown(reply.error)) {
      if (!job.unconfirmed) {
        job.unconfirmed = true;
        this.mine.markUnconfirmed(job.temp);
        if (here) this.close();
        this.notify(t("book.unconfirmed"));
      }
      job.tries += 1;
      this.settleLater(job, Math.min(SETTLE_MAX_MS, 1000 * 2 ** job.tries));
      return;
    }
    this.forget(job);
    this.mine.settle(job.temp, null); // roll back
    if (here) {
      this.showError(reply.error || { code: "generic" });
      this.check();
    } else {
      this.fail(t("book.refused", { name, range: when, reason: errorText(reply.error) }));
    }
  }

  forget(job) {
    clearTimeout(job.timer);
    this.jobs.delete(job.id);
  }

  settleLater(job, delay) {
    clearTimeout(job.timer);
    job.timer = setTimeout(() => this.settle(job), delay);
  }

  /** Settle every unconfirmed booking now (the live link is back). */
  settleAll() {
    for (const job of this.jobs.values()) if (job.unconfirmed) this.settleLater(job, 0);
  }

  /** An unconfirmed booking: is it there (GET /reservations)? Else send the same request
   * again: the bridge applies a request_id once and answers a repeat the same way. */
  async settle(job) {
    if (job.settling || this.jobs.get(job.id) !== job) return;
    job.settling = true;
    try {
      const found = await this.lookUp(job);
      const reply = found ? { ok: true, reservation: found } : await this.command(job.device, job.body);
      this.finish(job, reply);
    } finally {
      job.settling = false;
    }
  }

  async lookUp(job) {
    const { starts_at, ends_at } = job.slot;
    const query = new URLSearchParams({ device_id: job.device, start: iso(starts_at), end: iso(ends_at) });
    for (const status of ["pending", "approved", "checked_in"]) query.append("status", status);
    try {
      const page = await this.rest.get(`/reservations?${query}`);
      const wanted = { device_id: job.device, ...job.slot };
      return page.items.map(normalise).find((r) => sameSlot(r, wanted)) ?? null;
    } catch {
      return null; // not known: the request itself will tell
    }
  }

  /** A reservation command: over MQTT while live, else over REST (same rules, same ids).
   * Resolves with a reply, `{ok: true, reservation}` or `{ok: false, error}`. */
  async command(device, body) {
    if (this.realtime.live) {
      try {
        return await this.realtime.request(device, body);
      } catch (err) {
        return { ok: false, error: { code: err.code || "network", status: err.status ?? 0 } };
      }
    }
    try {
      return await restCommand(this.rest, device, body);
    } catch (err) {
      const error = { code: err.code, status: err.status, conflict: conflictOf(err) };
      if (err.body?.seat) error.seat = err.body.seat;
      if (err.body?.until) error.until = Date.parse(err.body.until) / 1000;
      return { ok: false, error };
    }
  }

  showError(error) {
    const c = conflictOf(error);
    if (error.code === "conflict" && c) this.error.dataset.conflict = c.reservation_id;
    else delete this.error.dataset.conflict;
    this.error.dataset.code = error.code;
    this.error.textContent = errorText(error);
    this.error.hidden = false;
  }
}

const enc = encodeURIComponent;

/** A command over REST (the degraded mode), as the bridge would answer it over MQTT. The
 * request id is the Idempotency-Key: the same command is applied once. `device` null: a
 * venue-level command. */
async function restCommand(rest, device, body) {
  const headers = { "Idempotency-Key": body.request_id };
  const post = (path, payload) => rest.post(path, payload, headers);
  const held = (r) => ({ ok: true, reservation: r });
  const party = (p) => ({ ok: true, reservation: p.reservations[0], reservations: p.reservations, party_id: p.party_id });
  const entry = (e) => ({ ok: true, entry: e });
  switch (body.op) {
    case "reserve": {
      if (body.offer_id) return held(await post(`/waitlist/offers/${enc(body.offer_id)}/take`));
      const payload = { device_id: device, starts_at: iso(body.starts_at), ends_at: iso(body.ends_at) };
      if (body.replaces) payload.replaces = body.replaces; // a rebook offer: one decision
      return held(await post("/reservations", payload));
    }
    case "extend":
      return held(await post(`/reservations/${enc(body.reservation_id)}/extend`, { ends_at: iso(body.ends_at) }));
    case "reserve_party": {
      const payload = { starts_at: iso(body.starts_at), ends_at: iso(body.ends_at) };
      for (const k of ["seats", "kind", "zone", "devices"]) if (body[k] != null) payload[k] = body[k];
      return party(await post("/reservations/party", payload));
    }
    case "cancel_party":
      return party(await post(`/reservations/party/${enc(body.party_id)}/cancel`));
    case "join_waitlist": {
      const payload = { kind: body.kind, minutes: body.minutes };
      if (body.zone) payload.zone = body.zone;
      return entry(await post("/waitlist", payload));
    }
    case "leave_waitlist":
      return entry(await rest.del(`/waitlist/${enc(body.entry_id)}`, headers));
    case "decline_offer":
      return entry(await post(`/waitlist/offers/${enc(body.offer_id)}/decline`));
    default:
      return held(await post(`/reservations/${enc(body.reservation_id)}/${body.op}`));
  }
}
