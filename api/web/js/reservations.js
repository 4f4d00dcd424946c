// "My reservations": the player's active bookings with their check-in code, a cancel button
// and one that extends the booking by 30 minutes (a party's seats also cancel the party). Optimistic entries (a booking sent, no reply yet) show as pending at once and are
// replaced by the bridge's reply, or rolled back when it refuses; one whose answer got lost
// stays, marked unconfirmed, until the same request settles it. The list is kept live by
// replies and events and reloaded over REST on (re)connect and while polling: a reload merges
// and leaves alone every entry that changed here after it was asked (freshness.js).

import { LocalChanges } from "./freshness.js";
import { range, t } from "./i18n.js";

const ACTIVE = new Set(["pending", "approved", "checked_in"]);

function seconds(value) {
  return typeof value === "number" ? value : Date.parse(value) / 1000;
}

/** A reservation from REST (ISO times) or the wire (Unix seconds), in one shape. */
export function normalise(r) {
  return {
    id: r.id,
    device_id: r.device_id,
    starts_at: seconds(r.starts_at),
    ends_at: seconds(r.ends_at),
    status: r.status,
    code: r.code ?? null,
    user: r.user ?? null,
    party_id: r.party_id ?? null,
  };
}

/** The same machine and slot (within a second: "now" is the sender's clock). */
export function sameSlot(a, b) {
  return (
    a.device_id === b.device_id &&
    Math.abs(a.starts_at - b.starts_at) < 1 &&
    Math.abs(a.ends_at - b.ends_at) < 1
  );
}

export class MyReservations extends EventTarget {
  constructor(list, { nameOf, onCancel, onExtend = () => {}, onCancelParty = () => {} }) {
    super();
    this.list = list;
    this.nameOf = nameOf;
    this.onCancel = onCancel;
    this.onExtend = onExtend;
    this.onCancelParty = onCancelParty;
    this.items = new Map();
    this.changes = new LocalChanges();
    list.addEventListener("click", (e) => {
      const cancel = e.target.closest("button[data-cancel]");
      if (cancel) this.onCancel(cancel.dataset.cancel);
      const extend = e.target.closest("button[data-extend]");
      if (extend) this.onExtend(extend.dataset.extend);
      const party = e.target.closest("button[data-cancel-party]");
      if (party) this.onCancelParty(party.dataset.cancelParty);
    });
  }

  /** Reload from REST and merge: an entry changed here after the request was sent (a reply
   * or an event that overtook the answer) keeps its newer state; an answer overtaken by a
   * later reload is dropped. */
  async load(rest) {
    const query = "status=pending&status=approved&status=checked_in&limit=100";
    const ticket = this.changes.begin();
    let page;
    try {
      page = await rest.get(`/reservations?${query}`);
    } catch (err) {
      this.changes.finish(ticket, false);
      throw err;
    }
    if (!this.changes.current(ticket)) {
      this.changes.finish(ticket, false);
      return;
    }
    const fresh = new Map(page.items.map((r) => [r.id, normalise(r)]));
    for (const [id, r] of [...this.items]) {
      if (r.optimistic) {
        // the real one is in the answer: the reply (or the settling) only has to confirm it
        if ([...fresh.values()].some((f) => sameSlot(f, r))) this.items.delete(id);
      } else if (!fresh.has(id) && !this.changes.newer(id, ticket)) {
        this.items.delete(id);
      }
    }
    for (const [id, r] of fresh) {
      if (this.changes.newer(id, ticket)) continue;
      const old = this.items.get(id);
      this.items.set(id, { ...r, code: r.code ?? old?.code ?? null, busy: old?.busy ?? false });
    }
    this.changes.finish(ticket, true);
    this.changed();
  }

  /** A real (not optimistic) entry for this machine and slot, if we hold one. */
  find(slot) {
    return [...this.items.values()].find((r) => !r.optimistic && sameSlot(r, slot)) ?? null;
  }

  ids() {
    return [...this.items.keys()];
  }

  has(id) {
    return this.items.has(id);
  }

