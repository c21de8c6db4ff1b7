import test from 'ava';
import WebSocket from 'ws';
import { startBackend, startProxy, twoBackendConfig, adminGet, adminPost, type BackendReady } from '../helpers/proxy';
import { ownerOfConnection, ownersOfConnections, until, type Started } from '../helpers/procs';
import { Traffic } from '../helpers/traffic';
import { localPort, openWs, echo } from '../helpers/ws';
import type { Socket } from 'node:net';
import { connect, nextResponse } from '../helpers/longpoll';

let b1: Started<BackendReady>, b2: Started<BackendReady>;
test.before(async () => { [b1, b2] = await Promise.all([startBackend('b1'), startBackend('b2')]); });
test.after.always(async () => { await b1?.stop(); await b2?.stop(); });


test.serial('a worker holding far more than its share is rebalanced automatically, whole keys, without a drop', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port, undefined,
    'rebalance: { interval: 300ms, min_connections: 20, threshold: 1.5 }'));
  const traffic = new Traffic();
  try {
    const pids = px.ready.workers.map(w => w.pid);
    await traffic.open(px.port, Array.from({ length: 60 }, (_, i) => `r${i}`), 3);
    // Close every connection that lives on worker 1: worker 0 now holds everything.
    const owners = ownersOfConnections(traffic.flows.map(f => localPort(f.ws)), px.port, pids);
    const survivors = traffic.flows.filter(f => owners.get(localPort(f.ws)) === pids[0]);
    for (const f of traffic.flows) if (owners.get(localPort(f.ws)) === pids[1]) { f.ws.close(); }
    t.true(survivors.length >= 40, `${survivors.length} on worker 0`);
    const balanced = await until(() => {
      const o = ownersOfConnections(survivors.map(f => localPort(f.ws)), px.port, pids);
      const on1 = survivors.filter(f => o.get(localPort(f.ws)) === pids[1]).length;
      return on1 >= survivors.length * 0.3;
    }, 15000);
    t.true(balanced, 'keys moved to the idle worker');
    // Whole keys: every key's connections on one worker.
    const o = ownersOfConnections(survivors.map(f => localPort(f.ws)), px.port, pids);
    const byKey = new Map<string, Set<number | null>>();
    for (const f of survivors) (byKey.get(f.key) ?? byKey.set(f.key, new Set()).get(f.key)!).add(o.get(localPort(f.ws)) ?? null);
    t.true([...byKey.values()].every(s => s.size === 1));
    traffic.running = true;
    await traffic.stop();
    const lostOnSurvivors = survivors.reduce((n, f) => n + f.errors.length + (f.closed ? 1 : 0) + (f.sent - f.got), 0);
    t.is(lostOnSurvivors, 0, 'nothing lost or closed on moved connections');
    t.true(await until(async () => /fdproxy_auto_rebalances_total\{process="acceptor"\} [1-9]/.test(await adminGet(px, '/metrics')), 3000));
  } finally { traffic.closeAll(); await px.stop(); }
});

test.serial('a key moved on while handoffs of it are still on their way to its first target: the late ones follow it, the key ends whole', async t => {
  // /move A → B while A is busy (SIGSTOP), then /move B → C: B has nothing yet and is done at
  // once; what A sends B when it goes on must not stay there — the acceptor places the key on C.
  const px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port, undefined, 'rebalance: { auto: false }').replace('workers: 2', 'workers: 3'));
  const traffic = new Traffic();
  let held = 0;
  try {
    const pids = px.ready.workers.map(w => w.pid);
    const slotOf = new Map(px.ready.workers.map(w => [w.pid, w.slot]));
    await traffic.open(px.port, ['bounce'], 100);
    const ports = traffic.flows.map(f => localPort(f.ws));
    const a = ownersOfConnections([ports[0]], px.port, pids).get(ports[0])!;
    const [b, c] = pids.filter(p => p !== a);
    const on = (pid: number) => { const o = ownersOfConnections(ports, px.port, pids); return ports.filter(p => o.get(p) === pid).length; };
    t.is(on(a), ports.length, 'the key starts whole on A');
    process.kill(held = a, 'SIGSTOP');
    t.is((await adminPost(px, `/move?key=bounce&slot=${slotOf.get(b)}`)).status, 202);
    t.is((await adminPost(px, `/move?key=bounce&slot=${slotOf.get(c)}`)).status, 202);
    // Both reach the acceptor in order; B (the key's worker in its table now) is told to move it on.
    t.true(await until(async () => (await adminGet(px, '/status')).top_keys.some((k: { key: string; slot: number }) => k.key === 'bounce' && k.slot === slotOf.get(c)), 5000));
    process.kill(a, 'SIGCONT');
    held = 0;
    t.true(await until(() => on(c) === ports.length, 15000), `every connection on C (A ${on(a)}, B ${on(b)}, C ${on(c)})`);
    const w = await openWs(px.port, '/chat/bounce');
    t.is(ownerOfConnection(localPort(w), px.port, pids), c, 'a new connection of the key joins them');
    w.close();
    await traffic.stop();
    const sum = traffic.summary();
    t.is(sum.closed, 0); t.is(sum.lost, 0); t.is(sum.errors, 0);
  } finally { if (held) process.kill(held, 'SIGCONT'); traffic.closeAll(); await px.stop(); }
});

