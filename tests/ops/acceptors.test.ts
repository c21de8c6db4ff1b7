// `acceptors: N`: several acceptor processes accept from the same listening socket. They must
// agree on key → worker without talking to each other, count (and so limit) correctly, survive
// the death of one, and keep moves and reloads whole. Checked through /proc and /status.
import * as fs from 'node:fs';
import * as net from 'node:net';
import test from 'ava';
import WebSocket from 'ws';
import { startBackend, startProxy, adminGet, adminPost, type ProxyHandle, type BackendReady } from '../helpers/proxy';
import { fdCount, ownerOfConnection, ownersOfConnections, until, type Started } from '../helpers/procs';
import { openWs, echo, localPort } from '../helpers/ws';
import { rankSlots } from '../../routing';
import { parseProm } from './prom';

let bs: Started<BackendReady>[] = [];
let px: ProxyHandle;
const open: { ws: WebSocket; key: string; closed: boolean }[] = [];

const config = (ports: number[], workers: number) => `listen: 127.0.0.1:0
workers: ${workers}
acceptors: 2
admin: 127.0.0.1:0
log_level: warn
rebalance: { auto: false }
backends:
  app: { servers: [${ports.map(p => `"127.0.0.1:${p}"`).join(', ')}] }
routes:
  - { name: lim, match: { path: "/lim/{room}" }, key: "{room}", backend: app, limits: { connections_per_key: 3 } }
  - { name: chat, match: { path: "/chat/{room}" }, key: "{room}", backend: app }
`;

interface Status { acceptors: { index: number; pid: number; connections: number; handoffs: number }[]; workers: { slot: number; pid: number }[]; retiring: unknown[] }
const status = async (): Promise<Status> => {
  try { return await adminGet(px, '/status'); } catch (e) {
    // Say why (undici hides it in .cause), then fail as before.
    throw new Error(`GET /status: ${(e as Error).message}: ${String((e as { cause?: unknown }).cause)}`);
  }
};
const live = () => open.filter(o => !o.closed);

async function connect(keys: string[], perKey: number): Promise<void> {
  const jobs: { key: string }[] = [];
  for (let i = 0; i < perKey; i++) for (const key of keys) jobs.push({ key });
  for (let i = 0; i < jobs.length; i += 40) {
    const wave = await Promise.all(jobs.slice(i, i + 40).map(async j => ({ ws: await openWs(px.port, `/chat/${j.key}`), key: j.key, closed: false })));
    for (const o of wave) { o.ws.on('close', () => { o.closed = true; }); open.push(o); }
  }
}

/** key → the worker pids holding its connections (from /proc). */
async function ownersByKey(): Promise<Map<string, Set<number | null>>> {
  const pids = (await status()).workers.map(w => w.pid);
  const owners = ownersOfConnections(live().map(o => localPort(o.ws)), px.port, pids);
  const m = new Map<string, Set<number | null>>();
  for (const o of live()) (m.get(o.key) ?? m.set(o.key, new Set()).get(o.key)!).add(owners.get(localPort(o.ws)) ?? null);
  return m;
}

async function allEcho(): Promise<boolean> {
  const r = await Promise.all(live().map((o, i) => echo(o.ws, `m${i}`).then(x => x === `m${i}`, () => false)));
  return r.every(Boolean);
}

const acceptorTotal = async () => { const s = await status(); if (!s.acceptors) throw new Error(JSON.stringify(s).slice(0, 300)); return s.acceptors.reduce((a, x) => a + x.connections, 0); };

let baseFds: Map<number, number>;

test.before(async () => {
  bs = await Promise.all(['a1', 'a2'].map(n => startBackend(n)));
  px = await startProxy(config(bs.map(b => b.ready.port), 2));
  const ready = px.ready as unknown as { acceptors: number[] };
  baseFds = new Map(ready.acceptors.map(pid => [pid, fdCount(pid)]));
});
test.after.always(async () => { for (const o of open) o.ws.terminate(); await px?.stop(); for (const b of bs) await b.stop(); });

