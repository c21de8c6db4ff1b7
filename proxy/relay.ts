// relay: WebSocket terminated on both sides with `ws`. Messages are relayed one by one (type,
// close codes and reasons preserved), which lets the proxy enforce message size, per-key rates
// (quota.ts), heartbeats, and count messages. A relay can stop at a message boundary on both
// sides and move to another worker (worker.ts), where the ws objects are rebuilt without a
// handshake over the same sockets.
//
// `ws` has no public API for "a WebSocket over an already-upgraded socket": we use what its own
// server and client use after their handshakes (`new WebSocket(null)` + `setSocket`, `_isServer`,
// `_protocol`, `_extensions`; its Receiver's 'conclude' event for close frames), pinned to ws 8.
import * as path from 'node:path';
import type * as net from 'node:net';
import type WebSocket from 'ws';
import type { RelayOptions } from '../conf/types';
import type { KeyQuota } from './quota';
import { clientAnswer } from './errors';

/** Tallies per route and per key (metrics). */
export class RelayTally {
  messages_in = 0; messages_out = 0; bytes_in = 0; bytes_out = 0;
  limit_max_message = 0; limit_throttled = 0; limit_closed = 0; dead_client = 0; dead_backend = 0;
}

/** Tallies of a worker: one per route, one per key with live relays (dropped with its last relay;
 *  a connection's own totals go to its access-log line). */
export class Tallies {
  private readonly routes = new Map<string, RelayTally>();
  private readonly keys = new Map<string, { t: RelayTally; refs: number; route: string; key: string }>();
  acquire(route: string, key: string | null): RelayTally[] {
    let r = this.routes.get(route);
    if (!r) this.routes.set(route, r = new RelayTally());
    if (key === null) return [r];
    const id = `${route}\0${key}`;
    let k = this.keys.get(id);
    if (!k) this.keys.set(id, k = { t: new RelayTally(), refs: 0, route, key });
    k.refs++;
    return [r, k.t];
  }
  release(route: string, key: string | null): void {
    if (key === null) return;
    const id = `${route}\0${key}`, k = this.keys.get(id);
    if (k && --k.refs <= 0) this.keys.delete(id);
  }
  /** Per-route counters, named relay_<route>_<what> (→ fdproxy_relay_<route>_<what>_total). */
  counters(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [route, t] of this.routes) for (const [k, v] of Object.entries(t)) out[`relay_${route}_${k}`] = v as number;
    return out;
  }
  /** The busiest keys (by messages) with their tallies. */
  topKeys(n: number): Record<string, unknown>[] {
    return [...this.keys.values()].sort((a, b) => (b.t.messages_in + b.t.messages_out) - (a.t.messages_in + a.t.messages_out))
      .slice(0, n).map(k => ({ route: k.route, key: k.key, relays: k.refs, ...k.t }));
  }
}

export interface RelayInfo {
  route: string; key: string | null; server: string; clientIp: string; opened: number;
  msgsIn: number; msgsOut: number; bytesIn: number; bytesOut: number; hits: number;
}

/** What was negotiated at the handshake: travels with a migrating relay. */
export interface RelayProto { protocol: string; cdeflate: Record<string, unknown> | null; bdeflate: Record<string, unknown> | null }

export type RelayEnd = 'client' | 'backend' | 'error' | 'proxy' | 'limit' | 'dead';

const HIGH_WATER = 512 * 1024;     // other side's buffer above this: pause the reading side
const P_BP = 1, P_THROTTLE = 2;
const CLOSE_TIMEOUT = 5000;

// `ws` (and the http, https, tls, crypto and zlib it pulls in: ~50 ms of CPU in a fresh worker)
// is loaded at the first relay, not when this file is: a worker whose config has no relay route
// never needs it, and a reload's new workers are waited for. worker.ts loads it with the config
// when a relay route exists (the first relay then costs what it did before); a relay migrating
// into a worker without one loads it here.
let wsClass: typeof WebSocket | undefined;
export function wsLib(): typeof WebSocket {
  return wsClass ??= require('ws') as typeof WebSocket;
}

