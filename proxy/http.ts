// HTTP/1.1 proxying on one client connection: one exchange at a time (pipelined requests wait
// their turn, in order), bodies streamed through unchanged in both directions, keep-alive to
// the backend through the worker's pool. Between requests the connection can leave this worker.
import type * as net from 'node:net';
import type { Route, Server } from '../conf/types';
import { errorResponse, ProxyError } from './errors';
import { HeadReader, type RequestHead } from './head';
import { BodyFramer, parseResponseHead, responseBody, responseSaysClose, type ResponseHead } from './framing';
import { findHeadEnd } from './head';
import { backendRequestHead, clientResponseHead, clientResponseInPlace } from './forward';
import type { BackendLink, BackendUser, Upstreams } from './backend';
import { rawPending, writeFast } from './rawwrite';
import { ClientReads } from './rawread';

const MAX_RESPONSE_HEAD = 64 * 1024;
/** Up to this many body bytes are moved in the read buffer to follow the rewritten response head. */
const COPY_BODY_MAX = 16 * 1024;
/** The framer of every request without a body (done from the start, never fed, never changed). */
const NO_BODY = new BodyFramer('none');

export interface HttpContext {
  clientIp: string;
  proto: 'http' | 'https';
  headBytes: number;
  headTimeout: number;
  idleTimeout: number;
}

export interface HttpHooks {
  upstreams: Upstreams;
  /** Which route/key a later request on this connection belongs to; null → 404. */
  route(head: RequestHead, ip: string): { route: Route; key: string | null } | { error: string } | null;
  /** True when the key belongs to this worker; otherwise the connection is handed back. */
  owns(route: Route, key: string | null, current: { route: string; key: string | null }): boolean;
  /** Hand the idle connection (with the bytes of its next request) back to the acceptor. */
  reroute(conn: HttpConn, bytes: Buffer): void;
  /** One request done (for logs and metrics). */
  done(conn: HttpConn, info: { route: string; key: string | null; server: string | null; status: number; bytesIn: number; bytesOut: number; ms: number; method: string; url: string }): void;
  closed(conn: HttpConn): void;
  /** An upgrade arriving on a keep-alive connection is handed to the WebSocket path. */
  upgrade(conn: HttpConn, head: RequestHead, bytes: Buffer, route: Route, key: string | null): void;
  /** An exchange ended and the connection stays open with no next request started yet (its
   *  response may still be queued for the client): the worker may move it now (a moved key). */
  rested(conn: HttpConn): void;
}

export class HttpConn implements BackendUser {
  private reader: HeadReader | null = null;
  private pending: Buffer | null = null;   // client bytes not yet consumed (pipelined requests)
  private backend: net.Socket | null = null;
  private link: BackendLink | null = null;
  private server: Server | null = null;
  private reqFramer: BodyFramer | null = null;
  private resFramer: BodyFramer | null = null;
  private resHeadBuf: Buffer | null = null;
  private head: RequestHead | null = null;
  private status = 0;
  private started = 0;
  private bytesIn = 0;
  private bytesOut = 0;
  private mustClose = false;
  // The backend connection can serve another request. Separate from mustClose: a client's
  // `Connection: close` ends the client connection only, the backend one goes back to the pool.
  private backendReusable = true;
  private reqDone = false;
  private resDone = false;
  private responded = false;  // a final response head went to the client
  private reused = false;
  // response_timeout: one timer per connection, re-armed only when it fires early (a timer set and
  // cleared per request was a visible share of each request). 0: no response awaited.
  private resDeadline = 0;
  private resTimer: NodeJS.Timeout | null = null;
  private resTimerAt = 0;
  private clientTimeout = 0;  // what client.setTimeout was last given
  private closedFlag = false;
  private first = true;
  private headTimer: NodeJS.Timeout | null = null;  // absolute head_timeout from a head's first byte (slowloris)
  leaving = false;            // handed off
  private moving: Buffer | null = null;  // a request for another worker, waiting for our writes to drain
  private movingTimer: NodeJS.Timeout | null = null;
  private readonly reads: ClientReads;  // client bytes straight from the handle while we own it

