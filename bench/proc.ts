// Process helpers for the benchmark: start children that print a ready line, find every process
// of a subject (a pid and all its descendants), read their CPU and RSS from /proc, stop them.
// Only pids this run started are ever signalled.
import { execFileSync, spawn, ChildProcess, SpawnOptions } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';

const CLK_TCK = 100; // USER_HZ on Linux
const PAGE = 4096;

export interface Started { child: ChildProcess; ready: any; stderr: () => string }

/** Spawn a command and wait (bounded) for a JSON stdout line for which `isReady` holds. */
export function startWithReady(cmd: string, args: string[], isReady: (o: any) => boolean, timeoutMs: number, opts: SpawnOptions = {}): Promise<Started> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    let out = '', err = '', done = false;
    const fail = (why: string) => {
      if (done) return; done = true; clearTimeout(timer);
      if (child.exitCode === null && child.pid) { try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ } }
      reject(new Error(`${cmd} ${args.join(' ')}: ${why}\n${err.slice(-2000)}`));
    };
    const timer = setTimeout(() => fail(`no ready line within ${timeoutMs} ms`), timeoutMs);
    child.stderr!.on('data', (d) => { if (err.length < 100_000) err += d; });
    child.stdout!.on('data', (d) => {
      if (done) return;
      out += d;
      let nl: number;
      while ((nl = out.indexOf('\n')) >= 0) {
        const line = out.slice(0, nl).trim(); out = out.slice(nl + 1);
        if (!line.startsWith('{')) continue;
        try {
          const o = JSON.parse(line);
          if (isReady(o)) { done = true; clearTimeout(timer); resolve({ child, ready: o, stderr: () => err }); return; }
        } catch { /* not JSON: ignore */ }
      }
    });
    child.on('error', (e) => fail(String(e)));
    child.on('exit', (code, sig) => fail(`exited (${code ?? sig}) before ready`));
  });
}

/** A pid and all its descendants (via /proc/<pid>/task/<tid>/children). */
export function processTree(root: number): number[] {
  const seen = new Set<number>(); const todo = [root];
  while (todo.length && seen.size < 1000) {
    const pid = todo.pop()!;
    if (seen.has(pid) || !fs.existsSync(`/proc/${pid}`)) continue;
    seen.add(pid);
    let tasks: string[] = [];
    try { tasks = fs.readdirSync(`/proc/${pid}/task`); } catch { continue; }
    for (const t of tasks) {
      try {
        const kids = fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim();
        if (kids) for (const k of kids.split(/\s+/)) todo.push(Number(k));
      } catch { /* task gone */ }
    }
  }
  return [...seen];
}

/** utime+stime (seconds) of one process, all threads; 0 if gone. */
export function cpuOf(pid: number): number {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK; // fields 14, 15 of stat
  } catch { return 0; }
}

export function rssOf(pid: number): number {
  try { return Number(fs.readFileSync(`/proc/${pid}/statm`, 'utf8').split(' ')[1]) * PAGE; } catch { return 0; }
}

export function cpuOfTree(roots: number[]): number {
  let t = 0; for (const r of roots) for (const p of processTree(r)) t += cpuOf(p); return t;
}
export function rssOfTree(roots: number[]): number {
  let t = 0; for (const r of roots) for (const p of processTree(r)) t += rssOf(p); return t;
}

/** A free loopback port for programs that cannot listen on port 0 and report it (nginx, HAProxy). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer(); s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => resolve(p)); });
  });
}

/** Wait (bounded) until a TCP connect to the port succeeds. Used for nginx/HAProxy, which print no ready line. */
export async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (let i = 0; i < 1000 && Date.now() < end; i++) {
    const ok = await new Promise<boolean>((res) => {
      const s = net.connect(port, '127.0.0.1'); s.once('connect', () => { s.destroy(); res(true); }); s.once('error', () => res(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`port ${port} not accepting within ${timeoutMs} ms`);
}

/** SIGTERM a child we started, SIGKILL after a grace period; resolves when it has exited. */
export function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null || !child.pid) { resolve(); return; }
    const pid = child.pid;
    const t = setTimeout(() => { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }, graceMs);
    child.once('exit', () => { clearTimeout(t); resolve(); });
    try { process.kill(pid, 'SIGTERM'); } catch { clearTimeout(t); resolve(); }
  });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Busy CPU seconds of the whole machine (all CPUs) from /proc/stat. */
export function machineBusy(): number {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal
  return (f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] || 0)) / CLK_TCK;
}

/** CPU used on this machine by processes that are not ours (other sessions' tests, builds…)
    during a window: machine busy time minus the CPU of this runner and all it started. */
export function foreignProbe(): () => number {
  const b0 = machineBusy(), o0 = cpuOfTree([process.pid]), t0 = Date.now();
  return () => {
    const secs = (Date.now() - t0) / 1000;
    return secs > 0 ? Math.max(0, (100 * ((machineBusy() - b0) - (cpuOfTree([process.pid]) - o0))) / secs) : 0;
  };
}

/** bench/loadgen.c, built into bench/.work when missing or older than its source. */
export function buildLoadgen(): string {
  const bench = path.resolve(__dirname, '..', '..', 'bench');
  const src = path.join(bench, 'loadgen.c'), bin = path.join(bench, '.work', 'loadgen');
  if (!fs.existsSync(bin) || fs.statSync(bin).mtimeMs < fs.statSync(src).mtimeMs) {
    fs.mkdirSync(path.dirname(bin), { recursive: true });
    try { execFileSync('gcc', ['-O2', '-Wall', '-o', bin, src, '-lcrypto'], { stdio: 'inherit', timeout: 120_000 }); }
    catch { throw new Error('building bench/loadgen.c needs gcc and libssl-dev: `sh bench/setup.sh` installs them (as root)'); }
  }
  return bin;
}