// ---------------------------------------------------------------- permessage-deflate (ws lib)

let pmdLib: { PerMessageDeflate: any; extension: any } | null = null;
function pmd(): { PerMessageDeflate: any; extension: any } {
  if (!pmdLib) {
    const lib = path.join(path.dirname(require.resolve('ws')), 'lib');
    pmdLib = { PerMessageDeflate: require(path.join(lib, 'permessage-deflate.js')), extension: require(path.join(lib, 'extension.js')) };
  }
  return pmdLib;
}
// No context takeover either way: each message compresses alone, so a relay can migrate.
const PMD_OPTS = { serverNoContextTakeover: true, clientNoContextTakeover: true };

/** The extension offer we make to the backend. */
export function deflateOffer(): string {
  return 'permessage-deflate; client_no_context_takeover; server_no_context_takeover';
}
/** Accept a client's offer: the params we answer with (null: no deflate). */
export function acceptClientDeflate(header: string | null, maxPayload: number): Record<string, unknown> | null {
  if (!header) return null;
  try {
    const { PerMessageDeflate, extension } = pmd();
    const offers = extension.parse(header)[PerMessageDeflate.extensionName];
    if (!offers) return null;
    const x = new PerMessageDeflate({ ...PMD_OPTS, isServer: true, maxPayload });
    return x.accept(offers);
  } catch { return null; }
}
export function formatDeflate(params: Record<string, unknown>): string {
  const { PerMessageDeflate, extension } = pmd();
  return extension.format({ [PerMessageDeflate.extensionName]: [params] });
}
/** The backend's answer to our offer (null: none; throws on an answer we did not offer). */
export function acceptBackendDeflate(header: string | null, maxPayload: number): Record<string, unknown> | null {
  if (!header) return null;
  const { PerMessageDeflate, extension } = pmd();
  const resp = extension.parse(header)[PerMessageDeflate.extensionName];
  if (!resp) return null;
  return new PerMessageDeflate({ ...PMD_OPTS, isServer: false, maxPayload }).accept(resp);
}

/** The upgrade to send to the backend: our own extension offer instead of the client's. */
export function relayRequestHead<H extends { headers: string[] }>(head: H, deflate: boolean): H {
  const h: string[] = [];
  for (let i = 0; i < head.headers.length; i += 2) if (head.headers[i].toLowerCase() !== 'sec-websocket-extensions') h.push(head.headers[i], head.headers[i + 1]);
  if (deflate) h.push('Sec-WebSocket-Extensions', deflateOffer());
  return { ...head, headers: h };
}

/** A ws WebSocket over an already-upgraded socket (no handshake). */
function wsOver(sock: net.Socket, head: Buffer, isServer: boolean, protocol: string, deflate: Record<string, unknown> | null, maxPayload: number): WebSocket {
  const ws = new (wsLib() as any)(null, undefined, { autoPong: true, closeTimeout: CLOSE_TIMEOUT }) as WebSocket;
  const w = ws as any;
  w._isServer = isServer;
  w._protocol = protocol;
  if (deflate) {
    const { PerMessageDeflate } = pmd();
    const x = new PerMessageDeflate({ ...PMD_OPTS, isServer, maxPayload });
    const asOffer: Record<string, unknown[]> = {};
    for (const [k, v] of Object.entries(deflate)) asOffer[k] = [v];
    x.accept([asOffer]);
    w._extensions = { [PerMessageDeflate.extensionName]: x };
  }
  w.setSocket(sock, head, { allowSynchronousEvents: true, maxPayload, skipUTF8Validation: false });
  return ws;
}

// ---------------------------------------------------------------- message boundaries on the wire

/** Follows frames in one direction (reads only headers) to know when a side is between
 *  messages: then the ws receiver holds nothing and the socket can be handed over as it is. */
