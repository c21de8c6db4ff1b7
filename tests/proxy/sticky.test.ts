import test from 'ava';
import WebSocket from 'ws';
import { startBackend, startProxy, twoBackendConfig, type ProxyHandle, type BackendReady } from '../helpers/proxy';
import { ownersOfConnections, type Started } from '../helpers/procs';

let b1: Started<BackendReady>, b2: Started<BackendReady>, px: ProxyHandle;

test.before(async () => {
  [b1, b2] = await Promise.all([startBackend('b1'), startBackend('b2')]);
  px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port));
});
test.after.always(async () => { await px?.stop(); await b1?.stop(); await b2?.stop(); });

interface Conn { ws: WebSocket; key: string; backend: string; local: number; worker: number | null }

function open(path: string, headers: Record<string, string>): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${px.port}${path}`, { headers });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}
function whoami(ws: WebSocket): Promise<{ backend: string }> {
  return new Promise(resolve => { ws.once('message', d => resolve(JSON.parse(d.toString()))); ws.send('whoami'); });
}

const kinds: [string, (k: string) => [string, Record<string, string>]][] = [
  ['path', k => [`/chat/${k}`, {}]],
  ['cookie', k => ['/app/ws', { cookie: `theme=dark; session=${k}` }]],
  ['header', k => ['/h/ws', { 'x-user': k }]],
  ['tenant', k => ['/t/ws', { 'x-tenant-id': k }]],
];

test('100 keys × 5 connections over path, cookie, header and tenant routes: one worker and one backend per key', async t => {
  const pids = px.ready.workers.map(w => w.pid);
  const conns: Conn[] = [];
  for (let round = 0; round < 5; round++) {
    // Connections of a key are opened at different times, interleaved with other keys.
    await Promise.all(Array.from({ length: 100 }, async (_, i) => {
      const [kind, make] = kinds[i % 4];
      const key = `${kind}-${i}`;
      const [path, headers] = make(key);
      const ws = await open(path, headers);
      const who = await whoami(ws);
      const local = (ws as unknown as { _socket: { localPort: number } })._socket.localPort;
      conns.push({ ws, key, backend: who.backend, local, worker: null });
    }));
  }
  t.is(conns.length, 500);
  const owners = ownersOfConnections(conns.map(c => c.local), px.port, pids);
  for (const c of conns) c.worker = owners.get(c.local) ?? null;
  const byKey = new Map<string, Conn[]>();
  for (const c of conns) (byKey.get(c.key) ?? byKey.set(c.key, []).get(c.key)!).push(c);
  let split = 0;
  for (const [, cs] of byKey) {
    t.true(cs[0].worker !== null);
    if (new Set(cs.map(c => c.worker)).size !== 1 || new Set(cs.map(c => c.backend)).size !== 1) split++;
  }
  t.is(split, 0, 'every key on one worker and one backend');
  // Both workers and both backends are used.
  t.is(new Set(conns.map(c => c.worker)).size, 2);
  t.is(new Set(conns.map(c => c.backend)).size, 2);
  for (const c of conns) c.ws.close();
});
