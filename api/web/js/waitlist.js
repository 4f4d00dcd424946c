// The waitlist (players): join the line for a kind of machine, see your place and expected
// turn move live (the retained plaza/users/{me}/waitlist, republished by the bridge whenever
// the line changes; GET /waitlist while polling), and when a machine is held for you take it
// before its countdown runs out, or let it go. Commands go over the venue's request topic
// (plaza/venue/requests/{me}) while live, else over REST (booking.js `command`).

import { errorText } from "./errors.js";
import { clock, duration, t, tOr } from "./i18n.js";

const MINUTES = [30, 60, 90, 120];

function seconds(value) {
  if (value === null || value === undefined) return null;
  return typeof value === "number" ? value : Date.parse(value) / 1000;
}

/** An entry from the retained state (Unix seconds) or REST (ISO times), in one shape. */
export function normaliseEntry(e) {
  const offer = e.offer
    ? {
        offer_id: e.offer.offer_id,
        device_id: e.offer.device_id,
        starts_at: seconds(e.offer.starts_at),
        ends_at: seconds(e.offer.ends_at),
        hold_until: seconds(e.offer.hold_until),
      }
    : null;
  return {
    id: e.id,
    kind: e.kind,
    zone: e.zone ?? null,
    minutes: e.minutes,
    status: e.status,
    position: e.position ?? null,
    expected_at: seconds(e.expected_at),
    offer,
  };
}