class MsgTracker {
  left = 0;
  hdr: number[] = [];
  inMsg = false;
  /** Data messages whose last frame has fully arrived. */
  done = 0;
  get atBoundary(): boolean { return this.left === 0 && this.hdr.length === 0 && !this.inMsg; }
  feed(buf: Buffer): void {
    let i = 0;
    const n = buf.length;
    while (i < n) {
      if (this.left > 0) { const k = Math.min(this.left, n - i); this.left -= k; i += k; if (this.left === 0) this.frameEnd(); continue; }
      if (this.hdr.length === 0 && n - i >= 2) {
        const b1 = buf[i + 1];
        let len = b1 & 0x7f, h = 2;
        if (len === 126) { if (n - i < 4) { this.stash(buf, i, n); return; } len = buf.readUInt16BE(i + 2); h = 4; }
        else if (len === 127) { if (n - i < 10) { this.stash(buf, i, n); return; } len = buf.readUInt32BE(i + 2) * 2 ** 32 + buf.readUInt32BE(i + 6); h = 10; }
        if (b1 & 0x80) { if (n - i < h + 4) { this.stash(buf, i, n); return; } h += 4; }
        this.frameStart(buf[i]);
        i += h;
        this.left = len;
        if (len === 0) this.frameEnd();
        continue;
      }
      this.hdr.push(buf[i++]);
      const need = this.headerLength();
      if (need > 0 && this.hdr.length === need) {
        const h = this.hdr;
        this.frameStart(h[0]);
        const len7 = h[1] & 0x7f;
        let len = len7;
        if (len7 === 126) len = h[2] * 256 + h[3];
        else if (len7 === 127) { len = 0; for (let j = 2; j < 10; j++) len = len * 256 + h[j]; }
        this.hdr = [];
        this.left = len;
        if (len === 0) this.frameEnd();
      }
    }
  }
  private fin = false;
  private data = false;
  private frameStart(b0: number): void {
    this.fin = (b0 & 0x80) !== 0;
    this.data = (b0 & 0x0f) < 8;
    if (this.data) this.inMsg = true;
  }
  private frameEnd(): void {
    if (this.data && this.fin) { this.inMsg = false; this.done++; }
  }
  private stash(buf: Buffer, from: number, to: number): void { for (let j = from; j < to; j++) this.hdr.push(buf[j]); }
  private headerLength(): number {
    if (this.hdr.length < 2) return 0;
    const b1 = this.hdr[1], len = b1 & 0x7f;
    return (len === 126 ? 4 : len === 127 ? 10 : 2) + (b1 & 0x80 ? 4 : 0);
  }
}

/** A complete masked frame (client → server form, mask 0) for a held message handed over. */
function maskedFrame(data: Buffer, binary: boolean): Buffer {
  const n = data.length;
  const h = n < 126 ? 6 : n < 65536 ? 8 : 14;
  const f = Buffer.allocUnsafe(h + n);
  f[0] = 0x80 | (binary ? 2 : 1);
  if (n < 126) f[1] = 0x80 | n;
  else if (n < 65536) { f[1] = 0x80 | 126; f.writeUInt16BE(n, 2); }
  else { f[1] = 0x80 | 127; f.writeUInt32BE(Math.floor(n / 2 ** 32), 2); f.writeUInt32BE(n >>> 0, 6); }
  f.writeUInt32BE(0, h - 4);
  data.copy(f, h);
  return f;
}

// ---------------------------------------------------------------- the relay

interface Side {
  name: 'client' | 'backend';
  ws: WebSocket;
  sock: net.Socket;
  tracker: MsgTracker;
  msgs: number;         // messages ws emitted (equals tracker.done when nothing is being inflated)
  mask: number;         // why reads are paused (P_*)
  paused: boolean;
  stopWanted: boolean;  // migration: pause as soon as the side is at a message boundary
  alive: boolean;       // heard from since the last ping
  concluded: boolean;   // its close frame arrived
  closed: boolean;      // ws 'close'
}

export interface RelaySetup {
  client: net.Socket; backend: net.Socket; clientHead: Buffer; backendHead: Buffer;
  info: RelayInfo; proto: RelayProto; opts: RelayOptions; quota: KeyQuota | null;
  tallies: RelayTally[]; held?: [Buffer, boolean][];
}

