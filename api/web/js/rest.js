// The REST client: the JWT of this tab (sessionStorage), problem+json errors as ApiError,
// and the token's refresh. Tokens live 15 minutes and POST /auth/refresh trades one that has
// not expired: a timer refreshes before expiry, and since a background tab's timers run late
// (or not at all), coming back (visibility, focus, the network) refreshes a token near its end
// at once. Expiry is counted on this clock from `expires_in`, so a skewed clock does no harm.
// A 401 on a signed-in call ends the session ("expired" event, with the code).

const AUTH_KEY = "plaza.auth";
const NEAR_END = 120; // seconds left below which coming back refreshes at once

export class ApiError extends Error {
  constructor(status, code, detail, body = {}) {
    super(detail || code);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

function now() {
  return Date.now() / 1000;
}

export class Rest extends EventTarget {
  constructor() {
    super();
    this.refreshTimer = null;
    this.refreshing = null;
    this.lapsed = false; // this tab held a token that expired while the page was away
    try {
      this.auth = JSON.parse(sessionStorage.getItem(AUTH_KEY) || "null");
    } catch {
      this.auth = null;
    }
    if (this.auth && this.secondsLeft() <= 0) {
      this.auth = null;
      sessionStorage.removeItem(AUTH_KEY);
      this.lapsed = true;
    }
    if (this.auth) this.scheduleRefresh();
  }

  get user() {
    return this.auth?.user ?? null;
  }

  /** Seconds until the token expires, on this page's clock. */
  secondsLeft() {
    if (!this.auth) return 0;
    return (this.auth.local_expires_at ?? this.auth.expires_at) - now();
  }

  async request(method, path, body, headers = {}) {
    const init = { method, headers: { Accept: "application/json", ...headers } };
    if (this.auth) init.headers.Authorization = `Bearer ${this.auth.access_token}`;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let reply;
    try {
      reply = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, "network", String(err));
    }
    const text = await reply.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!reply.ok) {
      const problem = data && typeof data === "object" ? data : {};
      const code = problem.code || `http_${reply.status}`;
      if (reply.status === 401 && this.auth && !path.startsWith("/auth/login")) this.expire(code);
      throw new ApiError(reply.status, code, problem.detail, problem);
    }
    return data;
  }

  get(path) {
    return this.request("GET", path);
  }

  post(path, body, headers) {
    return this.request("POST", path, body, headers);
  }

  patch(path, body) {
    return this.request("PATCH", path, body);
  }

  del(path, headers) {
    return this.request("DELETE", path, undefined, headers);
  }

  async login(username, password) {
    this.store(await this.post("/auth/login", { username, password }));
    return this.auth.user;
  }

  store(token) {
    const local = typeof token.expires_in === "number" ? now() + token.expires_in : token.expires_at;
    this.auth = { ...token, user: token.user ?? this.auth?.user, local_expires_at: local };
    sessionStorage.setItem(AUTH_KEY, JSON.stringify(this.auth));
    this.scheduleRefresh();
  }

  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    const left = this.secondsLeft() * 1000;
    const wait = Math.max(1000, Math.min(left * 0.8, left - 60000));
    this.refreshTimer = setTimeout(() => this.refresh(), wait);
  }

  /** Trade the token for a new one (one refresh at a time). */
  refresh() {
    if (!this.auth) return Promise.resolve();
    this.refreshing ??= this.trade().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  async trade() {
    if (this.secondsLeft() <= 0) {
      this.expire("token_expired");
      return;
    }
    try {
      const token = await this.post("/auth/refresh");
      if (this.auth) this.store(token); // not after a logout meanwhile
    } catch (err) {
      // a 401 ended the session already; anything else: try again soon
      if (err.status !== 401 && this.auth) {
        clearTimeout(this.refreshTimer);
        this.refreshTimer = setTimeout(() => this.refresh(), 10000);
      }
    }
  }

  /** The page is back (visible, focused, online): a token near its end is refreshed now, an
   * expired one ends the session. */
  wakeUp() {
    if (!this.auth) return;
    if (this.secondsLeft() < NEAR_END) this.refresh();
  }

  /** The token is no longer accepted: forget it and say so. */
  expire(code) {
    if (!this.auth) return;
    this.logout();
    this.dispatchEvent(new CustomEvent("expired", { detail: { code } }));
  }

  /** Log this session out at the api (its tokens stop working) and, given `session`, retire
   * that browser session's broker account. Best effort: the page reloads right after, so the
   * request is sent with `keepalive`. */
  revoke(session) {
    if (!this.auth) return;
    fetch("/auth/logout", {
      method: "POST",
      keepalive: true,
      headers: {
        Authorization: `Bearer ${this.auth.access_token}`,
        "Content-Type": "application/json",
      },
      body: JSON.stringify(session ? { session } : {}),
    }).catch(() => {});
  }

  logout() {
    clearTimeout(this.refreshTimer);
    this.auth = null;
    sessionStorage.removeItem(AUTH_KEY);
  }

  updateUser(user) {
    if (!this.auth) return;
    this.auth.user = user;
    sessionStorage.setItem(AUTH_KEY, JSON.stringify(this.auth));
  }
}
