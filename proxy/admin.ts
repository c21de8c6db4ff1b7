// Admin endpoint, served by the supervisor: /healthz, /status (JSON), /metrics (Prometheus),
// POST /reload, /drain?slot=N, /move?key=K&slot=N, and the dashboard at /.
import * as http from 'node:http';
import type { Supervisor, Child } from './supervisor';
import { renderMetrics } from './metrics';
import { dashboardHtml } from './dashboard';

export function startAdmin(sup: Supervisor, cb: (err: Error | null, address: string | null) => void): http.Server | null {
  const a = sup.config.admin;
  if (!a) { cb(null, null); return null; }
  const srv = http.createServer((req, res) => handle(sup, req, res).catch(e => {
    res.writeHead(500, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: String(e) }));
  }));
  srv.on('error', e => cb(e, null));
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

export function status(sup: Supervisor): Record<string, unknown> {
  const w = (c: Child) => ({
    slot: c.slot, gen: c.gen, pid: c.proc.pid, uptime_s: Math.round((Date.now() - c.started) / 1000), ready: c.ready,
    connections: ((c.stats?.open_ws as number) ?? 0) + ((c.stats?.open_http as number) ?? 0),
    websockets: c.stats?.open_ws ?? 0, http: c.stats?.open_http ?? 0, keys: c.stats?.keys ?? 0, top_keys: c.stats?.top_keys ?? [],
    backend_active: c.stats?.backend_active ?? {}, idle_backend: c.stats?.idle_backend ?? 0,
  });
  const acc = sup.acceptor?.stats;
  return {
    state: sup.state, generation: sup.gen, pid: process.pid, config: sup.config.file,
    acceptor: sup.acceptor ? { pid: sup.acceptor.proc.pid, inflight: acc?.inflight ?? 0, connections: acc?.total ?? 0 } : null,
    workers: [...sup.workers.values()].map(w),
    retiring: [...sup.retiring].map(w),
    top_keys: acc?.top_keys ?? [],
    backends: Object.values(sup.config.backends).map(b => ({
      name: b.name,
      servers: b.servers.map(s => ({ id: s.id, weight: s.weight, healthy: sup.health.state.get(s.id) ?? null })),
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
    if (p === '/metrics') { res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }); res.end(renderMetrics(sup)); return; }
    if (p === '/') { res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }); res.end(dashboardHtml()); return; }
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
