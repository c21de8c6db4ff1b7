// Acceptor handover: what a client sees while a reload renews the acceptor. HTTP requests on
// fresh connections (2 in flight, keys spread) run before, during and after a reload; each one's
// latency and status are kept. Reported: failures, latency before the reload, from the reload to
// 'renewed' (new workers starting, migration, the fresh acceptor and spares starting), and within
// 100 ms of the handover itself (the old acceptor stops accepting; the kernel queues until the new
// one accepts). Usage: node dist/bench/handover.js [--runs 3]. Bounded: ~6 s a run.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { startWithReady } from './proc';

const ROOT = path.resolve(__dirname, '..', '..');
const RUNS = Number(process.argv[process.argv.indexOf('--runs') + 1]) || 3;
const q = (xs: number[], p: number) => { const s = [...xs].sort((a, b) => a - b); return +(s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN).toFixed(1); };

async function run(): Promise<Record<string, unknown>> {
  const b = await startWithReady(process.execPath, [path.join(__dirname, 'backend.js'), 'b1'], o => o.event === 'ready', 10000);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fdproxy-bench-handover-'));
  const file = path.join(dir, 'proxy.yaml');
  fs.writeFileSync(file, `listen: 127.0.0.1:0\nworkers: 2\nadmin: 127.0.0.1:0\nlog_level: info\nbackends:\n  a: { servers: ["127.0.0.1:${b.ready.port}"] }\nroutes:\n  - { name: r, match: { path: "/x/{k}" }, key: "{k}", backend: a }\n`);
  const px = await startWithReady(process.execPath, [path.join(ROOT, 'bin', 'fdproxy.js'), '-c', file], o => o.event === 'ready', 20000);
  const events: { event: string; at: number }[] = [];
  let buf = '';
  px.child.stdout!.on('data', (d: Buffer) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i); buf = buf.slice(i + 1);
      try { const o = JSON.parse(line); if (o.event === 'acceptor_renewed' || o.event === 'renewed') events.push({ event: o.event, at: Date.parse(o.time) }); } catch { /* not JSON */ }
    }
  });
  const port = Number(px.ready.listen[0].split(':').pop());
  const lat: [number, number, number][] = [];   // [end time, ms, status]
  let fails = 0, n = 0, stop = false;
  const one = () => new Promise<void>(res => {
    const t0 = process.hrtime.bigint(), k = n++;
    const r = http.get({ host: '127.0.0.1', port, path: `/x/k${k % 50}`, agent: false }, s => {
      s.resume();
      s.on('end', () => { lat.push([Date.now(), Number(process.hrtime.bigint() - t0) / 1e6, s.statusCode ?? 0]); res(); });
    });
    r.on('error', () => { fails++; res(); });
    r.setTimeout(5000, () => r.destroy(new Error('timeout')));
  });
  const loop = async () => { while (!stop && n < 100_000) await one(); };
  const loops = [loop(), loop()];
  await new Promise(r => setTimeout(r, 2000));
  const t0 = Date.now();
  await new Promise<void>((res, rej) => http.request(`http://${px.ready.admin}/reload`, { method: 'POST', agent: false }, s => { s.resume(); s.on('end', () => res()); }).on('error', rej).end());
  while (!events.some(e => e.event === 'renewed')) {
    if (Date.now() - t0 > 30000) throw new Error('not renewed within 30 s');
    await new Promise(r => setTimeout(r, 20));
  }
  const renewedAt = events.find(e => e.event === 'renewed')!.at, handAt = events.find(e => e.event === 'acceptor_renewed')!.at;
  await new Promise(r => setTimeout(r, 1000));
  stop = true;
  await Promise.all(loops);
  px.child.kill('SIGTERM'); b.child.kill('SIGTERM');
  await new Promise(r => setTimeout(r, 300));
  fs.rmSync(dir, { recursive: true, force: true });
  const ms = (f: (x: [number, number, number]) => boolean) => lat.filter(f).map(x => x[1]);
  const before = ms(x => x[0] < t0), during = ms(x => x[0] >= t0 && x[0] <= renewedAt), near = ms(x => Math.abs(x[0] - handAt) < 100);
  return {
    requests: lat.length, failed: fails, not_200: lat.filter(x => x[2] !== 200).length,
    before_ms: { p50: q(before, 0.5), p99: q(before, 0.99), max: q(before, 1) },
    reload_to_renewed_ms: { span: renewedAt - t0, requests: during.length, p50: q(during, 0.5), p99: q(during, 0.99), max: q(during, 1) },
    within_100ms_of_handover_ms: { requests: near.length, p50: q(near, 0.5), max: q(near, 1) },
  };
}

(async () => {
  let bad = 0;
  for (let i = 0; i < RUNS; i++) {
    const r = await run();
    console.log(JSON.stringify({ date: new Date().toISOString(), load: os.loadavg().map(x => +x.toFixed(2)), ...r }));
    if (Number(r.failed) || Number(r.not_200)) bad++;
  }
  process.exit(bad ? 1 : 0);
})().catch(e => { console.error(e); process.exit(1); });
