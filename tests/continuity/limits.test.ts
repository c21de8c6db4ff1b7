// limits.max_connections across a reload: the acceptor's placement table carries every live
// connection into the new generation, keyless ones included, so the limit still holds, per-slot
// loads stay those of the workers, and closes after the reload count down exactly.
import test from 'ava';
import * as fs from 'node:fs';
import type WebSocket from 'ws';
import { startBackend, startProxy, twoBackendConfig, adminGet, adminPost, type ProxyHandle, type BackendReady } from '../helpers/proxy';
import { until, type Started } from '../helpers/procs';
import { openWs } from '../helpers/ws';
import { raw } from '../fixtures/rawclient';

let b: Started<BackendReady>;
test.before(async () => { b = await startBackend('b1'); });
test.after.always(async () => { await b?.stop(); });

const LIMIT = 6;

function config(workers: number): string {
  return twoBackendConfig(b.ready.port, b.ready.port, `  - name: chat
    match: { path: "/chat/{room}" }
    key: "{room}"
    backend: app
  - name: open
    match: { path: / }
    backend: app`, `limits: { max_connections: ${LIMIT} }`).replace('workers: 2', `workers: ${workers}`);
}

async function reload(px: ProxyHandle, text: string): Promise<void> {
  fs.writeFileSync(px.file, text);
  const r = await adminPost(px, '/reload');
  if (r.status !== 200) throw new Error(`reload refused: ${JSON.stringify(r.body)}`);
  if (!await until(async () => (await adminGet(px, '/status')).retiring.length === 0, 20000)) throw new Error('old generation did not retire');
}

/** The next connection is refused with 503 FDP_PROXY_LIMIT_GLOBAL (as a WebSocket upgrade). */
async function refused(px: ProxyHandle): Promise<string> {
  const r = await raw(px.port, 'GET /ws/extra HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n', 2000);
  return r.status === 503 && /x-fdproxy-error: FDP_PROXY_LIMIT_GLOBAL/i.test(r.data) ? 'refused' : `status ${r.status}: ${r.data.split('\r\n')[0]}`;
}

/** The acceptor's count and its per-slot loads agree with what the workers hold, and add up to `n`. */
async function counted(px: ProxyHandle, n: number): Promise<boolean> {
  return until(async () => {
    const st = await adminGet(px, '/status');
    const acc = st.acceptors[0];
    const held = new Map<number, number>(st.workers.map((w: { slot: number; connections: number }) => [w.slot, w.connections]));
    const loads = new Map<number, number>(acc.loads);
    return acc.connections === n && [...held.values()].reduce((a, x) => a + x, 0) === n &&
      held.size === loads.size && [...held].every(([s, c]) => loads.get(s) === c);
  }, 5000);
}

test.serial('max_connections holds across a reload with keyless connections open; closes after it count down exactly', async t => {
  const px = await startProxy(config(2));
  const held: WebSocket[] = [];
  try {
    // Two keyed WebSockets and the rest keyless: the limit is reached.
    held.push(await openWs(px.port, '/chat/a'), await openWs(px.port, '/chat/b'));
    for (let i = 0; i < LIMIT - 2; i++) held.push(await openWs(px.port, `/ws/${i}`));
    t.true(await counted(px, LIMIT), 'counted before the reload');
    t.is(await refused(px), 'refused', 'the limit holds before the reload');

    // A reload to three workers: every connection migrates; the limit still holds.
    await reload(px, config(3));
    t.is(await refused(px), 'refused', 'the limit holds after the reload');
    t.true(await counted(px, LIMIT), 'per-slot loads match the workers after the reload');

    // The keyless ones close: only the keyed two are left, and exactly LIMIT - 2 new ones fit.
    for (const w of held.splice(2)) w.close();
    t.true(await counted(px, 2), 'closes counted down to the two keyed connections');
    for (let i = 0; i < LIMIT - 2; i++) held.push(await openWs(px.port, `/ws/new${i}`));
    t.is(await refused(px), 'refused', 'the limit holds again once refilled');
    t.true(await counted(px, LIMIT));

    // A second reload, back to two workers, then everything closes: LIMIT new ones are accepted.
    await reload(px, config(2));
    t.is(await refused(px), 'refused', 'the limit holds after the second reload');
    t.true(await counted(px, LIMIT), 'per-slot loads match the workers after the second reload');
    for (const w of held.splice(0)) w.close();
    t.true(await counted(px, 0), 'all closes counted');
    for (let i = 0; i < LIMIT; i++) held.push(await openWs(px.port, `/ws/last${i}`));
    t.is(await refused(px), 'refused', 'exactly LIMIT accepted after everything closed');
  } finally {
    for (const w of held) w.close();
    await px.stop();
  }
});