  constructor(readonly client: net.Socket, readonly ctx: HttpContext, public routeName: string, public key: string | null,
              private readonly routeOf: (name: string) => Route | null, private readonly hooks: HttpHooks) {
    client.on('data', this.onClientData);   // bytes that still come through net (put back by a rollback)
    this.reads = new ClientReads(client, this.onClientData);
    client.on('end', this.onClientEnd);
    client.on('error', this.onClientError);
    client.on('close', this.onClientClose);
    client.on('timeout', this.onClientTimeout);
    client.on('drain', this.onClientDrain);
  }

  /** client.setTimeout, only when it changes (each call allocates or clears a timer). */
  private setClientTimeout(ms: number): void {
    if (ms === this.clientTimeout) return;
    this.clientTimeout = ms;
    this.client.setTimeout(ms);
  }

  // Not idle while a response write is still queued in libuv (rawwrite.ts): the socket cannot move yet.
  get idle(): boolean { return this.head === null && (this.reader === null || this.reader.length === 0) && !this.pending && this.moving === null && rawPending(this.client) === 0; }
  get isClosed(): boolean { return this.closedFlag; }
  /** A request is being proxied (from its head to the end of its response). */
  get inExchange(): boolean { return this.head !== null; }

  /** Start with the bytes the acceptor (or a previous worker) read. */
  start(bytes: Buffer): void {
    this.reader = new HeadReader(this.ctx.headBytes);
    if (bytes.length) this.onClientData(bytes);
    else this.setClientTimeout(this.ctx.idleTimeout);
  }

  private readonly onClientData = (d: Buffer) => {
    if (this.head === null) return this.readHead(d);
    if (!this.reqDone) return this.requestBody(d, 0);
    // Pipelined bytes while an exchange is in flight: keep them for later, read no more.
    this.pending = this.pending ? Buffer.concat([this.pending, d]) : d;
    this.reads.pause();
  };

  private readHead(d: Buffer): void {
    if (!this.reader) this.reader = new HeadReader(this.ctx.headBytes);
    let head: RequestHead | null;
    try { head = this.reader.push(d); } catch (e) { return this.fail(e as ProxyError); }
    if (head === null) {
      this.setClientTimeout(this.ctx.headTimeout);
      this.headTimer ??= setTimeout(this.onHeadTimeout, this.ctx.headTimeout);
      return;
    }
    this.clearHeadTimer();
    // During an exchange the client's idle timeout may stay armed: onClientTimeout ignores it
    // while a request is in flight (the backend timers own that time), and any byte re-arms it.
    if (this.clientTimeout === this.ctx.headTimeout) this.setClientTimeout(this.ctx.idleTimeout);
    const bytes = this.reader.bytes;
    this.reader = null;
    let route: Route | null;
    let key = this.key;
    if (this.first) {
      route = this.routeOf(this.routeName);
      this.first = false;
    } else {
      const r = this.hooks.route(head, this.ctx.clientIp);
      if (r === null) { this.pending = bytes.length > head.headEnd ? bytes.subarray(head.headEnd) : null; return this.fail(new ProxyError('FDP_ROUTE_NO_MATCH', 'no route', 'downstream'), head); }
      if ('error' in r) return this.fail(new ProxyError(r.error, 'route error', 'downstream'));
      if (!this.hooks.owns(r.route, r.key, { route: this.routeName, key: this.key })) {
        // A pipelined request whose previous response is still queued for the client (in libuv or
        // in the socket) cannot move with the fd yet: it moves once that is written out. The
        // client's idle timeout bounds the wait (it must read for the queue to drain).
        if (this.writesQueued()) {
          // A check every 20 ms, not 'drain': that comes only after a write that said "wait" (a
          // small one queued behind a raw write does not). This path is rare.
          this.moving = bytes;
          this.reads.pause();
          this.movingTimer = setInterval(this.onMovingCheck, 20);
          return;
        }
        this.reroute(bytes);
        return;
      }
      route = r.route; key = r.key; this.routeName = route.name; this.key = key;
    }
    if (!route) return this.fail(new ProxyError('FDP_ROUTE_NO_MATCH', 'route gone', 'downstream'));
    if (head.websocket) {
      this.detach();
      this.hooks.upgrade(this, head, bytes, route, key);
      return;
    }
    this.exchange(head, bytes, route, key);
  }

