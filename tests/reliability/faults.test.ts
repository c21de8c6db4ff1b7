// Faults: kill -9 of a worker or of the acceptor under load, backends that die and come back,
// never answer or reset mid-stream. Times to recover are logged (recorded in RELIABILITY.md),
// never asserted against the wall clock.
import test from 'ava';
import * as net from 'node:net';
import * as path from 'node:path';
import WebSocket from 'ws';
import { startBackend, startProxy, twoBackendConfig, adminGet, adminPost, type ProxyHandle, type BackendReady } from '../helpers/proxy';
import { ownersOfConnections, startReady, until, ROOT, type Started } from '../helpers/procs';
import { Traffic } from '../helpers/traffic';
import { raw, get, alive, sleep } from '../fixtures/rawclient';
import { localPort } from '../helpers/ws';
import { rankSlots } from '../../routing';
import { parseProm } from '../ops/prom';

let b1: Started<BackendReady>, b2: Started<BackendReady>;
test.before(async () => { [b1, b2] = await Promise.all([startBackend('f1'), startBackend('f2')]); });
test.after.always(async () => { await b1?.stop(); await b2?.stop(); });

const statuses = (data: string) => [...data.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map(m => Number(m[1]));

function openWs(port: number, p: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${p}`);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

test.serial('kill -9 of a worker under load: only its connections close, handoffs for its keys wait and are served, its slot serves again', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port));
  try {
    const traffic = new Traffic();
    const keys = Array.from({ length: 40 }, (_, i) => `k${i}`);
    await traffic.open(px.port, keys, 5);
    const pids = px.ready.workers.map(w => w.pid);
    const owners = ownersOfConnections(traffic.flows.map(f => localPort(f.ws)), px.port, pids);
    const victim = px.ready.workers[0].pid;
    const victimKeys = [...new Set(traffic.flows.filter(f => owners.get(localPort(f.ws)) === victim).map(f => f.key))];
    const onVictim = traffic.flows.filter(f => owners.get(localPort(f.ws)) === victim);
    const others = traffic.flows.filter(f => owners.get(localPort(f.ws)) !== victim);
    t.true(onVictim.length > 0 && others.length > 0);
    await sleep(1000);
    const t0 = Date.now();
    process.kill(victim, 'SIGKILL');
    // New connections for the dead worker's keys, sent right away: the acceptor holds them until
    // the restarted worker's channel is there, then hands them over (no 503, nothing lost).
    const queued = victimKeys.map(k => raw(px.port, `GET /chat/${k} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, 8000)
      .then(r => ({ status: r.status, ms: Date.now() - t0 })));
    const results = await Promise.all(queued);
    t.deepEqual(results.map(r => r.status), victimKeys.map(() => 200), 'queued handoffs served by the restarted worker');
    const back = Math.max(...results.map(r => r.ms));
    t.true(await until(async () => (await adminGet(px, '/status')).workers[0].pid !== victim, 5000));
    await sleep(1000);
    await traffic.stop();
    t.true(onVictim.every(f => f.closed), 'the dead worker\'s connections closed');
    t.true(others.every(f => !f.closed && f.errors.length === 0 && f.got === f.sent), 'the other worker\'s connections lost nothing');
    const msgs = others.reduce((a, f) => a + f.got, 0);
    t.log(`slot 0 serving again ${back} ms after SIGKILL (all ${victimKeys.length} queued requests answered 200); ${others.length} flows on the other worker: ${msgs} messages, 0 lost`);
    traffic.closeAll();
  } finally { await px.stop(); }
});

test.serial('kill -9 of the acceptor: established WebSockets live on in the workers, new connections are accepted again', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port));
  try {
    const traffic = new Traffic();
    await traffic.open(px.port, Array.from({ length: 20 }, (_, i) => `a${i}`), 5);
    await sleep(500);
    const acc = px.ready.acceptor;
    const t0 = Date.now();
    process.kill(acc, 'SIGKILL');
    let firstOk = 0, refused = 0;
    for (let i = 0; i < 500 && !firstOk; i++) {
      const s = await get(px.port, '/ok');
      if (s === 200) firstOk = Date.now() - t0; else { refused++; await sleep(10); }
    }
    t.true(firstOk > 0, 'a new connection was accepted');
    await sleep(1000);
    const s = await adminGet(px, '/status');
    t.not(s.acceptor.pid, acc);
    await traffic.stop();
    const sum = traffic.summary();
    t.is(sum.closed, 0, 'no established connection closed');
    t.is(sum.errors, 0);
    t.is(sum.lost, 0);
    // The restarted acceptor knows the live keys again (workers re-send them): new connections work.
    const ws = await openWs(px.port, '/chat/a1');
    ws.send('x');
    t.is((await new Promise<Buffer>(r => ws.once('message', r))).toString(), 'x');
    t.log(`new connections accepted again ${firstOk} ms after SIGKILL of the acceptor (${refused} attempts failed meanwhile); ${sum.flows} WebSockets kept, ${sum.messages} messages, 0 lost`);
    ws.close(); traffic.closeAll();
  } finally { await px.stop(); }
});