test.serial('draining a worker moves every connection off it, keyed and keyless; new connections avoid it', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port));
  const traffic = new Traffic();
  try {
    const pids = px.ready.workers.map(w => w.pid);
    await traffic.open(px.port, Array.from({ length: 20 }, (_, i) => `d${i}`), 2);
    const keyless = new Traffic();
    await keyless.open(px.port, ['a', 'b', 'c', 'd', 'e', 'f'], 1, k => `/free/${k}`);   // default route: keyless
    const all = [...traffic.flows, ...keyless.flows];
    const r = await adminPost(px, '/drain?slot=0');
    t.is(r.status, 202);
    const drained = await until(() => {
      const o = ownersOfConnections(all.map(f => localPort(f.ws)), px.port, pids);
      return all.every(f => o.get(localPort(f.ws)) === pids[1]);
    }, 15000);
    t.true(drained, 'worker 0 holds nothing');
    const fresh = await new Promise<WebSocket>((res, rej) => { const w = new WebSocket(`ws://127.0.0.1:${px.port}/chat/newkey`); w.once('open', () => res(w)); w.once('error', rej); });
    t.is(ownersOfConnections([localPort(fresh)], px.port, pids).get(localPort(fresh)), pids[1]);
    fresh.close();
    await traffic.stop(); await keyless.stop();
    for (const tr of [traffic, keyless]) { const s = tr.summary(); t.is(s.closed, 0); t.is(s.errors, 0); t.is(s.lost, 0); }
    keyless.closeAll();
  } finally { traffic.closeAll(); await px.stop(); }
});

/** Rooms over WebSocket, and long polls (`/delay?room=K`) keyed by the same room. */
const POLL_ROUTES = `  - name: chat
    match: { path: "/chat/{room}" }
    key: "{room}"
    backend: app
  - name: poll
    match: { path: /delay }
    key: "{query.room}"
    backend: app`;

test.serial('/move of a key whose keep-alive HTTP connection is mid-exchange (long poll): the key ends whole on its target, the connection follows when its exchange ends', async t => {
  const routes = POLL_ROUTES;
  const px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port, routes).replace('log_level: warn', 'log_level: info'));
  let ws: WebSocket | undefined, http: Socket | undefined;
  try {
    const pids = px.ready.workers.map(w => w.pid);
    ws = await openWs(px.port, '/chat/lp');
    t.is(await echo(ws, 'before'), 'before');
    const owner = ownerOfConnection(localPort(ws), px.port, pids)!;
    const target = px.ready.workers.find(w => w.pid !== owner)!;
    const conn = http = await connect(px.port);
    // A long poll in flight: the backend holds it 1.5 s; the client sends its next poll as soon as
    // an answer arrives, on the same connection (as socket.io's polling transport does).
    const poll = (n: number) => { const r = nextResponse(conn); conn.write(`GET /delay?room=lp&ms=1500&n=${n} HTTP/1.1\r\nHost: x\r\n\r\n`); return r; };
    let answered = false;
    const first = poll(1).finally(() => { answered = true; });
    t.true(await until(() => ownerOfConnection(conn.localPort!, px.port, pids) === owner, 5000), 'the poll is on the key\'s worker');
    t.is((await adminPost(px, `/move?key=lp&slot=${target.slot}`)).status, 202);
    t.false(answered, 'the move came while the poll was in flight');
    // Three polls in a row (4.5 s): longer than the old worker ever waited for a busy connection.
    const r1 = await first;
    const r2 = await poll(2);
    const r3 = await poll(3);
    t.deepEqual([r1, r2, r3], Array(3).fill({ status: 200, body: 'delayed' }), 'every poll on the connection is answered');
    // (a) the WebSocket lives on the target and still echoes.
    t.is(ownerOfConnection(localPort(ws), px.port, pids), target.pid);
    t.is(await echo(ws, 'after'), 'after');
    // (c) the next polls were served by the target worker, and the connection lives there.
    const served = (n: number) => px.lines.map(l => (l.includes('"event":"access"') && l.includes(`&n=${n}"`) ? JSON.parse(l) : null)).find(x => x !== null);
    t.true(await until(() => served(2) !== undefined && served(3) !== undefined, 3000), 'access lines of the later polls');
    t.deepEqual([served(2).worker, served(3).worker], [target.slot, target.slot], 'the later polls were served by the target worker');
    t.true(await until(() => ownerOfConnection(conn.localPort!, px.port, pids) === target.pid, 3000), 'the HTTP connection lives on the target');
    // (d) /status: the key on the target slot only, both of its connections counted there.
    let st: any;
    const whole = await until(async () => {
      st = await adminGet(px, '/status');
      const top = st.top_keys.find((k: any) => k.key === 'lp');
      const holders = [...st.workers, ...st.retiring].filter((w: any) => w.top_keys.some(([k]: [string, number]) => k === 'lp'));
      return top?.slot === target.slot && top.connections === 2 && holders.length === 1 && holders[0].slot === target.slot
        && holders[0].top_keys.find(([k]: [string, number]) => k === 'lp')[1] === 2;
    }, 8000);
    t.true(whole, `key on the target slot only: ${JSON.stringify({ top_keys: st?.top_keys, workers: st?.workers.map((w: any) => ({ slot: w.slot, top_keys: w.top_keys })) })}`);
    t.false(px.lines.some(l => l.includes('"event":"move_failed"')), 'no move_failed');
  } finally {
    t.log(px.lines.filter(l => /"event":"(moved_key|move_failed)"|&n=\d"/.test(l)).join('\n'));
    ws?.close(); http?.destroy(); await px.stop();
  }
});

