// Relay mode limits: per-key message and byte rates exact across all connections of a key (they
// are all in one worker), keys independent, throttle or close 1008; heartbeats find dead clients.
import test from 'ava';
import * as http from 'node:http';
import WebSocket, { WebSocketServer } from 'ws';
import { startProxy, twoBackendConfig, adminGet, type ProxyHandle } from '../helpers/proxy';
import { until } from '../helpers/procs';

// In-process backend: arrival time of every message per URL, and close codes.
const arrivals = new Map<string, number[]>();
const closes = new Map<string, number>();
let server: http.Server;
let px: ProxyHandle;

test.before(async () => {
  server = http.createServer((_q, r) => r.end('ok'));
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, sock, head) => wss.handleUpgrade(req, sock, head, ws => {
    const url = req.url ?? '';
    const list = arrivals.get(url) ?? arrivals.set(url, []).get(url)!;
    ws.on('message', (d: Buffer, bin) => { list.push(performance.now()); ws.send(d, { binary: bin }); });
    ws.on('close', code => closes.set(url, code));
  }));
  await new Promise<void>(r => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  px = await startProxy(twoBackendConfig(port, port, `  - name: rate
    match: { path: "/rate/{room}/{n}" }
    key: "{room}"
    backend: app
    websocket: relay
    relay: { messages_per_second_per_key: 50 }
  - name: ratec
    match: { path: "/ratec/{room}/{n}" }
    key: "{room}"
    backend: app
    websocket: relay
    relay: { messages_per_second_per_key: 5, on_limit: close }
  - name: bytes
    match: { path: "/bytes/{room}" }
    key: "{room}"
    backend: app
    websocket: relay
    relay: { bytes_per_second_per_key: 1000 }
  - name: hb
    match: { path: "/hb/{room}" }
    key: "{room}"
    backend: app
    websocket: relay
    relay: { heartbeat: 200ms }
  - name: default
    match: { path: / }
    backend: app`));
});
test.after.always(async () => { await px?.stop(); server?.close(); });

function open(path: string, opts: WebSocket.ClientOptions = {}): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${px.port}${path}`, opts);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}
const closed = (ws: WebSocket) => new Promise<number>(r => ws.once('close', c => r(c)));
const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));
const timesOf = (prefix: string) => [...arrivals].filter(([u]) => u.startsWith(prefix)).flatMap(([, ts]) => ts).sort((a, b) => a - b);
/** Most messages in any window of 1 s, as the backend saw them. The proxy enforces the window on
 *  its own clock; arrival at the backend (this process, busy sending too, on a loaded machine) adds
 *  varying latency, so a message released exactly 1000 ms after another may land much closer to it
 *  here: windows are 850 ms wide. The total time of the run checks the rate exactly. */
function maxPerSecond(ts: number[]): number {
  let best = 0;
  for (let i = 0, j = 0; i < ts.length; i++) { while (ts[i] - ts[j] >= 850) j++; best = Math.max(best, i - j + 1); }
  return best;
}

test.serial('messages_per_second_per_key is exact across 10 connections of one key opened over time; another key is independent', async t => {
  const echoed = { a: 0, b: 0 };
  const conns: WebSocket[] = [];
  // Key A: 10 connections, one every 100 ms, each sends 20 messages at once (200 in all).
  const opening = (async () => {
    for (let i = 0; i < 10; i++) {
      const ws = await open(`/rate/A/${i}`);
      conns.push(ws);
      ws.on('message', () => echoed.a++);
      for (let k = 0; k < 20; k++) ws.send(`a${i}:${k}`);
      await sleep(100);
    }
  })();
  await sleep(500);
  // Key B, while A is throttled: 50 messages pass at once (its own window).
  const wb = await open('/rate/B/0');
  conns.push(wb);
  wb.on('message', () => echoed.b++);
  for (let k = 0; k < 50; k++) wb.send(`b${k}`);
  await opening;
  t.true(await until(() => echoed.a === 200 && echoed.b === 50, 15000), `all echoed (throttled, never dropped): a=${echoed.a} b=${echoed.b}`);
  const a = timesOf('/rate/A/'), b = timesOf('/rate/B/');
  t.is(a.length, 200);
  t.true(maxPerSecond(a) <= 50, `key A: at most 50 messages in any second at the backend (saw ${maxPerSecond(a)}; arrivals ms: ${a.map(x => Math.round(x - a[0])).join(",")})`);
  t.true(maxPerSecond(a) >= 45, `key A: the limit is used (saw ${maxPerSecond(a)})`);
  t.true(a[a.length - 1] - a[0] >= 2800, `200 messages at 50/s take ≥ 3 s across the 10 connections (took ${Math.round(a[a.length - 1] - a[0])} ms)`);
  t.true(b[b.length - 1] - b[0] < 800, `key B is not slowed by key A (${Math.round(b[b.length - 1] - b[0])} ms for its 50)`);
  const m = await adminGet(px, '/metrics');
  t.regex(m, /fdproxy_relay_rate_limit_throttled_total\{[^}]*\} [1-9]/);
  const st = await adminGet(px, '/status');
  t.truthy(st);
  for (const ws of conns) ws.close();
});

test.serial('on_limit: close — the message over the key\'s limit closes its connection with 1008, whichever connection sends it', async t => {
  const w1 = await open('/ratec/K/1');
  const c1 = closed(w1);
  for (let k = 0; k < 3; k++) w1.send(`x${k}`);
  const w2 = await open('/ratec/K/2');
  const c2 = closed(w2);
  for (let k = 0; k < 2; k++) w2.send(`y${k}`);   // 5 in this second for key K: all pass
  await until(() => timesOf('/ratec/K/').length === 5, 3000);
  t.is(timesOf('/ratec/K/').length, 5);
  w2.send('one too many');
  t.is(await c2, 1008);
  t.true(await until(() => closes.get('/ratec/K/2') === 1001, 3000), 'the backend side of that connection is closed (1001)');
  // The other connection of the key is untouched, and another key has its own budget.
  const w3 = await open('/ratec/L/1');
  const got = new Promise<string>(r => w3.once('message', d => r(d.toString())));
  w3.send('other key');
  t.is(await got, 'other key');
  t.is(w1.readyState, WebSocket.OPEN);
  w1.close(); w3.close();
  await c1;
});

test.serial('bytes_per_second_per_key: 400-byte messages at 1000 B/s — the third waits for the window', async t => {
  const ws = await open('/bytes/Z');
  let n = 0;
  ws.on('message', () => n++);
  for (let k = 0; k < 4; k++) ws.send(Buffer.alloc(400, k));
  t.true(await until(() => n === 4, 5000));
  const ts = timesOf('/bytes/Z');
  t.true(ts[1] - ts[0] < 300, 'two fit in the budget at once');
  t.true(ts[2] - ts[0] >= 900, `the third waits about a second (${Math.round(ts[2] - ts[0])} ms)`);
  ws.close();
});

test.serial('heartbeat: a client that never answers pings is closed; the backend gets 1001', async t => {
  const ws = await open('/hb/dead', { autoPong: false } as WebSocket.ClientOptions);
  const live = await open('/hb/live');
  const c = closed(ws);
  t.is(await c, 1006, 'terminated by the proxy');
  t.true(await until(() => closes.get('/hb/dead') === 1001, 3000));
  await sleep(500);
  t.is(live.readyState, WebSocket.OPEN, 'a client that answers pings stays');
  live.close();
});
