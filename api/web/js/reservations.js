// "My reservations": the player's active bookings with their check-in code and a cancel
// button. Optimistic entries (a booking sent, no reply yet) show as pending at once and are
// replaced by the bridge's reply, or rolled back when it refuses.

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
  };
}

export class MyReservations extends EventTarget {
  constructor(list, { nameOf, onCancel }) {
    super();
    this.list = list;
    this.nameOf = nameOf;
    this.onCancel = onCancel;
    this.items = new Map();
    list.addEventListener("click", (e) => {
      const button = e.target.closest("button[data-cancel]");
      if (button) this.onCancel(button.dataset.cancel);
    });
  }

  async load(rest) {
    const query = "status=pending&status=approved&status=checked_in&limit=100";
    const page = await rest.get(`/reservations?${query}`);
    const optimistic = [...this.items.values()].filter((r) => r.optimistic);
    this.items = new Map(page.items.map((r) => [r.id, normalise(r)]));
    for (const r of optimistic) this.items.set(r.id, r);
    this.changed();
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
    if (ACTIVE.has(status)) this.items.set(old.id, { ...old, status });
    else this.items.delete(old.id);
    this.changed();
  }

  addOptimistic(tempId, slot) {
    this.items.set(tempId, { ...slot, id: tempId, status: "pending", optimistic: true });
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
        sending.className = "sending";
        sending.textContent = t("mine.sending");
        meta.append(" ", sending);
      }
      if (r.code) {
        const code = document.createElement("span");
        code.className = "code";
        code.textContent = t("mine.code", { code: r.code });
        meta.append(" ", code);
      }
      li.append(main, meta);
      if (!r.optimistic && (r.status === "pending" || r.status === "approved")) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "secondary";
        button.dataset.cancel = r.id;
        button.disabled = Boolean(r.busy);
        button.textContent = t("mine.cancel");
        button.setAttribute("aria-label", t("mine.cancel_label", { name, range: when }));
        li.append(button);
      }
      this.list.append(li);
    }
  }
}
