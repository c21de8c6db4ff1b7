// Relay connections move between workers at message boundaries during reloads: under numbered
// echo traffic nothing is closed, lost, duplicated or reordered; throttled (held) messages travel.
import test from 'ava';
import WebSocket from 'ws';
import { startBackend, startProxy, twoBackendConfig, adminGet, reloadWith, type BackendReady } from '../helpers/proxy';
import { ownersOfConnections, until, type Started } from '../helpers/procs';
import { Traffic } from '../helpers/traffic';
import { localPort } from '../helpers/ws';

let b1: Started<BackendReady>, b2: Started<BackendReady>;
test.before(async () => { [b1, b2] = await Promise.all([startBackend('b1'), startBackend('b2')]); });
test.after.always(async () => { await b1?.stop(); await b2?.stop(); });


function config(workers: number, variant: number): string {
  const extra = variant % 2 ? `  - name: extra${variant}
    match: { path: "/extra/{x}" }
    key: "{x}"
    backend: app
` : '';
  return twoBackendConfig(b1.ready.port, b2.ready.port, `${extra}  - name: chat
    match: { path: "/chat/{room}" }
    key: "{room}"
    backend: app
    websocket: relay
    relay: { messages_per_second_per_key: 100000, heartbeat: 1s }
  - name: slow
    match: { path: "/slow/{room}" }
    key: "{room}"
    backend: app
    websocket: relay
    relay: { messages_per_second_per_key: 20 }
  - name: default
    match: { path: / }
    backend: app`).replace('workers: 2', `workers: ${workers}`);
}

const reload = reloadWith;

test.serial('200 relay WebSockets under numbered echo traffic survive 6 reloads: nothing closed, lost or reordered; each key on one current worker', async t => {
  const px = await startProxy(config(2, 0));
  const traffic = new Traffic();
  try {
    await traffic.open(px.port, Array.from({ length: 40 }, (_, i) => `room${i}`), 5);
    const counts = [3, 1, 2, 3, 2, 2];
    for (let i = 0; i < counts.length; i++) {
      const before = traffic.summary().messages;
      await reload(px, config(counts[i], i + 1));
      t.true(traffic.summary().messages > before, 'traffic flows during reloads');
    }
    await traffic.stop();
    const s = traffic.summary();
    t.is(s.closed, 0, 'no connection closed');
    t.is(s.errors, 0, `no message lost, duplicated or reordered: ${traffic.flows.flatMap(f => f.errors).slice(0, 3)}`);
    t.is(s.lost, 0);
    t.true(s.messages > 2000, `${s.messages} messages echoed`);
    const status = await adminGet(px, '/status');
    const owners = ownersOfConnections(traffic.flows.map(f => localPort(f.ws)), px.port, status.workers.map((w: { pid: number }) => w.pid));
    const byKey = new Map<string, Set<number | null>>();
    for (const f of traffic.flows) (byKey.get(f.key) ?? byKey.set(f.key, new Set()).get(f.key)!).add(owners.get(localPort(f.ws)) ?? null);
    t.true([...byKey.values()].every(k => k.size === 1 && !k.has(null)), 'each key on exactly one current worker');
    // Still relayed after the moves (not tunnelled): the relay counters of the new workers grow.
    // (workers send their figures once a second: wait for the new generation's)
    t.true(await until(async () => /fdproxy_relay_chat_messages_in_total\{[^}]*\} [1-9]/.test(await adminGet(px, '/metrics')), 5000));
    t.regex(await adminGet(px, '/metrics'), /fdproxy_reload_migrations_total\{result="done"\} [1-9]/);
  } finally {
    traffic.closeAll();
    await px.stop();
  }
});

test.serial('throttled messages held by the proxy travel with the connection: all arrive, in order, still at the key\'s rate', async t => {
  const px = await startProxy(config(2, 0));
  try {
    const ws = await new Promise<WebSocket>((resolve, reject) => { const w = new WebSocket(`ws://127.0.0.1:${px.port}/slow/s1`); w.once('open', () => resolve(w)); w.once('error', reject); });
    const got: number[] = [];
    const times: number[] = [];
    ws.on('message', d => { got.push(Number(d.toString())); times.push(performance.now()); });
    for (let i = 0; i < 50; i++) ws.send(String(i));   // 20/s: ≈ 1.5 s of backlog held in the proxy
    await until(() => got.length >= 10, 3000);
    await reload(px, config(3, 1));
    t.true(await until(() => got.length === 50, 10000), `all 50 echoed (${got.length})`);
    t.deepEqual(got, Array.from({ length: 50 }, (_, i) => i), 'in order, none lost or duplicated');
    t.true(times[49] - times[0] >= 1300, `still throttled across the move (${Math.round(times[49] - times[0])} ms)`);
    t.is(ws.readyState, WebSocket.OPEN);
    ws.close();
  } finally { await px.stop(); }
});

test.serial('relays keep relaying when they move to workers whose config has no relay route left (the new workers load ws at the first one)', async t => {
  const px = await startProxy(config(2, 0));
  const traffic = new Traffic();
  const relayed = async () => Number(/fdproxy_relay_chat_messages_in_total\{[^}]*\} (\d+)/.exec(await adminGet(px, '/metrics'))?.[1] ?? 0);
  try {
    await traffic.open(px.port, Array.from({ length: 10 }, (_, i) => `room${i}`), 2);
    // Every route a tunnel now: the new workers have no reason to load ws before a relay arrives.
    await reload(px, config(2, 0).replace(/\n    websocket: relay\n    relay: \{[^}]*\}/g, ''));
    const before = traffic.summary().messages;
    t.true(await until(() => traffic.summary().messages > before + 200, 10000), 'traffic flows after the move');
    const r1 = await relayed();
    t.true(await until(async () => await relayed() > r1, 5000), 'the moved connections are still relayed by the new workers');
    await traffic.stop();
    const s = traffic.summary();
    t.is(s.closed, 0, 'no connection closed');
    t.is(s.errors, 0, `no message lost, duplicated or reordered: ${traffic.flows.flatMap(f => f.errors).slice(0, 3)}`);
    t.is(s.lost, 0);
  } finally {
    traffic.closeAll();
    await px.stop();
  }
});
