// Admin endpoint, served by the supervisor: /healthz, /status (JSON), /metrics (Prometheus),
// POST /reload, /drain?slot=N, /move?key=K&slot=N, and the dashboard at /.
import * as http from 'node:http';
import type { Supervisor, Child } from './supervisor';
import { renderMetrics, acceptorsOf } from './metrics';
import type * as Dashboard from './dashboard';

export function startAdmin(sup: Supervisor, cb: (err: Error | null, address: string | null) => void): http.Server | null {
  const a = sup.config.admin;
  if (!a) { cb(null, null); return null; }
  const sampler = setInterval(() => sample(sup), 1000).unref();
  const srv = http.createServer((req, res) => handle(sup, req, res).catch(e => {
    res.writeHead(500, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: String(e) }));
  }));
  srv.on('error', e => { clearInterval(sampler); cb(e, null); });
  srv.on('close', () => clearInterval(sampler));
  const done = () => {
    const ad = srv.address();
    cb(null, typeof ad === 'string' ? `unix:${ad}` : ad ? `${ad.address.includes(':') ? `[${ad.address}]` : ad.address}:${ad.port}` : null);
  };
  if (a.kind === 'unix') srv.listen(a.path, done);
  else srv.listen(a.port, a.host || '127.0.0.1', done);
  return srv;
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  const b = JSON.stringify(body, null, 1);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(b);
}

// ---------------------------------------------------------------- history for the dashboard

/** One sample a second over the last HISTORY_S seconds, and the last events (migrations,
 *  reloads, restarts), kept here so a dashboard opened now still sees the last minutes. */
const HISTORY_S = 600;
interface Sample { t: number; connections: number; websockets: number; http: number; handoffs: number; migrations: number; per_worker: Record<string, number> }
interface Event { t: number; kind: string; text: string; slot?: number; count?: number }
const samples: Sample[] = [];
const events: Event[] = [];
let last: { handoffs: number; migrations: Map<string, { out: number; in: number }>; totals: Record<string, number>; gen: number } | null = null;

const ctr = (c: Child, name: string) => Number((c.stats?.counters as Record<string, number> | undefined)?.[name] ?? 0);
function pushEvent(e: Event): void { events.push(e); if (events.length > 200) events.splice(0, events.length - 200); }

function sample(sup: Supervisor): void {
  const ws = [...sup.workers.values(), ...sup.retiring];
  const handoffs = acceptorsOf(sup).reduce((a, c) => a + ctr(c, 'handoffs'), 0);
  const mig = new Map(ws.map(w => [`${w.gen}:${w.slot}`, { out: ctr(w, 'migrations_done'), in: ctr(w, 'migrations_in') }]));
  const now = Date.now();
  let moved = 0;
  if (last) {
    for (const w of ws) {
      const id = `${w.gen}:${w.slot}`, cur = mig.get(id)!, prev = last.migrations.get(id) ?? { out: 0, in: 0 };
      const out = cur.out - prev.out, inn = cur.in - prev.in;
      if (out > 0) { moved += out; pushEvent({ t: now, kind: 'migration_out', slot: w.slot, count: out, text: `${out} connection${out > 1 ? 's' : ''} moved out of worker ${w.slot} (gen ${w.gen})` }); }
      if (inn > 0) pushEvent({ t: now, kind: 'migration_in', slot: w.slot, count: inn, text: `${inn} connection${inn > 1 ? 's' : ''} moved into worker ${w.slot} (gen ${w.gen})` });
    }
    const T = sup.totals as unknown as Record<string, number>;
    if (T.reloads_ok > (last.totals.reloads_ok ?? 0)) pushEvent({ t: now, kind: 'reload', text: `reloaded: generation ${sup.gen}` });
    if (T.reloads_failed > (last.totals.reloads_failed ?? 0)) pushEvent({ t: now, kind: 'reload_failed', text: 'reload refused (config invalid): still running the previous one' });
    if (T.worker_restarts > (last.totals.worker_restarts ?? 0)) pushEvent({ t: now, kind: 'restart', text: 'a worker died and was restarted in its slot' });
  }
  const conns = (c: Child) => Number(c.stats?.open_ws ?? 0) + Number(c.stats?.open_http ?? 0);
  samples.push({
    t: now, connections: ws.reduce((a, c) => a + conns(c), 0),
    websockets: ws.reduce((a, c) => a + Number(c.stats?.open_ws ?? 0), 0), http: ws.reduce((a, c) => a + Number(c.stats?.open_http ?? 0), 0),
    handoffs: last ? Math.max(0, handoffs - last.handoffs) : 0, migrations: moved,
    per_worker: Object.fromEntries([...sup.workers.values()].map(w => [String(w.slot), conns(w)])),
  });
  if (samples.length > HISTORY_S) samples.splice(0, samples.length - HISTORY_S);
  last = { handoffs, migrations: mig, totals: { ...(sup.totals as unknown as Record<string, number>) }, gen: sup.gen };
}

export function history(since = 0): { samples: Sample[]; events: Event[] } {
  return { samples: samples.filter(s => s.t > since), events: events.filter(e => e.t > since) };
}