  /** A reservation of ours from a reply or notification: keep it while active. */
  upsert(r) {
    const res = normalise(r);
    const old = this.items.get(res.id);
    this.changes.touch(res.id);
    if (ACTIVE.has(res.status)) {
      this.items.set(res.id, { ...old, ...res, code: res.code ?? old?.code ?? null, busy: false });
    } else {
      this.items.delete(res.id);
    }
    this.changed();
  }

  /** An event on plaza/events/reservations: status changes of ours (made by anyone). */
  applyEvent(ev) {
    const old = this.items.get(ev.reservation_id);
    if (!old) return;
    const status = ev.data?.status || ev.type.replace("reservation_", "");
    this.changes.touch(old.id);
    if (ACTIVE.has(status)) this.items.set(old.id, { ...old, status });
    else this.items.delete(old.id);
    this.changed();
  }

  addOptimistic(tempId, slot) {
    this.items.set(tempId, { ...slot, id: tempId, status: "pending", optimistic: true });
    this.changed();
  }

  /** No answer: the booking may or may not have been made. Keep it, marked unconfirmed. */
  markUnconfirmed(tempId) {
    const r = this.items.get(tempId);
    if (!r) return;
    r.unconfirmed = true;
    this.changed();
  }

  settle(tempId, reservation) {
    this.items.delete(tempId);
    if (reservation) this.upsert(reservation);
    else this.changed();
  }

  setBusy(id, busy) {
    const r = this.items.get(id);
    if (!r) return;
    r.busy = busy;
    this.changed();
  }

  changed() {
    this.render();
    this.dispatchEvent(new Event("change"));
  }

  render() {
    const items = [...this.items.values()].sort((a, b) => a.starts_at - b.starts_at);
    this.list.replaceChildren();
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = t("mine.empty");
      this.list.append(li);
      return;
    }
    for (const r of items) {
      const li = document.createElement("li");
      li.className = "res";
      li.dataset.reservation = r.id;
      li.dataset.status = r.status;
      li.dataset.device = r.device_id;
      if (r.optimistic) li.dataset.optimistic = "true";
      if (r.unconfirmed) li.dataset.unconfirmed = "true";
      const name = this.nameOf(r.device_id);
      const when = range(r.starts_at, r.ends_at);
      const main = document.createElement("div");
      main.className = "res-main";
      const strong = document.createElement("strong");
      strong.textContent = name;
      const time = document.createElement("span");
      time.textContent = when;
      main.append(strong, " ", time);
      const meta = document.createElement("div");
      meta.className = "res-meta";
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.dataset.status = r.status;
      badge.textContent = t(`res.${r.status}`);
      meta.append(badge);
      if (r.optimistic || r.busy) {
        const sending = document.createElement("span");
        sending.className = r.unconfirmed ? "sending unconfirmed" : "sending";
        sending.textContent = r.unconfirmed ? t("mine.unconfirmed") : t("mine.sending");
        meta.append(" ", sending);
      }
      if (r.code) {
        const code = document.createElement("span");
        code.className = "code";
        code.textContent = t("mine.code", { code: r.code });
        meta.append(" ", code);
      }
      if (r.party_id) {
        li.dataset.party = r.party_id;
        const party = document.createElement("span");
        party.className = "badge party";
        party.textContent = t("mine.party");
        meta.append(" ", party);
      }
      li.append(main, meta);
      const actions = document.createElement("div");
      actions.className = "res-actions";
      const action = (data, value, label, aria) => {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "secondary";
        button.dataset[data] = value;
        button.disabled = Boolean(r.busy);
        button.textContent = label;
        button.setAttribute("aria-label", aria);
        actions.append(button);
      };
      if (!r.optimistic && ACTIVE.has(r.status)) {
        action("extend", r.id, t("mine.extend"), t("mine.extend_label", { name, range: when }));
      }
      if (!r.optimistic && (r.status === "pending" || r.status === "approved")) {
        action("cancel", r.id, t("mine.cancel"), t("mine.cancel_label", { name, range: when }));
        if (r.party_id) {
          action("cancelParty", r.party_id, t("mine.cancel_party"), t("mine.cancel_party_label", { range: when }));
        }
      }
      if (actions.childElementCount) li.append(actions);
      this.list.append(li);
    }
  }
}