export class Relay {
  readonly info: RelayInfo;
  readonly proto: RelayProto;
  readonly opts: RelayOptions;
  readonly quota: KeyQuota | null;
  private readonly c: Side;
  private readonly b: Side;
  private readonly tallies: RelayTally[];
  private held: [Buffer, boolean][] = [];
  private holdTimer: NodeJS.Timeout | null = null;
  private hbTimer: NodeJS.Timeout | null = null;
  private closing = false;
  private ended = false;
  private stopping = false;
  private onStopCheck: (() => void) | null = null;

  constructor(s: RelaySetup, private readonly onEnd: (r: Relay, why: RelayEnd) => void) {
    this.info = s.info; this.proto = s.proto; this.opts = s.opts; this.quota = s.quota; this.tallies = s.tallies;
    const max = s.opts.max_message;
    this.c = this.side('client', s.client, wsOver(s.client, s.clientHead, true, s.proto.protocol, s.proto.cdeflate, max));
    this.b = this.side('backend', s.backend, wsOver(s.backend, s.backendHead, false, s.proto.protocol, s.proto.bdeflate, max));
    // The handshake left the sockets paused; attaching 'data' listeners does not resume them.
    s.client.resume(); s.backend.resume();
    if (s.held?.length) { this.held = s.held; this.setMask(this.c, P_THROTTLE, true); this.drainHeld(); }
    this.startHeartbeat();
  }

  get isClosed(): boolean { return this.ended || this.closing; }
  /** Can it move at a message boundary? (deflate only without context takeover on both sides) */
  get migratable(): boolean {
    const ok = (p: Record<string, unknown> | null, who: string) => !p || (p[`${who}_no_context_takeover`] === true);
    return ok(this.proto.cdeflate, 'client') && ok(this.proto.cdeflate, 'server') && ok(this.proto.bdeflate, 'client') && ok(this.proto.bdeflate, 'server');
  }

