// Rewriting heads between client and backend: hop-by-hop headers dropped (RFC 9110 7.6.1),
// X-Forwarded-For/-Proto/-Host and Forwarded set by the proxy. Client-supplied forwarding
// headers are dropped, never trusted: fdproxy is the edge (with PROXY protocol, the address the
// load balancer reports is the client's).
import type { RequestHead } from './head';
import { eqLower, type ResponseHead } from './framing';

const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade',
  'proxy-authenticate', 'proxy-authorization']);
const FORWARDING = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'forwarded', 'x-real-ip']);

const DROP_LENGTHS = new Uint8Array(64);
for (const n of [...HOP, ...FORWARDING]) DROP_LENGTHS[n.length] = 1;

function connectionTokens(headers: readonly string[]): Set<string> | null {
  let s: Set<string> | null = null;
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i].length === 10 && headers[i].toLowerCase() === 'connection') {
      for (const t of headers[i + 1].split(',')) {
        const v = t.trim().toLowerCase();
        if (v) (s ??= new Set()).add(v);
      }
    }
  }
  return s;
}

export interface ForwardContext { clientIp: string; proto: 'http' | 'https' }

/** RFC 7239 node: an IPv6 address quoted in brackets; a client without an address (a unix
 *  socket listener) is "unknown". */
function forwardedFor(ip: string): string {
  return ip === '' ? 'unknown' : ip.includes(':') ? `"[${ip}]"` : ip;
}

/** The request head to send to the backend. */
export function backendRequestHead(head: RequestHead, ctx: ForwardContext): string {
  const h = head.headers;
  const named = connectionTokens(h);
  let out = `${head.method} ${head.url} HTTP/1.1\r\n`;
  for (let i = 0; i < h.length; i += 2) {
    // Names of other lengths are none of those dropped: no lower-casing for them.
    if (named !== null || DROP_LENGTHS[h[i].length] === 1) {
      const n = h[i].toLowerCase();
      if (HOP.has(n) || FORWARDING.has(n) || (named !== null && named.has(n))) continue;
    }
    out += `${h[i]}: ${h[i + 1]}\r\n`;
  }
  if (head.websocket) out += 'Connection: Upgrade\r\nUpgrade: websocket\r\n';
  else if (head.chunked) out += 'Transfer-Encoding: chunked\r\n';
  if (head.versionMinor === 0 && !head.websocket) out += 'Connection: keep-alive\r\n';
  out += `X-Forwarded-For: ${ctx.clientIp || 'unknown'}\r\nX-Forwarded-Proto: ${ctx.proto}\r\n`;
  if (head.host) out += `X-Forwarded-Host: ${head.host}\r\n`;
  out += `Forwarded: for=${forwardedFor(ctx.clientIp)};proto=${ctx.proto}${head.host ? `;host="${head.host}"` : ''}\r\n\r\n`;
  return out;
}

/** The response head to send to the client. `close` adds Connection: close. */
export function clientResponseHead(res: ResponseHead, opts: { close: boolean; chunked: boolean; keepAlive10: boolean }): string {
  const h = res.headers;
  const named = connectionTokens(h);
  let out = `HTTP/1.1 ${res.status} ${reasonOf(res)}\r\n`;
  for (let i = 0; i < h.length; i += 2) {
    const n = h[i].toLowerCase();
    if (HOP.has(n) || (named !== null && named.has(n))) continue;
    if (opts.chunked && n === 'content-length') continue;
    out += `${h[i]}: ${h[i + 1]}\r\n`;
  }
  if (opts.chunked) out += 'Transfer-Encoding: chunked\r\n';
  if (opts.close) out += 'Connection: close\r\n';
  else if (opts.keepAlive10) out += 'Connection: keep-alive\r\n';
  return out + '\r\n';
}

