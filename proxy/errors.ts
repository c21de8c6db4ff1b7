// Every error a client can see, and the one place that maps an error code to what the client
// gets (HTTP status, or a WebSocket close code once the 101 has been sent).

export type ErrorSource = 'downstream' | 'upstream' | 'internal';

export class ProxyError extends Error {
  readonly code: string;
  readonly source: ErrorSource;
  readonly retryable: boolean;
  constructor(code: string, message: string, source: ErrorSource = 'internal', retryable = false) {
    super(message);
    this.name = 'ProxyError';
    this.code = code;
    this.source = source;
    this.retryable = retryable;
  }
}

interface ClientAnswer { status: number; reason: string; close: boolean; retryAfter?: number; ws?: number; describe: string }

/** code → what the client gets. README's errors table is checked against this by a test. */
export const CLIENT_ERRORS: Readonly<Record<string, ClientAnswer>> = Object.freeze({
  FDP_PROXY_BAD_REQUEST: { status: 400, reason: 'Bad Request', close: true, describe: 'malformed or ambiguous request head (smuggling vectors included)' },
  FDP_PROXY_BAD_BODY: { status: 400, reason: 'Bad Request', close: true, describe: 'malformed chunked body' },
  FDP_PROXY_HEAD_TIMEOUT: { status: 408, reason: 'Request Timeout', close: true, describe: 'request head not complete within limits.head_timeout' },
  FDP_PROXY_HEAD_TOO_LARGE: { status: 431, reason: 'Request Header Fields Too Large', close: true, describe: 'request head larger than limits.head_bytes' },
  FDP_ROUTE_NO_MATCH: { status: 404, reason: 'Not Found', close: false, describe: 'no route matches the request' },
  FDP_PROXY_LIMIT_GLOBAL: { status: 503, reason: 'Service Unavailable', close: true, retryAfter: 1, describe: 'limits.max_connections reached' },
  FDP_PROXY_LIMIT_KEY: { status: 503, reason: 'Service Unavailable', close: true, retryAfter: 1, describe: 'route limits.connections_per_key reached for this key' },
  FDP_PROXY_NO_WORKER: { status: 503, reason: 'Service Unavailable', close: true, retryAfter: 1, describe: 'no worker alive for the key' },
  FDP_PROXY_HANDOFF_FAILED: { status: 503, reason: 'Service Unavailable', close: true, retryAfter: 1, describe: 'the connection could not be handed to its worker' },
  FDP_PROXY_NO_SERVER: { status: 503, reason: 'Service Unavailable', close: true, retryAfter: 1, describe: 'no healthy server in the backend' },
  FDP_PROXY_STOPPING: { status: 503, reason: 'Service Unavailable', close: true, retryAfter: 1, ws: 1001, describe: 'the proxy is stopping' },
  FDP_PROXY_BACKEND_UNREACHABLE: { status: 502, reason: 'Bad Gateway', close: true, ws: 1011, describe: 'backend refused or could not be reached within connect_timeout' },
  FDP_PROXY_BACKEND_RESET: { status: 502, reason: 'Bad Gateway', close: true, ws: 1011, describe: 'backend reset or closed the connection before a complete response' },
  FDP_PROXY_BACKEND_BAD_RESPONSE: { status: 502, reason: 'Bad Gateway', close: true, ws: 1011, describe: 'backend sent a malformed response (or an invalid WebSocket accept)' },
  FDP_PROXY_BACKEND_TIMEOUT: { status: 504, reason: 'Gateway Timeout', close: true, ws: 1011, describe: 'backend sent no response head within response_timeout' },
  FDP_PROXY_BACKEND_GONE: { status: 502, reason: 'Bad Gateway', close: true, ws: 1011, describe: 'WebSocket backend went away after the 101' },
  // Relay mode (WebSocket terminated by the proxy): after the 101, only a close code reaches the client.
  FDP_PROXY_RELAY_TOO_BIG: { status: 400, reason: 'Bad Request', close: true, ws: 1009, describe: 'relay: a message larger than relay.max_message' },
  FDP_PROXY_RELAY_BAD_UTF8: { status: 400, reason: 'Bad Request', close: true, ws: 1007, describe: 'relay: a text message that is not valid UTF-8' },
  FDP_PROXY_RELAY_RATE_LIMIT: { status: 429, reason: 'Too Many Requests', close: true, ws: 1008, describe: 'relay: the key went over its message or byte rate with on_limit: close' },
  FDP_PROXY_RELAY_DEAD_PEER: { status: 502, reason: 'Bad Gateway', close: true, ws: 1011, describe: 'relay: the backend stopped answering heartbeats (a dead client is dropped; the backend gets 1001)' },
  FDP_PROXY_RESTART: { status: 503, reason: 'Service Unavailable', close: true, ws: 1001, describe: 'a reload could not move the connection to its new worker within drain_timeout, or a move or drain within its deadline' },
});

const FALLBACK: ClientAnswer = { status: 500, reason: 'Internal Server Error', close: true, describe: 'internal error' };

export function clientAnswer(code: string): ClientAnswer {
  return CLIENT_ERRORS[code] ?? FALLBACK;
}

/** The bytes of a complete minimal HTTP/1.1 error response for `code`. */
export function errorResponse(code: string): Buffer {
  const a = clientAnswer(code);
  const body = `${a.status} ${a.reason}\n`;
  let head = `HTTP/1.1 ${a.status} ${a.reason}\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\nx-fdproxy-error: ${code}\r\n`;
  if (a.retryAfter !== undefined) head += `retry-after: ${a.retryAfter}\r\n`;
  head += a.close ? 'connection: close\r\n' : '';
  return Buffer.from(head + '\r\n' + body, 'latin1');
}

/** A WebSocket close frame (server → client, unmasked) with code and reason. */
export function closeFrame(code: number, reason = ''): Buffer {
  const r = Buffer.from(reason.slice(0, 120), 'utf8');
  const f = Buffer.allocUnsafe(4 + r.length);
  f[0] = 0x88; f[1] = 2 + r.length; f.writeUInt16BE(code, 2); r.copy(f, 4);
  return f;
}
