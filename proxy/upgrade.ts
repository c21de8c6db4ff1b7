// handshake: send the client's upgrade to the backend, check its answer, then either pass the
// 101 through unchanged (subprotocol and extensions as the backend chose them) and start the
// tunnel, or pass the refusal (401, 403, 404 ...) to the client as sent.
import type * as Crypto from 'node:crypto';
import type { Endpoint } from './endpoint';
import type { Server } from '../conf/types';
import { ProxyError } from './errors';
import { findHeadEnd, type RequestHead } from './head';
import { parseResponseHead, responseBody, BodyFramer, type ResponseHead } from './framing';
import { backendRequestHead, clientResponseHead } from './forward';

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const MAX_RESPONSE_HEAD = 64 * 1024;

// node:crypto (~10 ms of CPU to load in a fresh worker) at the first WebSocket handshake, not at
// start: a reload's new workers adopt connections (no handshake) before they see a new one.
let createHash: typeof Crypto.createHash | undefined;
export function acceptFor(key: string): string {
  createHash ??= (require('node:crypto') as typeof Crypto).createHash;
  return createHash('sha1').update(key + WS_GUID).digest('base64');
}

function header(h: readonly string[], name: string): string | null {
  for (let i = 0; i < h.length; i += 2) if (h[i].toLowerCase() === name) return h[i + 1];
  return null;
}

export interface UpgradeResult {
  /** 101: the raw response bytes to give the client (head and anything after it). */
  switched?: Buffer;
  /** Where the 101 head ends in `switched`. */
  headEnd?: number;
  /** Not 101: the backend's refusal was already passed to the client. */
  refused?: number;
}

/**
 * Send the upgrade on a connected backend and wait for its answer. Client bytes that follow the
 * head (early frames) go to the backend right after the head. Works on endpoints (raw handles or
 * sockets); on return nobody listens to `backend` any more.
 */
export function backendHandshake(client: Endpoint, backend: Endpoint, head: RequestHead, bytes: Buffer,
                                 ctx: { clientIp: string; proto: 'http' | 'https' }, timeoutMs: number,
                                 cb: (err: ProxyError | null, res: UpgradeResult) => void): void {
  backend.write(Buffer.from(backendRequestHead(head, ctx), 'latin1'));
  if (bytes.length > head.headEnd) backend.write(bytes.subarray(head.headEnd));
  let buf: Buffer = Buffer.alloc(0);
  let done = false;
  const timer = setTimeout(() => finish(new ProxyError('FDP_PROXY_BACKEND_TIMEOUT', 'backend did not answer the upgrade in time', 'upstream')), timeoutMs);
  const finish = (err: ProxyError | null, res: UpgradeResult = {}) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    backend.setEvents(null);
    cb(err, res);
  };
  const reset = () => finish(new ProxyError('FDP_PROXY_BACKEND_RESET', 'backend reset during the upgrade', 'upstream'));
  const closed = () => finish(new ProxyError('FDP_PROXY_BACKEND_RESET', 'backend closed during the upgrade', 'upstream'));
  const onData = (d: Buffer) => {
    buf = buf.length ? Buffer.concat([buf, d]) : d;
    const end = findHeadEnd(buf, 0);
    if (end < 0) {
      if (buf.length > MAX_RESPONSE_HEAD) finish(new ProxyError('FDP_PROXY_BACKEND_BAD_RESPONSE', 'response head too large', 'upstream'));
      return;
    }
    let res: ResponseHead;
    try { res = parseResponseHead(buf, end); } catch (e) { finish(e as ProxyError); return; }
    if (res.status === 101) {
      const up = res.get('upgrade');
      const accept = res.get('sec-websocket-accept');
      const key = header(head.headers, 'sec-websocket-key')!.trim();
      if (up?.toLowerCase() !== 'websocket' || accept !== acceptFor(key)) {
        finish(new ProxyError('FDP_PROXY_BACKEND_BAD_RESPONSE', 'backend 101 without a valid Sec-WebSocket-Accept', 'upstream'));
        return;
      }
      backend.pause();
      finish(null, { switched: buf, headEnd: end });
      return;
    }
    if (res.status < 200) {  // 1xx other than 101 before the real answer: skip it
      buf = buf.subarray(end);
      if (buf.length) onData(Buffer.alloc(0));
      return;
    }
    // A refusal: the client gets it as sent (framing made explicit), then the connection closes.
    clearTimeout(timer);
    const body = responseBody(res, 'GET');
    const framer = new BodyFramer(body.kind, body.length, 'FDP_PROXY_BACKEND_BAD_RESPONSE');
    client.write(Buffer.from(clientResponseHead(res, { close: true, chunked: false, keepAlive10: false }), 'latin1'));
    const pass = (chunk: Buffer, start: number) => {
      let n: number;
      try { n = framer.feed(chunk, start); } catch { n = chunk.length - start; framer.done = true; }
      if (n > 0) client.write(chunk.subarray(start, start + n));
      if (framer.done) finish(null, { refused: res.status });
    };
    const whole = () => { framer.done = true; finish(null, { refused: res.status }); };
    backend.setEvents({ data: d => pass(d, 0), end: whole, error: whole, drain: noop });
    pass(buf, end);
  };
  backend.setEvents({ data: onData, end: closed, error: reset, drain: noop });
}

function noop(): void {}

export type { Server };
