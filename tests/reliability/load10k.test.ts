// Load: 10,000 concurrent WebSockets through the proxy with continuous numbered echo traffic for
// 60 s. The client side is bench/loadgen.c (one epoll loop, prebuilt
// masked frames, every echo checked byte-equal with the connection id and sequence number stamped
// in it; plus: traffic starts once all are open, one message per connection every INTERVAL ms),
// compiled here and run as two processes of 5,000 connections each (open-files limit per process).
import test from 'ava';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startBackend, startProxy, adminGet, type BackendReady } from '../helpers/proxy';
import { fdCount, until, ROOT, type Started } from '../helpers/procs';
import { rssKiB, sleep } from '../fixtures/rawclient';

const CONNS = 10_000, PROCS = 2, SECS = 60, INTERVAL_MS = 2000;

interface GenResult { event: 'result'; ops: number; rate: number; open: number; errors: number; err: Record<string, number>; p99_us: number; max_us: number }

function loadgen(bin: string, port: number, conns: number): { proc: ChildProcess; measuring: Promise<void>; opened: Promise<number>; result: Promise<GenResult> } {
  const proc = spawn(bin, ['echo', '--ports', String(port), '--conns', String(conns), '--size', '16', '--warmup', '1',
    '--duration', String(SECS), '--inflight', '300', '--timeout', '20', '--interval', String(INTERVAL_MS)], { stdio: ['ignore', 'pipe', 'inherit'] });
  process.on('exit', () => { if (proc.exitCode === null) proc.kill('SIGKILL'); });
  let buf = '';
  let onMeasure!: () => void, onResult!: (r: GenResult) => void, onFail!: (e: Error) => void, onOpened!: (s: number) => void;
  const opened = new Promise<number>(r => { onOpened = r; });
  const measuring = new Promise<void>(r => { onMeasure = r; });
  const result = new Promise<GenResult>((r, j) => { onResult = r; onFail = j; });
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i); buf = buf.slice(i + 1);
      if (line.includes('"measure-start"')) onMeasure();
      if (line.includes('"event":"opened"')) onOpened(JSON.parse(line).secs);
      if (line.includes('"event":"result"')) onResult(JSON.parse(line));
    }
  });
  // 'close', not 'exit': 'exit' can come before the last stdout data (the result line) is read.
  proc.on('close', code => onFail(new Error(`loadgen exited ${code} without a result line`)));
  return { proc, measuring, opened, result };
}

let b1: Started<BackendReady>, b2: Started<BackendReady>;
test.before(async () => { [b1, b2] = await Promise.all([startBackend('l1'), startBackend('l2')]); });
test.after.always(async () => { await b1?.stop(); await b2?.stop(); });

