// /metrics: Prometheus text format, gathered from the stats every process sends once a second.
import type { Supervisor } from './supervisor';
import { BUCKETS_MS, type Histogram } from './counters';

type Snap = { counters?: Record<string, number>; histograms?: Record<string, Histogram> };

export function renderMetrics(sup: Supervisor): string {
  const out: string[] = [];
  const metric = (name: string, type: string, help: string) => out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  const esc = (v: unknown) => String(v).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
  const ws = [...sup.workers.values(), ...sup.retiring];

  metric('fdproxy_connections_open', 'gauge', 'Open client connections per worker and kind.');
  for (const w of ws) {
    out.push(`fdproxy_connections_open{worker="${w.slot}",gen="${w.gen}",kind="websocket"} ${Number(w.stats?.open_ws ?? 0)}`);
    out.push(`fdproxy_connections_open{worker="${w.slot}",gen="${w.gen}",kind="http"} ${Number(w.stats?.open_http ?? 0)}`);
  }
  metric('fdproxy_backend_connections_active', 'gauge', 'Active backend connections per server, per worker.');
  for (const w of ws) for (const [id, n] of Object.entries((w.stats?.backend_active ?? {}) as Record<string, number>)) {
    out.push(`fdproxy_backend_connections_active{worker="${w.slot}",server="${esc(id)}"} ${n}`);
  }
  const counterNames = new Set<string>();
  for (const c of [...ws, ...(sup.acceptor ? [sup.acceptor] : [])]) for (const k of Object.keys((c.stats as Snap | null)?.counters ?? {})) counterNames.add(k);
  for (const name of [...counterNames].sort()) {
    if (name.startsWith('open_')) continue;
    const m = `fdproxy_${name}_total`;
    metric(m, 'counter', `Count of ${name.replace(/_/g, ' ')}.`);
    if (sup.acceptor && (sup.acceptor.stats as Snap | null)?.counters?.[name] !== undefined) out.push(`${m}{process="acceptor"} ${(sup.acceptor.stats as Snap).counters![name]}`);
    for (const w of ws) { const v = (w.stats as Snap | null)?.counters?.[name]; if (v !== undefined) out.push(`${m}{process="worker",worker="${w.slot}",gen="${w.gen}"} ${v}`); }
  }
  const histNames = new Set<string>();
  for (const w of ws) for (const k of Object.keys((w.stats as Snap | null)?.histograms ?? {})) histNames.add(k);
  for (const name of histNames) {
    const m = `fdproxy_${name.replace(/_ms$/, '')}_seconds`;
    metric(m, 'histogram', `${name.replace(/_/g, ' ')} (seconds).`);
    for (const w of ws) {
      const h = (w.stats as Snap | null)?.histograms?.[name];
      if (!h) continue;
      let cum = 0;
      BUCKETS_MS.forEach((b, i) => { cum += h.buckets[i]; out.push(`${m}_bucket{worker="${w.slot}",le="${b / 1000}"} ${cum}`); });
      out.push(`${m}_bucket{worker="${w.slot}",le="+Inf"} ${h.count}`, `${m}_sum{worker="${w.slot}"} ${h.sum / 1000}`, `${m}_count{worker="${w.slot}"} ${h.count}`);
    }
  }
  metric('fdproxy_worker_restarts_total', 'counter', 'Workers restarted after dying.');
  out.push(`fdproxy_worker_restarts_total ${sup.totals.worker_restarts}`);
  metric('fdproxy_acceptor_restarts_total', 'counter', 'Acceptor restarts.');
  out.push(`fdproxy_acceptor_restarts_total ${sup.totals.acceptor_restarts}`);
  metric('fdproxy_config_reloads_total', 'counter', 'Config reloads by result.');
  out.push(`fdproxy_config_reloads_total{result="ok"} ${sup.totals.reloads_ok}`, `fdproxy_config_reloads_total{result="failed"} ${sup.totals.reloads_failed}`);
  metric('fdproxy_generation', 'gauge', 'Current worker generation (increments on reload).');
  out.push(`fdproxy_generation ${sup.gen}`);
  metric('fdproxy_backend_up', 'gauge', 'Health of each backend server (1 up, 0 down; absent without health checks).');
  for (const [id, up] of sup.health.state) out.push(`fdproxy_backend_up{server="${esc(id)}"} ${up ? 1 : 0}`);
  metric('fdproxy_open_fds', 'gauge', 'File descriptors open per process.');
  for (const c of [...(sup.acceptor ? [sup.acceptor] : []), ...ws]) {
    out.push(`fdproxy_open_fds{process="${c.role}",slot="${c.slot}"} ${fdCount(c.proc.pid)}`);
  }
  out.push(`fdproxy_open_fds{process="supervisor",slot="-1"} ${fdCount(process.pid)}`);
  return out.join('\n') + '\n';
}

function fdCount(pid: number | undefined): number {
  try { return require('node:fs').readdirSync(`/proc/${pid}/fd`).length; } catch { return 0; }
}