  private side(name: 'client' | 'backend', sock: net.Socket, ws: WebSocket): Side {
    const s: Side = { name, ws, sock, tracker: new MsgTracker(), msgs: 0, mask: 0, paused: false, stopWanted: false, alive: true, concluded: false, closed: false };
    sock.on('data', (d: Buffer) => {
      s.alive = true;
      s.tracker.feed(d);
      if (s.stopWanted) this.updatePause(s);
    });
    sock.on('drain', () => this.onDrain(s));
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      s.msgs++;
      if (name === 'client') this.fromClient(data, isBinary); else this.fromBackend(data, isBinary);
    });
    ws.on('pong', () => { s.alive = true; });
    ws.on('error', (e: Error & { code?: string }) => this.onError(s, e));
    ws.on('close', () => this.onClose(s));
    (ws as any)._receiver.on('conclude', (code: number, reason: Buffer) => this.onConclude(s, code, reason));
    return s;
  }

  private other(s: Side): Side { return s === this.c ? this.b : this.c; }
  private tally(f: (t: RelayTally) => void): void { for (const t of this.tallies) f(t); }

  // ------------------------------------------------------------ messages

  private fromClient(data: Buffer, isBinary: boolean): void {
    if (this.closing) return;
    if (this.held.length > 0) { this.held.push([data, isBinary]); return; }
    this.toBackend(data, isBinary, true);
  }

  /** false: held (throttled) or refused. */
  private toBackend(data: Buffer, isBinary: boolean, fresh: boolean): boolean {
    if (this.quota) {
      const wait = this.quota.take(data.length);
      if (wait > 0) {
        if (this.opts.on_limit === 'close') {
          this.info.hits++; this.tally(t => t.limit_closed++);
          this.closeBoth(clientAnswer('FDP_PROXY_RELAY_RATE_LIMIT').ws!, 'rate limit exceeded', 1001, 'client closed by proxy: rate limit', 'limit');
          return false;
        }
        if (fresh) { this.info.hits++; this.tally(t => t.limit_throttled++); this.held.push([data, isBinary]); }
        this.setMask(this.c, P_THROTTLE, true);
        if (!this.holdTimer && !this.stopping) this.holdTimer = setTimeout(() => { this.holdTimer = null; this.drainHeld(); }, wait);
        return false;
      }
    }
    this.b.ws.send(data, { binary: isBinary });
    this.info.msgsIn++; this.info.bytesIn += data.length;
    for (const t of this.tallies) { t.messages_in++; t.bytes_in += data.length; }
    if (this.b.ws.bufferedAmount > HIGH_WATER) this.setMask(this.c, P_BP, true);
    return true;
  }

  private drainHeld(): void {
    if (this.closing || this.stopping) return;
    while (this.held.length > 0) {
      const [d, bin] = this.held[0];
      if (!this.toBackend(d, bin, false)) return;
      this.held.shift();
    }
    this.setMask(this.c, P_THROTTLE, false);
  }

  private fromBackend(data: Buffer, isBinary: boolean): void {
    if (this.closing) return;
    this.c.ws.send(data, { binary: isBinary });
    this.info.msgsOut++; this.info.bytesOut += data.length;
    for (const t of this.tallies) { t.messages_out++; t.bytes_out += data.length; }
    if (this.c.ws.bufferedAmount > HIGH_WATER) this.setMask(this.b, P_BP, true);
  }

  private onDrain(s: Side): void {
    // s's socket drained: the other side may read again.
    if (s.ws.bufferedAmount <= HIGH_WATER) this.setMask(this.other(s), P_BP, false);
    this.onStopCheck?.();
  }

  private setMask(s: Side, bit: number, on: boolean): void {
    s.mask = on ? s.mask | bit : s.mask & ~bit;
    this.updatePause(s);
  }

  private updatePause(s: Side): void {
    // While stopping for a migration a side reads on until it reaches a message boundary.
    const want = s.stopWanted ? s.tracker.atBoundary : s.mask !== 0;
    if (want === s.paused) { if (s.stopWanted) this.onStopCheck?.(); return; }
    s.paused = want;
    if (want) s.ws.pause(); else s.ws.resume();
    if (s.stopWanted) this.onStopCheck?.();
  }

  // ------------------------------------------------------------ closing

  private onConclude(s: Side, code: number, reason: Buffer): void {
    s.concluded = true;
    this.closing = true;
    const o = this.other(s);
    if (o.closed || o.concluded) return;
    try { if (code === 1005) o.ws.close(); else o.ws.close(code, reason); } catch { o.ws.terminate(); }
  }

  private onError(s: Side, e: Error & { code?: string }): void {
    // Protocol errors (ws has already sent its close: 1002, 1007, 1009 ...): close the other side.
    if (!e.code || !e.code.startsWith('WS_ERR_')) return;
    if (e.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') { this.info.hits++; this.tally(t => t.limit_max_message++); }
    this.closing = true;
    const o = this.other(s);
    if (o.closed || o.concluded) return;
    if (s === this.c) o.ws.close(1001, `client error: ${e.code}`.slice(0, 120));
    else o.ws.close(1011, 'backend error');
  }

  private onClose(s: Side): void {
    s.closed = true;
    this.closing = true;
    const o = this.other(s);
    if (!o.closed && !o.concluded && o.ws.readyState === wsLib().OPEN) {
      // Gone without a close frame (reset, heartbeat): say so.
      if (s === this.c) o.ws.close(1001, 'client went away'); else o.ws.close(clientAnswer('FDP_PROXY_BACKEND_GONE').ws!, 'backend went away');
    }
    if (this.c.closed && this.b.closed) this.finish(s.name);
  }

  private finish(why: RelayEnd): void {
    if (this.ended) return;
    this.ended = true;
    this.clearTimers();
    this.onEnd(this, this.endWhy ?? why);
  }
  private endWhy: RelayEnd | null = null;

  private closeBoth(cc: number, cr: string, bc: number, br: string, why: RelayEnd): void {
    if (this.closing) return;
    this.closing = true;
    this.endWhy = why;
    this.c.ws.close(cc, cr);
    this.b.ws.close(bc, br);
  }

  /** Proxy-initiated close (stop, drain, reload leftovers). */
  closeWith(code: number, reason: string): void {
    if (this.ended) return;
    if (this.closing) { this.c.ws.terminate(); this.b.ws.terminate(); return; }
    this.closeBoth(code, reason, 1001, reason, 'proxy');
    setTimeout(() => { this.c.ws.terminate(); this.b.ws.terminate(); }, 2000).unref();
  }

  private clearTimers(): void {
    if (this.holdTimer) { clearTimeout(this.holdTimer); this.holdTimer = null; }
    if (this.hbTimer) { clearInterval(this.hbTimer); this.hbTimer = null; }
  }

  // ------------------------------------------------------------ heartbeats

  private startHeartbeat(): void {
    if (this.opts.heartbeat <= 0) return;
    this.hbTimer = setInterval(() => {
      if (this.closing || this.stopping) return;
      for (const s of [this.c, this.b]) {
        if (!s.alive) {
          this.info.hits++;
          this.tally(t => { if (s === this.c) t.dead_client++; else t.dead_backend++; });
          this.endWhy = 'dead';
          s.ws.terminate();
          return;
        }
        s.alive = false;
        try { s.ws.ping(); } catch { /* closing */ }
      }
    }, this.opts.heartbeat);
    this.hbTimer.unref();
  }

  // ------------------------------------------------------------ migration

  /** Stop both sides at a message boundary with nothing owed to either side. */
  stop(timeoutMs: number): Promise<boolean> {
    if (this.closing || this.ended || !this.migratable) return Promise.resolve(false);
    this.stopping = true;
    if (this.holdTimer) { clearTimeout(this.holdTimer); this.holdTimer = null; }
    return new Promise(resolve => {
      let done = false;
      const ready = () => {
        for (const s of [this.c, this.b]) {
          if (!s.paused || !s.tracker.atBoundary || s.tracker.done !== s.msgs) return false;
          if (s.ws.bufferedAmount > 0 || s.sock.writableLength > 0) return false;
          const snd = (s.ws as any)._sender;
          if (snd && ((snd._queue?.length ?? 0) > 0 || (snd._state ?? 0) !== 0)) return false;
        }
        return true;
      };
      const end = (ok: boolean) => {
        if (done) return;
        done = true;
        this.onStopCheck = null;
        clearTimeout(timer); clearInterval(poll);
        resolve(ok && !this.closing && !this.ended);
      };
      this.onStopCheck = () => { if (this.closing || this.ended) end(false); else if (ready()) end(true); };
      const timer = setTimeout(() => end(ready()), timeoutMs);
      const poll = setInterval(() => this.onStopCheck?.(), 5);   // inflate/deflate finish asynchronously
      for (const s of [this.c, this.b]) { s.stopWanted = true; this.updatePause(s); }
      this.onStopCheck();
    });
  }

  /** Held client messages as frames, to put in front of the client's unread bytes. */
  heldFrames(): Buffer {
    return this.held.length ? Buffer.concat(this.held.map(([d, bin]) => maskedFrame(d, bin))) : Buffer.alloc(0);
  }

  get clientSocket(): net.Socket { return this.c.sock; }
  get backendSocket(): net.Socket { return this.b.sock; }

  /** Undo stop() (migration failed or rolled back). */
  resume(): void {
    this.stopping = false;
    for (const s of [this.c, this.b]) { s.stopWanted = false; this.updatePause(s); }
    if (this.held.length && !this.closing) this.drainHeld();
  }

  /** After a successful handoff: forget the sockets without closing anything. */
  relinquish(): void {
    this.ended = true;
    this.closing = true;
    this.clearTimers();
    for (const s of [this.c, this.b]) {
      s.ws.removeAllListeners();
      s.ws.on('error', noop);
      (s.ws as any)._receiver.removeAllListeners('conclude');
      s.sock.removeAllListeners('drain');
      s.sock.on('error', noop);
    }
  }
}

function noop(): void {}
