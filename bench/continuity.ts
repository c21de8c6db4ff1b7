// Continuity benchmark: what a live migration costs. With N WebSockets under continuous numbered
// echo traffic behind fdproxy (2 workers), it measures
//   - the migration pause per connection (p50/p99: stop reading → target acked), from the
//     workers' debug "migrated" log lines,
//   - connections migrated per second during a reload, and the reload time (POST /reload →
//     every old worker retired),
//   - messages lost, duplicated or reordered (must be 0), connections closed (must be 0).
// Usage: node dist/bench/continuity.js [--conns 2000] [--reloads 3]. Bounded: ~1–2 minutes.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import WebSocket from 'ws';
import { startWithReady, processTree } from './proc';

const arg = (name: string, def: number) => { const i = process.argv.indexOf(`--${name}`); return i > 0 ? Number(process.argv[i + 1]) : def; };
const CONNS = arg('conns', 2000);
const RELOADS = arg('reloads', 3);
/** Each connection sends one message every INTERVAL ms (after its echo): load, not saturation. */
const INTERVAL = arg('interval', 100);
const ROOT = path.resolve(__dirname, '..', '..');

interface Flow { ws: WebSocket; id: number; sent: number; got: number; bad: number; closed: boolean; at: number }

/** Admin request on a fresh connection (no keep-alive: a reused socket the supervisor is closing
 *  made fetch fail mid-run); a GET that fails is tried again (bounded). */
function admin(method: string, url: string, tries = method === 'GET' ? 5 : 1): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent: false }, res => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', d => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('error', e => (tries > 1 ? setTimeout(() => admin(method, url, tries - 1).then(resolve, reject), 50) : reject(e)));
    req.end();
  });
}

function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
}