  /** Bytes of ours still queued for the client (a response the client has not read yet). */
  writesQueued(): boolean { return rawPending(this.client) > 0 || this.client.writableLength > 0; }

  private reroute(bytes: Buffer): void {
    this.leaving = true;
    this.detach();
    this.hooks.reroute(this, bytes);
  }

  private readonly onMovingCheck = () => {
    if (this.moving === null) return;
    if (this.closedFlag || this.client.destroyed) { this.stopMoving(); return; }
    if (this.writesQueued()) return;
    const b = this.moving;
    this.stopMoving();
    this.reroute(b);
  };

  private stopMoving(): void {
    this.moving = null;
    if (this.movingTimer) { clearInterval(this.movingTimer); this.movingTimer = null; }
  }

  private exchange(head: RequestHead, bytes: Buffer, route: Route, key: string | null): void {
    this.head = head;
    this.started = Date.now();
    this.status = 0; this.bytesIn = 0; this.bytesOut = 0;
    this.reqDone = false; this.resDone = false; this.responded = false; this.mustClose = !head.keepAlive;
    this.backendReusable = true;
    this.reqFramer = head.chunked ? new BodyFramer('chunked') : head.contentLength > 0 ? new BodyFramer('length', head.contentLength) : NO_BODY;
    this.reqDone = this.reqFramer.done;
    const picked = this.hooks.upstreams.pick(route.backend, key);
    if (!picked) return this.fail(new ProxyError('FDP_PROXY_NO_SERVER', `no healthy server in "${route.backend}"`, 'upstream'));
    let server: Server = picked;
    this.server = server;
    const backend = this.hooks.upstreams.backend(route.backend);
    const send = (link: BackendLink) => {
      link.user = this;
      this.link = link;
      const sock = link.sock;
      this.backend = sock;
      this.hooks.upstreams.opened(server);
      this.armResponseTimer(this.started + backend.response_timeout);
      // latin1: header bytes go out exactly as they came in (obs-text included).
      if (bytes.length > head.headEnd) {
        // Head and the body bytes already read leave in one writev.
        sock.cork();
        sock.write(backendRequestHead(head, this.ctx), 'latin1');
        this.requestBody(bytes, head.headEnd);
        sock.uncork();
      } else writeFast(sock, backendRequestHead(head, this.ctx));
    };
    const idle = this.hooks.upstreams.takeIdle(server, this);
    this.reused = idle !== null;
    if (idle) return send(idle);
    this.reads.pause();
    const ups = this.hooks.upstreams;
    ups.connectFailover<BackendLink>(server, route.backend, key, () => this.closedFlag, (s, cb) => ups.connectLink(s, backend.connect_timeout, cb), (err, link, used) => {
      if (this.closedFlag) { link?.sock.destroy(); return; }
      this.reads.resume();
      this.server = server = used;
      if (err) return this.fail(err);
      send(link!);
    });
  }

  private requestBody(d: Buffer, start: number): void {
    let n: number;
    try { n = this.reqFramer!.feed(d, start); } catch (e) { return this.fail(e as ProxyError); }
    if (n > 0) {
      this.bytesIn += n;
      if (!writeFast(this.backend!, start === 0 && n === d.length ? d : d.subarray(start, start + n))) this.reads.pause();
    }
    if (this.reqFramer!.done) {
      this.reqDone = true;
      if (start + n < d.length) { this.pending = d.subarray(start + n); this.reads.pause(); }
      this.maybeNext();
    }
  }

