// /metrics: Prometheus text format (0.0.4), gathered from the stats every process sends once a
// second. Every family is written once with its HELP and TYPE, its samples together; per-worker
// series carry worker (slot) and gen, so a retiring generation never collides with the new one.
// Counters of a worker reset when it is replaced (reload, restart): Prometheus' rate() handles it.
import * as fs from 'node:fs';
import type { Supervisor, Child } from './supervisor';
import { BUCKETS_MS, type Histogram } from './counters';

type Snap = {
  counters?: Record<string, number>; histograms?: Record<string, Histogram>;
  routes?: Record<string, { open: number; total: number }>; servers?: Record<string, number>;
  backend_active?: Record<string, number>; open_ws?: number; open_http?: number; keys?: number;
};

/** What a head error's status means (the acceptor counts head_error_<status>). */
const HEAD_KIND: Record<string, string> = { '400': 'malformed', '404': 'no_route', '408': 'timeout', '431': 'too_large', '503': 'unavailable' };

/** Counters with a family of their own: name → [family, labels]. Unlisted ones become fdproxy_<name>_total. */
function family(name: string): [string, Record<string, string>] | null {
  let m: RegExpExecArray | null;
  if ((m = /^head_error_(\d{3})$/.exec(name))) return ['fdproxy_head_errors_total', { status: m[1], kind: HEAD_KIND[m[1]] ?? 'other' }];
  if ((m = /^http_(\d)xx$/.exec(name))) return ['fdproxy_http_responses_total', { class: `${m[1]}xx` }];
  if ((m = /^ws_fail_(\d{3})$/.exec(name))) return ['fdproxy_websocket_failed_total', { status: m[1] }];
  if (name === 'ws_refused') return ['fdproxy_websocket_failed_total', { status: 'refused_by_backend' }];
  if ((m = /^ws_bytes_(in|out)$/.exec(name))) return ['fdproxy_websocket_bytes_total', { direction: m[1] === 'in' ? 'client_to_backend' : 'backend_to_client' }];
  if (name === 'ws_opened') return ['fdproxy_websocket_opened_total', {}];
  if (name === 'handoffs') return ['fdproxy_handoffs_total', { direction: 'out' }];
  if (name === 'handoffs_in') return ['fdproxy_handoffs_total', { direction: 'in' }];
  if (name === 'handoffs_returned') return ['fdproxy_handoffs_returned_total', {}];
  if (name === 'connections_total') return ['fdproxy_connections_total', {}];
  if (name === 'accepted') return ['fdproxy_accepted_total', {}];
  return null;
}

const HELP: Record<string, string> = {
  fdproxy_head_errors_total: 'Requests answered by the acceptor itself, by status and kind (malformed, no_route, timeout, too_large, unavailable).',
  fdproxy_http_responses_total: 'HTTP responses sent to clients, by status class.',
  fdproxy_websocket_failed_total: 'WebSocket upgrades that did not reach 101, by status.',
  fdproxy_websocket_bytes_total: 'Bytes carried by WebSocket tunnels that have ended, by direction.',
  fdproxy_websocket_opened_total: 'WebSocket tunnels opened (101 from the backend).',
  fdproxy_migrations_done_total: 'Live connections this worker migrated to another worker (target acked).',
  fdproxy_migrations_in_total: 'Live connections this worker received from another worker.',
  fdproxy_migrations_failed_total: 'Migrations that could not start (tunnel did not stop cleanly); the connection stayed.',
  fdproxy_migrations_rolled_back_total: 'Migrations rolled back (target died or did not ack in time); the connection stayed.',
  fdproxy_migrations_refused_late_total: 'Stale migrations a target refused (deadline passed).',
  fdproxy_handoffs_total: 'Connections handed over by fd passing (out: acceptor to worker; in: received by a worker).',
  fdproxy_handoffs_returned_total: 'Handoffs returned because the worker died before taking them.',
  fdproxy_handoffs_forwarded_total: 'New connections a worker passed to the lead acceptor: placed by an acceptor behind a move, drain or reload.',
  fdproxy_connections_total: 'Client connections adopted by each worker since it started.',
  fdproxy_accepted_total: 'TCP connections accepted by the acceptor.',
};

