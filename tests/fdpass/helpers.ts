// Spawn fdpass test children with a channel in their stdio; read their JSON lines.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { Channel, channelPair, closeChannelFds, stdioWithChannel } from '../../fdpass';

export const FIXTURE = path.join(__dirname, 'fixtures', 'peer.js');

export interface Peer {
  child: ChildProcess; ch: Channel; pid: number; lines: any[];
  waitFor(pred: (l: any) => boolean, ms?: number): Promise<any>;
  exited: Promise<void>;
}

/** wrap: e.g. ['sh', '-c', 'ulimit -n 64; exec "$0" "$@"'] to run node under a prefix. */
export async function spawnPeer(mode: string, opts: { wrap?: string[]; maxQueue?: number } = {}): Promise<Peer> {
  const { a, b } = channelPair();
  const { stdio, env } = stdioWithChannel(b, ['pipe', 'pipe', 'inherit']);
  const argv = [...(opts.wrap ?? []), process.execPath, FIXTURE, mode];
  // Drop the test runner's IPC variables: the child must not treat an inherited fd as Node IPC.
  const { NODE_CHANNEL_FD: _fd, NODE_CHANNEL_SERIALIZATION_MODE: _mode, ...penv } = process.env;
  const child = spawn(argv[0], argv.slice(1), { stdio, env: { ...penv, ...env } });
  closeChannelFds(b);
  const ch = new Channel(a, { name: `parent-${mode}`, maxQueue: opts.maxQueue });
  ch.on('error', () => {});
  const lines: any[] = [];
  const waiters: { pred: (l: any) => boolean; res: (l: any) => void }[] = [];
  readline.createInterface({ input: child.stdout! }).on('line', (s) => {
    let l: any;
    try { l = JSON.parse(s); } catch { return; }
    lines.push(l);
    for (const w of [...waiters]) if (w.pred(l)) { waiters.splice(waiters.indexOf(w), 1); w.res(l); }
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const waitFor = (pred: (l: any) => boolean, ms = 10000): Promise<any> => {
    const hit = lines.find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((res, rej) => {
      const t = setTimeout(() => rej(new Error(`timeout waiting in ${mode}; lines: ${JSON.stringify(lines.slice(-5))}`)), ms);
      waiters.push({ pred, res: (l) => { clearTimeout(t); res(l); } });
    });
  };
  const ready = await waitFor((l) => l.event === 'ready');
  return { child, ch, pid: ready.pid, lines, waitFor, exited };
}

export function fdCount(pid: number | string = 'self'): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** utime+stime of a process in ms (clock ticks of 10 ms). */
export function cpuMs(pid: number): number {
  const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

export async function kill(p: Peer): Promise<void> {
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
  await p.exited;
  p.child.stdin?.destroy(); p.child.stdout?.destroy();
  await new Promise((r) => setTimeout(r, 20)); // libuv closes handles on the next loop turn
}

export function fdList(): string[] {
  return fs.readdirSync('/proc/self/fd').map((f) => { try { return `${f}:${fs.readlinkSync(`/proc/self/fd/${f}`)}`; } catch { return f; } });
}
