import test from 'ava';
import * as fs from 'node:fs';
import WebSocket from 'ws';
import { startBackend, startProxy, twoBackendConfig, type BackendReady } from '../helpers/proxy';
import type { Started } from '../helpers/procs';

let b1: Started<BackendReady>;
test.before(async () => { b1 = await startBackend('b1'); });
test.after.always(async () => { await b1?.stop(); });

const ticks = (pid: number) => { const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return Number(f[11]) + Number(f[12]); };

test.serial('an idle proxy (admin on, idle WebSockets open) uses < 1% of a core per process over 10 s: no busy loops', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b1.ready.port));
  try {
    const ws = await Promise.all(Array.from({ length: 20 }, (_, i) => new Promise<WebSocket>((res, rej) => {
      const w = new WebSocket(`ws://127.0.0.1:${px.port}/chat/idle${i}`); w.once('open', () => res(w)); w.once('error', rej);
    })));
    // Start-up work settles first: V8 compiles hot code and collects start-up garbage on background
    // threads (counted in /proc, not in a CPU profile) for several seconds after a process starts.
    await new Promise(r => setTimeout(r, 8000));
    const pids = [px.ready.pid, px.ready.acceptor, ...px.ready.workers.map(w => w.pid)];
    const before = pids.map(ticks);
    await new Promise(r => setTimeout(r, 10_000));
    const used = pids.map((p, i) => (ticks(p) - before[i]) * 10);   // ms of CPU in 10 s
    t.log(`CPU ms in 10 s idle: supervisor ${used[0]}, acceptor ${used[1]}, workers ${used.slice(2).join(', ')}`);
    for (const ms of used) t.true(ms < 100, `${ms} ms of CPU in 10 s`);
    for (const w of ws) w.close();
  } finally { await px.stop(); }
});