export function renderMetrics(sup: Supervisor): string {
  const out: string[] = [];
  const esc = (v: unknown) => String(v).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
  const lbl = (l: Record<string, string | number>) => {
    const e = Object.entries(l);
    return e.length ? `{${e.map(([k, v]) => `${k}="${esc(v)}"`).join(',')}}` : '';
  };
  const metric = (name: string, type: string, help: string, samples: string[]) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...samples);
  };
  const ws = [...sup.workers.values(), ...sup.retiring];
  const snap = (c: Child) => (c.stats ?? {}) as Snap;
  const wl = (w: Child, extra: Record<string, string | number> = {}) => lbl({ worker: w.slot, gen: w.gen, ...extra });
  const accs = acceptorsOf(sup);

  metric('fdproxy_connections_open', 'gauge', 'Open client connections per worker and kind.', ws.flatMap(w => [
    `fdproxy_connections_open${wl(w, { kind: 'websocket' })} ${Number(snap(w).open_ws ?? 0)}`,
    `fdproxy_connections_open${wl(w, { kind: 'http' })} ${Number(snap(w).open_http ?? 0)}`,
  ]));
  metric('fdproxy_keys', 'gauge', 'Distinct sticky keys with live connections per worker.', ws.map(w => `fdproxy_keys${wl(w)} ${Number(snap(w).keys ?? 0)}`));
  metric('fdproxy_route_connections_open', 'gauge', 'Open client connections per route, per worker.',
    ws.flatMap(w => Object.entries(snap(w).routes ?? {}).map(([r, v]) => `fdproxy_route_connections_open${wl(w, { route: r })} ${v.open}`)));
  metric('fdproxy_route_connections_total', 'counter', 'Client connections per route, per worker, since the worker started.',
    ws.flatMap(w => Object.entries(snap(w).routes ?? {}).map(([r, v]) => `fdproxy_route_connections_total${wl(w, { route: r })} ${v.total}`)));
  metric('fdproxy_backend_connections_active', 'gauge', 'Backend connections in use per server, per worker (WebSocket tunnels and HTTP exchanges in flight).',
    ws.flatMap(w => Object.entries(snap(w).backend_active ?? {}).map(([id, n]) => `fdproxy_backend_connections_active${wl(w, { server: id })} ${n}`)));
  metric('fdproxy_backend_exchanges_total', 'counter', 'WebSocket tunnels opened and HTTP exchanges completed per backend server, per worker.',
    ws.flatMap(w => Object.entries(snap(w).servers ?? {}).map(([id, n]) => `fdproxy_backend_exchanges_total${wl(w, { server: id })} ${n}`)));

  // Counters from every process, grouped into families.
  const fam = new Map<string, string[]>();
  const add = (f: string, sample: string) => (fam.get(f) ?? fam.set(f, []).get(f)!).push(sample);
  const procs: [Child, Record<string, string | number>][] = [
    ...accs.map((a, i): [Child, Record<string, string | number>] => [a, accs.length > 1 ? { process: 'acceptor', acceptor: i } : { process: 'acceptor' }]),
    ...ws.map((w): [Child, Record<string, string | number>] => [w, { process: 'worker', worker: w.slot, gen: w.gen }]),
  ];
  for (const [c, base] of procs) {
    for (const [name, v] of Object.entries(snap(c).counters ?? {})) {
      if (name.startsWith('open_')) continue;   // gauges kept as counters inside the worker
      const f = family(name);
      const fname = f ? f[0] : `fdproxy_${name.replace(/[^a-zA-Z0-9_]/g, '_')}_total`;
      add(fname, `${fname}${lbl({ ...base, ...(f ? f[1] : {}) })} ${v}`);
    }
  }
  for (const name of [...fam.keys()].sort()) {
    metric(name, 'counter', HELP[name] ?? `Count of ${name.replace(/^fdproxy_|_total$/g, '').replace(/_/g, ' ')}.`, fam.get(name)!);
  }

  const hist = new Map<string, string[]>();
  for (const w of ws) for (const [name, h] of Object.entries(snap(w).histograms ?? {})) {
    const m = `fdproxy_${name.replace(/_ms$/, '').replace(/[^a-zA-Z0-9_]/g, '_')}_seconds`;
    const s = hist.get(m) ?? hist.set(m, []).get(m)!;
    let cum = 0;
    BUCKETS_MS.forEach((b, i) => { cum += h.buckets[i]; s.push(`${m}_bucket${wl(w, { le: String(b / 1000) })} ${cum}`); });
    s.push(`${m}_bucket${wl(w, { le: '+Inf' })} ${h.count}`, `${m}_sum${wl(w)} ${h.sum / 1000}`, `${m}_count${wl(w)} ${h.count}`);
  }
  const HHELP: Record<string, string> = {
    fdproxy_handoff_seconds: 'Handoff latency: accepted head routed in the acceptor until the worker adopted the connection.',
    fdproxy_ws_handshake_seconds: 'Backend WebSocket handshake time (connect + 101).',
    fdproxy_migration_pause_seconds: 'Time a migrating tunnel was paused (stop reading until the target acked).',
  };
  for (const m of [...hist.keys()].sort()) metric(m, 'histogram', HHELP[m] ?? `${m} (seconds).`, hist.get(m)!);

  metric('fdproxy_worker_restarts_total', 'counter', 'Workers restarted after dying.', [`fdproxy_worker_restarts_total ${sup.totals.worker_restarts}`]);
  metric('fdproxy_acceptor_restarts_total', 'counter', 'Acceptor restarts.', [`fdproxy_acceptor_restarts_total ${sup.totals.acceptor_restarts}`]);
  metric('fdproxy_config_reloads_total', 'counter', 'Config reloads by result.',
    [`fdproxy_config_reloads_total{result="ok"} ${sup.totals.reloads_ok}`, `fdproxy_config_reloads_total{result="failed"} ${sup.totals.reloads_failed}`]);
  metric('fdproxy_reload_migrations_total', 'counter', 'Connections moved (or not) by retiring workers during reloads.',
    [`fdproxy_reload_migrations_total{result="done"} ${sup.totals.migrations_done}`, `fdproxy_reload_migrations_total{result="failed"} ${sup.totals.migrations_failed}`]);
  metric('fdproxy_generation', 'gauge', 'Current worker generation (increments on reload).', [`fdproxy_generation ${sup.gen}`]);
  metric('fdproxy_workers', 'gauge', 'Worker processes of the current generation, and retiring ones.',
    [`fdproxy_workers{state="current"} ${sup.workers.size}`, `fdproxy_workers{state="retiring"} ${sup.retiring.size}`]);
  metric('fdproxy_backend_up', 'gauge', 'Health of each backend server (1 up, 0 down; absent without health checks).',
    [...sup.health.state].map(([id, up]) => `fdproxy_backend_up{server="${esc(id)}"} ${up ? 1 : 0}`));
  metric('fdproxy_open_fds', 'gauge', 'File descriptors open per process.', [
    ...accs.map((a, i) => `fdproxy_open_fds{process="acceptor",slot="${i}",gen="${a.gen}"} ${fdCount(a.proc.pid)}`),
    ...ws.map(w => `fdproxy_open_fds{process="worker",slot="${w.slot}",gen="${w.gen}"} ${fdCount(w.proc.pid)}`),
    `fdproxy_open_fds{process="supervisor",slot="-1",gen="${sup.gen}"} ${fdCount(process.pid)}`,
  ]);
  metric('fdproxy_log_lines_dropped_total', 'counter', 'Log lines dropped because stdout could not keep up.',
    [`fdproxy_log_lines_dropped_total ${Number((sup.totals as unknown as Record<string, number>).log_lines_dropped ?? 0)}`]);
  metric('fdproxy_uptime_seconds', 'gauge', 'Seconds since the supervisor started.', [`fdproxy_uptime_seconds ${Math.round(process.uptime())}`]);
  return out.join('\n') + '\n';
}

/** The acceptor processes (one unless `acceptors:` asks for more). */
export function acceptorsOf(sup: Supervisor): Child[] { return sup.acceptors; }

function fdCount(pid: number | undefined): number {
  try { return fs.readdirSync(`/proc/${pid}/fd`).length; } catch { return 0; }
}