export class Waitlist extends EventTarget {
  constructor(root, { board, command, nameOf, notify, fail, onTaken }) {
    super();
    this.root = root;
    this.board = board;
    this.command = command;
    this.nameOf = nameOf;
    this.notify = notify;
    this.fail = fail;
    this.onTaken = onTaken;
    this.entries = [];
    this.busy = new Set();
    this.form = root.querySelector("#wait-form");
    this.kind = root.querySelector("#wait-kind");
    this.minutes = root.querySelector("#wait-minutes");
    this.list = root.querySelector("#wait-list");
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.join();
    });
    this.list.addEventListener("click", (e) => {
      const button = e.target.closest("button[data-wait]");
      if (!button) return;
      const entry = this.entries.find((x) => x.id === button.dataset.entry);
      if (entry) this.act(button.dataset.wait, entry);
    });
    board.addEventListener("change", (e) => {
      if (e.detail.structural) this.fillKinds();
    });
  }

  /** The retained state (null: cleared) or the REST list. */
  apply(entries) {
    this.entries = (entries || []).map(normaliseEntry);
    this.render();
    this.dispatchEvent(new Event("change"));
  }

  async load(rest) {
    this.apply(await rest.get("/waitlist"));
  }

  /** The offer held for this player, if any (the toast's countdown follows it). */
  offers() {
    return this.entries.filter((e) => e.offer).map((e) => e.offer);
  }

  async join() {
    const body = { op: "join_waitlist", kind: this.kind.value, minutes: Number(this.minutes.value) };
    const button = this.form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const reply = await this.command(null, body, `join:${body.kind}:${body.minutes}:${Date.now()}`);
      if (!reply.ok) return this.fail(errorText(reply.error));
      if (reply.entry) this.upsert(normaliseEntry(reply.entry));
      this.notify(t("wait.joined", { kind: kindName(body.kind), position: reply.entry?.position ?? "?" }));
    } finally {
      button.disabled = false;
    }
  }

  /** Take the held machine (a reserve with offer_id on its own topic). */
  async take(offer) {
    if (this.busy.has(offer.offer_id)) return false;
    this.busy.add(offer.offer_id);
    this.render();
    try {
      const reply = await this.command(offer.device_id, { op: "reserve", offer_id: offer.offer_id }, `take:${offer.offer_id}`);
      if (!reply.ok) {
        this.fail(errorText(reply.error));
        return false;
      }
      this.entries = this.entries.filter((e) => e.offer?.offer_id !== offer.offer_id);
      this.render();
      this.onTaken(reply.reservation);
      this.notify(t("wait.taken", { name: this.nameOf(offer.device_id) }));
      return true;
    } finally {
      this.busy.delete(offer.offer_id);
      this.render();
    }
  }

  async act(action, entry) {
    if (action === "take" && entry.offer) return this.take(entry.offer);
    const body =
      action === "decline"
        ? { op: "decline_offer", offer_id: entry.offer?.offer_id }
        : { op: "leave_waitlist", entry_id: entry.id };
    this.busy.add(entry.id);
    this.render();
    try {
      const reply = await this.command(null, body, `${action}:${entry.id}`);
      if (!reply.ok) return this.fail(errorText(reply.error));
      this.entries = this.entries.filter((e) => e.id !== entry.id);
      this.notify(t(action === "decline" ? "wait.declined" : "wait.left"));
    } finally {
      this.busy.delete(entry.id);
      this.render();
    }
  }

  upsert(entry) {
    const others = this.entries.filter((e) => e.id !== entry.id);
    this.entries = ["waiting", "offered"].includes(entry.status) ? [...others, entry] : others;
    this.render();
  }

  fillKinds() {
    const kinds = [...new Set(this.board.list().map((e) => e.kind))];
    const keep = this.kind.value;
    this.kind.replaceChildren(...kinds.map((k) => new Option(kindName(k), k, false, k === keep)));
    if (!this.minutes.options.length) this.fillMinutes();
  }

  fillMinutes() {
    const keep = this.minutes.value || "60";
    this.minutes.replaceChildren(
      ...MINUTES.map((m) => new Option(t("book.minutes", { minutes: m }), String(m), false, String(m) === keep)),
    );
  }

  relabel() {
    this.fillKinds();
    this.fillMinutes();
    this.render();
  }

  /** Every second: the holds' countdowns. */
  tick() {
    const now = Date.now() / 1000;
    for (const el of this.list.querySelectorAll("[data-hold-until]")) {
      const left = Number(el.dataset.holdUntil) - now;
      el.textContent = left > 0 ? t("wait.countdown", { time: duration(left) }) : t("wait.lapsing");
    }
  }

  render() {
    this.list.replaceChildren();
    if (!this.entries.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = t("wait.empty");
      this.list.append(li);
      return;
    }
    for (const e of [...this.entries].sort((a, b) => a.kind.localeCompare(b.kind))) {
      const li = document.createElement("li");
      li.className = "entry";
      li.dataset.entry = e.id;
      li.dataset.status = e.status;
      li.dataset.kind = e.kind;
      if (e.position !== null) li.dataset.position = String(e.position);
      const head = document.createElement("div");
      const strong = document.createElement("strong");
      strong.textContent = kindName(e.kind);
      const place = document.createElement("span");
      place.className = "position";
      place.textContent = e.position !== null ? t("wait.position", { position: e.position }) : "";
      head.append(strong, " ", place);
      li.append(head);
      const meta = document.createElement("div");
      meta.className = "res-meta";
      if (e.offer) {
        const held = document.createElement("span");
        held.className = "held";
        held.textContent = t("wait.held", { name: this.nameOf(e.offer.device_id), until: clock(e.offer.hold_until) });
        const left = document.createElement("span");
        left.className = "countdown";
        left.dataset.holdUntil = String(e.offer.hold_until);
        meta.append(held, " ", left);
      } else {
        const wait = document.createElement("span");
        wait.textContent = e.expected_at
          ? t("wait.expected", { time: clock(e.expected_at), minutes: e.minutes })
          : t("wait.waiting", { minutes: e.minutes });
        meta.append(wait);
      }
      li.append(meta);
      const actions = document.createElement("div");
      actions.className = "res-actions";
      const busy = this.busy.has(e.id) || (e.offer && this.busy.has(e.offer.offer_id));
      const add = (action, label, aria) => {
        const b = document.createElement("button");
        b.type = "button";
        b.className = action === "take" ? "" : "secondary";
        b.dataset.wait = action;
        b.dataset.entry = e.id;
        b.disabled = Boolean(busy);
        b.textContent = label;
        b.setAttribute("aria-label", aria);
        actions.append(b);
      };
      if (e.offer) {
        add("take", t("wait.take"), t("wait.take_label", { name: this.nameOf(e.offer.device_id) }));
        add("decline", t("wait.decline"), t("wait.decline_label", { name: this.nameOf(e.offer.device_id) }));
      }
      add("leave", t("wait.leave"), t("wait.leave_label", { kind: kindName(e.kind) }));
      li.append(actions);
      this.list.append(li);
    }
    this.tick();
  }
}

export function kindName(kind) {
  return tOr(`kind.${kind}`, kind);
}