  backendDrain(): void { if (!this.reqDone) this.reads.resume(); }
  private readonly onClientDrain = () => { this.backend?.resume(); };

  /** `d` (a view of the link's read buffer) was written to the client and is still queued there. */
  private keepIfQueued(): void { if (this.writesQueued()) this.link?.keep(); }

  /** `d` is a view of the backend link's read buffer, valid during this call only (see BackendLink). */
  backendData(d: Buffer): void {
    if (this.resFramer === null) return this.responseHead(d);
    this.responseBody(d, 0);
  }

  private responseHead(d: Buffer): void {
    const buf: Buffer = this.resHeadBuf ? Buffer.concat([this.resHeadBuf, d]) : d;
    const end = findHeadEnd(buf, 0);
    if (end < 0) {
      if (buf.length > MAX_RESPONSE_HEAD) return this.fail(new ProxyError('FDP_PROXY_BACKEND_BAD_RESPONSE', 'response head too large', 'upstream'));
      this.resHeadBuf = buf === d ? Buffer.from(d) : buf;  // d is only lent (see backendData)
      return;
    }
    this.resHeadBuf = null;
    let res: ResponseHead;
    try { res = parseResponseHead(buf, end); } catch (e) { return this.fail(e as ProxyError); }
    if (res.status < 200) {
      if (res.status === 101) return this.fail(new ProxyError('FDP_PROXY_BACKEND_BAD_RESPONSE', '101 to a plain request', 'upstream'));
      // 100 Continue and other interim responses go to the client as they are.
      this.client.write(clientResponseHead(res, { close: false, chunked: false, keepAlive10: false }), 'latin1');
      if (end < buf.length) this.responseHead(buf.subarray(end));
      return;
    }
    this.resDeadline = 0;
    this.status = res.status;
    const body = responseBody(res, this.head!.method);
    if (body.kind === 'close') this.mustClose = true;
    if (!this.reqDone) this.mustClose = true;  // answered before the request body ended: cannot reuse either side
    if (body.kind === 'close' || !this.reqDone || responseSaysClose(res)) this.backendReusable = false;
    const framer = this.resFramer = new BodyFramer(body.kind, body.length, 'FDP_PROXY_BACKEND_BAD_RESPONSE');
    this.responded = true;
    const opts = { close: this.mustClose, chunked: body.kind === 'chunked', keepAlive10: this.head!.versionMinor === 0 && !this.mustClose };
    // The body bytes of this read that belong to the response.
    let n = 0;
    if (!framer.done && end < buf.length) {
      try { n = framer.feed(buf, end); } catch (e) {
        this.client.write(clientResponseHead(res, opts), 'latin1');
        return this.fail(e as ProxyError);
      }
    }
    this.bytesOut += n;
    // Usually the response head is rewritten in the read buffer itself and leaves with the body
    // bytes of this read in one write; otherwise head string + body bytes in one writev.
    const len = n <= COPY_BODY_MAX ? clientResponseInPlace(res, opts, n) : -1;
    let ok: boolean;
    if (len >= 0) ok = writeFast(this.client, buf.subarray(0, len));
    else {
      this.client.cork();
      ok = this.client.write(clientResponseHead(res, opts), 'latin1');
      if (n > 0) ok = this.client.write(buf.subarray(end, end + n));
      this.client.uncork();
    }
    this.keepIfQueued();
    if (!ok) this.backend?.pause();
    if (framer.done) {
      this.resDone = true;
      if (end + n < buf.length) this.mustClose = true, this.backendReusable = false;  // bytes after the response: the backend connection is not reusable
      this.maybeNext();
    }
  }

