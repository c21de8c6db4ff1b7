// Admin endpoint: /metrics is valid Prometheus text with every family the issue lists, /status
// has workers, keys and backends, and the POST commands reload, drain and move keys under traffic.
import test from 'ava';
import * as net from 'node:net';
import WebSocket from 'ws';
import { startBackend, startProxy, twoBackendConfig, adminGet, adminPost, type ProxyHandle, type BackendReady } from '../helpers/proxy';
import { ownersOfConnections, until, type Started } from '../helpers/procs';
import { Traffic } from '../helpers/traffic';
import { parseProm, sum } from './prom';
import { localPort, openWs as open, echo } from '../helpers/ws';

let b1: Started<BackendReady>, b2: Started<BackendReady>;
test.before(async () => { [b1, b2] = await Promise.all([startBackend('b1'), startBackend('b2')]); });
test.after.always(async () => { await b1?.stop(); await b2?.stop(); });

function raw(port: number, text: string): Promise<string> {
  return new Promise(resolve => {
    const s = net.connect(port, '127.0.0.1', () => s.write(text));
    let out = '';
    s.on('data', d => { out += d; }); s.on('close', () => resolve(out)); s.on('error', () => resolve(out));
    setTimeout(() => s.destroy(), 3000).unref();
  });
}
const withHealth = (p1: number, p2: number) => twoBackendConfig(p1, p2).replace(/(servers: \[.*\])/, '$1\n    health: { path: /healthz, interval: 1s }');

test.serial('/metrics: valid Prometheus text with connections per worker/route/server, handoffs + histogram, responses, WebSocket bytes, head errors, restarts, reloads, fds', async t => {
  const px = await startProxy(withHealth(b1.ready.port, b2.ready.port));
  try {
    const wss = await Promise.all(Array.from({ length: 10 }, (_, i) => open(px.port, `/chat/room${i % 4}`)));
    for (const w of wss) t.is(await echo(w, 'hello'), 'hello');
    for (let i = 0; i < 5; i++) t.is((await fetch(`http://127.0.0.1:${px.port}/t/x`, { headers: { 'x-tenant-id': `t${i}` } })).status, 200);
    t.regex(await raw(px.port, 'GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n'), /^HTTP\/1\.1 400/);
    // Stats reach the supervisor once a second from each process: wait until all have reported.
    let fams = parseProm(await adminGet(px, '/metrics'));
    t.true(await until(async () => {
      fams = parseProm(await adminGet(px, '/metrics'));
      return sum(fams, 'fdproxy_connections_open', { kind: 'websocket' }) === 10 && sum(fams, 'fdproxy_handoff_seconds_count') >= 15
        && sum(fams, 'fdproxy_http_responses_total', { class: '2xx' }) === 5 && sum(fams, 'fdproxy_head_errors_total') === 1
        && sum(fams, 'fdproxy_handoffs_total', { direction: 'out' }) >= 15 && sum(fams, 'fdproxy_backend_exchanges_total') >= 15 && sum(fams, 'fdproxy_backend_up') === 2;
    }, 8000), `every process reported: ${['fdproxy_connections_open', 'fdproxy_handoff_seconds_count', 'fdproxy_http_responses_total', 'fdproxy_head_errors_total', 'fdproxy_handoffs_total', 'fdproxy_backend_exchanges_total', 'fdproxy_backend_up'].map(n => `${n}=${sum(fams, n)}`).join(' ')}`);
    t.is(sum(fams, 'fdproxy_route_connections_open', { route: 'chat' }), 10);
    t.true(sum(fams, 'fdproxy_route_connections_total', { route: 'tenant' }) >= 1);
    t.is(sum(fams, 'fdproxy_backend_connections_active'), 10);
    t.true(sum(fams, 'fdproxy_backend_exchanges_total') >= 15);
    t.is(new Set(fams.get('fdproxy_connections_open')!.samples.map(s => s.labels.worker)).size, 2);
    t.is(fams.get('fdproxy_handoff_seconds')?.type, 'histogram');
    t.is(sum(fams, 'fdproxy_http_responses_total', { class: '2xx' }), 5);
    t.is(sum(fams, 'fdproxy_head_errors_total', { kind: 'malformed' }), 1);
    t.is(sum(fams, 'fdproxy_worker_restarts_total'), 0);
    t.is(fams.get('fdproxy_config_reloads_total')!.samples.length, 2);
    t.true(sum(fams, 'fdproxy_open_fds', { process: 'supervisor' }) > 0);
    t.is(fams.get('fdproxy_open_fds')!.samples.length, 4);
    t.is(sum(fams, 'fdproxy_backend_up'), 2);
    for (const w of wss) w.close();
    t.true(await until(async () => { fams = parseProm(await adminGet(px, '/metrics')); return sum(fams, 'fdproxy_websocket_bytes_total') > 0 && sum(fams, 'fdproxy_connections_open', { kind: 'websocket' }) === 0; }, 5000));
    // A killed worker is restarted and counted.
    process.kill(px.ready.workers[0].pid, 'SIGKILL');
    t.true(await until(async () => sum(parseProm(await adminGet(px, '/metrics')), 'fdproxy_worker_restarts_total') === 1, 5000));
  } finally { await px.stop(); }
});

