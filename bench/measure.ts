// One measurement each: drive a running subject with the C load generator (WebSocket) or wrk
// (HTTP), read the subject's CPU from /proc at the start and end of the measurement window, and
// return rates, latencies, errors and the load generator's own CPU.
import { spawn } from 'node:child_process';
import * as http from 'node:http';
import { cpuOf, cpuOfTree, foreignProbe, rssOfTree, sleep } from './proc';
import { HTTP_BODY } from './backend';

export interface Measure {
  rate: number; p50_us: number; p99_us: number; ops: number; errors: number; errDetail: string;
  subjectCpuS: number; genCpuPct: number; foreignPct?: number; extra?: Record<string, number>;
}

function lines(onLine: (l: string) => void): (d: Buffer) => void {
  let buf = '';
  return (d) => { buf += d; let nl; while ((nl = buf.indexOf('\n')) >= 0) { const l = buf.slice(0, nl); buf = buf.slice(nl + 1); onLine(l); } };
}

/** Run loadgen; `onHolding` (idle mode) runs while the connections are held. */
export function runLoadgen(bin: string, args: string[], roots: number[], limitMs: number,
  onHolding?: (held: number) => Promise<Record<string, number>>): Promise<Measure> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let cpu0 = 0, cpu1 = 0, result: any = null, err = '', extra: Record<string, number> = {};
    let foreign: (() => number) | null = null, foreignPct: number | undefined;
    const timer = setTimeout(() => { try { process.kill(child.pid!, 'SIGKILL'); } catch { /* gone */ } }, limitMs);
    child.stderr.on('data', (d) => { err += d; });
    child.stdout.on('data', lines((l) => {
      let o: any; try { o = JSON.parse(l); } catch { return; }
      if (o.event === 'measure-start') { cpu0 = cpuOfTree(roots); foreign = foreignProbe(); }
      else if (o.event === 'measure-end') { cpu1 = cpuOfTree(roots); foreignPct = foreign?.(); }
      else if (o.event === 'holding') {
        const h = onHolding ? onHolding(o.conns) : Promise.resolve({});
        h.then((x) => { extra = { ...x, held: o.conns, openSecs: o.secs }; }, () => {}).finally(() => child.stdin.end('close\n'));
      } else if (o.event === 'result') result = o;
    }));
    child.stdin.on('error', () => {});
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (!result) { reject(new Error(`loadgen ${args.join(' ')} failed (${code}): ${err.slice(-500)}`)); return; }
      const detail = Object.entries(result.err).filter(([, v]) => Number(v) > 0).map(([k, v]) => `${k}:${v}`).join(' ');
      resolve({ rate: result.rate, p50_us: result.p50_us, p99_us: result.p99_us, ops: result.ops, errors: result.errors,
        errDetail: detail, subjectCpuS: cpu1 - cpu0, genCpuPct: result.cpu_pct, foreignPct, extra: { ...extra, open: result.open } });
    });
  });
}

/** Idle memory: RSS of all subject processes before and while holding `conns` WebSockets. */
export async function idleMemory(bin: string, ports: number[], roots: number[], conns: number, settleMs: number): Promise<Measure> {
  const before = rssOfTree(roots);
  const m = await runLoadgen(bin, ['idle', '--ports', ports.join(','), '--conns', String(conns), '--inflight', '200', '--hold', '60', '--timeout', '20'],
    roots, 120_000, async (held) => {
      await sleep(settleMs);
      const after = rssOfTree(roots);
      return { rssBefore: before, rssAfter: after, kibPerConn: held ? (after - before) / 1024 / held : 0 };
    });
  if ((m.extra?.held ?? 0) < conns && m.errors === 0) { m.errors = conns - (m.extra?.held ?? 0); m.errDetail += ' not-held'; }
  m.rate = m.extra?.kibPerConn ?? NaN;
  return m;
}

const UNIT: Record<string, number> = { us: 1, ms: 1000, s: 1e6, m: 60e6 };
function parseDur(s: string): number { const m = /^([\d.]+)(us|ms|s|m)$/.exec(s.trim()); return m ? Number(m[1]) * UNIT[m[2]] : NaN; }

