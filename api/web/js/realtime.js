// The live link: MQTT 5 over WebSocket with mqtt.js, reconnected by this module (not by
// mqtt.js) because every attempt needs fresh broker credentials from POST /auth/mqtt (the
// password is short-lived and re-keyed on each call).
//
// States: connecting -> live -> reconnecting -> (after `fallbackAfter` s down) degraded.
// Reconnects back off exponentially with full jitter (no stampede after a broker restart).
// The session is persistent (clean=false, a session expiry, a client id stable per user and
// tab), so QoS 1 messages sent while away are delivered on return; on every connect the
// subscriptions are made again, which brings the retained board.

import mqtt from "/vendor/mqtt/mqtt.esm.js";

import { ApiError } from "./rest.js";

const SESSION_EXPIRY = 900; // seconds the broker keeps our session while we are away
const LEASE_MS = 15000;
// Heard nothing for this long: resubscribe for the whole board (a keepalive ping answers
// every 30 s on a quiet board, so a live page always hears within it)
const RESYNC_AFTER_MS = 60000;

/** Topic strings of the web client (the Python side builds its own in plaza/topics.py). */
export class Topics {
  constructor(root, user) {
    this.root = root;
    this.user = user;
  }
  get board() {
    return `${this.root}/board/#`;
  }
  get notices() {
    return `${this.root}/notices`;
  }
  get events() {
    return `${this.root}/events/#`;
  }
  get alerts() {
    return `${this.root}/admin/alerts`;
  }
  get mine() {
    return `${this.root}/users/${this.user}/#`;
  }
  request(device) {
    return `${this.root}/devices/${device}/requests/${this.user}`;
  }
  /** Commands that name no one machine: parties, the waitlist. */
  get venue() {
    return `${this.root}/venue/requests/${this.user}`;
  }
  inbox(id) {
    return `${this.root}/users/${this.user}/replies/${id}`;
  }
}

const PAGE = Math.random().toString(16).slice(2);

/** A client id for `user` that stays the same across reloads of this tab (so the broker's
 * persistent session is found again) and differs between tabs open at the same time
 * (a duplicated tab inherits sessionStorage, so live tabs hold a lease in localStorage).
 * Returns the id and `release()`, which stops renewing the lease and gives it back. */
function claimClientSlot(user) {
  const key = `plaza.clients.${user}`;
  const now = Date.now();
  const leases = JSON.parse(localStorage.getItem(key) || "{}");
  const free = (id) => !leases[id] || leases[id].page === PAGE || now - leases[id].at > LEASE_MS;
  let id = sessionStorage.getItem(key);
  if (!id || !free(id)) {
    id = Object.keys(leases).find(free) || `w${Math.random().toString(16).slice(2, 10).padEnd(8, "0")}`;
  }
  const renew = () => {
    const all = JSON.parse(localStorage.getItem(key) || "{}");
    all[id] = { page: PAGE, at: Date.now() };
    localStorage.setItem(key, JSON.stringify(all));
  };
  renew();
  sessionStorage.setItem(key, id);
  const timer = setInterval(renew, LEASE_MS / 3);
  const release = () => {
    clearInterval(timer);
    removeEventListener("pagehide", release);
    const all = JSON.parse(localStorage.getItem(key) || "{}");
    if (all[id]?.page === PAGE) delete all[id];
    if (Object.keys(all).length) localStorage.setItem(key, JSON.stringify(all));
    else localStorage.removeItem(key);
  };
  addEventListener("pagehide", release);
  return { id, release };
}

function text(payload) {
  return new TextDecoder().decode(payload);
}