test.serial('/status: workers (pid, slot, uptime, connections, keys), top keys, backends with health; /history feeds the dashboard', async t => {
  const px = await startProxy(withHealth(b1.ready.port, b2.ready.port));
  try {
    const wss = await Promise.all(Array.from({ length: 6 }, (_, i) => open(px.port, `/chat/${i < 4 ? 'big' : 'small'}`)));
    let st: any;
    t.true(await until(async () => { st = await adminGet(px, '/status'); return st.workers.reduce((a: number, w: any) => a + w.connections, 0) === 6 && st.top_keys[0]?.connections === 4; }, 5000));
    t.is(st.state, 'running');
    t.is(st.workers.length, 2);
    for (const w of st.workers) { t.is(typeof w.pid, 'number'); t.is(typeof w.uptime_s, 'number'); t.is(typeof w.keys, 'number'); }
    t.is(st.workers.reduce((a: number, w: any) => a + w.keys, 0), 2);
    t.deepEqual(st.top_keys[0], { key: 'big', slot: st.top_keys[0].slot, connections: 4 });
    t.true(await until(async () => (await adminGet(px, '/status')).backends[0].servers.every((s: any) => s.healthy === true), 5000));
    t.true(await until(async () => (await adminGet(px, '/history')).samples.some((s: any) => s.connections === 6), 3000));
    for (const w of wss) w.close();
  } finally { await px.stop(); }
});

test.serial('POST /reload, /drain and /move: reload counts, drain empties a worker, a moved key ends whole on its target under traffic', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port));
  const traffic = new Traffic();
  try {
    await traffic.open(px.port, ['k1', 'k2', 'k3', 'k4', 'k5', 'k6'], 4);
    const r = await adminPost(px, '/reload');
    t.is(r.status, 200); t.is(r.body.gen, 2);
    t.regex(await adminGet(px, '/metrics'), /fdproxy_config_reloads_total\{result="ok"\} 1/);
    let st: any;
    t.true(await until(async () => { st = await adminGet(px, '/status'); return st.retiring.length === 0 && st.workers.reduce((a: number, w: any) => a + w.connections, 0) === 24; }, 15000));
    const pids = st.workers.map((w: any) => w.pid) as number[];
    const ports = traffic.flows.map(f => localPort(f.ws));
    // Move k1 to the worker that does not hold it, under traffic.
    const k1 = traffic.flows.filter(f => f.key === 'k1');
    const owner = ownersOfConnections([localPort(k1[0].ws)], px.port, pids).get(localPort(k1[0].ws))!;
    const target = st.workers.find((w: any) => w.pid !== owner);
    t.is((await adminPost(px, `/move?key=k1&slot=${target.slot}`)).status, 202);
    t.true(await until(() => { const o = ownersOfConnections(k1.map(f => localPort(f.ws)), px.port, pids); return k1.every(f => o.get(localPort(f.ws)) === target.pid); }, 10000), 'k1 moved whole');
    // Drain the target: everything ends on the other worker.
    t.is((await adminPost(px, `/drain?slot=${target.slot}`)).status, 202);
    const other = pids.find(p => p !== target.pid)!;
    let o = new Map<number, number | null>();
    const drained = await until(() => { o = ownersOfConnections(ports, px.port, pids); return ports.every(p => o.get(p) === other); }, 15000);
    const left = traffic.flows.filter(f => o.get(localPort(f.ws)) !== other).map(f => `${f.key}@${o.get(localPort(f.ws))}`);
    const st2 = drained ? null : await adminGet(px, '/status');
    t.true(drained, `worker drained; left: ${left.join(' ')} (target ${target.pid}, other ${other}) ${JSON.stringify(st2?.workers)} ${JSON.stringify(st2?.top_keys)}\n${px.lines.filter(l => !l.includes('"access"')).slice(-40).join('\n')}`);
    t.is((await adminPost(px, '/drain?slot=99')).status, 400);
    t.is((await adminPost(px, '/move?slot=0')).status, 400);
    await traffic.stop();
    const s = traffic.summary();
    t.is(s.closed, 0); t.is(s.lost, 0); t.is(s.errors, 0);
    // Stats reach the supervisor once a second and the history samples once a second: wait for them.
    t.true(await until(async () => (await adminGet(px, '/history')).events.some((e: any) => e.kind === 'migration_in'), 5000), 'migrations show up as events');
  } finally { traffic.closeAll(); await px.stop(); }
});
