// `npm run bench` (quick, < ~3 min) / `npm run bench:full` (< ~12 min): fdproxy against direct,
// nginx, HAProxy, node http-proxy, cluster+sticky and the Node floor, all in front of the same two backends.
// Subjects alternate in rounds (A B C … A B C …); the table shows medians over rounds.
// Options: --full, --rounds N, --duration S, --subject-warmup S, --only name,name, --tests test,test (e.g. httpKa,httpClose), --no-write, --idle-conns N
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { httpLoad, idleMemory, runLoadgen, Measure } from './measure';
import { buildLoadgen, startWithReady, stopChild, sleep, Started } from './proc';
import { ratioTable, RoundResult, Row, summarize, table, TestName, writeResults } from './report';
import { ALL, Subject } from './subjects';

const ROOT = path.resolve(__dirname, '..', '..');
const BENCH = path.join(ROOT, 'bench');
const WORK = path.join(BENCH, '.work');

function opts() {
  const a = process.argv.slice(2);
  const val = (k: string) => { const i = a.indexOf(k); return i >= 0 ? a[i + 1] : undefined; };
  const full = a.includes('--full');
  return {
    full,
    rounds: Number(val('--rounds') ?? (full ? 3 : 1)),
    warmup: 0.5,
    // Every subject is warmed (not measured) right after it starts, as the backends are once: a
    // JIT-compiled subject needs ~8 s of handshake load to reach its steady state (fdproxy: 530 →
    // 350 µs per handshake from the first 4 s to the third), nginx needs none.
    subjectWarm: Number(val('--subject-warmup') ?? (full ? 6 : 2)),
    duration: Number(val('--duration') ?? (full ? 3 : 2)),
    idleConns: Number(val('--idle-conns') ?? 9000),
    only: val('--only')?.split(','),
    tests: val('--tests')?.split(','),
    write: !a.includes('--no-write'),
  };
}

function setup(): string {
  try { execFileSync('sh', [path.join(BENCH, 'setup.sh')], { stdio: 'inherit', timeout: 900_000 }); }
  catch { console.error('bench: setup step failed; peers that are missing are reported as not available'); }
  return buildLoadgen();
}

function backendStats(port: number): Promise<number> {
  return new Promise((resolve) => {
    http.get({ host: '127.0.0.1', port, path: '/_stats', agent: false, timeout: 2000 }, (res) => {
      let b = ''; res.on('data', (d) => { b += d; }); res.on('end', () => { try { resolve(JSON.parse(b).ws); } catch { resolve(-1); } });
    }).on('error', () => resolve(-1));
  });
}
/** Wait (bounded) until the backends hold no WebSocket: the previous test is really over.
    Returns how many were still open at the deadline (a proxy that does not pass the client's
    close on to the backend leaves them until the backend's own close timeout). */
async function backendsIdle(ports: number[], ms = 3_000): Promise<number> {
  const end = Date.now() + ms;
  let n: number[] = [];
  while (Date.now() < end) {
    n = await Promise.all(ports.map(backendStats));
    if (n.every((x) => x === 0)) return 0;
    await sleep(100);
  }
  return n.reduce((a, b) => a + Math.max(0, b), 0);
}

