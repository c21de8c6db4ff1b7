// upstream peer: choose the server for a key (weighted rendezvous over healthy servers, the same
// function in every process and instance), connect to it, keep idle keep-alive connections.
import * as net from 'node:net';
import type { Backend, Config, Server } from '../conf/types';
import { pickServer } from '../routing';
import { ProxyError } from './errors';

const MAX_IDLE_PER_SERVER = 256;
const IDLE_KEEPALIVE_MS = 30_000;

export class Upstreams {
  private backends: Readonly<Record<string, Backend>>;
  private readonly down = new Set<string>();
  private readonly active = new Map<string, number>();
  private readonly idle = new Map<string, net.Socket[]>();

  constructor(config: Config) {
    this.backends = config.backends;
  }

  setConfig(config: Config): void {
    this.backends = config.backends;
  }

  backend(name: string): Backend {
    const b = this.backends[name];
    if (!b) throw new ProxyError('FDP_PROXY_NO_SERVER', `no backend "${name}"`);
    return b;
  }

  setHealth(serverId: string, up: boolean): void {
    if (up) this.down.delete(serverId); else this.down.add(serverId);
  }

  private readonly healthy = (s: Server) => !this.down.has(s.id);

  /** The server for a key; keyless requests go to the server this worker uses least. */
  pick(backendName: string, key: string | null): Server | null {
    const b = this.backend(backendName);
    if (key !== null) return pickServer(key, b.servers, this.healthy);
    let best: Server | null = null, bestLoad = Infinity;
    for (const s of b.servers) {
      if (this.down.has(s.id)) continue;
      const load = (this.active.get(s.id) ?? 0) / s.weight;
      if (load < bestLoad) { best = s; bestLoad = load; }
    }
    return best;
  }

  find(serverId: string): Server | null {
    for (const b of Object.values(this.backends)) for (const s of b.servers) if (s.id === serverId) return s;
    return null;
  }

  opened(server: Server): void { this.active.set(server.id, (this.active.get(server.id) ?? 0) + 1); }
  closed(server: Server): void { this.active.set(server.id, (this.active.get(server.id) ?? 1) - 1); }
  activeCount(serverId: string): number { return this.active.get(serverId) ?? 0; }
  activeSnapshot(): Record<string, number> { return Object.fromEntries(this.active); }

  /** A new connection to `server`; `cb` is called once, with an error coded for the client. */
  connect(server: Server, timeoutMs: number, cb: (err: ProxyError | null, sock: net.Socket | null) => void): void {
    const a = server.address;
    const sock = a.kind === 'unix' ? net.connect({ path: a.path, allowHalfOpen: true }) : net.connect({ host: a.host || '127.0.0.1', port: a.port, allowHalfOpen: true, noDelay: true });
    let done = false;
    const timer = setTimeout(() => finish(new ProxyError('FDP_PROXY_BACKEND_UNREACHABLE', `connect to ${server.id} timed out`, 'upstream', true)), timeoutMs);
    const finish = (err: ProxyError | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.removeListener('error', onError);
      sock.removeListener('connect', onConnect);
      if (err) { sock.destroy(); cb(err, null); } else cb(null, sock);
    };
    const onError = (e: Error) => {
      const code = (e as NodeJS.ErrnoException).code;
      // Out of fds here (EMFILE/ENFILE) is our own limit, not the backend's fault: 503 + Retry-After.
      if (code === 'EMFILE' || code === 'ENFILE') return finish(new ProxyError('FDP_PROXY_LIMIT_GLOBAL', `connect to ${server.id}: ${code}`, 'internal', true));
      finish(new ProxyError('FDP_PROXY_BACKEND_UNREACHABLE', `connect to ${server.id}: ${code ?? e.message}`, 'upstream', true));
    };
    const onConnect = () => finish(null);
    sock.once('error', onError);
    sock.once('connect', onConnect);
  }

  /** An idle keep-alive connection to `server`, or null. */
  takeIdle(server: Server): net.Socket | null {
    const list = this.idle.get(server.id);
    while (list && list.length) {
      const s = list.pop()!;
      s.removeAllListeners('close'); s.removeAllListeners('error'); s.removeAllListeners('timeout'); s.removeAllListeners('data');
      s.setTimeout(0);
      if (!s.destroyed && s.readyState === 'open') return s;
      s.destroy();
    }
    return null;
  }

  /** Keep a connection whose last response completed cleanly for reuse. */
  putIdle(server: Server, s: net.Socket): void {
    let list = this.idle.get(server.id);
    if (!list) this.idle.set(server.id, list = []);
    if (list.length >= MAX_IDLE_PER_SERVER || s.destroyed) { s.destroy(); return; }
    s.removeAllListeners('data'); s.removeAllListeners('end'); s.removeAllListeners('drain');
    s.removeAllListeners('close'); s.removeAllListeners('error');
    const drop = () => { const i = list!.indexOf(s); if (i >= 0) list!.splice(i, 1); s.destroy(); };
    s.on('close', drop); s.on('error', drop); s.on('data', drop); s.on('end', drop);
    s.setTimeout(IDLE_KEEPALIVE_MS, drop);
    s.resume();
    list.push(s);
  }

  idleCount(): number { let n = 0; for (const l of this.idle.values()) n += l.length; return n; }

  closeIdle(): void {
    for (const l of this.idle.values()) for (const s of l.splice(0)) s.destroy();
  }
}
