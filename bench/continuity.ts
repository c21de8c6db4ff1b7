// Continuity benchmark: what a live migration costs. With N WebSockets under continuous numbered
// echo traffic behind fdproxy (2 workers), it measures
//   - the migration pause per connection (p50/p99: stop reading → target acked), from the
//     workers' debug "migrated" log lines,
//   - connections migrated per second during a reload, and the reload time (POST /reload →
//     every old worker retired),
//   - messages lost, duplicated or reordered (must be 0), connections closed (must be 0).
// The clients are bench/loadgen.c in echo mode (one epoll loop; every echo checked byte-equal
// against its connection id and sequence number, one message in flight per connection), so the
// client costs a few % of a core instead of the 25–50 % of 2,000 Node `ws` objects that competed
// with the proxy for the machine's two cores.
// Usage: node dist/bench/continuity.js [--conns 2000] [--reloads 3] [--interval MS]. Bounded: ~1–2 minutes.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { buildLoadgen, startWithReady, processTree } from './proc';

const arg = (name: string, def: number) => { const i = process.argv.indexOf(`--${name}`); return i > 0 ? Number(process.argv[i + 1]) : def; };
const CONNS = arg('conns', 2000);
const RELOADS = arg('reloads', 3);
/** Each connection sends one message every INTERVAL ms (after its echo): load, not saturation. */
const INTERVAL = arg('interval', 100);
const ROOT = path.resolve(__dirname, '..', '..');

