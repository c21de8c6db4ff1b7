// Start-up benchmark: what a new fdproxy process costs before it serves. Per run it starts
// `bin/fdproxy.js -c <tmp yaml>` (2 workers, port 0, admin on port 0, no traffic) and measures
//   - spawn → the supervisor's JSON "ready" line (supervisor, acceptor, 2 workers and the spares
//     all starting at once), and the CPU each process has used at that point,
//   - POST /reload → its answer (2 new workers started, ready and wired: the part of a reload
//     before the first migration), and the CPU of each new worker at that point.
// CPU is the scheduler's on-CPU time (/proc/<pid>/schedstat, ns; utime+stime ticks are 10 ms).
// Several --bin (other checkouts' bin/fdproxy.js) run alternately, A B A B …, on this shared
// machine: compare their medians from the same invocation.
// Usage: node dist/bench/startup.js [--runs 7] [--relay] [--bin path/to/bin/fdproxy.js]…
// Bounded: every wait has a timeout; only the processes it started are signalled.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { startWithReady, processTree } from './proc';

const ROOT = path.resolve(__dirname, '..', '..');
const argv = process.argv.slice(2);
const num = (name: string, def: number) => { const i = argv.indexOf(`--${name}`); return i >= 0 ? Number(argv[i + 1]) : def; };
const RUNS = num('runs', 7);
const RELAY = argv.includes('--relay');
const BINS = argv.flatMap((a, i) => (a === '--bin' ? [path.resolve(argv[i + 1])] : []));
if (BINS.length === 0) BINS.push(path.join(ROOT, 'bin', 'fdproxy.js'));

/** On-CPU time of a process (ms), all threads; NaN if gone. */
function cpuMs(pid: number): number {
  let t = 0;
  try {
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      try { t += Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]); } catch { /* thread gone */ }
    }
  } catch { return NaN; }
  return t / 1e6;
}

function request(method: string, url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent: false, timeout: 20000 }, res => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', d => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url}: timeout`)));
    req.on('error', reject);
    req.end();
  });
}

const median = (xs: number[]) => { const s = xs.filter(x => !Number.isNaN(x)).sort((a, b) => a - b); return s.length ? s[Math.floor(s.length / 2)] : NaN; };
const r1 = (x: number) => Math.round(x * 10) / 10;

interface Run { ready_ms: number; sup_cpu: number; acc_cpu: number; worker_cpu: number[]; reload_ms: number; new_worker_cpu: number[] }

async function once(bin: string, file: string): Promise<Run> {
  const t0 = performance.now();
  const px = await startWithReady(process.execPath, [bin, '-c', file], o => o.event === 'ready', 20000);
  const ready_ms = performance.now() - t0;
  const r = px.ready as { pid: number; acceptor: number; workers: { pid: number }[]; admin: string };
  const worker_cpu = r.workers.map(w => cpuMs(w.pid));
  const acc_cpu = cpuMs(r.acceptor), sup_cpu = cpuMs(r.pid);
  const pids = new Set(processTree(r.pid));
  try {
    const t1 = performance.now();
    const res = await request('POST', `http://${r.admin}/reload`);
    const reload_ms = performance.now() - t1;
    if (res.status !== 200) throw new Error(`reload: ${res.status} ${res.body}`);
    const st = JSON.parse((await request('GET', `http://${r.admin}/status`)).body) as { workers: { pid: number }[] };
    const new_worker_cpu = st.workers.map(w => cpuMs(w.pid));
    for (const p of processTree(r.pid)) pids.add(p);
    return { ready_ms, sup_cpu, acc_cpu, worker_cpu, reload_ms, new_worker_cpu };
  } finally {
    // Fast stop; the supervisor kills its children. Anything of ours still alive after it: SIGKILL.
    const exited = new Promise<void>(res => { if (px.child.exitCode !== null) res(); else px.child.once('exit', () => res()); });
    px.child.kill('SIGINT');
    await Promise.race([exited, new Promise(res => setTimeout(res, 10000).unref())]);
    for (const p of pids) {
      let cmd = '';
      try { cmd = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8'); } catch { continue; }   // gone
      if (cmd.includes(bin) || cmd.includes(path.join(path.dirname(path.dirname(bin)), 'dist', 'proxy'))) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
    }
  }
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fdproxy-bench-startup-'));
  const file = path.join(dir, 'proxy.yaml');
  // A backend nobody connects to (no traffic, no health checks): start-up cost only.
  fs.writeFileSync(file, `listen: 127.0.0.1:0
workers: 2
admin: 127.0.0.1:0
log_level: warn
backends:
  app: { servers: ["127.0.0.1:9"] }
routes:
  - { name: ws, match: { path: "/ws/{room}" }, key: "{room}", backend: app${RELAY ? ', websocket: relay' : ''} }
  - { name: default, match: { path: / }, backend: app }
`);
  const runs = new Map<string, Run[]>(BINS.map(b => [b, []]));
  try {
    for (let i = 0; i < RUNS; i++) {
      for (const bin of BINS) {
        const x = await once(bin, file);
        runs.get(bin)!.push(x);
        console.log(`run ${i + 1} ${bin}: ready ${x.ready_ms.toFixed(0)} ms (cpu: supervisor ${x.sup_cpu.toFixed(0)}, acceptor ${x.acc_cpu.toFixed(0)}, workers ${x.worker_cpu.map(c => c.toFixed(0)).join('/')} ms); ` +
          `reload ${x.reload_ms.toFixed(0)} ms (new workers ${x.new_worker_cpu.map(c => c.toFixed(0)).join('/')} ms cpu)`);
      }
    }
  } finally { fs.rmSync(dir, { recursive: true, force: true }); }
  const summary = BINS.map(bin => {
    const xs = runs.get(bin)!;
    return {
      bin, runs: xs.length, relay: RELAY,
      ready_ms: r1(median(xs.map(x => x.ready_ms))),
      supervisor_cpu_ms: r1(median(xs.map(x => x.sup_cpu))), acceptor_cpu_ms: r1(median(xs.map(x => x.acc_cpu))),
      worker_cpu_ms: r1(median(xs.flatMap(x => x.worker_cpu))),
      reload_ms: r1(median(xs.map(x => x.reload_ms))), new_worker_cpu_ms: r1(median(xs.flatMap(x => x.new_worker_cpu))),
    };
  });
  for (const s of summary) console.log(`median of ${s.runs}: ${s.bin}: ready ${s.ready_ms} ms, cpu supervisor ${s.supervisor_cpu_ms} / acceptor ${s.acceptor_cpu_ms} / worker ${s.worker_cpu_ms} ms; reload ${s.reload_ms} ms, new worker cpu ${s.new_worker_cpu_ms} ms`);
  console.log(JSON.stringify({ event: 'result', date: new Date().toISOString(), load: os.loadavg().map(x => +x.toFixed(2)), node: process.version, results: summary }));
}

main().catch(e => { console.error(e); process.exit(1); });
