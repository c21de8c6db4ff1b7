// upstream peer: choose the server for a key (weighted rendezvous over healthy servers, the same
// function in every process and instance), connect to it, keep idle keep-alive connections.
import * as net from 'node:net';
import type { Backend, Config, Server } from '../conf/types';
import { pickServer } from '../routing';
import { ProxyError } from './errors';
import { connectRaw, endpointFromSocket, type Endpoint } from './endpoint';

const MAX_IDLE_PER_SERVER = 256;
const IDLE_KEEPALIVE_MS = 30_000;
const SWEEP_MS = 1_000;

/** Who gets a backend connection's events while an exchange uses it. */
export interface BackendUser {
  backendData(d: Buffer): void;
  backendEnd(): void;
  backendError(e: Error): void;
  backendClose(): void;
  backendDrain(): void;
}

/** First read buffer of a backend connection; one that a read fills is followed by a bigger one. */
const READ_BUF = 16 * 1024;
const READ_BUF_MAX = 64 * 1024;

/**
 * A backend connection with its listeners installed once: events go to the exchange using it;
 * while it waits in the pool (no user), any data, end, error or close drops it. Taking and
 * returning it costs no listener or timer changes (they were a visible share of each request).
 *
 * Reads land in this link's own buffer (net.Socket `onread`): no allocation, Readable.push or
 * 'data' event per read. `backendData` gets a view that is only valid during the call: a user
 * that keeps the bytes (a write still queued, a partial head) calls `keep()`, and the next read
 * goes to a new buffer.
 */
export class BackendLink {
  user: BackendUser | null = null;
  pooled = false;
  idleSince = 0;
  sock!: net.Socket;
  private buf = Buffer.allocUnsafe(READ_BUF);
  private kept = false;
  private full = false;
  constructor(readonly server: Server, private readonly pool: Upstreams) {}

  /** The socket options that route reads here (net.connect's `onread`). */
  readonly onread = {
    buffer: (): Buffer => {
      if (this.kept || (this.full && this.buf.length < READ_BUF_MAX)) {
        this.buf = Buffer.allocUnsafe(this.full ? READ_BUF_MAX : this.buf.length);
        this.kept = false;
      }
      this.full = false;
      return this.buf;
    },
    callback: (n: number, b: Buffer): void => {
      this.full = n === b.length;
      const u = this.user;
      if (u) u.backendData(b.subarray(0, n)); else this.drop();
    },
  };

  /** The bytes of the current read stay referenced (queued write): the next read gets a new buffer. */
  keep(): void { this.kept = true; }

  attach(sock: net.Socket): this {
    this.sock = sock;
    sock.on('end', () => { const u = this.user; if (u) u.backendEnd(); else this.drop(); });
    sock.on('error', (e: Error) => { const u = this.user; if (u) u.backendError(e); else this.drop(); });
    sock.on('close', () => { const u = this.user; if (u) u.backendClose(); else this.drop(); });
    sock.on('drain', () => { this.user?.backendDrain(); });
    return this;
  }
  private drop(): void { this.pool.unpool(this); this.sock.destroy(); }
}

/** A failed connect as the client will see it. Out of fds here (EMFILE/ENFILE) is our own limit,
 *  not the backend's fault: 503 + Retry-After. */
function connectFailure(server: Server, code: string): ProxyError {
  if (code === 'ETIMEDOUT') return new ProxyError('FDP_PROXY_BACKEND_UNREACHABLE', `connect to ${server.id} timed out`, 'upstream', true);
  if (code === 'EMFILE' || code === 'ENFILE') return new ProxyError('FDP_PROXY_LIMIT_GLOBAL', `connect to ${server.id}: ${code}`, 'internal', true);
  return new ProxyError('FDP_PROXY_BACKEND_UNREACHABLE', `connect to ${server.id}: ${code}`, 'upstream', true);
}

export class Upstreams {
  private backends: Readonly<Record<string, Backend>>;
  private readonly down = new Set<string>();
  private readonly active = new Map<string, number>();
  private readonly idle = new Map<string, BackendLink[]>();
  private sweeper: NodeJS.Timeout | null = null;
  private byId = new Map<string, Server>();   // every server by id (looked up on each tunnel's open and close)

  constructor(config: Config) {
    this.backends = config.backends;
    this.index();
  }

  setConfig(config: Config): void {
    this.backends = config.backends;
    this.index();
  }

  private index(): void {
    const m = new Map<string, Server>();
    let longest = 0;
    for (const b of Object.values(this.backends)) {
      for (const s of b.servers) if (!m.has(s.id)) m.set(s.id, s);
      longest = Math.max(longest, b.passive.fail_timeout);
    }
    this.byId = m;
    this.longestWindow = longest;
  }