interface GenResult { ops: number; p50_us: number; p99_us: number; open: number; errors: number; err: Record<string, number>; owed: number; cpu_pct: number; secs: number }

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
  // --node-args "A B": more Node/V8 flags for every fdproxy process (experiments: --trace-gc, heap sizes).
  const na = process.argv.indexOf('--node-args');
  if (na > 0) nodeArgs.push(...process.argv[na + 1].split(' ').filter(Boolean));
  const px = await startWithReady(process.execPath, [...nodeArgs, path.join(ROOT, 'bin', 'fdproxy.js'), '-c', file], o => o.event === 'ready', 20000);
  // --trace FILE: the workers' per-wave CPU lines (retire_pass, adopted_batch without samples).
  const traceFile = process.argv.includes('--trace') ? path.resolve(process.argv[process.argv.indexOf('--trace') + 1]) : null;
  // --samples FILE: one JSON line per adoption (worker, epoch ms, pause, adopt cost) and per reload start.
  const samplesFile = process.argv.includes('--samples') ? path.resolve(process.argv[process.argv.indexOf('--samples') + 1]) : null;
  if (samplesFile) fs.writeFileSync(samplesFile, '');
  // --log FILE: every line fdproxy printed except the per-migration samples (lifecycle events with their times).
  const logFile = process.argv.includes('--log') ? path.resolve(process.argv[process.argv.indexOf('--log') + 1]) : null;
  if (logFile) fs.writeFileSync(logFile, '');
  const pauses: number[] = [];   // old worker stops reading → new worker reads again
  const handoffs: number[] = []; // old worker stops reading → target's ack (its copies released)
  let migratedAt: number[] = [];
  const adopts: number[] = [], flushes: number[] = [];   // target's adopt cost; source's stop → handoff queued
  let buf = '', retired = 0, renewed = 0;
  px.child.stdout!.on('data', (d: Buffer) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i); buf = buf.slice(i + 1);
      let o: { event?: string; handoff_ms: number; pause_ms: number; time: string; pauses?: number[]; at?: number[]; handoffs?: number[]; adopt?: number[]; flush?: number[] };
      try { o = JSON.parse(line); } catch { if (logFile) fs.appendFileSync(logFile, `${Date.now()} ${line}\n`); continue; }
      if (logFile && o.event !== 'adopted_batch' && o.event !== 'migrated_batch') fs.appendFileSync(logFile, line + '\n');
      if (traceFile && (o.event === 'retire_pass' || o.event === 'adopted_batch')) {
        const { pauses: _p, at: _a, adopt: _d, flush: _f, ...rest } = o as Record<string, unknown>;
        fs.appendFileSync(traceFile, JSON.stringify(rest) + '\n');
      }
      if (o.event === 'worker_retired') { retired++; continue; }
      if (o.event === 'renewed') { renewed++; continue; }
      if (o.event === 'migrated') { handoffs.push(o.handoff_ms); continue; }
      // Batched form (one line per flush of a worker's samples; at = epoch ms of each adoption).
      if (o.event === 'migrated_batch') { handoffs.push(...o.handoffs!); continue; }
      if (o.event === 'adopted_batch' && samplesFile) {
        const w = (o as { proc?: string }).proc;
        fs.appendFileSync(samplesFile, o.pauses!.map((p, k) => JSON.stringify({ w, at: o.at![k], pause: p, adopt: o.adopt![k], flush: o.flush![k] }) + '\n').join(''));
      }
      if (o.event === 'adopted_batch') { pauses.push(...o.pauses!); migratedAt.push(...o.at!); adopts.push(...o.adopt!); flushes.push(...o.flush!); continue; }
      if (o.event !== 'adopted') continue;
      pauses.push(o.pause_ms);
      migratedAt.push(Date.parse(o.time));
    }
  });
  const port = Number(px.ready.listen[0].split(':').pop());
  const adminUrl = `http://${px.ready.admin}`;
  // 500 rooms (4 connections each); each connection sends its next numbered 64-byte message
  // INTERVAL ms after the previous one was sent, once its echo is back.
  const gen = spawn(buildLoadgen(), ['echo', '--ports', String(port), '--conns', String(CONNS), '--size', '64', '--rooms', '500',
    '--interval', String(INTERVAL), '--warmup', '0', '--until-stdin', '1', '--timeout', '10'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const genLines = readline.createInterface({ input: gen.stdout! });
  const genResult = new Promise<GenResult>((resolve, reject) => {
    genLines.on('line', l => { try { const o = JSON.parse(l); if (o.event === 'result') resolve(o); } catch { /* not ours */ } });
    gen.on('exit', code => reject(new Error(`loadgen exited ${code} without a result`)));
  });
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('loadgen: connections not open in 60 s')), 60_000);
    genLines.on('line', l => { if (l.includes('"opened"')) { clearTimeout(t); const o = JSON.parse(l); if (o.errors) reject(new Error(`loadgen: ${o.errors} errors while opening`)); else resolve(); } });
  });
  console.log(`${CONNS} WebSockets open with continuous echo traffic (one 64-byte message per connection every ${INTERVAL} ms)`);
  const reloadMs: number[] = [], rates: number[] = [];
  let workers = 2;   // as the first config says
  for (let r = 0; r < RELOADS; r++) {
    const oldWorkers = workers;
    workers = r % 2 ? 2 : 3;
    fs.writeFileSync(file, cfg(workers));
    migratedAt = [];
    const before = pauses.length;
    const retired0 = retired, renewed0 = renewed;
    const t0 = Date.now();
    if (samplesFile) fs.appendFileSync(samplesFile, JSON.stringify({ reload: r + 1, at: t0 }) + '\n');
    const res = await admin('POST', `${adminUrl}/reload`);
    if (res.status !== 200) throw new Error(`reload: ${res.body}`);
    // Done when every old worker has logged worker_retired (all its connections moved). Waiting on
    // the log, not by polling /status every 10 ms: the polling took 10–17 % of a core from the
    // machine the migration runs on (bench process and supervisor).
    while (retired - retired0 < oldWorkers) {
      if (Date.now() - t0 > 60000) throw new Error('reload did not finish in 60 s');
      await new Promise(res => setTimeout(res, 5));
    }
    const ms = Date.now() - t0;
    for (;;) {   // and the supervisor has let them go
      const st = JSON.parse((await admin('GET', `${adminUrl}/status`)).body) as { retiring: unknown[] };
      if (st.retiring.length === 0) break;
      if (Date.now() - t0 > 60000) throw new Error('old workers still retiring after 60 s');
      await new Promise(res => setTimeout(res, 50));
    }
    // A reload then renews the acceptor and the spares (fresh processes): not part of the reload
    // time, but the next reload waits for it (its process starts would compete with the migration).
    while (renewed === renewed0) {
      if (Date.now() - t0 > 60000) throw new Error('acceptor and spares not renewed 60 s after the reload');
      await new Promise(res => setTimeout(res, 20));
    }
    await new Promise(res => setTimeout(res, 300));   // batched sample lines still on their way
    const n = pauses.length - before;
    const span = migratedAt.length > 1 ? (Math.max(...migratedAt) - Math.min(...migratedAt)) / 1000 : NaN;
    const mine = pauses.slice(before);
    reloadMs.push(ms);
    rates.push(n / Math.max(span, 0.001));
    console.log(`reload ${r + 1}: ${ms} ms, ${n} connections migrated in ${(span * 1000).toFixed(0)} ms (${(n / Math.max(span, 0.001)).toFixed(0)}/s), pause p50 ${pct(mine, 0.5)} / p99 ${pct(mine, 0.99)} ms`);
  }
  gen.stdin!.end();   // no more messages; the result comes once every echo still owed is back (≤ 10 s)
  const g = await genResult;
  // owed: sent, never echoed; mismatch: an echo that was not the next byte-equal message of its
  // connection (lost, duplicated, reordered or misrouted); closed: the connection was closed.
  const lost = g.owed, bad = g.err.mismatch, closed = g.err.closed + g.err.handshake + g.err.connect, timeouts = g.err.timeout;
  const cpu = processTree(px.child.pid!).length;
  const out = {
    date: new Date().toISOString(), load_before: load0, load_after: os.loadavg().map(x => +x.toFixed(2)), machine: `${os.cpus().length} cores, ${os.release()}, node ${process.version}`, connections: CONNS, reloads: RELOADS,
    interval_ms: INTERVAL, messages: g.ops, client_cpu_pct: g.cpu_pct, echo_rtt_p50_ms: g.p50_us / 1000, echo_rtt_p99_ms: g.p99_us / 1000, pause_p50_ms: pct(pauses, 0.5), pause_p99_ms: pct(pauses, 0.99), handoff_ack_p50_ms: pct(handoffs, 0.5), handoff_ack_p99_ms: pct(handoffs, 0.99), adopt_p50_ms: pct(adopts, 0.5), adopt_p99_ms: pct(adopts, 0.99), stop_to_send_p50_ms: pct(flushes, 0.5), stop_to_send_p99_ms: pct(flushes, 0.99), migrations: pauses.length,
    migrated_per_s_median: pct(rates, 0.5), reload_ms_median: pct(reloadMs, 0.5), lost, reordered: bad, closed, timeouts, processes: cpu,
  };
  console.log(JSON.stringify(out));
  px.child.kill('SIGTERM');
  for (const b of backends) b.child.kill('SIGTERM');
  await new Promise(r => setTimeout(r, 300));
  fs.rmSync(dir, { recursive: true, force: true });
  if (lost || bad || closed || timeouts) process.exitCode = 1;
}

// Exit explicitly: nothing of the run may keep the process alive.
main().then(() => process.exit(), e => { console.error(e); process.exit(1); });
