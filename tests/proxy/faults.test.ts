import test from 'ava';
import * as net from 'node:net';
import WebSocket from 'ws';
import { startBackend, startProxy, twoBackendConfig, adminGet, type ProxyHandle, type BackendReady } from '../helpers/proxy';
import { fdCount, ownersOfConnections, until, type Started } from '../helpers/procs';
import { localPort, openWs as open, echo } from '../helpers/ws';

let b1: Started<BackendReady>, b2: Started<BackendReady>;
test.before(async () => { [b1, b2] = await Promise.all([startBackend('b1'), startBackend('b2')]); });
test.after.always(async () => { await b1?.stop(); await b2?.stop(); });


test.serial('a worker killed with SIGKILL: only its connections close, its slot serves again, keys map back to it', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port));
  try {
    const pids = px.ready.workers.map(w => w.pid);
    const conns = await Promise.all(Array.from({ length: 40 }, (_, i) => open(px.port, `/chat/k${i}`)));
    const owners = ownersOfConnections(conns.map(localPort), px.port, pids);
    const victim = px.ready.workers[0].pid;
    const onVictim = conns.filter(c => owners.get(localPort(c)) === victim);
    const others = conns.filter(c => owners.get(localPort(c)) !== victim);
    t.true(onVictim.length > 0 && others.length > 0);
    const closed = onVictim.map(c => new Promise(r => c.once('close', r)));
    const t0 = Date.now();
    process.kill(victim, 'SIGKILL');
    await Promise.all(closed);
    // Its slot is back: a new pid in slot 0, serving.
    const back = await until(async () => {
      const s = await adminGet(px, '/status');
      return s.workers[0].pid !== victim && s.workers[0].ready;
    }, 5000);
    t.true(back);
    const ws = await open(px.port, '/chat/after-restart');
    t.is(await echo(ws, 'hi'), 'hi');
    t.log(`slot 0 serving again ${Date.now() - t0} ms after SIGKILL`);
    // The other worker's connections never noticed.
    for (const c of others) t.is(await echo(c, 'still'), 'still');
    // Keys that lived on slot 0 come back to slot 0 (the new process).
    const s = await adminGet(px, '/status');
    const newPid = s.workers[0].pid as number;
    const again = await Promise.all(onVictim.map((_, i) => open(px.port, new URL(onVictim[i].url).pathname)));
    const o2 = ownersOfConnections(again.map(localPort), px.port, [newPid, px.ready.workers[1].pid]);
    t.true(again.every(c => o2.get(localPort(c)) === newPid));
    for (const c of [...others, ...again, ws]) c.close();
  } finally { await px.stop(); }
});

test.serial('no fd leak: after 5,000 connections opened and closed, every process is back to its baseline', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port));
  try {
    const procs = [px.ready.pid, px.ready.acceptor, ...px.ready.workers.map(w => w.pid)];
    const request = (path: string) => new Promise<void>((resolve, reject) => {
      const s = net.connect(px.port, '127.0.0.1');
      s.on('error', reject);
      s.on('data', () => {});
      s.on('end', () => { s.end(); resolve(); });
      s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    });
    const wave = async (n: number, conc: number, path: (i: number) => string) => {
      let next = 0;
      await Promise.all(Array.from({ length: conc }, async () => { while (next < n) await request(path(next++)); }));
    };
    await wave(200, 50, i => `/chat/w${i}`);   // warm-up: fills the backend keep-alive pools
    const idle = async () => (await adminGet(px, '/status')).workers.map((w: { idle_backend: number }) => w.idle_backend) as number[];
    // The baseline: idle pool sizes (from the workers' stats, sent once a second, later on a loaded
    // machine) and fd counts that agree, i.e. both unchanged over a stats period.
    let idle0 = await idle();
    let base = procs.map(fdCount);
    await until(async () => {
      await new Promise(r => setTimeout(r, 1100));
      const i2 = await idle(), b2 = procs.map(fdCount);
      const same = i2.join() === idle0.join() && b2.join() === base.join();
      idle0 = i2; base = b2;
      return same;
    }, 10000);
    await wave(4800, 50, i => `/chat/k${i % 300}`);
    const ws = await Promise.all(Array.from({ length: 100 }, (_, i) => open(px.port, `/chat/ws${i}`)));
    await Promise.all(ws.map(w => new Promise(r => { w.once('close', r); w.close(); })));
    let now: number[] = [];
    const ok = await until(async () => {
      await new Promise(r => setTimeout(r, 1100));
      const id = await idle();
      now = procs.map(fdCount);
      // Workers may keep a different number of idle keep-alive connections to backends: discount them.
      return now.every((n, i) => i < 2 ? n === base[i] : n - id[i - 2] === base[i] - idle0[i - 2]);
    }, 10000);
    t.true(ok, `fds before ${base} after ${now}`);
  } finally { await px.stop(); }
});