/** A WebSocket whose TCP handshake is reported (`connected`) before its upgrade is answered: it
 *  can sit in the listening socket's queue while no acceptor runs. */
function queuedWs(port: number, p: string): { connected: Promise<void>; open: Promise<WebSocket> } {
  let connected!: () => void;
  const c = new Promise<void>(r => { connected = r; });
  const open = new Promise<WebSocket>((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${p}`, { createConnection: () => net.connect(port, '127.0.0.1').once('connect', connected) });
    ws.once('open', () => resolve(ws));
    ws.once('error', e => { connected(); reject(e); });
  });
  return { connected: c, open };
}

/** Keys moved off the worker their hash picks (admin /move), then the acceptor killed: its
 *  replacement (the warm spare, or a fresh process without one) must know where those keys live
 *  before it accepts, or a new connection of one lands on the hash's worker and the key splits.
 *  Connections arriving at the moment of the crash: some already in the listening socket's queue
 *  (the acceptor frozen, then killed), some sent right after the kill. Worker 1 is frozen across
 *  the kill for 250 ms (less if a connection is served sooner), a worker slow to tell the
 *  replacement what it holds: the replacement waits for it (bounded, 1 s), so the test does not
 *  depend on which of accept and wiring wins a race of a few ms. */
for (const standby of [true, false]) {
  test.serial(`kill -9 of the acceptor after keys were moved (${standby ? 'warm spare' : 'no spare'}): new connections of a moved key, queued or sent at once, none refused, all join its worker`, async t => {
    const yaml = twoBackendConfig(b1.ready.port, b2.ready.port, undefined, `rebalance: { auto: false }\nstandby: ${standby}`).replace('log_level: warn', 'log_level: info');
    const px = await startProxy(yaml);
    const conns: WebSocket[] = [];
    let victim = 0, frozen = 0;
    try {
      const pids = px.ready.workers.map(w => w.pid);
      const slotOf = new Map(px.ready.workers.map(w => [w.pid, w.slot]));
      const pidOf = new Map(px.ready.workers.map(w => [w.slot, w.pid]));
      // 4 keys whose hash picks worker 0 and 4 that it picks worker 1.
      const cand = Array.from({ length: 64 }, (_, i) => `mv${i}`);
      const keys = [0, 1].flatMap(s => cand.filter(k => rankSlots(k, [0, 1])[0] === s).slice(0, 4));
      const first = await Promise.all(keys.map(k => openWs(px.port, `/chat/${k}`)));
      conns.push(...first);
      // Every key to the worker its hash ranks second (the move is a no-op for a key the bounded
      // load placed there already): a fresh table would put each on the other worker.
      const target = new Map(keys.map(k => [k, pidOf.get(rankSlots(k, [0, 1])[1])!]));
      for (const k of keys) t.is((await adminPost(px, `/move?key=${k}&slot=${slotOf.get(target.get(k)!)}`)).status, 202);
      t.true(await until(() => {
        const o = ownersOfConnections(first.map(localPort), px.port, pids);
        return keys.every((k, i) => o.get(localPort(first[i])) === target.get(k));
      }, 10000), 'every key moved to the other worker');
      victim = (await adminGet(px, '/status')).acceptor.pid as number;
      process.kill(victim, 'SIGSTOP');
      frozen = pidOf.get(1)!;
      process.kill(frozen, 'SIGSTOP');
      const queued = keys.flatMap(k => [0, 1].map(() => ({ key: k, ...queuedWs(px.port, `/chat/${k}`) })));
      await Promise.all(queued.map(q => q.connected));
      process.kill(victim, 'SIGKILL');
      // Right away, one more per key (retried, bounded, should an attempt fail: none should).
      let failed = 0;
      const open = async (k: string): Promise<WebSocket | null> => {
        for (let i = 0; i < 50; i++) { try { return await openWs(px.port, `/chat/${k}`); } catch { failed++; await sleep(20); } }
        return null;
      };
      const opening = [
        ...queued.map(q => q.open.then(ws => ({ key: q.key, ws }), () => { failed++; return { key: q.key, ws: null }; })),
        ...keys.map(async k => ({ key: k, ws: await open(k) })),
      ];
      await Promise.race([Promise.any(opening), sleep(250)]);
      process.kill(frozen, 'SIGCONT');
      frozen = 0;
      const fresh = await Promise.all(opening);
      const ok = fresh.filter((f): f is { key: string; ws: WebSocket } => f.ws !== null);
      conns.push(...ok.map(f => f.ws));
      t.is(ok.length, fresh.length, 'every new connection accepted');
      t.is(failed, 0, 'no connection attempt refused or reset');
      const o = ownersOfConnections(ok.map(f => localPort(f.ws)), px.port, pids);
      const astray = ok.filter(f => o.get(localPort(f.ws)) !== target.get(f.key));
      t.deepEqual(astray.map(f => f.key), [], `new connections on the wrong worker (key split): ${astray.length} of ${ok.length}`);
      const line = () => px.lines.find(l => l.includes('"event":"process_restarted"') && l.includes('"role":"acceptor"'));
      t.true(await until(() => line() !== undefined, 10000));
      const restarted = JSON.parse(line()!);
      t.is(restarted.standby === true, standby, standby ? 'the spare took over' : 'a fresh acceptor took over');
      t.log(`${ok.length} new connections (${queued.length} queued at the kill), ${astray.length} on the wrong worker, ${failed} failed attempts; replacement accepting ${restarted.ms ?? '?'} ms after it took the index`);
    } finally {
      if (frozen) process.kill(frozen, 'SIGCONT');
      if (victim) try { process.kill(victim, 'SIGKILL'); } catch { /* gone */ }
      for (const w of conns) w.terminate();
      await px.stop();
    }
  });
}

/** The acceptor's counter series in /metrics (name and labels → value). */
async function acceptorCounters(px: ProxyHandle): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const f of parseProm(await adminGet(px, '/metrics')).values()) {
    if (f.type !== 'counter') continue;
    for (const x of f.samples) if (x.labels.process === 'acceptor') out.set(`${x.name}${JSON.stringify(x.labels)}`, x.value);
  }
  return out;
}

test.serial('kill -9 of the acceptor: its counters stay counted, /metrics never shows less than before the crash', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port));
  try {
    for (let i = 0; i < 10; i++) t.is(await get(px.port, `/chat/c${i}`), 200);
    t.is((await raw(px.port, 'G@T / HTTP/1.1\r\nHost: x\r\n\r\n')).status, 400);   // a head error: one more series
    const accepted = (m: Map<string, number>) => [...m].filter(([k]) => k.startsWith('fdproxy_accepted_total')).reduce((a, [, v]) => a + v, 0);
    // Stats reach the supervisor once a second: wait until the acceptor's last report is in.
    t.true(await until(async () => accepted(await acceptorCounters(px)) >= 11, 5000));
    const before = await acceptorCounters(px);
    t.true(before.size >= 2, `acceptor series: ${[...before.keys()]}`);
    const victim = (await adminGet(px, '/status')).acceptor.pid as number;
    process.kill(victim, 'SIGKILL');
    // From the kill until the replacement has reported its own accepts: every series, every time.
    const lower = new Set<string>();
    let samples = 0;
    const check = (m: Map<string, number>) => { samples++; for (const [k, v] of before) if (!((m.get(k) ?? 0) >= v)) lower.add(`${k}: ${m.get(k)} < ${v}`); };
    const served = get(px.port, '/chat/after');
    t.true(await until(async () => {
      const m = await acceptorCounters(px);
      check(m);
      return accepted(m) >= accepted(before) + 1 && (await adminGet(px, '/status')).acceptor.pid !== victim;
    }, 10000), 'the replacement\'s accepts are counted on top');
    t.is(await served, 200);
    t.deepEqual([...lower], [], 'no acceptor counter went down');
    t.log(`${samples} samples of /metrics from the kill on; accepted ${accepted(before)} before, ${accepted(await acceptorCounters(px))} after`);
  } finally { await px.stop(); }
});

test.serial('a drained worker stays drained after kill -9 of the acceptor: new keys go to the other worker, until /undrain', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port, undefined, 'rebalance: { auto: false }').replace('log_level: warn', 'log_level: info'));
  const conns: WebSocket[] = [];
  try {
    const pids = px.ready.workers.map(w => w.pid);
    const pidOf = new Map(px.ready.workers.map(w => [w.slot, w.pid]));
    t.is((await adminPost(px, '/drain?slot=1')).status, 202);
    // New keys whose hash picks worker 1, so that a table without the drain puts them there.
    const keysFor1 = (prefix: string) => Array.from({ length: 64 }, (_, i) => `${prefix}${i}`).filter(k => rankSlots(k, [0, 1])[0] === 1).slice(0, 8);
    const landOn = async (keys: string[]) => {
      const ws = await Promise.all(keys.map(k => openWs(px.port, `/chat/${k}`)));
      conns.push(...ws);
      const o = ownersOfConnections(ws.map(localPort), px.port, pids);
      return ws.map(w => o.get(localPort(w)));
    };
    t.deepEqual(await landOn(keysFor1('before')), Array(8).fill(pidOf.get(0)), 'drained: new keys avoid worker 1');
    // The acceptor dies; its replacement (the spare) must know worker 1 is drained.
    const victim = (await adminGet(px, '/status')).acceptor.pid as number;
    process.kill(victim, 'SIGKILL');
    t.true(await until(() => px.lines.some(l => l.includes('"event":"process_restarted"') && l.includes('"role":"acceptor"')), 10000), 'a new acceptor took over');
    t.deepEqual(await landOn(keysFor1('crash')), Array(8).fill(pidOf.get(0)), 'still drained after the acceptor crash');
    // Undrain reaches the new acceptor too.
    t.is((await adminPost(px, '/undrain?slot=1')).status, 202);
    t.true(await until(async () => (await landOn(keysFor1(`un${conns.length}_`))).every(p => p === pidOf.get(1)), 5000), 'undrained: keys of worker 1 go there again');
  } finally { for (const w of conns) w.terminate(); await px.stop(); }
});

test.serial('a /move sent while a crashed acceptor\'s replacement is still learning the table is done once it knows the key', async t => {
  // The worker holding the keys is held (SIGSTOP) so that its holding report reaches the
  // replacement only later; a /move of its keys arrives before that: applied at once, the key is
  // unknown and the move lost.
  const px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port, undefined, 'rebalance: { auto: false }').replace('log_level: warn', 'log_level: info'));
  const traffic = new Traffic();
  let held = 0;
  try {
    const pids = px.ready.workers.map(w => w.pid);
    await traffic.open(px.port, Array.from({ length: 8 }, (_, i) => `mv${i}`), 2);
    const owner = ownersOfConnections(traffic.flows.map(f => localPort(f.ws)), px.port, pids);
    const from = owner.get(localPort(traffic.flows[0].ws))!;
    const to = px.ready.workers.find(w => w.pid !== from)!;
    const flows = traffic.flows.filter(f => owner.get(localPort(f.ws)) === from);
    const keys = [...new Set(flows.map(f => f.key))];
    const ports = flows.map(f => localPort(f.ws));
    const victim = (await adminGet(px, '/status')).acceptor.pid as number;
    process.kill(held = from, 'SIGSTOP');
    process.kill(victim, 'SIGKILL');
    t.true(await until(async () => (await adminGet(px, '/status')).acceptor.pid !== victim, 10000), 'a replacement took the index');
    // All at once: the replacement waits for the held worker's report up to 1 s, and the moves
    // must come before that report.
    const posted = await Promise.all(keys.map(k => adminPost(px, `/move?key=${k}&slot=${to.slot}`)));
    t.deepEqual(posted.map(r => r.status), keys.map(() => 202));
    process.kill(held, 'SIGCONT');
    held = 0;
    t.true(await until(() => [...ownersOfConnections(ports, px.port, pids).values()].every(p => p === to.pid), 10000), `every connection of ${keys.join(',')} moved to worker ${to.slot}`);
    const fresh = await Promise.all(keys.map(k => openWs(px.port, `/chat/${k}`)));
    t.deepEqual([...ownersOfConnections(fresh.map(localPort), px.port, pids).values()], Array(keys.length).fill(to.pid), 'new connections of the keys join them');
    for (const w of fresh) w.close();
    await traffic.stop();
    const sum = traffic.summary();
    t.is(sum.closed, 0); t.is(sum.errors, 0); t.is(sum.lost, 0);
  } finally { if (held) process.kill(held, 'SIGCONT'); traffic.closeAll(); await px.stop(); }
});

test.serial('a hung acceptor (alive, not answering) is killed by the watchdog and replaced; an idle proxy is left alone', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port).replace('log_level: warn', 'log_level: info'), [], { ...process.env, FDPROXY_HANG_MS: '1500' });
  let hung = 0;
  try {
    const ws = await openWs(px.port, '/chat/hang');
    // Idle for twice the bound: every process answers its pings, none is taken for hung.
    await sleep(3000);
    t.false(px.lines.some(l => l.includes('"event":"process_hung"')), 'no live process killed');
    const victim = hung = (await adminGet(px, '/status')).acceptor.pid as number;
    process.kill(victim, 'SIGSTOP');
    t.true(await until(() => px.lines.some(l => l.includes('"event":"process_hung"') && l.includes(`"pid":${victim}`)), 10000), 'the watchdog names it');
    t.true(await until(() => !alive(victim), 5000), 'killed (SIGKILL ends a stopped process)');
    hung = 0;
    t.true(await until(async () => (await adminGet(px, '/status')).acceptor.pid !== victim && await get(px.port, '/chat/after').catch(() => 0) === 200, 10000), 'a new acceptor serves');
    // The established WebSocket lives in a worker: untouched.
    t.is(await new Promise<string>(res => { ws.once('message', d => res(d.toString())); ws.send('still'); }), 'still');
    ws.close();
  } finally { if (hung) process.kill(hung, 'SIGCONT'); await px.stop(); }
});

test.serial('a backend that goes down and comes back: 502 (WebSocket: close 1011) while down, served again after', async t => {
  const start = (port = 0) => startReady<BackendReady>([path.join(ROOT, 'dist', 'tests', 'fixtures', 'backend.js'), 'phoenix'], { env: { PORT: String(port) } });
  let b = await start();
  const port = b.ready.port;
  const px = await startProxy(twoBackendConfig(port, port));
  try {
    t.is(await get(px.port, '/x'), 200);
    const ws = await openWs(px.port, '/chat/p');
    const closed = new Promise<number>(r => ws.once('close', r));
    await b.stop('SIGKILL');
    t.is(await closed, 1011, 'the tunnel closes with 1011 when its backend dies');
    t.is(await get(px.port, '/x'), 502);
    const wsDown = await new Promise<number>(r => {
      const w = new WebSocket(`ws://127.0.0.1:${px.port}/chat/q`);
      w.on('unexpected-response', (_q, res) => r(res.statusCode ?? 0));
      w.on('error', () => r(-1));
    });
    t.is(wsDown, 502, 'an upgrade while down gets 502 before any 101');
    b = await start(port);
    t.true(await until(async () => (await get(px.port, '/x')) === 200, 5000), 'served again');
    const ws2 = await openWs(px.port, '/chat/p');
    ws2.send('back');
    t.is((await new Promise<Buffer>(r => ws2.once('message', r))).toString(), 'back');
    ws2.close();
  } finally { await px.stop(); await b.stop(); }
});