  backend(name: string): Backend {
    const b = this.backends[name];
    if (!b) throw new ProxyError('FDP_PROXY_NO_SERVER', `no backend "${name}"`);
    return b;
  }

  setHealth(serverId: string, up: boolean): void {
    if (up) { this.down.delete(serverId); this.failed.delete(serverId); } else this.down.add(serverId);
  }

  /** The whole down-set, as the supervisor's health check has it now (with each config). */
  setDown(serverIds: string[]): void {
    this.down.clear();
    for (const id of serverIds) this.down.add(id);
  }

  /** Passive health: servers a connect just failed on (refused, reset, unreachable, timed out),
   *  and when. Picks for a backend skip them, in this worker, for that backend's
   *  `passive.fail_timeout` (or until the active check says the server is up): their keys go to
   *  their next server in rendezvous order, as when the check marks a server down, instead of a
   *  502 for every request until it does. The time is kept, not a deadline: a server listed in
   *  two backends is skipped by each for its own window. */
  private readonly failed = new Map<string, number>();
  /** fail_timeout of the backend pick() is choosing for: set around the synchronous pickAmong,
   *  so `healthy` stays one closure instead of one allocated per pick. */
  private window = 0;
  /** The longest fail_timeout of any backend: a failure older than that is forgotten. */
  private longestWindow = 0;
  private readonly healthy = (s: Server) => !this.down.has(s.id) && (this.failed.size === 0 || !this.isFailed(s.id));
  private isFailed(id: string): boolean {
    const at = this.failed.get(id);
    if (at === undefined) return false;
    const age = Date.now() - at;
    if (age < this.window) return true;
    if (age >= this.longestWindow) this.failed.delete(id);
    return false;
  }

  /** Connect with `connect` (connectLink, connectEndpoint) to `server` and, when that fails for
   *  the server's sake, to the key's next server while there is one: nothing has been sent yet, so
   *  any request may go there (passive health: the failed server is skipped for the backend's
   *  passive.fail_timeout). With fail_timeout 0 nothing is recorded: this request still goes to
   *  the next server it has not tried, the next one tries the key's own server again. `cb` gets
   *  the server used. `gone()`: the client left meanwhile, no further attempt. */
  connectFailover<T>(server: Server, backendName: string, key: string | null, gone: () => boolean,
                     connect: (s: Server, cb: (err: ProxyError | null, x: T | null) => void) => void,
                     cb: (err: ProxyError | null, x: T | null, server: Server) => void): void {
    const b = this.backend(backendName);
    const n = b.servers.length;
    let tried: string[] | null = null;   // passive off only: this request's servers so far
    const attempt = (s: Server, tries: number): void => connect(s, (err, x) => {
      if (err && !gone() && err.code === 'FDP_PROXY_BACKEND_UNREACHABLE') {
        let next: Server | null = null;
        if (b.passive.fail_timeout > 0) {
          this.failed.set(s.id, Date.now());   // not our own fd limit: the server's fault
          if (tries < n) next = this.pick(backendName, key);
        } else if (tries < n) {
          (tried ??= []).push(s.id);
          next = this.pickAmong(b, key, (c) => !this.down.has(c.id) && !tried!.includes(c.id));
        }
        if (next && next.id !== s.id) return attempt(next, tries + 1);
      }
      cb(err, x, s);
    });
    attempt(server, 1);
  }

  /** The server for a key; keyless requests go to the server this worker uses least. Servers a
   *  connect just failed on are skipped while another is up; when every one has failed, they are
   *  tried again (the active check's "down" is final). */
  pick(backendName: string, key: string | null): Server | null {
    const b = this.backend(backendName);
    if (b.passive.fail_timeout === 0) return this.pickAmong(b, key, this.notDown);   // passive off
    this.window = b.passive.fail_timeout;
    const s = this.pickAmong(b, key, this.healthy);
    return s !== null || this.failed.size === 0 ? s : this.pickAmong(b, key, this.notDown);
  }
  private readonly notDown = (s: Server) => !this.down.has(s.id);
  private pickAmong(b: Backend, key: string | null, ok: (s: Server) => boolean): Server | null {
    if (key !== null) return pickServer(key, b.servers, ok);
    let best: Server | null = null, bestLoad = Infinity;
    for (const s of b.servers) {
      if (!ok(s)) continue;
      const load = (this.active.get(s.id) ?? 0) / s.weight;
      if (load < bestLoad) { best = s; bestLoad = load; }
    }
    return best;
  }

  find(serverId: string): Server | null {
    return this.byId.get(serverId) ?? null;
  }

