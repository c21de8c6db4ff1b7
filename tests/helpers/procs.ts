// Real processes for tests: spawn, wait for a JSON "ready" line, count fds, stop by pid.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const ROOT = path.resolve(__dirname, '..', '..', '..');
export const BIN = path.join(ROOT, 'bin', 'fdproxy.js');

// Children still running when the test process exits (a crashed test skips its after hooks) are
// killed here, by pid, so nothing outlives the run.
const started = new Set<ChildProcess>();
process.on('exit', () => { for (const p of started) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL'); });

export interface Started<T> { proc: ChildProcess; ready: T; lines: string[]; stop(signal?: NodeJS.Signals): Promise<number | null> }

/** Spawn `node args…` and resolve with the first stdout JSON line whose event is "ready". */
export function startReady<T = Record<string, unknown>>(args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {}): Promise<Started<T>> {
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env }, cwd: opts.cwd ?? ROOT });
  started.add(proc);
  proc.on('exit', () => started.delete(proc));
  const lines: string[] = [];
  let err = '';
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`not ready in time: ${args.join(' ')}\n${err}\n${lines.join('\n')}`)); }, opts.timeoutMs ?? 30000);
    let buf = '';
    let ready = false;
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i); buf = buf.slice(i + 1);
        lines.push(line);
        if (lines.length > 5000) lines.splice(0, 1000);
        if (!ready && line.startsWith('{') && line.includes('"event":"ready"')) {
          ready = true;
          clearTimeout(t);
          resolve({ proc, ready: JSON.parse(line) as T, lines, stop: (sig = 'SIGTERM') => stopProc(proc, sig) });
        }
      }
    });
    proc.stderr!.on('data', (d: Buffer) => { err += d.toString(); if (err.length > 20000) err = err.slice(-10000); });
    proc.on('exit', code => { if (!ready) { clearTimeout(t); reject(new Error(`exited ${code} before ready: ${err}\n${lines.join('\n')}`)); } });
  });
}

export function stopProc(proc: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10000): Promise<number | null> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve(proc.exitCode);
  return new Promise(resolve => {
    const t = setTimeout(() => { proc.kill('SIGKILL'); }, timeoutMs);
    proc.once('exit', code => { clearTimeout(t); resolve(code); });
    proc.kill(signal);
  });
}

/** The child processes of `pid` running `script` (a path ending, e.g. "acceptor.js"). */
export function childrenRunning(pid: number, script: string): number[] {
  let ids: number[] = [];
  try { ids = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number); } catch { return []; }
  return ids.filter(c => { try { return fs.readFileSync(`/proc/${c}/cmdline`, 'utf8').split('\0').some(a => a.endsWith(script)); } catch { return false; } });
}

export function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** Socket inodes a process holds (to find which process owns a connection). */
export function socketInodes(pid: number): Set<string> {
  const s = new Set<string>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try { const l = fs.readlinkSync(`/proc/${pid}/fd/${fd}`); if (l.startsWith('socket:')) s.add(l.slice(8, -1)); } catch { /* closed meanwhile */ }
  }
  return s;
}

export function tmpFile(name: string, text: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fdproxy-test-'));
  const f = path.join(dir, name);
  fs.writeFileSync(f, text);
  return f;
}

/** Poll `fn` until it returns true, every 20 ms, up to `ms`. */
export async function until(fn: () => boolean | Promise<boolean>, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) { if (await fn()) return true; await new Promise(r => setTimeout(r, 20)); }
  return fn();
}

/** For each client port, which of `pids` holds the server side of its TCP connection to `serverPort`. */
export function ownersOfConnections(clientPorts: number[], serverPort: number, pids: number[]): Map<number, number | null> {
  const hex = (p: number) => p.toString(16).toUpperCase().padStart(4, '0');
  const inodeByPort = new Map<number, string>();
  const suffix = `:${hex(serverPort)}`;
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try { text = fs.readFileSync(file, 'utf8'); } catch { continue; }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || !f[1].endsWith(suffix)) continue;
      inodeByPort.set(parseInt(f[2].split(':')[1], 16), f[9]);
    }
  }
  const pidByInode = new Map<string, number>();
  for (const pid of pids) for (const ino of socketInodes(pid)) pidByInode.set(ino, pid);
  const out = new Map<number, number | null>();
  for (const p of clientPorts) { const ino = inodeByPort.get(p); out.set(p, ino === undefined ? null : pidByInode.get(ino) ?? null); }
  return out;
}

export function ownerOfConnection(clientPort: number, serverPort: number, pids: number[]): number | null {
  return ownersOfConnections([clientPort], serverPort, pids).get(clientPort) ?? null;
}

/** Which of `pids` holds the socket of the connection from local port `localPort` to remote port `remotePort` (client side). */
export function ownerOfClientSocket(localPort: number, remotePort: number, pids: number[]): number | null {
  const hex = (p: number) => `:${p.toString(16).toUpperCase().padStart(4, '0')}`;
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try { text = fs.readFileSync(file, 'utf8'); } catch { continue; }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length >= 10 && f[1].endsWith(hex(localPort)) && f[2].endsWith(hex(remotePort))) {
        for (const pid of pids) if (socketInodes(pid).has(f[9])) return pid;
      }
    }
  }
  return null;
}