async function runSubject(s: Subject, backends: number[], dir: string, round: number, o: ReturnType<typeof opts>, loadgen: string): Promise<RoundResult> {
  const res: RoundResult = { subject: s.name, round, tests: {} };
  let run;
  try { run = await s.start(backends, dir); } catch (e) { res.failure = `start failed: ${String(e).split('\n')[0]}`; console.error(String(e)); return res; }
  const ports = run.ports.join(','), roots = run.roots;
  const W = String(o.warmup), D = String(o.duration);
  const limit = (o.warmup + o.duration + 60) * 1000;
  if (o.subjectWarm > 0) {
    // the same kinds of work it is measured on, 60 % handshakes (the path with the most code)
    const w = o.subjectWarm, ign = () => {};
    await runLoadgen(loadgen, ['handshake', '--ports', ports, '--conns', '50', '--rooms', '1000', '--warmup', '0', '--duration', String(w * 0.6)], [], limit).catch(ign);
    await runLoadgen(loadgen, ['echo', '--ports', ports, '--conns', '100', '--size', '64', '--warmup', '0', '--duration', String(w * 0.2)], [], limit).catch(ign);
    await httpLoad(run.ports, [], w * 0.1, 0, false).catch(ign);
    await httpLoad(run.ports, [], w * 0.1, 0, true).catch(ign);
    await backendsIdle(backends);
  }
  const step = async (name: TestName, f: () => Promise<Measure>) => {
    if ((o.tests && !o.tests.includes(name)) || s.skip?.includes(name)) return;
    try {
      const m = await f(); res.tests[name] = m;
      const extra = name === 'idle' ? ` (${m.extra?.held} held, ${(Number(m.extra?.openSecs) || 0).toFixed(1)} s to open)` : '';
      console.log(`  ${s.name.padEnd(16)} ${name.padEnd(10)} ${name === 'idle' ? m.rate.toFixed(1) + ' KiB/conn' : Math.round(m.rate) + '/s'}  p50 ${(m.p50_us / 1000).toFixed(2)} ms  p99 ${(m.p99_us / 1000).toFixed(2)} ms  subject CPU ${m.subjectCpuS.toFixed(2)} s  gen CPU ${Math.round(m.genCpuPct)}%  other ${Math.round(m.foreignPct ?? 0)}%${m.errors ? `  ERRORS ${m.errors} ${m.errDetail}` : ''}${extra}`);
    } catch (e) { res.tests[name] = { rate: NaN, p50_us: NaN, p99_us: NaN, ops: 0, errors: 1, errDetail: String(e).slice(0, 200), subjectCpuS: 0, genCpuPct: 0 }; console.error(`  ${s.name} ${name}: ${e}`); }
    const t = Date.now(), left = await backendsIdle(backends);
    if (left) {
      const note = `${left} backend WebSockets still open ${((Date.now() - t) / 1000).toFixed(0)} s after ${name} ended`;
      console.log(`  ${s.name.padEnd(16)} NOTE: ${note}`); (res.notes ??= []).push(note);
    }
  };
  try {
    await step('handshake', () => runLoadgen(loadgen, ['handshake', '--ports', ports, '--conns', '50', '--rooms', '1000', '--warmup', W, '--duration', D], roots, limit));
    await step('echo64', () => runLoadgen(loadgen, ['echo', '--ports', ports, '--conns', '100', '--size', '64', '--warmup', W, '--duration', D], roots, limit));
    await step('echo4k', () => runLoadgen(loadgen, ['echo', '--ports', ports, '--conns', '100', '--size', '4096', '--warmup', W, '--duration', D], roots, limit));
    await step('httpKa', () => httpLoad(run.ports, roots, o.duration, o.warmup, false));
    await step('httpClose', () => httpLoad(run.ports, roots, o.duration, o.warmup, true));
    if (roots.length) await step('idle', () => idleMemory(loadgen, run.ports, roots, o.idleConns, 1500));
  } finally { await run.stop(); }
  return res;
}

function machine(): string {
  const cpu = (fs.readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/)?.[1] ?? '?').trim();
  return `${os.cpus().length} CPUs (nproc ${execFileSync('nproc', { encoding: 'utf8' }).trim()}, ${cpu}), Linux ${os.release()}, Node ${process.version}, ${Math.round(os.totalmem() / 2 ** 30)} GiB RAM`;
}

