// Rewriting heads between client and backend: hop-by-hop headers dropped (RFC 9110 7.6.1),
// X-Forwarded-For/-Proto/-Host and Forwarded set by the proxy. Client-supplied forwarding
// headers are dropped, never trusted: fdproxy is the edge (with PROXY protocol, the address the
// load balancer reports is the client's).
import type { RequestHead } from './head';
import type { ResponseHead } from './framing';

const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade',
  'proxy-authenticate', 'proxy-authorization']);
const FORWARDING = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'forwarded', 'x-real-ip']);

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

function forwardedFor(ip: string): string {
  return ip.includes(':') ? `"[${ip}]"` : ip;
}

/** The request head to send to the backend. */
export function backendRequestHead(head: RequestHead, ctx: ForwardContext): string {
  const h = head.headers;
  const named = connectionTokens(h);
  let out = `${head.method} ${head.url} HTTP/1.1\r\n`;
  for (let i = 0; i < h.length; i += 2) {
    const n = h[i].toLowerCase();
    if (HOP.has(n) || FORWARDING.has(n) || (named !== null && named.has(n))) continue;
    out += `${h[i]}: ${h[i + 1]}\r\n`;
  }
  if (head.websocket) out += 'Connection: Upgrade\r\nUpgrade: websocket\r\n';
  else if (head.chunked) out += 'Transfer-Encoding: chunked\r\n';
  if (head.versionMinor === 0 && !head.websocket) out += 'Connection: keep-alive\r\n';
  out += `X-Forwarded-For: ${ctx.clientIp}\r\nX-Forwarded-Proto: ${ctx.proto}\r\n`;
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

const REASONS: Record<number, string> = { 100: 'Continue', 101: 'Switching Protocols', 200: 'OK', 201: 'Created', 204: 'No Content',
  301: 'Moved Permanently', 302: 'Found', 304: 'Not Modified', 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden',
  404: 'Not Found', 500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout' };

function reasonOf(res: ResponseHead): string {
  return res.reason || REASONS[res.status] || 'Status';
}