  opened(server: Server): void { this.active.set(server.id, (this.active.get(server.id) ?? 0) + 1); }
  closed(server: Server): void { this.active.set(server.id, (this.active.get(server.id) ?? 1) - 1); }
  activeCount(serverId: string): number { return this.active.get(serverId) ?? 0; }
  activeSnapshot(): Record<string, number> { return Object.fromEntries(this.active); }

  /** A new connection to `server`; `cb` is called once, with an error coded for the client. */
  connect(server: Server, timeoutMs: number, cb: (err: ProxyError | null, sock: net.Socket | null) => void,
          onread?: BackendLink['onread']): void {
    const a = server.address;
    const sock = a.kind === 'unix' ? net.connect({ path: a.path, allowHalfOpen: true, onread } as net.NetConnectOpts)
      : net.connect({ host: a.host || '127.0.0.1', port: a.port, allowHalfOpen: true, noDelay: true, onread } as net.NetConnectOpts);
    let done = false;
    const timer = setTimeout(() => finish(connectFailure(server, 'ETIMEDOUT')), timeoutMs);
    const finish = (err: ProxyError | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.removeListener('error', onError);
      sock.removeListener('connect', onConnect);
      if (err) { sock.destroy(); cb(err, null); } else cb(null, sock);
    };
    const onError = (e: Error) => finish(connectFailure(server, (e as NodeJS.ErrnoException).code ?? e.message));
    const onConnect = () => finish(null);
    sock.once('error', onError);
    sock.once('connect', onConnect);
  }

  /** connect() for a WebSocket tunnel: the connection as an endpoint (a raw handle for TCP to
   *  a numeric address; otherwise connect() and the socket's handle taken over). */
  connectEndpoint(server: Server, timeoutMs: number, cb: (err: ProxyError | null, ep: Endpoint | null) => void): void {
    const a = server.address;
    if (a.kind === 'tcp' && connectRaw(a.host || '127.0.0.1', a.port, timeoutMs, (code, ep) => code ? cb(connectFailure(server, code), null) : cb(null, ep))) return;
    this.connect(server, timeoutMs, (err, sock) => cb(err, sock ? endpointFromSocket(sock) : null));
  }

  /** A new keep-alive connection for HTTP exchanges: reads go to the link (`onread`), its
   *  listeners are installed once, for its whole life. */
  connectLink(server: Server, timeoutMs: number, cb: (err: ProxyError | null, link: BackendLink | null) => void): void {
    const link = new BackendLink(server, this);
    this.connect(server, timeoutMs, (err, sock) => cb(err, sock ? link.attach(sock) : null), link.onread);
  }

  /** An idle keep-alive connection to `server`, now used by `user`, or null. */
  takeIdle(server: Server, user: BackendUser): BackendLink | null {
    const list = this.idle.get(server.id);
    while (list && list.length) {
      const l = list.pop()!;
      l.pooled = false;
      if (!l.sock.destroyed && l.sock.readyState === 'open') { l.user = user; return l; }
      l.sock.destroy();
    }
    return null;
  }

  /** Keep a connection whose last response completed cleanly for reuse. */
  putIdle(l: BackendLink): void {
    l.user = null;
    let list = this.idle.get(l.server.id);
    if (!list) this.idle.set(l.server.id, list = []);
    if (list.length >= MAX_IDLE_PER_SERVER || l.sock.destroyed) { l.sock.destroy(); return; }
    l.pooled = true;
    l.idleSince = Date.now();
    l.sock.resume();   // an exchange may have paused it (backpressure): we must see its close
    list.push(l);
    // Idle expiry by a coarse sweep instead of a timer set and cleared on every request.
    this.sweeper ??= setInterval(this.sweep, SWEEP_MS).unref();
  }

  /** A pooled connection closed or sent something: it leaves the pool. */
  unpool(l: BackendLink): void {
    if (!l.pooled) return;
    l.pooled = false;
    const list = this.idle.get(l.server.id);
    const i = list ? list.indexOf(l) : -1;
    if (i >= 0) list!.splice(i, 1);
  }

  private readonly sweep = () => {
    const old = Date.now() - IDLE_KEEPALIVE_MS;
    let any = false;
    for (const list of this.idle.values()) {
      // Oldest first: connections are taken from and returned to the end.
      let n = 0;
      while (n < list.length && list[n].idleSince <= old) n++;
      for (const l of list.splice(0, n)) { l.pooled = false; l.sock.destroy(); }
      if (list.length) any = true;
    }
    if (!any && this.sweeper) { clearInterval(this.sweeper); this.sweeper = null; }
  };

  idleCount(): number { let n = 0; for (const l of this.idle.values()) n += l.length; return n; }

  closeIdle(): void {
    for (const list of this.idle.values()) for (const l of list.splice(0)) { l.pooled = false; l.sock.destroy(); }
  }
}
