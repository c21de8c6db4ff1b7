// Scale-out: two fdproxy instances with the same config, no shared state, send every key to
// the same backend server (rendezvous hashing over the same server list), including after a
// server is removed from both configs.
import test from 'ava';
import { startBackend, startProxy, type ProxyHandle, type BackendReady } from '../helpers/proxy';
import type { Started } from '../helpers/procs';

let bs: Started<BackendReady>[] = [];
const pxs: ProxyHandle[] = [];
test.after.always(async () => { for (const p of pxs) await p.stop(); for (const b of bs) await b.stop(); });

const config = (ports: number[], workers: number) => `listen: 127.0.0.1:0
workers: ${workers}
log_level: warn
backends:
  app:
    servers: [${ports.map(p => `"127.0.0.1:${p}"`).join(', ')}]
routes:
  - name: chat
    match: { path: "/chat/{room}" }
    key: "{room}"
    backend: app
`;

async function backendOf(px: ProxyHandle, key: string): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${px.port}/chat/${key}`);
  return ((await r.json()) as { backend: string }).backend;
}

test('two instances (different worker counts) route 200 keys to the same backend servers', async t => {
  bs = await Promise.all(['s1', 's2', 's3'].map(n => startBackend(n)));
  const ports = bs.map(b => b.ready.port);
  const [a, b] = await Promise.all([startProxy(config(ports, 2)), startProxy(config(ports, 3))]);
  pxs.push(a, b);
  const keys = Array.from({ length: 200 }, (_, i) => `room-${i}`);
  const onA = await Promise.all(keys.map(k => backendOf(a, k)));
  const onB = await Promise.all(keys.map(k => backendOf(b, k)));
  t.deepEqual(onA, onB, 'same key → same server on both instances');
  t.is(new Set(onA).size, 3, 'all servers used');
  // Removing s2 from both configs moves only s2's keys, identically on both instances.
  const c = await startProxy(config([ports[0], ports[2]], 2)), d = await startProxy(config([ports[0], ports[2]], 1));
  pxs.push(c, d);
  const onC = await Promise.all(keys.map(k => backendOf(c, k)));
  const onD = await Promise.all(keys.map(k => backendOf(d, k)));
  t.deepEqual(onC, onD);
  keys.forEach((_, i) => { if (onA[i] !== 's2') t.is(onC[i], onA[i], 'keys of the remaining servers stay'); });
});