test.serial('two acceptors share the listener and agree: every key lives on one worker', async t => {
  const ready = px.ready as unknown as { acceptors: number[] };
  t.is(ready.acceptors.length, 2);
  t.not(ready.acceptors[0], ready.acceptors[1]);
  const keys = Array.from({ length: 20 }, (_, i) => `k${i}`);
  await connect(keys, 10);
  t.true(await allEcho(), 'all 200 WebSockets echo');
  const owners = await ownersByKey();
  for (const k of keys) t.is(owners.get(k)!.size, 1, `${k} on one worker`);
  t.false([...owners.values()].some(s => s.has(null)));
  t.is(new Set([...owners.values()].map(s => [...s][0])).size, 2, 'both workers used');
  // Both acceptors took connections, and between them they count every one.
  t.true(await until(async () => (await acceptorTotal()) === 200, 5000), 'acceptors count 200 connections in all');
  const st = await status();
  t.true(st.acceptors.every(a => a.handoffs > 0), `both acceptors accepted: ${st.acceptors.map(a => a.handoffs)}`);
  // /metrics: one series per acceptor (strictly valid: no series twice), adding up to 200.
  const fams = parseProm(await adminGet(px, '/metrics'));
  const hs = fams.get('fdproxy_handoffs_total')!.samples.filter(x => x.labels.process === 'acceptor');
  t.deepEqual(hs.map(x => x.labels.acceptor).sort(), ['0', '1']);
  t.is(hs.reduce((a, x) => a + x.value, 0), 200);
  // Closes are reported to the acceptor that placed each connection: the sum comes down exactly.
  for (const o of open.filter((_, i) => Math.floor(i / 20) % 2 === 0)) o.ws.close();   // 5 of each key's 10
  t.true(await until(() => live().length === 100, 5000));
  t.true(await until(async () => (await acceptorTotal()) === 100, 5000), `acceptors count 100 after closes: ${await acceptorTotal()}`);
});

test.serial('connections_per_key holds exactly across acceptors (the worker enforces it too)', async t => {
  const tries = await Promise.all(Array.from({ length: 10 }, () => openWs(px.port, '/lim/one').then(ws => ws, (e: Error) => e)));
  const ok = tries.filter((x): x is WebSocket => !(x instanceof Error));
  t.is(ok.length, 3, 'three connections of the key, no more');
  t.true(tries.filter(x => x instanceof Error).every(e => /503/.test((e as Error).message)), 'the rest get 503');
  for (const w of ok) w.terminate();
});

/** fdproxy_handoffs_total of each acceptor index (a hole where an index has no series). */
const handoffsByIndex = async () => {
  const v: number[] = [];
  for (const x of parseProm(await adminGet(px, '/metrics')).get('fdproxy_handoffs_total')!.samples) if (x.labels.process === 'acceptor') v[Number(x.labels.acceptor)] = x.value;
  return v;
};

test.serial('an acceptor killed: established connections stay, the other serves, it comes back whole', async t => {
  const before = await status();
  const victim = before.acceptors[1].pid;
  const owners = await ownersByKey();
  const handoffs = await handoffsByIndex();
  process.kill(victim, 'SIGKILL');
  t.true(await allEcho(), 'established connections unaffected');
  await connect(['k1', 'k2', 'k3'], 4);   // served meanwhile
  t.true(await until(async () => { const s = await status(); return s.acceptors.length === 2 && !s.acceptors.some(a => a.pid === victim); }, 10000), 'acceptor restarted');
  const after = await ownersByKey();
  for (const k of ['k1', 'k2', 'k3']) t.deepEqual([...after.get(k)!], [...owners.get(k)!], `${k} stays on its worker`);
  // The new acceptor rebuilt its share of the table from the workers' reports.
  t.true(await until(async () => (await acceptorTotal()) === live().length, 5000), `counts whole again: ${await acceptorTotal()} vs ${live().length}`);
  // Its index's counters carry on from what the dead one last reported.
  const handoffsAfter = await handoffsByIndex();
  t.true(handoffs.length === 2 && handoffs.every((n, i) => (handoffsAfter[i] ?? -1) >= n), `handoffs per acceptor ${handoffs} → ${handoffsAfter}`);
});

test.serial('a key moved by the admin API goes to its new worker from every acceptor', async t => {
  const st = await status();
  const pidOf = new Map(st.workers.map(w => [w.pid, w.slot]));
  const from = pidOf.get([...(await ownersByKey()).get('k5')!][0]!)!;
  const to = from === 0 ? 1 : 0;
  t.is((await adminPost(px, `/move?key=k5&slot=${to}`)).status, 202);
  const target = st.workers.find(w => w.slot === to)!.pid;
  t.true(await until(async () => { const o = (await ownersByKey()).get('k5')!; return o.size === 1 && o.has(target); }, 10000), 'k5 migrated');
  await connect(['k5'], 12);   // 12 new connections, over both acceptors
  const o = (await ownersByKey()).get('k5')!;
  t.deepEqual([...o], [target], 'new k5 connections join it');
  t.true(await allEcho());
});