test(`LONG (~85 s): ${CONNS.toLocaleString('en')} concurrent WebSockets, numbered echo traffic for ${SECS} s: 0 lost or reordered, fds and memory stable, fds back to baseline`, async t => {
  t.timeout(170_000);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fdproxy-load-'));
  const bin = path.join(dir, 'loadgen');
  execFileSync('gcc', ['-O2', '-o', bin, path.join(ROOT, 'bench', 'loadgen.c'), '-lcrypto']);
  const px = await startProxy(`listen: 127.0.0.1:0
workers: 2
admin: 127.0.0.1:0
log_level: warn
backends:
  app:
    servers: ["127.0.0.1:${b1.ready.port}", "127.0.0.1:${b2.ready.port}"]
routes:
  - name: ws
    match: { path: "/ws/{room}" }
    key: "{room}"
    backend: app
`);
  try {
    const proxyPids = [px.ready.pid, px.ready.acceptor, ...px.ready.workers.map(w => w.pid)];
    const all = [...proxyPids, b1.ready.pid, b2.ready.pid];
    // Baseline once the proxy has settled (workers finish wiring peer channels after "ready").
    await sleep(1500);
    const base = all.map(fdCount);
    const gens = Array.from({ length: PROCS }, () => loadgen(bin, px.port, CONNS / PROCS));
    const openSecs = await Promise.all(gens.map(g => g.opened));
    t.log(`${CONNS} WebSockets opened in ${Math.max(...openSecs).toFixed(1)} s`);
    await Promise.all(gens.map(g => g.measuring));
    await sleep(5000);
    const fdsEarly = all.map(fdCount), rssEarly = proxyPids.map(rssKiB);
    const samples: { fds: number[]; rss: number[] }[] = [];
    for (let i = 0; i < 10; i++) { await sleep(5000); samples.push({ fds: all.map(fdCount), rss: proxyPids.map(rssKiB) }); }
    const fdsLate = all.map(fdCount), rssLate = proxyPids.map(rssKiB);
    const results = await Promise.all(gens.map(g => g.result));
    const ops = results.reduce((a, r) => a + r.ops, 0);
    const errors = results.reduce((a, r) => a + r.errors, 0);
    const open = results.reduce((a, r) => a + r.open, 0);
    t.log(`${open} WebSockets open at the end, ${ops} echoes checked in ${SECS} s (${Math.round(ops / SECS)}/s, one per connection every ${INTERVAL_MS} ms), errors ${JSON.stringify(results.map(r => r.err))}, p99 ${Math.max(...results.map(r => r.p99_us))} µs, max ${Math.max(...results.map(r => r.max_us))} µs`);
    t.log(`fds (supervisor, acceptor, workers, backends): baseline ${base} → loaded ${fdsEarly} → end of run ${fdsLate}`);
    t.log(`RSS MiB (supervisor, acceptor, workers): +5 s ${rssEarly.map(k => Math.round(k / 1024))} → +55 s ${rssLate.map(k => Math.round(k / 1024))}; max over run ${proxyPids.map((_, i) => Math.round(Math.max(...samples.map(s => s.rss[i])) / 1024))}`);
    t.is(errors, 0, 'no echo lost, mismatched (reordered/misrouted), timed out or closed');
    t.is(open, CONNS, 'every connection open to the end');
    t.true(ops > CONNS, 'traffic flowed');
    // fds stable under steady load: the count at the end equals the count after warm-up. The
    // workers are compared as a whole: an automatic rebalance may move keys (and their fds)
    // between them, which is not a leak.
    const metrics: string = await adminGet(px, '/metrics');
    const rebalances = metrics.split('\n').filter(l => l.startsWith('fdproxy_auto_rebalances_total')).reduce((a, l) => a + Number(l.split(' ').pop()), 0);
    const sum = (xs: number[], from: number, to: number) => xs.slice(from, to).reduce((a, b) => a + b, 0);
    const w0 = 2, w1 = 2 + px.ready.workers.length;
    t.true(Math.abs(sum(fdsLate, w0, w1) - sum(fdsEarly, w0, w1)) <= 10, `workers: fds ${fdsEarly.slice(w0, w1)} → ${fdsLate.slice(w0, w1)} (automatic rebalances: ${rebalances})`);
    for (let i = 0; i < all.length; i++) if (i < w0 || i >= w1) t.true(Math.abs(fdsLate[i] - fdsEarly[i]) <= 10, `process ${i}: fds ${fdsEarly[i]} → ${fdsLate[i]}`);
    // memory stable: no process of the proxy grows by more than half (plus GC slack) in 50 s.
    for (let i = 0; i < proxyPids.length; i++) t.true(rssLate[i] <= rssEarly[i] * 1.5 + 32 * 1024, `process ${i}: RSS ${rssEarly[i]} → ${rssLate[i]} KiB`);
    // Every connection is closed by the generators on exit: every process back to its baseline.
    const back = await until(() => all.every((p, i) => fdCount(p) <= base[i] + 3), 20000);
    t.true(back, `fds back to baseline: ${base} → ${all.map(fdCount)}`);
  } finally {
    await px.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
