// Notifications: toasts, a list with an unread count, and an aria-live announcement for each.
// They arrive on plaza/users/{me}/notifications (QoS 1 on a persistent session, so the broker
// replays what came while we were away; low priority ones bundled in a `digest`) and from
// GET /me/notifications?after=SEQ (the REST backlog, asked on every (re)connect). Each has a
// per-player `seq`; a seq we already hold is dropped (delivery is at-least-once). Texts come
// rendered in the player's language by the bridge. The last 50 are kept in localStorage.
// A waitlist offer's toast counts down to the end of its hold and takes the machine; a
// session_ending one offers to extend the booking (extend.js).

import { ExtendOffers } from "./extend.js";
import { dateTime, duration, t, tOr } from "./i18n.js";

const KEEP = 50;

function keyOf(n) {
  return n.seq !== undefined && n.seq !== null ? `seq:${n.seq}` : `id:${n.id}`;
}

export class Notifications extends EventTarget {
  constructor({ list, toasts, polite, assertive, badge, user, onOffer, onTake = async () => false, onExtend }) {
    super();
    this.list = list;
    this.toasts = toasts;
    this.polite = polite;
    this.assertive = assertive;
    this.badge = badge;
    this.onOffer = onOffer;
    this.onTake = onTake; // a waitlist offer: take the held machine
    this.key = `plaza.notifications.${user}`;
    this.backlog = true; // GET /me/notifications answers (false once it 404s)
    let saved = [];
    try {
      saved = JSON.parse(localStorage.getItem(this.key) || "[]");
    } catch {
      saved = [];
    }
    this.items = Array.isArray(saved) ? saved : [];
    this.keys = new Set(this.items.map(keyOf));
    this.offersTaken = new Set();
    list.addEventListener("click", (e) => this.clickOffer(e));
    toasts.addEventListener("click", (e) => this.clickOffer(e));
    toasts.addEventListener("click", (e) => this.clickTake(e));
    this.extends = new ExtendOffers({ onExtend }); // session_ending: extend the booking
    const find = (id) => this.items.find((item) => item.id === id);
    const used = () => {
      for (const b of this.toasts.querySelectorAll("button[data-extend-offer]")) b.remove();
      this.render();
    };
    this.extends.bind(list, find, used);
    this.extends.bind(toasts, find, used);
    this.render();
  }

  get unread() {
    return this.items.filter((n) => !n.read).length;
  }

  get lastSeq() {
    return this.items.reduce((max, n) => Math.max(max, n.seq ?? 0), 0);
  }

  /** Where the backlog should start: below the first gap in the seqs we hold (null: we hold
   * none). Low-priority notifications come later, in a digest, with seqs lower than ones
   * already seen; a page that missed that digest still gets them from here. */
  get heldThrough() {
    const seqs = [];
    for (const n of this.items) {
      if (n.seq != null) seqs.push(n.seq);
      for (const item of n.items || []) if (item.seq != null) seqs.push(item.seq);
    }
    if (!seqs.length) return null;
    const held = new Set(seqs);
    let through = Math.min(...seqs);
    while (held.has(through + 1)) through += 1;
    return through;
  }

  /** A notification from MQTT or the backlog; returns false when we hold it already. */
  add(n, { toast = true } = {}) {
    if (!n || (!n.id && n.seq === undefined)) return false;
    if (n.type === "digest" && Array.isArray(n.items)) {
      const fresh = n.items.filter((item) => this.store({ ...item, priority: "low" }));
      if (fresh.length && toast) this.toast({ ...n, id: `digest-${n.seq}` });
      this.commit();
      return fresh.length > 0;
    }
    const item = this.store(n);
    if (!item) return false;
    this.commit();
    if (toast && !item.read) this.toast(item);
    return true;
  }

  store(n) {
    const key = keyOf(n);
    if (this.keys.has(key)) return null;
    this.keys.add(key);
    const ts = n.ts ?? Date.parse(n.created_at) / 1000;
    const item = { ...n, id: n.id ?? key, ts, read: Boolean(n.read_at) };
    delete item.items;
    this.items.push(item);
    return item;
  }

  commit() {
    this.items.sort((a, b) => b.ts - a.ts || (b.seq ?? 0) - (a.seq ?? 0));
    this.items = this.items.slice(0, KEEP);
    this.keys = new Set(this.items.map(keyOf));
    this.save();
    this.render();
  }

  /** The REST backlog after our last seq; a missing endpoint (404) turns it off quietly. */
  async loadBacklog(rest, { toast }) {
    if (!this.backlog) return;
    try {
      let after = this.heldThrough; // null: the latest page only
      for (;;) {
        const query = after === null ? "limit=100" : `after=${after}&limit=100`;
        const page = await rest.get(`/me/notifications?${query}`);
        const items = page.items || [];
        for (const n of items) this.add(n, { toast });
        if (after === null || items.length < 100) break;
        after = items[items.length - 1].seq;
      }
    } catch (err) {
      if (err.status === 404 || err.status === 405) this.backlog = false;
    }
  }

  async markAllRead(rest) {
    if (!this.unread) return;
    for (const n of this.items) n.read = true;
    this.save();
    this.render();
    if (this.backlog && this.lastSeq) {
      try {
        await rest.post("/me/notifications/read", { up_to: this.lastSeq });
      } catch (err) {
        if (err.status === 404 || err.status === 405) this.backlog = false;
      }
    }
  }

