// The REST client: the JWT of this tab (sessionStorage), problem+json errors as ApiError,
// and a token refresh before expiry. A 401 on a signed-in call ends the session.

const AUTH_KEY = "plaza.auth";

export class ApiError extends Error {
  constructor(status, code, detail, body = {}) {
    super(detail || code);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

export class Rest extends EventTarget {
  constructor() {
    super();
    this.auth = JSON.parse(sessionStorage.getItem(AUTH_KEY) || "null");
    this.refreshTimer = null;
    if (this.auth && this.auth.expires_at * 1000 < Date.now()) this.auth = null;
    if (this.auth) this.scheduleRefresh();
  }

  get user() {
    return this.auth?.user ?? null;
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
      if (reply.status === 401 && this.auth && !path.startsWith("/auth/login")) {
        this.logout();
        this.dispatchEvent(new Event("unauthorized"));
      }
      throw new ApiError(reply.status, problem.code || `http_${reply.status}`, problem.detail, problem);
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

  async login(username, password) {
    this.store(await this.post("/auth/login", { username, password }));
    return this.auth.user;
  }

  store(token) {
    this.auth = token;
    sessionStorage.setItem(AUTH_KEY, JSON.stringify(token));
    this.scheduleRefresh();
  }

  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    const left = this.auth.expires_at * 1000 - Date.now();
    const wait = Math.max(1000, Math.min(left * 0.8, left - 60000));
    this.refreshTimer = setTimeout(() => this.refresh(), wait);
  }

  async refresh() {
    try {
      this.store(await this.post("/auth/refresh"));
    } catch (err) {
      if (err.status !== 401) this.refreshTimer = setTimeout(() => this.refresh(), 10000);
    }
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