export class Realtime extends EventTarget {
  constructor(rest, options = {}) {
    super();
    this.rest = rest;
    this.fallbackAfter = options.fallbackAfter ?? 8;
    this.minDelay = options.minDelay ?? 0.5;
    this.maxDelay = options.maxDelay ?? 15;
    this.requestTimeout = options.requestTimeout ?? 3;
    this.requestTries = options.requestTries ?? 3;
    this.admin = Boolean(options.admin);
    this.state = "connecting";
    this.client = null; // the connection that came up
    this.connecting = null; // the connection being set up (or up): ended by stop()
    this.topics = null;
    this.stopped = true;
    this.pending = new Map();
    this.wake = null;
    this.slot = null;
    this.lease = null;
    this.onOnline = () => this.wake?.();
    // The page needs the whole retained board (and notice, waitlist) on its next subscribe:
    // at the start, after being degraded (REST polls replaced live values), and after hearing
    // nothing from the broker for RESYNC_AFTER_MS (a laptop asleep, a frozen tab: the broker
    // may have dropped what it queued past its bounds). Otherwise a reconnect to a session the
    // broker kept gets only what changed meanwhile (the queued QoS 1 messages), not every
    // retained message again: after a broker restart, 1,000 screens re-sent a 2,000-machine
    // board each is 2 million messages.
    this.resync = true;
    this.lastHeard = 0; // when the last packet came from the broker (ms)
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.resync = true;
    this.lease = claimClientSlot(this.rest.user.username);
    this.slot = this.lease.id;
    addEventListener("online", this.onOnline);
    this.loop();
  }