/** A response header that is hop-by-hop (RFC 9110 7.6.1) or marked as such by Connection. */
function dropResponseHeader(b: Buffer, s: number, e: number): boolean {
  switch (e - s) {
    case 2: return eqLower(b, s, e, 'te');
    case 7: return eqLower(b, s, e, 'trailer') || eqLower(b, s, e, 'upgrade');
    case 10: return eqLower(b, s, e, 'connection') || eqLower(b, s, e, 'keep-alive');
    case 16: return eqLower(b, s, e, 'proxy-connection');
    case 17: return eqLower(b, s, e, 'transfer-encoding');
    case 18: return eqLower(b, s, e, 'proxy-authenticate');
    case 19: return eqLower(b, s, e, 'proxy-authorization');
    default: return false;
  }
}

/**
 * clientResponseHead made in place: `res.buf` holds the backend's head and then `n` body bytes;
 * dropped header lines are squeezed out (and the few lines we add written into the room they
 * leave), so `res.buf[0, returned length)` is the response to send, with no new buffer or string.
 * Returns -1 (nothing changed) when that does not fit: a status line or a header line we would
 * rewrite (HTTP/1.0, no reason, `Name:value` spacing), or added lines longer than those dropped.
 */
export function clientResponseInPlace(res: ResponseHead, opts: { close: boolean; chunked: boolean; keepAlive10: boolean }, n: number): number {
  if (res.versionMinor !== 1 || res.statusEnd <= 13) return -1;
  const b = res.buf, sp = res.spans, end = res.headEnd;
  // Headers the response's Connection header names go too.
  let named: Set<string> | null = null;
  for (let i = 0; i < sp.length; i += 5) {
    if (sp[i + 1] - sp[i] === 10 && eqLower(b, sp[i], sp[i + 1], 'connection')) {
      for (const t of b.toString('latin1', sp[i + 2], sp[i + 3]).split(',')) {
        const v = t.trim().toLowerCase();
        if (v && v !== 'keep-alive') (named ??= new Set()).add(v);  // keep-alive goes anyway
      }
    }
  }
  const drop = (ls: number, colon: number) => dropResponseHeader(b, ls, colon) ||
    (opts.chunked && colon - ls === 14 && eqLower(b, ls, colon, 'content-length')) ||
    (named !== null && named.has(b.toString('latin1', ls, colon).toLowerCase()));
  // First pass: decide, changing nothing.
  let size = res.statusEnd + 2;
  for (let i = 0; i < sp.length; i += 5) {
    const ls = sp[i], colon = sp[i + 1], le = sp[i + 4];
    if (drop(ls, colon)) continue;
    if (sp[i + 2] !== colon + 2 || b[colon + 1] !== 0x20 || sp[i + 3] !== le) return -1;
    size += le + 2 - ls;
  }
  const tail = (opts.chunked ? 'Transfer-Encoding: chunked\r\n' : '') +
    (opts.close ? 'Connection: close\r\n' : opts.keepAlive10 ? 'Connection: keep-alive\r\n' : '');
  if (size + tail.length > end - 2) return -1;
  // Second pass: move the kept lines left over the dropped ones (each only ever moves left).
  let at = res.statusEnd + 2;
  for (let i = 0; i < sp.length; i += 5) {
    const ls = sp[i], colon = sp[i + 1], le = sp[i + 4];
    if (drop(ls, colon)) continue;
    if (at !== ls) b.copyWithin(at, ls, le + 2);
    at += le + 2 - ls;
  }
  if (tail) at += b.write(tail, at, 'latin1');
  // The blank line and the body bytes.
  if (at !== end - 2) b.copyWithin(at, end - 2, end + n);
  return at + 2 + n;
}

const REASONS: Record<number, string> = { 100: 'Continue', 101: 'Switching Protocols', 200: 'OK', 201: 'Created', 204: 'No Content',
  301: 'Moved Permanently', 302: 'Found', 304: 'Not Modified', 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden',
  404: 'Not Found', 500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout' };

function reasonOf(res: ResponseHead): string {
  return res.reason || REASONS[res.status] || 'Status';
}