// ---------------------------------------------------------------- /status

export function status(sup: Supervisor): Record<string, unknown> {
  const w = (c: Child) => ({
    slot: c.slot, gen: c.gen, pid: c.proc.pid, uptime_s: Math.round((Date.now() - c.started) / 1000), ready: c.ready,
    connections: ((c.stats?.open_ws as number) ?? 0) + ((c.stats?.open_http as number) ?? 0),
    websockets: c.stats?.open_ws ?? 0, http: c.stats?.open_http ?? 0, keys: c.stats?.keys ?? 0, top_keys: c.stats?.top_keys ?? [],
    backend_active: c.stats?.backend_active ?? {}, idle_backend: c.stats?.idle_backend ?? 0,
    relay_keys: c.stats?.relay_keys ?? [],   // relay mode: busiest keys with messages/bytes/limit hits
    handoffs_in: ctr(c, 'handoffs_in'), migrations_out: ctr(c, 'migrations_done'), migrations_in: ctr(c, 'migrations_in'),
  });
  const ws = [...sup.workers.values(), ...sup.retiring];
  const active = (id: string) => ws.reduce((a, c) => a + Number((c.stats?.backend_active as Record<string, number> | undefined)?.[id] ?? 0), 0);
  const accs = acceptorsOf(sup);
  const sum = (f: (a: Child) => number) => accs.reduce((x, a) => x + f(a), 0);
  // Several acceptors: each counts the connections it placed; keys add up across them.
  type Top = { key: string; slot: number; connections: number };
  const keyTotals = new Map<string, Top>();
  for (const a of accs) for (const e of (a.stats?.top_keys as Top[] | undefined) ?? []) {
    const t = keyTotals.get(e.key);
    if (t) t.connections += e.connections; else keyTotals.set(e.key, { ...e });
  }
  return {
    state: sup.state, generation: sup.gen, pid: process.pid, config: sup.config.file,
    acceptor: sup.acceptor ? { pid: sup.acceptor.proc.pid, inflight: sum(a => Number(a.stats?.inflight ?? 0)), connections: sum(a => Number(a.stats?.total ?? 0)) } : null,
    acceptors: accs.map((a, index) => ({ index, pid: a.proc.pid, inflight: a.stats?.inflight ?? 0, connections: a.stats?.total ?? 0, loads: a.stats?.loads ?? [], handoffs: ctr(a, 'handoffs') })),
    workers: [...sup.workers.values()].map(w),
    retiring: [...sup.retiring].map(w),
    top_keys: [...keyTotals.values()].sort((x, y) => y.connections - x.connections).slice(0, 20),
    backends: Object.values(sup.config.backends).map(b => ({
      name: b.name,
      health_checked: b.health !== null && b.health !== undefined,
      servers: b.servers.map(s => ({ id: s.id, weight: s.weight, healthy: sup.health.state.get(s.id) ?? null, active: active(s.id) })),
    })),
    totals: sup.totals,
    last_reload_error: sup.lastReloadError,
  };
}

async function body(req: http.IncomingMessage): Promise<string> {
  let s = '';
  for await (const c of req) { s += c; if (s.length > 65536) break; }
  return s;
}

async function handle(sup: Supervisor, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://admin');
  const p = url.pathname;
  if (req.method === 'GET' || req.method === 'HEAD') {
    if (p === '/healthz') { res.writeHead(sup.state === 'running' ? 200 : 503, { 'content-type': 'text/plain' }); res.end(sup.state + '\n'); return; }
    if (p === '/status') return json(res, 200, status(sup));
    if (p === '/history') return json(res, 200, history(Number(url.searchParams.get('since') ?? 0)));
    if (p === '/metrics') { res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }); res.end(renderMetrics(sup)); return; }
    if (p === '/') { res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }); res.end((require('./dashboard') as typeof Dashboard).dashboardHtml()); return; }   // loaded when first asked for
    return json(res, 404, { error: 'not found' });
  }
  if (req.method !== 'POST') return json(res, 405, { error: 'method not allowed' });
  await body(req);
  if (p === '/reload') {
    const r = await sup.reload();
    return json(res, r.ok ? 200 : 422, r);
  }
  if (p === '/drain') {
    const slot = Number(url.searchParams.get('slot'));
    if (!sup.workers.has(slot)) return json(res, 400, { error: 'unknown slot' });
    sup.command({ t: 'drain', slot });
    return json(res, 202, { ok: true, draining: slot });
  }
  if (p === '/undrain') {
    const slot = Number(url.searchParams.get('slot'));
    if (!sup.workers.has(slot)) return json(res, 400, { error: 'unknown slot' });
    sup.command({ t: 'undrain', slot });
    return json(res, 202, { ok: true, undrained: slot });
  }
  if (p === '/move') {
    const key = url.searchParams.get('key'), slot = Number(url.searchParams.get('slot'));
    if (!key || !sup.workers.has(slot)) return json(res, 400, { error: 'need key and a valid slot' });
    sup.command({ t: 'move', key, slot });
    return json(res, 202, { ok: true, key, slot });
  }
  return json(res, 404, { error: 'not found' });
}