test.serial('a moved key placed by one acceptor, the other killed: its replacement sends the key where it lives (the workers name it)', async t => {
  const st = await status();
  const pidOf = new Map(st.workers.map(w => [w.slot, w.pid]));
  // A fresh key with one connection, so one acceptor alone counts it; moved off its hash's worker.
  const key = 'solo';
  const to = rankSlots(key, [0, 1])[1];
  const counts = async () => { t.true(await until(async () => (await acceptorTotal()) === live().length, 5000)); return (await status()).acceptors.map(a => a.connections); };
  const c0 = await counts();
  await connect([key], 1);
  const placedBy = (await counts()).findIndex((n, i) => n > c0[i]);
  t.true(placedBy >= 0);
  t.is((await adminPost(px, `/move?key=${key}&slot=${to}`)).status, 202);
  t.true(await until(async () => { const o = (await ownersByKey()).get(key)!; return o.size === 1 && o.has(pidOf.get(to)!); }, 10000), 'moved');
  // The other acceptor lost its override with it: the replacement knows the key only because the
  // worker's holding report names it.
  const index = 1 - placedBy;
  const victim = (await status()).acceptors[index].pid;
  process.kill(victim, 'SIGKILL');
  t.true(await until(async () => { const s = await status(); return s.acceptors.length === 2 && !s.acceptors.some(a => a.pid === victim); }, 10000), 'acceptor restarted');
  const c1 = await counts();
  for (let i = 0; i < 24; i++) await connect([key], 1);   // one at a time: both acceptors take some
  const c2 = await counts();
  t.true(c2[index] > c1[index], `the replacement placed some of them: ${c1} → ${c2}`);
  t.deepEqual([...(await ownersByKey()).get(key)!], [pidOf.get(to)], 'every connection of the key on its worker');
});

test.serial('/drain then /undrain: a key placed by acceptor 1 alone, moved off the drained worker, gets every new connection where it lives, from both acceptors', async t => {
  const st = await status();
  const pidOf = new Map(st.workers.map(w => [w.slot, w.pid]));
  const counts = async () => { t.true(await until(async () => (await acceptorTotal()) === live().length, 5000)); return (await status()).acceptors.map(a => a.connections); };
  // A fresh key whose hash picks worker 1, with one connection placed by acceptor 1 (not the
  // lead): acceptor 0 does not count it. Bounded: the kernel spreads new connections over both.
  let key = '';
  for (let i = 0; i < 40 && !key; i++) {
    const k = `dr${i}`;
    if (rankSlots(k, [0, 1])[0] !== 1) continue;
    const c0 = await counts();
    await connect([k], 1);
    if ((await counts())[1] > c0[1]) key = k;
  }
  t.true(key !== '', 'a key placed by acceptor 1');
  t.is((await adminPost(px, '/drain?slot=1')).status, 202);
  t.true(await until(async () => { const o = (await ownersByKey()).get(key)!; return o.size === 1 && o.has(pidOf.get(0)!); }, 10000), 'the drain moved it to worker 0');
  t.is((await adminPost(px, '/undrain?slot=1')).status, 202);
  // Both acceptors take some of these (one at a time); acceptor 0 must know where the key lives.
  const c1 = await counts();
  for (let i = 0; i < 16; i++) await connect([key], 1);
  const c2 = await counts();
  t.true(c2[0] > c1[0], `acceptor 0 placed some of them: ${c1} → ${c2}`);
  t.deepEqual([...(await ownersByKey()).get(key)!], [pidOf.get(0)], 'every connection of the key on worker 0');
});

test.serial('reload to 3 workers with two acceptors: nothing closed, every key on its rendezvous worker', async t => {
  const n = live().length;
  fs.writeFileSync(px.file, config(bs.map(b => b.ready.port), 3));
  t.is((await adminPost(px, '/reload')).status, 200);
  const accs0 = (await status()).acceptors.map(a => a.pid);
  t.true(await until(async () => { const s = await status(); return s.workers.length === 3 && s.retiring.length === 0; }, 30000), 'old workers retired');
  // Then both acceptors are renewed (fresh processes), one after the other.
  t.true(await until(async () => (await status()).acceptors.every(a => !accs0.includes(a.pid)), 20000), 'both acceptors renewed');
  t.is(live().length, n, 'no connection closed');
  t.true(await allEcho());
  const st = await status();
  const slotOf = new Map(st.workers.map(w => [w.pid, w.slot]));
  for (const [key, owners] of await ownersByKey()) {
    t.is(owners.size, 1, `${key} on one worker`);
    t.is(slotOf.get([...owners][0]!), rankSlots(key, [0, 1, 2])[0], `${key} on its rendezvous winner`);
  }
  // New connections from either acceptor go the same way.
  await connect(['k7', 'k8'], 8);
  for (const k of ['k7', 'k8']) t.is((await ownersByKey()).get(k)!.size, 1);
});