  private responseBody(d: Buffer, start: number): void {
    let n: number;
    try { n = this.resFramer!.feed(d, start); } catch (e) { return this.fail(e as ProxyError); }
    if (n > 0) {
      this.bytesOut += n;
      if (!writeFast(this.client, start === 0 && n === d.length ? d : d.subarray(start, start + n))) this.backend?.pause();
      this.keepIfQueued();
    }
    if (this.resFramer!.done) {
      this.resDone = true;
      if (start + n < d.length) this.mustClose = true, this.backendReusable = false;  // bytes after the response: the backend connection is not reusable
      this.maybeNext();
    }
  }

  backendEnd(): void {
    if (this.resFramer && this.resFramer.kind === 'close' && !this.resDone) {
      this.resFramer.done = true; this.resDone = true; this.mustClose = true; this.backendReusable = false;
      return this.maybeNext();
    }
    if (!this.resDone) this.backendFailed('closed');
  }
  backendError(e: Error): void { if (!this.resDone) this.backendFailed((e as any).code ?? e.message); }
  backendClose(): void { if (!this.resDone && this.backend) this.backendFailed('closed'); }

  private backendFailed(why: string): void {
    // A reused keep-alive connection the backend closed just before our request: retry once on a
    // fresh one when nothing was sent that cannot be sent again.
    if (this.reused && !this.responded && this.resHeadBuf === null && this.bytesIn === 0 && this.head && this.reqDone) {
      const head = this.head;
      this.releaseBackend(false);
      this.head = null;
      const route = this.routeOf(this.routeName)!;
      this.exchange(head, Buffer.alloc(head.headEnd), route, this.key);
      return;
    }
    this.fail(new ProxyError('FDP_PROXY_BACKEND_RESET', `backend ${why}`, 'upstream'));
  }

  /** A response is due by `deadline` (ms since the epoch). */
  private armResponseTimer(deadline: number): void {
    this.resDeadline = deadline;
    // The timer already armed fires no later than this deadline: it re-arms itself then.
    if (this.resTimer !== null && this.resTimerAt <= deadline) return;
    if (this.resTimer !== null) clearTimeout(this.resTimer);
    const ms = Math.max(1, deadline - Date.now());
    this.resTimerAt = Date.now() + ms;
    this.resTimer = setTimeout(this.onResponseTimer, ms);
  }
  private stopResponseTimer(): void {
    this.resDeadline = 0;
    if (this.resTimer !== null) { clearTimeout(this.resTimer); this.resTimer = null; }
  }

  private readonly onResponseTimer = () => {
    this.resTimer = null;
    if (this.resDeadline === 0 || this.closedFlag) return;
    if (Date.now() < this.resDeadline) return this.armResponseTimer(this.resDeadline);
    this.resDeadline = 0;
    this.fail(new ProxyError('FDP_PROXY_BACKEND_TIMEOUT', 'backend did not answer in time', 'upstream'));
  };

  private releaseBackend(reuse: boolean): void {
    const l = this.link;
    this.resDeadline = 0;
    if (!l) return;
    this.link = null; this.backend = null;
    l.user = null;
    if (this.server) this.hooks.upstreams.closed(this.server);
    if (reuse && this.server && rawPending(l.sock) === 0) this.hooks.upstreams.putIdle(l);
    else l.sock.destroy();
  }

  private maybeNext(): void {
    if (!this.reqDone || !this.resDone) return;
    const head = this.head!;
    this.releaseBackend(this.backendReusable);
    this.hooks.done(this, { route: this.routeName, key: this.key, server: this.server?.id ?? null, status: this.status,
      bytesIn: this.bytesIn, bytesOut: this.bytesOut, ms: Date.now() - this.started, method: head.method, url: head.url });
    this.head = null; this.resFramer = null; this.reqFramer = null; this.server = null;
    // The next request has no response yet: a head error on it must get its 400/408/431.
    this.responded = false;
    if (this.mustClose) { this.client.end(); return; }
    this.reader = new HeadReader(this.ctx.headBytes);
    this.setClientTimeout(this.ctx.idleTimeout);
    const p = this.pending;
    this.pending = null;
    if (p) this.onClientData(p);
    if (!this.leaving && !this.closedFlag && (this.head === null || !this.reqDone)) this.reads.resume();
    if (this.head === null && !this.leaving && !this.closedFlag) this.hooks.rested(this);
  }