async function main(): Promise<void> {
  const load0 = os.loadavg().map(x => +x.toFixed(2));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fdproxy-bench-cont-'));
  const backends = await Promise.all(['b1', 'b2'].map(n => startWithReady(process.execPath, [path.join(__dirname, 'backend.js'), n], o => o.event === 'ready', 10000)));
  const file = path.join(dir, 'proxy.yaml');
  const cfg = (workers: number) => `listen: 127.0.0.1:0
workers: ${workers}
admin: 127.0.0.1:0
log_level: debug
rebalance: { auto: false }
backends:
  echo: { servers: ["127.0.0.1:${backends[0].ready.port}", "127.0.0.1:${backends[1].ready.port}"] }
routes:
  - { name: ws, match: { path: "/ws/{room}" }, key: "{room}", backend: echo }
`;
  fs.writeFileSync(file, cfg(2));
  // --cpu-prof DIR: every fdproxy process (the supervisor passes its execArgv on) writes a profile on exit.
  const prof = process.argv.indexOf('--cpu-prof');
  const nodeArgs = prof > 0 ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(process.argv[prof + 1])}`] : [];
  const px = await startWithReady(process.execPath, [...nodeArgs, path.join(ROOT, 'bin', 'fdproxy.js'), '-c', file], o => o.event === 'ready', 20000);
  // --trace FILE: the workers' per-wave CPU lines (retire_pass, adopted_batch without samples).
  const traceFile = process.argv.includes('--trace') ? path.resolve(process.argv[process.argv.indexOf('--trace') + 1]) : null;
  const pauses: number[] = [];   // old worker stops reading → new worker reads again
  const handoffs: number[] = []; // old worker stops reading → target's ack (its copies released)
  let migratedAt: number[] = [];
  const adopts: number[] = [], flushes: number[] = [];   // target's adopt cost; source's stop → handoff queued
  let buf = '';
  px.child.stdout!.on('data', (d: Buffer) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i); buf = buf.slice(i + 1);
      let o: { event?: string; handoff_ms: number; pause_ms: number; time: string; pauses?: number[]; at?: number[]; handoffs?: number[]; adopt?: number[]; flush?: number[] };
      try { o = JSON.parse(line); } catch { continue; }
      if (traceFile && (o.event === 'retire_pass' || o.event === 'adopted_batch')) {
        const { pauses: _p, at: _a, adopt: _d, flush: _f, ...rest } = o as Record<string, unknown>;
        fs.appendFileSync(traceFile, JSON.stringify(rest) + '\n');
      }
      if (o.event === 'migrated') { handoffs.push(o.handoff_ms); continue; }
      // Batched form (one line per flush of a worker's samples; at = epoch ms of each adoption).
      if (o.event === 'migrated_batch') { handoffs.push(...o.handoffs!); continue; }
      if (o.event === 'adopted_batch') { pauses.push(...o.pauses!); migratedAt.push(...o.at!); adopts.push(...o.adopt!); flushes.push(...o.flush!); continue; }
      if (o.event !== 'adopted') continue;
      pauses.push(o.pause_ms);
      migratedAt.push(Date.parse(o.time));
    }
  });
  const port = Number(px.ready.listen[0].split(':').pop());
  const adminUrl = `http://${px.ready.admin}`;
  const flows: Flow[] = [];
  let running = true;
  const rtts: number[] = [];
  const pump = (f: Flow) => { if (running && f.ws.readyState === WebSocket.OPEN) { f.at = performance.now(); f.ws.send(`${f.id}:${++f.sent}`); } };
  for (let i = 0; i < CONNS; i += 200) {
    await Promise.all(Array.from({ length: Math.min(200, CONNS - i) }, (_, j) => new Promise<void>((resolve, reject) => {
      const f: Flow = { ws: new WebSocket(`ws://127.0.0.1:${port}/ws/room${(i + j) % 500}`, { perMessageDeflate: false }), id: i + j, sent: 0, got: 0, bad: 0, closed: false, at: 0 };
      flows.push(f);
      f.ws.once('open', () => { pump(f); resolve(); });
      f.ws.once('error', reject);
      f.ws.on('message', d => { const seq = Number(d.toString().split(':')[1]); if (seq !== f.got + 1) f.bad++; f.got = seq; if (rtts.length < 1e6) rtts.push(performance.now() - f.at); setTimeout(pump, INTERVAL * (0.5 + Math.random()), f); });
      f.ws.on('close', () => { f.closed = true; });
    })));
  }
  console.log(`${CONNS} WebSockets open with continuous echo traffic`);
  const reloadMs: number[] = [], rates: number[] = [];
  for (let r = 0; r < RELOADS; r++) {
    fs.writeFileSync(file, cfg(r % 2 ? 2 : 3));
    migratedAt = [];
    const before = pauses.length;
    const msgs0 = flows.reduce((a, f) => a + f.got, 0);
    const t0 = Date.now();
    const res = await admin('POST', `${adminUrl}/reload`);
    if (res.status !== 200) throw new Error(`reload: ${res.body}`);
    for (;;) {
      const st = JSON.parse((await admin('GET', `${adminUrl}/status`)).body) as { retiring: unknown[] };
      if (st.retiring.length === 0) break;
      if (Date.now() - t0 > 60000) throw new Error('reload did not finish in 60 s');
      await new Promise(res => setTimeout(res, 10));
    }
    const ms = Date.now() - t0;
    await new Promise(res => setTimeout(res, 300));   // batched sample lines still on their way
    const n = pauses.length - before;
    const span = migratedAt.length > 1 ? (Math.max(...migratedAt) - Math.min(...migratedAt)) / 1000 : NaN;
    const mine = pauses.slice(before);
    reloadMs.push(ms);
    rates.push(n / Math.max(span, 0.001));
    console.log(`reload ${r + 1}: ${ms} ms, ${n} connections migrated in ${(span * 1000).toFixed(0)} ms (${(n / Math.max(span, 0.001)).toFixed(0)}/s), pause p50 ${pct(mine, 0.5)} / p99 ${pct(mine, 0.99)} ms; messages meanwhile ${flows.reduce((a, f) => a + f.got, 0) - msgs0}`);
  }
  running = false;
  const end = Date.now() + 5000;
  while (Date.now() < end && flows.some(f => !f.closed && f.got < f.sent)) await new Promise(r => setTimeout(r, 20));
  const lost = flows.reduce((a, f) => a + (f.sent - f.got), 0), bad = flows.reduce((a, f) => a + f.bad, 0), closed = flows.filter(f => f.closed).length;
  const cpu = processTree(px.child.pid!).length;
  const out = {
    date: new Date().toISOString(), load_before: load0, load_after: os.loadavg().map(x => +x.toFixed(2)), machine: `${os.cpus().length} cores, ${os.release()}, node ${process.version}`, connections: CONNS, reloads: RELOADS,
    interval_ms: INTERVAL, echo_rtt_p50_ms: pct(rtts, 0.5), echo_rtt_p99_ms: pct(rtts, 0.99), pause_p50_ms: pct(pauses, 0.5), pause_p99_ms: pct(pauses, 0.99), handoff_ack_p50_ms: pct(handoffs, 0.5), handoff_ack_p99_ms: pct(handoffs, 0.99), adopt_p50_ms: pct(adopts, 0.5), adopt_p99_ms: pct(adopts, 0.99), stop_to_send_p50_ms: pct(flushes, 0.5), stop_to_send_p99_ms: pct(flushes, 0.99), migrations: pauses.length,
    migrated_per_s_median: pct(rates, 0.5), reload_ms_median: pct(reloadMs, 0.5), lost, reordered: bad, closed, processes: cpu,
  };
  console.log(JSON.stringify(out));
  for (const f of flows) f.ws.terminate();
  px.child.kill('SIGTERM');
  for (const b of backends) b.child.kill('SIGTERM');
  await new Promise(r => setTimeout(r, 300));
  fs.rmSync(dir, { recursive: true, force: true });
  if (lost || bad || closed) process.exitCode = 1;
}

// Exit explicitly: with a long --interval the flows' next-send timers would keep the process alive.
main().then(() => process.exit(), e => { console.error(e); process.exit(1); });