interface WrkOut { rps: number; p50: number; p99: number; errors: number; detail: string; cpuS: number; requests: number }
function wrkOnce(url: string, threads: number, conns: number, secs: number, close: boolean): Promise<WrkOut> {
  return new Promise((resolve, reject) => {
    const args = ['-t', String(threads), '-c', String(conns), '-d', `${Math.max(1, Math.round(secs))}s`, '--latency', '--timeout', '5s'];
    if (close) args.push('-H', 'Connection: close');
    const child = spawn('wrk', [...args, url], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', cpu = 0;
    const poll = setInterval(() => { const c = cpuOf(child.pid!); if (c) cpu = c; }, 100);
    const timer = setTimeout(() => { try { process.kill(child.pid!, 'SIGKILL'); } catch { /* gone */ } }, (secs + 20) * 1000);
    child.stdout.on('data', (d) => { out += d; });
    child.on('exit', () => {
      clearInterval(poll); clearTimeout(timer);
      const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
      const requests = Number(/(\d+) requests in/.exec(out)?.[1]);
      if (!Number.isFinite(rps)) { reject(new Error(`wrk failed: ${out.slice(-500)}`)); return; }
      const p50 = parseDur(/\s50%\s+(\S+)/.exec(out)?.[1] ?? ''), p99 = parseDur(/\s99%\s+(\S+)/.exec(out)?.[1] ?? '');
      const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
      const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
      const se = sock ? sock.slice(1).map(Number) : [0, 0, 0, 0];
      const errors = non2xx + se.reduce((a, b) => a + b, 0);
      const detail = errors ? `non2xx:${non2xx} connect:${se[0]} read:${se[1]} write:${se[2]} timeout:${se[3]}` : '';
      resolve({ rps, p50, p99, errors, detail, cpuS: cpu, requests });
    });
  });
}

/** One GET through the subject; checks status and the exact body (wrk checks only statuses). */
export function httpCheck(port: number, close: boolean): Promise<string | null> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/bench/check', agent: false, headers: close ? { connection: 'close' } : {}, timeout: 5000 }, (res) => {
      let body = ''; res.setEncoding('latin1'); res.on('data', (d) => { body += d; });
      res.on('end', () => resolve(res.statusCode === 200 && body === HTTP_BODY ? null : `status ${res.statusCode}, body ${JSON.stringify(body.slice(0, 60))}`));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve(String(e)));
  });
}

/** HTTP load: one wrk (-t2 -c100) per subject port; "direct" has two ports, so two wrk -t1 -c50 run together. */
export async function httpLoad(ports: number[], roots: number[], secs: number, warmSecs: number, close: boolean): Promise<Measure> {
  const checks = await Promise.all(ports.map((p) => httpCheck(p, close)));
  const bad = checks.filter(Boolean);
  const threads = ports.length > 1 ? 1 : 2, conns = Math.round(100 / ports.length);
  if (warmSecs > 0) await Promise.all(ports.map((p) => wrkOnce(`http://127.0.0.1:${p}/`, threads, conns, warmSecs, close)));
  const cpu0 = cpuOfTree(roots), foreign = foreignProbe();
  const outs = await Promise.all(ports.map((p) => wrkOnce(`http://127.0.0.1:${p}/`, threads, conns, secs, close)));
  const cpu1 = cpuOfTree(roots), foreignPct = foreign();
  const rate = outs.reduce((a, o) => a + o.rps, 0);
  const requests = outs.reduce((a, o) => a + o.requests, 0);
  const errors = outs.reduce((a, o) => a + o.errors, 0) + bad.length;
  return { rate, p50_us: Math.max(...outs.map((o) => o.p50)), p99_us: Math.max(...outs.map((o) => o.p99)), ops: requests, errors,
    errDetail: [...outs.map((o) => o.detail).filter(Boolean), ...bad.map((b) => `check: ${b}`)].join('; '),
    subjectCpuS: cpu1 - cpu0, foreignPct, genCpuPct: (100 * outs.reduce((a, o) => a + o.cpuS, 0)) / secs };
}