  /** Answer an error (if no response started yet) and close. */
  private fail(err: ProxyError, head?: RequestHead): void {
    if (this.closedFlag) return;
    this.clearHeadTimer();
    const status = Number(errorResponse(err.code).toString('latin1', 9, 12));
    if (err.code === 'FDP_ROUTE_NO_MATCH' && head && head.keepAlive && !this.responded) {
      // 404 keeps the connection: the request had no body we need to skip (or we close).
      if (head.contentLength <= 0 && !head.chunked) {
        this.client.write(errorResponse(err.code));
        this.hooks.done(this, { route: '', key: null, server: null, status, bytesIn: 0, bytesOut: 0, ms: 0, method: head.method, url: head.url });
        this.reader = new HeadReader(this.ctx.headBytes);
        const p = this.pending; this.pending = null;
        if (p) this.onClientData(p);
        return;
      }
    }
    if (!this.responded) this.client.end(errorResponse(err.code));
    else this.client.destroy();
    if (this.head) this.hooks.done(this, { route: this.routeName, key: this.key, server: this.server?.id ?? null, status: this.responded ? this.status : status,
      bytesIn: this.bytesIn, bytesOut: this.bytesOut, ms: Date.now() - this.started, method: this.head.method, url: this.head.url });
    this.head = null;
    this.releaseBackend(false);
    this.stopResponseTimer();
    this.closedFlag = true;
    this.setClientTimeout(0);
    setTimeout(() => this.client.destroy(), 5000).unref();
  }

  private readonly onClientEnd = () => {
    // Not end() twice: after a `Connection: close` response it already ended, and a second end()
    // builds an ERR_STREAM_ALREADY_FINISHED error (with its stack) for nobody, once per connection.
    if (this.head === null || this.responded && this.resDone) { if (!this.client.writableEnded) this.client.end(); }
    else if (!this.reqDone) this.client.destroy();
    // else: the request is complete, the client half-closed: finish the response first.
  };
  private readonly onClientError = () => { this.client.destroy(); };
  private readonly onClientClose = () => {
    this.clearHeadTimer();
    this.stopResponseTimer();
    this.stopMoving();
    if (this.leaving) return;
    this.releaseBackend(false);
    if (!this.closedFlag) { this.closedFlag = true; }
    this.hooks.closed(this);
  };
  private clearHeadTimer(): void { if (this.headTimer) { clearTimeout(this.headTimer); this.headTimer = null; } }
  private readonly onHeadTimeout = () => {
    this.headTimer = null;
    if (this.head !== null || this.leaving || this.closedFlag) return;
    this.fail(new ProxyError('FDP_PROXY_HEAD_TIMEOUT', 'head timeout', 'downstream'));
  };
  private readonly onClientTimeout = () => {
    if (this.head !== null) return;  // the backend timers own an exchange in flight
    if (this.reader && this.reader.length > 0) { this.fail(new ProxyError('FDP_PROXY_HEAD_TIMEOUT', 'head timeout', 'downstream')); return; }
    this.client.end();
  };

  /** Stop handling this socket (it moves on: another worker, or the WebSocket path). */
  detach(): void {
    const c = this.client;
    c.removeListener('data', this.onClientData); c.removeListener('end', this.onClientEnd);
    c.removeListener('error', this.onClientError); c.removeListener('close', this.onClientClose);
    c.removeListener('timeout', this.onClientTimeout); c.removeListener('drain', this.onClientDrain);
    this.stopMoving();
    this.reads.release();
    this.setClientTimeout(0);
    this.clearHeadTimer();
    this.stopResponseTimer();
  }

  /** The connection is idle between requests: close it (stop/drain). */
  closeIdle(): void { if (this.idle) this.client.end(); }
}