test.serial('no fd leak in the acceptors', async t => {
  for (const o of open) o.ws.close();
  t.true(await until(() => live().length === 0, 5000));
  t.true(await until(async () => (await acceptorTotal()) === 0, 5000), 'counts back to 0');
  const st = await status();
  // Each acceptor now (restarted, or renewed by the reload) holds no more than one did at start
  // (the same channels and listeners; +3: a third worker's channel since the reload).
  const base = Math.max(...baseFds.values());
  for (const a of st.acceptors) t.true(await until(() => fdCount(a.pid) <= base + 3, 5000), `acceptor ${a.index} fds ${fdCount(a.pid)} vs ${base} at start`);
});

// ---------------------------------------------------------------- an acceptor behind a move
//
// Messages to the acceptors are not synchronous: an acceptor can place a new connection of a key
// by its old place after the lead acceptor has had the key's connections moved away. Acceptor 1 is
// held back here (SIGSTOP) with request heads already in its sockets, so that it reads them before
// the move (queued behind them in its IPC pipe), as a busy or descheduled acceptor would.

/** Raw connections, no request yet, that acceptor `pid` accepted (it will read their heads). */
async function acceptedBy(p: ProxyHandle, pid: number, accPids: number[], n: number): Promise<net.Socket[]> {
  const mine: net.Socket[] = [];
  for (let wave = 0; wave < 20 && mine.length < n; wave++) {
    const socks = await Promise.all(Array.from({ length: 8 }, () => new Promise<net.Socket>((res, rej) => {
      const s = net.connect(p.port, '127.0.0.1', () => res(s)); s.once('error', rej);
    })));
    let owners = new Map<number, number | null>();
    await until(() => { owners = ownersOfConnections(socks.map(s => s.localPort!), p.port, accPids); return socks.every(s => owners.get(s.localPort!) != null); }, 3000);
    for (const s of socks) if (owners.get(s.localPort!) === pid && mine.length < n) mine.push(s); else s.destroy();
  }
  return mine;
}

/** A WebSocket client whose upgrade request goes over `sock` (already connected). */
const wsOver = (p: ProxyHandle, sock: net.Socket, path: string) => new WebSocket(`ws://127.0.0.1:${p.port}${path}`, { createConnection: () => sock });
const opened = (w: WebSocket) => new Promise<boolean>(res => {
  if (w.readyState === WebSocket.OPEN) return res(true);
  w.once('open', () => res(true)); w.once('error', () => res(false)); w.once('close', () => res(false));
});

/** Acceptors this file has stopped: resumed even if the test process exits early (a stopped process
 *  cannot see its supervisor go and exit). */
const stoppedPids = new Set<number>();
process.on('exit', () => { for (const pid of stoppedPids) { try { process.kill(pid, 'SIGCONT'); } catch { /* gone */ } } });

interface Lagging { p: ProxyHandle; lagging: number; accPids: number[]; wpids: number[]; slotOf: Map<number, number> }

/** A proxy of its own with 2 acceptors and 2 workers (log_level info: moved_key lines); whatever
 *  `run` stops is resumed after. */
async function withLaggingAcceptor(run: (l: Lagging, stop: (pid: number) => void) => Promise<void>): Promise<void> {
  const p = await startProxy(config(bs.map(b => b.ready.port), 2).replace('log_level: warn', 'log_level: info'));
  const stopped = stoppedPids;
  try {
    const st = await adminGet(p, '/status') as Status;
    const accPids = st.acceptors.map(a => a.pid);
    const wpids = st.workers.map(w => w.pid);
    await run({ p, lagging: st.acceptors.find(a => a.index === 1)!.pid, accPids, wpids,
      slotOf: new Map(st.workers.map(w => [w.pid, w.slot])) }, pid => { stopped.add(pid); process.kill(pid, 'SIGSTOP'); });
  } finally {
    for (const pid of stopped) { try { process.kill(pid, 'SIGCONT'); } catch { /* gone */ } }
    stopped.clear();
    await p.stop();
  }
}

