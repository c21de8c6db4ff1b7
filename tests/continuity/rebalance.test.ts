import test from 'ava';
import WebSocket from 'ws';
import { startBackend, startProxy, twoBackendConfig, adminGet, adminPost, type BackendReady } from '../helpers/proxy';
import { ownersOfConnections, until, type Started } from '../helpers/procs';
import { Traffic } from '../helpers/traffic';
import { localPort } from '../helpers/ws';

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