test.serial('a key moved on again (or back) while a connection of it is mid-exchange on its first worker: that connection follows the key to its latest worker, or stays where the key came back', async t => {
  const routes = POLL_ROUTES;
  const px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port, routes).replace('workers: 2', 'workers: 3').replace('log_level: warn', 'log_level: info'));
  let ws: WebSocket | undefined, http: Socket | undefined;
  try {
    const pids = px.ready.workers.map(w => w.pid);
    const slotOfPid = new Map(px.ready.workers.map(w => [w.pid, w.slot]));
    ws = await openWs(px.port, '/chat/mm');
    const conn = http = await connect(px.port);
    const A = slotOfPid.get(ownerOfConnection(localPort(ws), px.port, pids)!)!;
    const [B, C] = [0, 1, 2].filter(s => s !== A);
    const pidOf = (s: number) => px.ready.workers.find(w => w.slot === s)!.pid;
    const wsOn = (s: number) => until(() => ownerOfConnection(localPort(ws!), px.port, pids) === pidOf(s), 3000);
    const httpOn = (s: number) => until(() => ownerOfConnection(conn.localPort!, px.port, pids) === pidOf(s), 3000);
    const poll = (n: number) => { const r = nextResponse(conn); conn.write(`GET /delay?room=mm&ms=1500&n=${n} HTTP/1.1\r\nHost: x\r\n\r\n`); return r; };
    const servedBy = (n: number) => px.lines.map(l => (l.includes('"event":"access"') && l.includes(`&n=${n}"`) ? JSON.parse(l).worker : undefined)).find(x => x !== undefined);
    const keyOnlyOn = (s: number) => until(async () => {
      const st = await adminGet(px, '/status');
      const holders = st.workers.filter((w: any) => w.top_keys.some(([k]: [string, number]) => k === 'mm'));
      return st.top_keys.find((k: any) => k.key === 'mm')?.slot === s && holders.length === 1 && holders[0].slot === s;
    }, 8000);

    // A → B while a poll is in flight on A, then B → C once the WebSocket is on B: the poll's
    // connection goes to C when the poll ends (not to B, where the key no longer is).
    let p = poll(1);
    t.true(await httpOn(A));
    t.is((await adminPost(px, `/move?key=mm&slot=${B}`)).status, 202);
    t.true(await wsOn(B), 'WebSocket on B');
    t.is((await adminPost(px, `/move?key=mm&slot=${C}`)).status, 202);
    t.true(await wsOn(C), 'WebSocket on C');
    t.deepEqual(await p, { status: 200, body: 'delayed' });
    p = poll(2);
    t.deepEqual(await p, { status: 200, body: 'delayed' });
    t.true(await until(() => servedBy(2) !== undefined, 3000));
    t.is(servedBy(2), C, 'the next poll is served by C');
    t.true(await httpOn(C));
    t.true(await keyOnlyOn(C), 'the key on C only');

    // C → A while a poll is in flight on C, then back A → C: the poll's connection stays on C.
    p = poll(3);
    t.true(await httpOn(C));
    t.is((await adminPost(px, `/move?key=mm&slot=${A}`)).status, 202);
    t.true(await wsOn(A), 'WebSocket on A');
    t.is((await adminPost(px, `/move?key=mm&slot=${C}`)).status, 202);
    t.true(await wsOn(C), 'WebSocket back on C');
    t.deepEqual(await p, { status: 200, body: 'delayed' });
    t.deepEqual(await poll(4), { status: 200, body: 'delayed' });
    t.true(await until(() => servedBy(4) !== undefined, 3000));
    t.is(servedBy(4), C, 'the next poll is served by C');
    t.true(await httpOn(C));
    t.true(await keyOnlyOn(C), 'the key on C only');
    t.is(await echo(ws, 'still'), 'still');
    t.false(px.lines.some(l => l.includes('"event":"move_failed"')), 'no move_failed');
  } finally {
    t.log(px.lines.filter(l => /"event":"(moved_key|move_failed)"|&n=\d"/.test(l)).join('\n'));
    ws?.close(); http?.destroy(); await px.stop();
  }
});

