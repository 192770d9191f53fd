// The public API, with the key from this tab's sessionStorage sent as X-API-Key (never in a URL).

const KEY_ITEM = 'jobtracker.apiKey';
const BASE = new URL('../api/v1/', document.baseURI);

/** The key pasted in this tab, or null. */
export function apiKey() {
  return sessionStorage.getItem(KEY_ITEM);
}

/** Remember the key for this tab only. */
export function signIn(key) {
  sessionStorage.setItem(KEY_ITEM, key.trim());
}

/** Forget the key. */
export function signOut() {
  sessionStorage.removeItem(KEY_ITEM);
}

/** A refusal from the API (`status` and its `detail`), or `status` 0 when unreachable. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

/** A URL of the API: `path` under /api/v1/, `query` an object (array values repeat). */
export function apiUrl(path, query = {}) {
  const url = new URL(path, BASE);
  for (const [name, value] of Object.entries(query)) {
    for (const each of [value].flat()) {
      if (each !== null && each !== undefined && each !== '') url.searchParams.append(name, each);
    }
  }
  return url;
}

function headers(extra = {}) {
  return { 'X-API-Key': apiKey() || '', Accept: 'application/json', ...extra };
}

async function refusal(response) {
  let detail = response.statusText;
  try {
    detail = (await response.json()).detail ?? detail;
  } catch { /* not JSON: the status text will do */ }
  return new ApiError(response.status, String(detail));
}

/** The JSON answer of a request; throws ApiError for any status >= 400 or a network failure. */
export async function request(path, { query, method = 'GET', signal } = {}) {
  let response;
  try {
    response = await fetch(apiUrl(path, query), {
      method, headers: headers(), signal, cache: 'no-store', credentials: 'omit',
      referrerPolicy: 'no-referrer',
    });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, error.message);
  }
  if (!response.ok) throw await refusal(response);
  return response.json();
}

export const jobPath = (id, tail = '') => `jobs/${encodeURIComponent(id)}${tail}`;

/**
 * Follow a job's `/stream` with fetch (EventSource cannot send a header): `onBody` gets every body.
 * Resumes with Last-Event-ID after a dropped connection; stops after a terminal body, on `signal`,
 * or on a refusal (`onError` gets the ApiError). `onState(true|false)` says whether it is live.
 */
export async function follow(id, { onBody, onError = () => {}, onState = () => {}, signal }) {
  let lastId = null;
  let delay = 1000;
  while (!signal.aborted) {
    try {
      const extra = lastId === null ? {} : { 'Last-Event-ID': lastId };
      const response = await fetch(apiUrl(jobPath(id, '/stream')), {
        headers: headers({ ...extra, Accept: 'text/event-stream' }), signal, cache: 'no-store',
        credentials: 'omit', referrerPolicy: 'no-referrer',
      });
      if (!response.ok) {
        onState(false);
        onError(await refusal(response));
        return;
      }
      onState(true);
      delay = 1000;
      for await (const frame of sseFrames(response.body, signal)) {
        if (frame.retry) delay = frame.retry;
        if (frame.id !== null) lastId = frame.id;
        if (frame.data === null) continue;
        const body = JSON.parse(frame.data);
        onBody(body);
        if (body.status === 'SUCCESS' || body.status === 'FAILURE') return;
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof SyntaxError) throw error;
    }
    onState(false);
    // The stream ended early (server restart, network): come back where we left off.
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 30000);
  }
}

/** The SSE frames of a byte stream: `{id, data, retry}` (data null for a comment-only frame). */
export async function* sseFrames(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const onAbort = () => reader.cancel().catch(() => {});
  signal.addEventListener('abort', onAbort, { once: true });
  let buffer = '';
  let frame = { id: null, data: null, retry: 0 };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      // A chunk ending in CR may be half of a CRLF: keep it for the next chunk.
      const held = buffer.endsWith('\r') ? '\r' : '';
      const lines = buffer.slice(0, buffer.length - held.length).split(/\r\n|\r|\n/);
      buffer = lines.pop() + held;
      for (const line of lines) {
        if (line === '') {
          if (frame.data !== null || frame.id !== null || frame.retry) yield frame;
          frame = { id: null, data: null, retry: 0 };
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? '' : line.slice(colon + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (field === 'data') frame.data = frame.data === null ? value : `${frame.data}\n${value}`;
        else if (field === 'id') frame.id = value;
        else if (field === 'retry' && /^\d+$/.test(value)) frame.retry = Number(value);
      }
    }
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}