  title(n) {
    return n.title || tOr(`notif.type.${n.type}`, n.type);
  }

  offerButton(n) {
    const offer = n.offer;
    if (!offer || this.offersTaken.has(offer.replaces)) return null;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary offer";
    button.dataset.offer = n.id;
    button.textContent = t("notif.offer", { name: offer.name });
    return button;
  }

  async clickOffer(e) {
    const button = e.target.closest("button[data-offer]");
    if (!button) return;
    const n = this.items.find((item) => item.id === button.dataset.offer);
    if (!n?.offer) return;
    button.disabled = true;
    if (await this.onOffer(n.offer)) {
      this.offersTaken.add(n.offer.replaces);
      this.render();
      for (const b of this.toasts.querySelectorAll(`button[data-offer="${CSS.escape(n.id)}"]`)) b.remove();
    } else {
      button.disabled = false;
    }
  }

  /** A waitlist offer's toast: a countdown to its hold's end, and a button that takes it. */
  takeButton(n, body) {
    const offer = n.waitlist_offer;
    if (!offer || this.offersTaken.has(offer.offer_id) || offer.hold_until <= Date.now() / 1000) return 0;
    const left = document.createElement("p");
    left.className = "countdown";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "take";
    button.dataset.take = offer.offer_id;
    button.textContent = t("wait.take");
    body.append(left, button);
    const tick = () => {
      const s = offer.hold_until - Date.now() / 1000;
      if (s > 0) {
        left.textContent = t("wait.countdown", { time: duration(s) });
        return true;
      }
      left.textContent = t("wait.lapsing");
      button.disabled = true;
      return false;
    };
    tick();
    const timer = setInterval(() => tick() || clearInterval(timer), 1000);
    return Math.max(0, offer.hold_until * 1000 - Date.now()) + 2000;
  }

  async clickTake(e) {
    const button = e.target.closest("button[data-take]");
    if (!button) return;
    const id = button.dataset.take;
    const n = this.items.find((item) => item.waitlist_offer?.offer_id === id);
    if (!n) return;
    button.disabled = true;
    if (await this.onTake(n.waitlist_offer)) this.offerTaken(id);
    else button.disabled = false;
  }

  /** A waitlist offer taken (here or in the waitlist card): its toasts go. */
  offerTaken(id) {
    this.offersTaken.add(id);
    for (const b of this.toasts.querySelectorAll(`button[data-take="${CSS.escape(id)}"]`)) {
      b.closest(".toast")?.remove();
    }
  }

  toast(n) {
    const title = this.title(n);
    const el = document.createElement("div");
    el.className = "toast";
    el.dataset.type = n.type;
    el.dataset.priority = n.priority || "medium";
    el.dataset.notification = n.id;
    const body = document.createElement("div");
    const strong = document.createElement("strong");
    strong.textContent = title;
    const p = document.createElement("p");
    p.textContent = n.message;
    body.append(strong, p);
    const offer = this.offerButton(n);
    if (offer) body.append(offer);
    const extend = this.extends.button(n);
    if (extend) body.append(extend);
    const holding = this.takeButton(n, body);
    const close = document.createElement("button");
    close.type = "button";
    close.className = "toast-close";
    close.textContent = "×";
    close.setAttribute("aria-label", t("notif.dismiss"));
    close.addEventListener("click", () => el.remove());
    el.append(body, close);
    this.toasts.append(el);
    while (this.toasts.children.length > 4) this.toasts.firstElementChild.remove();
    setTimeout(() => el.remove(), holding || (n.priority === "high" || offer ? 15000 : 8000));
    const region = n.priority === "high" ? this.assertive : this.polite;
    region.textContent = `${title}. ${n.message}`;
  }

  /** The session ends: remove the stored list (it holds check-in codes) and store no more. */
  forget() {
    this.closed = true;
    localStorage.removeItem(this.key);
  }

  save() {
    if (this.closed) return;
    try {
      localStorage.setItem(this.key, JSON.stringify(this.items));
    } catch {
      // storage full or disabled: the list still works for this page
    }
  }

  render() {
    const unread = this.unread;
    this.badge.textContent = unread ? String(unread) : "";
    this.badge.hidden = !unread;
    this.badge.dataset.count = String(unread);
    this.badge
      .closest("button")
      ?.setAttribute(
        "aria-label",
        `${t("nav.notifications")}${unread ? ", " + t("notif.unread", { count: unread }) : ""}`,
      );
    this.list.replaceChildren();
    if (!this.items.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = t("notif.empty");
      this.list.append(li);
      return;
    }
    for (const n of this.items) {
      const li = document.createElement("li");
      li.className = "notification";
      li.dataset.type = n.type;
      li.dataset.read = String(n.read);
      if (n.seq !== undefined) li.dataset.seq = String(n.seq);
      const head = document.createElement("div");
      const strong = document.createElement("strong");
      strong.textContent = this.title(n);
      const time = document.createElement("time");
      time.textContent = dateTime(n.ts);
      head.append(strong, " ", time);
      const p = document.createElement("p");
      p.textContent = n.message;
      li.append(head, p);
      const offer = this.offerButton(n);
      if (offer) li.append(offer);
      const extend = this.extends?.button(n);
      if (extend) li.append(extend);
      this.list.append(li);
    }
  }
}