test.serial('a key moved just before a reload, a long poll of it still in flight on the worker it left: after the reload the key lives whole on one new worker', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port, POLL_ROUTES).replace('log_level: warn', 'log_level: info'));
  let ws: WebSocket | undefined, http: Socket | undefined;
  try {
    const pids = px.ready.workers.map(w => w.pid);
    ws = await openWs(px.port, '/chat/mr');
    const conn = http = await connect(px.port);
    const A = ownerOfConnection(localPort(ws), px.port, pids)!;
    const B = pids.find(p => p !== A)!;
    const poll = (n: number, ms: number) => { const r = nextResponse(conn); conn.write(`GET /delay?room=mr&ms=${ms}&n=${n} HTTP/1.1\r\nHost: x\r\n\r\n`); return r; };
    const first = poll(1, 5000);   // in flight for a few seconds after the old generation exits
    t.true(await until(() => ownerOfConnection(conn.localPort!, px.port, pids) === A, 5000), 'the poll is on A');
    const slotB = px.ready.workers.find(w => w.pid === B)!.slot;
    t.is((await adminPost(px, `/move?key=mr&slot=${slotB}`)).status, 202);
    t.true(await until(() => ownerOfConnection(localPort(ws!), px.port, pids) === B, 5000), 'the WebSocket moved to B');
    // The reload while the poll is still in flight on A (A gave the key away to B, both retire).
    t.is((await adminPost(px, '/reload')).status, 200);
    t.deepEqual(await first, { status: 200, body: 'delayed' });
    t.deepEqual(await poll(2, 100), { status: 200, body: 'delayed' });
    t.true(await until(async () => (await adminGet(px, '/status')).retiring.length === 0, 15000), 'the old generation retired');
    const fresh = ((await adminGet(px, '/status')).workers as { pid: number; slot: number }[]);
    const freshPids = fresh.map(w => w.pid);
    const wsOwner = ownerOfConnection(localPort(ws), px.port, freshPids);
    t.true(wsOwner !== null, 'the WebSocket lives on a new worker');
    t.true(await until(() => ownerOfConnection(conn.localPort!, px.port, freshPids) === wsOwner, 5000), 'the HTTP connection lives on the same new worker');
    t.deepEqual(await poll(3, 100), { status: 200, body: 'delayed' });
    t.is(await echo(ws, 'after'), 'after');
    const slot = fresh.find(w => w.pid === wsOwner)!.slot;
    t.true(await until(async () => {
      const st = await adminGet(px, '/status');
      const holders = st.workers.filter((w: any) => w.top_keys.some(([k]: [string, number]) => k === 'mr'));
      return st.top_keys.find((k: any) => k.key === 'mr')?.slot === slot && holders.length === 1 && holders[0].slot === slot;
    }, 8000), 'the acceptor places the key where both connections are');
    // And it stays there: nothing of the old generation reports the key "kept" later (the worker
    // it left gave up on its old-generation target ~3 s after that one exited, and said so).
    const until5 = Date.now() + 5000;
    while (Date.now() < until5) {
      t.is((await adminGet(px, '/status')).top_keys.find((k: any) => k.key === 'mr')?.slot, slot, 'the key stays placed');
      await new Promise(r => setTimeout(r, 250));
    }
    t.false(px.lines.some(l => l.includes('"event":"move_failed"')), 'no move_failed');
    const w = await openWs(px.port, '/chat/mr');
    t.is(ownerOfConnection(localPort(w), px.port, freshPids), wsOwner, 'a new connection of the key joins the others');
    w.close();
  } finally {
    t.log(px.lines.filter(l => /"event":"(moved_key|move_failed|reloaded)"|&n=\d"/.test(l)).join('\n'));
    ws?.close(); http?.destroy(); await px.stop();
  }
});
