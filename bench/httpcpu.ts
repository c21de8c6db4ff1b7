// Worker CPU per proxied HTTP keep-alive request, two builds compared in alternating runs
// (A B A B …) on this noisy shared machine: wrk -t2 -c100 against fdproxy (2 workers) in front of
// two bench backends; CPU is utime+stime of the worker processes from /proc over wrk's window,
// divided by the requests wrk completed.
// Usage: node dist/bench/httpcpu.js [--runs N] [--duration S] [--close] binA.js [binB.js …]
//   (each bin is a bin/fdproxy.js of some build; labels are the paths)
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { foreignProbe, startWithReady, stopChild, Started } from './proc';

const CLK_TCK = 100;
function cpuSplit(pid: number): [number, number] {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return [Number(f[11]) / CLK_TCK, Number(f[12]) / CLK_TCK];
  } catch { return [0, 0]; }
}
const sum = (pids: number[]) => pids.map(cpuSplit).reduce((a, b) => [a[0] + b[0], a[1] + b[1]], [0, 0]);

function wrk(port: number, secs: number, close: boolean): Promise<{ requests: number; rps: number; errors: string }> {
  return new Promise((resolve, reject) => {
    const args = ['-t2', '-c100', `-d${secs}s`, '--timeout', '5s'];
    if (close) args.push('-H', 'Connection: close');
    const c = spawn('wrk', [...args, `http://127.0.0.1:${port}/`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const t = setTimeout(() => { try { process.kill(c.pid!, 'SIGKILL'); } catch { /* gone */ } }, (secs + 20) * 1000);
    c.stdout.on('data', (d) => { out += d; });
    c.on('exit', () => {
      clearTimeout(t);
      const requests = Number(/(\d+) requests in/.exec(out)?.[1]), rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
      if (!Number.isFinite(requests)) return reject(new Error(`wrk: ${out}`));
      const errs = [/Socket errors:.*/.exec(out)?.[0], /Non-2xx.*/.exec(out)?.[0]].filter(Boolean).join('; ');
      resolve({ requests, rps, errors: errs });
    });
  });
}

async function main(): Promise<void> {
  const a = process.argv.slice(2);
  const val = (k: string, d: string) => { const i = a.indexOf(k); if (i < 0) return d; const v = a[i + 1]; a.splice(i, 2); return v; };
  const runs = Number(val('--runs', '4')), secs = Number(val('--duration', '5'));
  const close = a.includes('--close'); if (close) a.splice(a.indexOf('--close'), 1);
  const bins = a.map((b) => path.resolve(b));
  if (!bins.length) throw new Error('usage: httpcpu [--runs N] [--duration S] [--close] bin/fdproxy.js …');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fdp-httpcpu-'));
  const backends: Started[] = [];
  try {
    for (const n of ['b1', 'b2']) backends.push(await startWithReady(process.execPath, [path.join(__dirname, 'backend.js'), n], (o) => o.event === 'ready', 10_000));
    const cfg = path.join(dir, 'proxy.yaml');
    fs.writeFileSync(cfg, `listen: 127.0.0.1:0\nworkers: 2\nlog_level: warn\nbackends:\n  echo: { servers: [${backends.map((b) => `"127.0.0.1:${b.ready.port}"`).join(', ')}] }\n` +
      `routes:\n  - { name: http, match: { path: / }, backend: echo }\n`);
    const res = new Map<string, string[]>();
    for (let r = 0; r < runs; r++) {
      for (const bin of bins) {
        const s = await startWithReady(process.execPath, [bin, '-c', cfg], (o) => o.event === 'ready', 20_000, { cwd: dir });
        try {
          const port = Number(String(s.ready.listen[0]).split(':').pop());
          const workers: number[] = s.ready.workers.map((w: any) => w.pid);
          await wrk(port, 1, close);  // warm-up
          const c0 = sum(workers), f = foreignProbe();
          const w = await wrk(port, secs, close);
          const c1 = sum(workers), other = f();
          const us = (x: number) => (x * 1e6 / w.requests).toFixed(1);
          const line = `${us(c1[0] + c1[1] - c0[0] - c0[1])} µs/req (user ${us(c1[0] - c0[0])} sys ${us(c1[1] - c0[1])})  ${Math.round(w.rps)} req/s  other ${Math.round(other)}%${w.errors ? '  ' + w.errors : ''}`;
          console.log(`run ${r + 1} ${bin}: ${line}`);
          (res.get(bin) ?? res.set(bin, []).get(bin)!).push(line.split(' ')[0]);
        } finally { await stopChild(s.child, 8000); }
      }
    }
    const med = (v: number[]) => { const s = [...v].sort((x, y) => x - y); return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
    const first = res.get(bins[0])!.map(Number);
    for (const [bin, v] of res) {
      const n = v.map(Number);
      // Runs of one round were back to back: the ratio to the first build within a round is steadier than either figure.
      const ratios = n.map((x, i) => x / first[i]);
      console.log(`${bin}: ${v.join(' ')}  median ${med(n).toFixed(1)} µs/req; ÷ first build per round: median ${med(ratios).toFixed(3)}`);
    }
  } finally {
    for (const b of backends) await stopChild(b.child);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
