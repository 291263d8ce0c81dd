// The console's only way to the server: the public HTTP API, with the admin token from
// sessionStorage (never in a URL).

const TOKEN_KEY = 'shopd.adminToken';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** An API answer that was not a success, with the server's stable code and message. */
export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

let onUnauthorized = () => {};
export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

function queryString(query) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== '') params.set(k, String(v));
  }
  const s = params.toString();
  return s ? `?${s}` : '';
}

/** A fresh Idempotency-Key (a retried click reuses the one its action was given). */
export function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Call the API. Resolves with the JSON body; rejects with an ApiError.
 * `opts.token` overrides the stored token (sign-in checks a token before keeping it).
 */
export async function api(method, path, opts = {}) {
  const headers = { Accept: 'application/json' };
  const bearer = opts.token ?? token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (opts.idempotencyKey) headers['Idempotency-Key'] = opts.idempotencyKey;
  let body;
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.body);
  }
  let response;
  try {
    response = await fetch(path + queryString(opts.query), { method, headers, body, cache: 'no-store' });
  } catch {
    throw new ApiError(0, 'NETWORK', 'The server cannot be reached. Check that shopd is running and try again.');
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (response.ok) return json;
  const code = json?.code || `HTTP_${response.status}`;
  const message = json?.message || `The server answered ${response.status} ${response.statusText}.`;
  const error = new ApiError(response.status, code, message, json?.details);
  if (response.status === 401 && !opts.token) onUnauthorized(error);
  throw error;
}

export const get = (path, query, opts = {}) => api('GET', path, { ...opts, query });
export const post = (path, body, opts = {}) => api('POST', path, { ...opts, body });
export const patch = (path, body, opts = {}) => api('PATCH', path, { ...opts, body });