test.serial('a backend that never answers → 504; one that resets before or mid-response → 502 or a cut body, never a hang; others served', async t => {
  const yaml = twoBackendConfig(b1.ready.port, b1.ready.port).replace(/servers: \[(.*)\]/, 'servers: [$1]\n    response_timeout: 1s');
  const px = await startProxy(yaml);
  try {
    const slow = await raw(px.port, 'GET /slow HTTP/1.1\r\nHost: x\r\n\r\n', 5000);
    t.deepEqual(statuses(slow.data), [504]);
    t.true(slow.closed);
    const reset = await raw(px.port, 'GET /reset HTTP/1.1\r\nHost: x\r\n\r\n', 5000);
    t.deepEqual(statuses(reset.data), [502]);
    t.true(reset.closed);
    const mid = await raw(px.port, 'GET /midreset HTTP/1.1\r\nHost: x\r\n\r\n', 5000);
    t.deepEqual(statuses(mid.data), [200]);
    t.true(mid.closed, 'the client connection is closed (body cut short, so it cannot be mistaken for complete)');
    const body = mid.data.slice(mid.data.indexOf('\r\n\r\n') + 4);
    t.true(body.length < 100000);
    // WebSocket backend reset mid-stream: the client gets close 1011.
    const ws = await openWs(px.port, '/chat/r');
    const code = new Promise<number>(r => ws.once('close', r));
    ws.send('reset');
    t.is(await code, 1011);
    t.is(await get(px.port, '/ok'), 200);
    t.true([px.ready.acceptor, ...px.ready.workers.map(w => w.pid)].every(alive));
  } finally { await px.stop(); }
});
