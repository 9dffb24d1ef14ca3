// The REST API as the node page calls it: the admin token from session storage as a bearer
// token on every call, errors as ApiError, and the event stream read with fetch (EventSource
// cannot send an Authorization header).

const TOKEN_KEY = 'hyperlet.admin-token';

/** The admin token this tab signed in with, or null. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Keeps `value` as this tab's admin token. */
export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

/** Forgets the admin token. */
export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** An error answer of the API: its HTTP status, its code and its message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** How long a call may take before the page gives up on it. */
const CALL_TIMEOUT_MS = 30000;

/** Calls `method path` with an optional JSON body; resolves to the JSON answer. */
export async function call(method, path, body) {
  const headers = { Authorization: `Bearer ${token() ?? ''}` };
  const init = { method, headers, cache: 'no-store', signal: AbortSignal.timeout(CALL_TIMEOUT_MS) };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  // A read is tried twice: a browser cancels requests in flight when its network changes.
  for (let attempt = 1; ; attempt += 1) {
    try {
      resp = await fetch(path, init);
      break;
    } catch (e) {
      if (method !== 'GET' || attempt === 2 || init.signal.aborted) {
        throw new ApiError(0, 'unreachable', `The agent did not answer ${method} ${path}: ${e.message}`);
      }
    }
  }
  const text = await resp.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!resp.ok) {
    const error = json?.error ?? {};
    throw new ApiError(resp.status, error.code ?? `http_${resp.status}`,
      error.message ?? `${method} ${path} answered ${resp.status}`);
  }
  return json;
}

/** The agent sends a keep-alive every 15 s: this much silence means the stream is dead. */
const STALL_MS = 45000;

/**
 * Follows `/v1/events` until `signal` aborts, calling `onEvent(kind, event)` for each event
 * and `onState(connected, why)` when the stream opens or drops. Reconnects after a pause,
 * resuming after the last event seen (the agent replays what was missed, or says `gap`).
 */
export async function followEvents(onEvent, onState, signal) {
  let last = null;
  let pause = 1000;
  while (!signal.aborted) {
    const connection = new AbortController();
    const stop = () => connection.abort();
    signal.addEventListener('abort', stop);
    let watchdog = null;
    const feed = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => connection.abort(new Error(`no event or keep-alive for ${STALL_MS / 1000} s`)), STALL_MS);
    };
    let reader = null;
    try {
      const path = last === null ? '/v1/events' : `/v1/events?after=${encodeURIComponent(last)}`;
      feed();
      const resp = await fetch(path, {
        headers: { Authorization: `Bearer ${token() ?? ''}`, Accept: 'text/event-stream' },
        cache: 'no-store',
        signal: connection.signal,
      });
      if (resp.status === 401) {
        onState(false, 'unauthorized');
        return;
      }
      if (!resp.ok || !resp.body) {
        throw new Error(`/v1/events answered ${resp.status}`);
      }
      onState(true, 'connected');
      pause = 1000;
      reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      let carry = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        feed();
        // Line ends may be CRLF, LF or CR (a proxy may rewrite them); a CR at the end of a
        // chunk waits for the next one, which may start with its LF.
        let text = carry + value;
        carry = '';
        if (text.endsWith('\r')) {
          carry = '\r';
          text = text.slice(0, -1);
        }
        buffer += text.replace(/\r\n?/g, '\n');
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const message = parseMessage(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (message === null) continue;
          if (message.id !== null) last = message.id;
          onEvent(message.event, message.data);
        }
        if (buffer.length > 1 << 20) throw new Error('an event of more than 1 MiB');
      }
      onState(false, 'the stream ended');
    } catch (e) {
      if (signal.aborted) return;
      onState(false, connection.signal.reason?.message ?? e.message);
    } finally {
      clearTimeout(watchdog);
      signal.removeEventListener('abort', stop);
      reader?.cancel().catch(() => {});
      connection.abort();
    }
    await new Promise((resolve) => setTimeout(resolve, pause));
    pause = Math.min(pause * 2, 15000);
  }
}

/** One server-sent event message, or null for a comment-only message. */
function parseMessage(text) {
  let id = null;
  let event = 'message';
  const data = [];
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon === 0) continue;
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'id') id = value;
    else if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  if (data.length === 0) return null;
  let parsed;
  try {
    parsed = JSON.parse(data.join('\n'));
  } catch {
    parsed = data.join('\n');
  }
  return { id, event, data: parsed };
}