/** Resume a process this test stopped. */
const resume = (pid: number) => { stoppedPids.delete(pid); process.kill(pid, 'SIGCONT'); };
const written = (socks: net.Socket[]) => until(() => socks.every(s => s.bytesWritten > 0), 3000);

test.serial('an acceptor that has not heard of a /move yet: its new connections of the key join the key on its new worker', async t => {
  await withLaggingAcceptor(async ({ p, lagging, accPids, wpids, slotOf }, stop) => {
    const first = await openWs(p.port, '/chat/lag');
    const A = ownerOfConnection(localPort(first), p.port, wpids)!;
    const B = wpids.find(x => x !== A)!;
    const held = await acceptedBy(p, lagging, accPids, 4);
    t.is(held.length, 4, 'acceptor 1 accepted 4 connections');
    stop(lagging);
    const late = held.map(s => wsOver(p, s, '/chat/lag'));   // heads wait in acceptor 1's sockets
    t.true(await written(held));
    t.is((await adminPost(p, `/move?key=lag&slot=${slotOf.get(B)}`)).status, 202);
    t.true(await until(() => p.lines.some(l => l.includes('"event":"moved_key"') && l.includes('"key":"lag"')), 5000), 'the key left worker A');
    t.is(ownerOfConnection(localPort(first), p.port, wpids), B);
    resume(lagging);
    t.deepEqual(await Promise.all(late.map(opened)), [true, true, true, true], 'the late connections open');
    const owners = ownersOfConnections([first, ...late].map(localPort), p.port, wpids);
    t.deepEqual([...owners.values()].map(o => (o === B ? 'B' : o === A ? 'A' : String(o))), ['B', 'B', 'B', 'B', 'B'], 'every connection of the key on its new worker');
    t.deepEqual(await Promise.all([first, ...late].map((w, i) => echo(w, `e${i}`).catch(() => 'closed'))), ['e0', 'e1', 'e2', 'e3', 'e4']);
    // Between them the acceptors count each connection once (acceptor 1 let go of those it had
    // placed on A when the lead took them).
    const counted = async () => (await adminGet(p, '/status') as Status).acceptors.reduce((a, x) => a + x.connections, 0);
    t.true(await until(async () => (await counted()) === 5, 5000), `acceptors count 5: ${await counted()}`);
    for (const w of [first, ...late]) w.terminate();
  });
});

test.serial('an acceptor that has not heard of a /drain yet: a new key it places on the drained worker lives where the lead acceptor places it', async t => {
  await withLaggingAcceptor(async ({ p, lagging, accPids, wpids, slotOf }, stop) => {
    const pidOfSlot = (s: number) => wpids.find(x => slotOf.get(x) === s)!;
    // A key that lives on slot 0 (it moves when slot 0 drains: its moved_key line says the drain
    // reached the worker), and a new key whose rendezvous worker is slot 0 too.
    const key = Array.from({ length: 50 }, (_, i) => `dr${i}`).find(k => rankSlots(k, [0, 1])[0] === 0)!;
    const fresh = Array.from({ length: 50 }, (_, i) => `nk${i}`).find(k => rankSlots(k, [0, 1])[0] === 0)!;
    const first = await openWs(p.port, `/chat/${key}`);
    t.is(ownerOfConnection(localPort(first), p.port, wpids), pidOfSlot(0));
    const held = await acceptedBy(p, lagging, accPids, 3);
    t.is(held.length, 3, 'acceptor 1 accepted 3 connections');
    stop(lagging);
    const late = held.map(s => wsOver(p, s, `/chat/${fresh}`));
    t.true(await written(held));
    t.is((await adminPost(p, '/drain?slot=0')).status, 202);
    t.true(await until(() => p.lines.some(l => l.includes('"event":"moved_key"') && l.includes(`"key":"${key}"`)), 5000), 'the drain reached worker 0');
    resume(lagging);
    t.deepEqual(await Promise.all(late.map(opened)), [true, true, true], 'the late connections open');
    // The lead acceptor places the new key off the drained worker: so must the late connections be.
    const now = await openWs(p.port, `/chat/${fresh}`);
    const owners = ownersOfConnections([first, now, ...late].map(localPort), p.port, wpids);
    t.deepEqual([...owners.values()].map(o => slotOf.get(o!)), [1, 1, 1, 1, 1], 'everything on worker 1');
    for (const w of [first, now, ...late]) w.terminate();
  });
});