  /** Stop for good: end the connection, also one still being set up (its events are ignored
   * from now on), give the client-id lease back, and fail the requests still waiting. */
  stop() {
    if (this.stopped) return;
    this.stopped = true;
    removeEventListener("online", this.onOnline);
    this.wake?.();
    this.connecting?.end(true);
    this.client?.end(true);
    this.connecting = null;
    this.client = null;
    this.lease?.release();
    this.lease = null;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new ApiError(0, "stopped", "the live link was stopped"));
    }
    this.pending.clear();
  }

  get live() {
    return !this.stopped && this.state === "live";
  }

  setState(state, detail = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, ...detail } }));
  }

  async loop() {
    let attempt = 0;
    let downSince = Date.now();
    this.setState("connecting");
    while (!this.stopped) {
      const wasLive = await this.connectOnce();
      if (this.stopped) return;
      if (wasLive) {
        attempt = 0;
        downSince = Date.now();
      }
      attempt += 1;
      const cap = Math.min(this.maxDelay, this.minDelay * 2 ** attempt);
      const delay = cap / 2 + Math.random() * (cap / 2); // jitter, never a zero wait
      const down = (Date.now() - downSince) / 1000;
      const state = down >= this.fallbackAfter ? "degraded" : "reconnecting";
      if (state === "degraded") this.resync = true;
      this.setState(state, { retryIn: delay, attempt });
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, delay * 1000);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
        if (state === "reconnecting" && down + delay >= this.fallbackAfter) {
          // Go degraded on time even while this wait lasts.
          setTimeout(() => {
            if (!this.stopped && this.state === "reconnecting") {
              this.resync = true;
              this.setState("degraded", { retryIn: delay, attempt });
            }
          }, Math.max(0, this.fallbackAfter - down) * 1000);
        }
      });
      this.wake = null;
    }
  }

  /** One connection: fresh credentials, connect, subscribe, then wait until it closes.
   * Resolves true when the connection had come up. */
  async connectOnce() {
    let creds;
    try {
      // this tab's session: its own broker account, re-keyed on every reconnect
      creds = await this.rest.post("/auth/mqtt", { session: this.slot });
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) this.stop();
      return false;
    }
    if (this.stopped) return false;
    this.topics = new Topics(creds.topic_root, creds.user);
    const client = mqtt.connect(creds.ws_url, {
      protocolVersion: 5,
      clean: false,
      clientId: creds.client_id, // web-{user}-{session}: the same across reconnects
      username: creds.username,
      password: creds.password,
      reconnectPeriod: 0,
      connectTimeout: 5000,
      keepalive: 30,
      resubscribe: false,
      properties: { sessionExpiryInterval: SESSION_EXPIRY },
    });
    this.connecting = client;
    return new Promise((resolve) => {
      let live = false;
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        clearTimeout(guard);
        client.removeAllListeners();
        client.on("error", () => {});
        client.end(true);
        if (this.client === client) this.client = null;
        if (this.connecting === client) this.connecting = null;
        resolve(live);
      };
      const guard = setTimeout(() => live || finish(), 8000);
      client.on("connect", (connack) => {
        if (this.stopped) return finish();
        live = true;
        this.client = client;
        const topics = [this.topics.board, this.topics.notices, this.topics.events, this.topics.mine];
        if (this.admin) topics.push(this.topics.alerts);
        // retain handling 1: retained messages only for a subscription the session does not
        // hold yet (MQTT 5); 0: always
        const quiet = Date.now() - this.lastHeard;
        const rh = connack.sessionPresent && !this.resync && quiet < RESYNC_AFTER_MS ? 1 : 0;
        const map = Object.fromEntries(topics.map((t) => [t, { qos: 1, rh }]));
        client.subscribe(map, (err, granted) => {
          if (this.stopped || this.client !== client) return;
          if (err) console.warn("subscribe failed", err);
          else if (rh === 0) this.resync = false;
          for (const g of granted || []) if (g.qos >= 128) console.warn("refused", g.topic);
          this.setState("live");
          this.dispatchEvent(
            new CustomEvent("connected", { detail: { sessionPresent: connack.sessionPresent } }),
          );
          for (const id of this.pending.keys()) this.send(id);
        });
      });
      client.on("packetreceive", () => {
        this.lastHeard = Date.now();
      });
      client.on("message", (topic, payload, packet) => {
        if (!this.stopped && this.client === client) this.route(topic, payload, packet);
      });
      client.on("error", (err) => console.warn("mqtt:", err.message));
      client.on("close", finish);
      client.on("end", finish);
    });
  }

  route(topic, payload, packet) {
    const rel = topic.slice(this.topics.root.length + 1).split("/");
    let body = null;
    if (payload.length) {
      try {
        body = JSON.parse(text(payload));
      } catch {
        console.warn("not JSON on", topic);
        return;
      }
    }
    const emit = (name, detail) => this.dispatchEvent(new CustomEvent(name, { detail }));
    if (rel[0] === "board" && rel.length === 2) return emit("board", { device: rel[1], entry: body });
    if (rel[0] === "notices") return emit("notice", body);
    if (rel[0] === "users" && rel[2] === "waitlist") return emit("waitlist", body); // retained
    if (body === null) return;
    if (rel[0] === "events" && rel[1] === "waitlist") return emit("waitlist-event", body);
    if (rel[0] === "events" && rel[1] === "reservations") return emit("reservation-event", body);
    if (rel[0] === "events" && rel[1] === "devices") return emit("device-event", body);
    if (rel[0] === "events" && rel[1] === "floor") return emit("floor-event", body); // zones changed
    if (rel[0] === "admin" && rel[1] === "alerts") return emit("alert", body);
    if (rel[0] === "users" && rel[2] === "notifications") return emit("notification", body);
    if (rel[0] === "users" && rel[2] === "replies") {
      const cd = packet.properties?.correlationData;
      const id = body.request_id || (cd ? text(cd) : null);
      const waiting = id ? this.pending.get(id) : null;
      if (waiting) {
        clearTimeout(waiting.timer);
        this.pending.delete(id);
        waiting.resolve(body);
      }
      emit("reply", { reply: body, ours: Boolean(waiting) });
    }
  }

  /** Send a reservation command and resolve with the bridge's reply. With no reply in
   * `requestTimeout` s the same request (same request_id: applied once) is sent again.
   * `device` null: a venue-level command (a party, the waitlist) on the venue's topic. */
  request(device, body) {
    if (this.stopped) return Promise.reject(new ApiError(0, "stopped", "the live link was stopped"));
    return new Promise((resolve, reject) => {
      this.pending.set(body.request_id, { device, body, resolve, reject, tries: 0, timer: null });
      this.send(body.request_id);
    });
  }

  send(id) {
    const p = this.pending.get(id);
    if (!p) return;
    clearTimeout(p.timer);
    if (p.tries >= this.requestTries) {
      this.pending.delete(id);
      p.reject(new ApiError(0, "timeout", "no reply from the bridge"));
      return;
    }
    p.tries += 1;
    if (this.client && this.live) {
      const topic = p.device ? this.topics.request(p.device) : this.topics.venue;
      this.client.publish(topic, JSON.stringify(p.body), {
        qos: 1,
        properties: { responseTopic: this.topics.inbox(this.slot), correlationData: id },
      });
    }
    p.timer = setTimeout(() => this.send(id), this.requestTimeout * 1000);
  }
}
