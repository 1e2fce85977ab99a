// The public API, as any client calls it: bearer tokens, JSON, problem+json errors.
// The tokens live in this tab's sessionStorage: gone when the tab closes, never in a cookie.

const KEY = "dmp.session";

// An API refusal. Its message is the API's detail, for developers; what a person reads is
// the French sentence for its type (problems.js).
export class Problem extends Error {
  constructor(status, body, retryAfter = 0) {
    super(body.detail || body.title || `HTTP ${status}`);
    this.status = status;
    this.type = (body.type || "").split("/").pop();
    this.field = body.field || (body.errors && body.errors[0] && body.errors[0].field) || "";
    this.body = body;
    this.retryAfter = retryAfter;
  }
}

export const session = {
  get() {
    try {
      return JSON.parse(sessionStorage.getItem(KEY)) || null;
    } catch {
      return null;
    }
  },
  set(tokens) {
    sessionStorage.setItem(KEY, JSON.stringify(tokens));
  },
  clear() {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem("dmp.grants");
  },
};

async function problemOf(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    body = { title: response.statusText };
  }
  const retryAfter = Number(response.headers.get("retry-after")) || 0;
  return new Problem(response.status, body, retryAfter);
}

async function send(method, path, body, token) {
  const headers = { accept: "application/json, application/problem+json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const init = { method, headers, credentials: "omit", cache: "no-store" };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return fetch(path, init);
}

let refreshing = null;

async function refresh() {
  const current = session.get();
  if (!current || !current.refresh_token) return false;
  refreshing ??= (async () => {
    const r = await send("POST", "/v1/auth/refresh", { refresh_token: current.refresh_token });
    if (!r.ok) {
      session.clear();
      return false;
    }
    session.set(await r.json());
    return true;
  })().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

// One call; a 401 with a session tries one refresh (rotation) and then gives up.
export async function call(method, path, body, { raw = false } = {}) {
  let token = session.get()?.access_token;
  let r = await send(method, path, body, token);
  if (r.status === 401 && token && !path.startsWith("/v1/auth/") && (await refresh())) {
    token = session.get()?.access_token;
    r = await send(method, path, body, token);
  }
  if (!r.ok) {
    const problem = await problemOf(r);
    if (r.status === 401) {
      session.clear();
      window.dispatchEvent(new CustomEvent("dmp:signed-out"));
    }
    throw problem;
  }
  if (raw) return r;
  if (r.status === 204) return null;
  return r.json();
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body ?? {});
export const put = (path, body) => call("PUT", path, body);
export const patch = (path, body) => call("PATCH", path, body);
export const del = (path) => call("DELETE", path);

export async function login(kind, identifier, password) {
  return post("/v1/auth/login", { kind, login: identifier, password });
}

export async function verifyCode(challengeId, code) {
  const tokens = await post("/v1/auth/otp", { challenge_id: challengeId, code });
  session.set(tokens);
  return tokens;
}

export async function logout() {
  const current = session.get();
  session.clear();
  if (current?.refresh_token) {
    await send("POST", "/v1/auth/logout", { refresh_token: current.refresh_token }).catch(() => {});
  }
}

export const q = encodeURIComponent;