async function main(): Promise<void> {
  const o = opts();
  const t0 = Date.now();
  const loadgen = setup();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fdproxy-bench-'));
  const backends: Started[] = [];
  const cleanup = async () => { for (const b of backends) await stopChild(b.child); fs.rmSync(dir, { recursive: true, force: true }); };
  process.once('SIGINT', () => { void cleanup().then(() => process.exit(130)); });
  const results: RoundResult[] = [];
  const subjects = ALL.filter((s) => !o.only || o.only.includes(s.name));
  const unavailable = new Map<string, string>();
  try {
    for (const name of ['b1', 'b2']) backends.push(await startWithReady(process.execPath, [path.join(__dirname, 'backend.js'), name], (x) => x.event === 'ready', 10_000));
    const bports = backends.map((b) => b.ready.port as number);
    for (const s of subjects) { const why = s.available(); if (why) { unavailable.set(s.name, why); console.log(`bench: ${s.name} not available: ${why}`); } }
    // the backends are Node processes: warm their JIT so the first subject is not penalised
    console.log('warming the backends (not measured)');
    await runLoadgen(loadgen, ['echo', '--ports', bports.join(','), '--conns', '100', '--size', '64', '--warmup', '0', '--duration', '1.5'], [], 30_000).catch(() => {});
    await runLoadgen(loadgen, ['handshake', '--ports', bports.join(','), '--conns', '50', '--warmup', '0', '--duration', '1.5'], [], 30_000).catch(() => {});
    await httpLoad(bports, [], 1, 0, false).catch(() => {});
    await backendsIdle(bports);
    for (let r = 1; r <= o.rounds; r++) {
      console.log(`round ${r}/${o.rounds}`);
      for (const s of subjects) {
        if (unavailable.has(s.name)) continue;
        results.push(await runSubject(s, bports, dir, r, o, loadgen));
      }
    }
  } finally { await cleanup(); }

  const rows: Row[] = subjects.map((s) => summarize(s.name, results, s.name === 'direct', unavailable.has(s.name) ? `not available: ${unavailable.get(s.name)}` : undefined));
  const byName = (n: string) => rows.find((r) => r.subject === n);
  const secs = Math.round((Date.now() - t0) / 1000);
  const errs = rows.flatMap((r) => r.errNotes.map((n) => `- ${r.subject} ${n}`));
  const notes = rows.flatMap((r) => r.notes.map((n) => `- ${r.subject} ${n}`));
  const body = [
    `Latest run: ${new Date().toISOString()} — ${o.full ? 'full' : 'quick'} mode, ${o.rounds} round(s) × ${o.duration} s per test (warm-up ${o.warmup} s; each subject warmed ${o.subjectWarm} s after its start), medians over rounds, ${secs} s in all.`,
    `Machine: ${machine()}. Peers: ${peerVersions()}.`,
    '', table(rows), '', 'Ratio to direct (what the proxy keeps of the no-proxy throughput; for latency: how many times slower):', '',
    ratioTable(rows, byName('direct'), 'direct'), '', 'Ratio to nginx (issue 6 targets for fdproxy: WS msg/s and handshakes/s ≥ 1.00×, p99 ≤ 1.2×, HTTP ≥ 0.80×; for latency, memory and CPU lower is better):', '',
    ratioTable(rows, byName('nginx'), 'nginx'), '',
    errs.length ? `Errors (a run with errors is failed):\n\n${errs.join('\n')}\n` : 'Every response was validated (101 + Sec-WebSocket-Accept, byte-equal echoes with connection id and sequence number, close handshake; HTTP statuses via wrk and one exact-body check per subject): no errors.',
    notes.length ? `\nObservations (not errors; the next test waited at most 3 s for them):\n\n${notes.join('\n')}\n` : '',
    '', 'How each figure is made: see bench/README.md. Run it again with `npm run bench` (quick) or `npm run bench:full`.',
  ].join('\n');
  console.log('\n' + body);
  fs.writeFileSync(path.join(WORK, 'last.json'), JSON.stringify({ date: new Date().toISOString(), opts: o, results }, null, 1));
  if (o.write) { writeResults(path.join(BENCH, 'RESULTS.md'), body); console.log('\nbench: wrote the "## proxy vs peers" section of bench/RESULTS.md'); }
}

function peerVersions(): string {
  // nginx -v prints on stderr, wrk -v exits 1: take both streams whatever the status
  const v = (cmd: string, args: string[]) => { const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 5000 }); return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim() || 'n/a'; };
  return [v('nginx', ['-v']).replace('nginx version: ', ''), v('haproxy', ['-v']).split('\n')[0].replace(/ - https.*/, '').replace('HAProxy version', 'HAProxy'),
    `http-proxy ${require('http-proxy/package.json').version}`, `@socket.io/sticky ${require('@socket.io/sticky/package.json').version} (mechanism)`,
    v('wrk', ['-v']).split('\n')[0].split(' [')[0]].join(', ');
}

main().catch((e) => { console.error(e); process.exit(1); });
