// npm run demo: starts two demo backends and fdproxy with the shipped proxy.yaml; the chat page
// is served, a room sticks to one backend, the backend can tell which worker holds the client.
import test from 'ava';
import * as net from 'node:net';
import * as path from 'node:path';
import WebSocket from 'ws';
import { ROOT, startReady, until } from '../helpers/procs';

function freePort(): Promise<number> {
  return new Promise(resolve => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => resolve(p)); }); });
}
function who(url: string): Promise<{ backend: string; worker: { slot: number; pid: number } | null; room: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.on('message', d => { const m = JSON.parse(d.toString()); if (m.t === 'who' && m.worker) { ws.close(); resolve(m); } });
    ws.on('open', () => { const t = setInterval(() => ws.readyState === 1 ? ws.send('whoami') : clearInterval(t), 200); ws.on('close', () => clearInterval(t)); });
    ws.on('error', reject);
    setTimeout(() => reject(new Error('no who with a worker')), 10000).unref();
  });
}

test('the demo starts, serves the chat page, keeps a room on one backend and shows the worker', async t => {
  const ports = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  const demo = await startReady<{ url: string; dashboard: string; proxy: { pid: number; workers: { pid: number }[] } }>(
    [path.join(ROOT, 'demo', 'run.js'), '--quiet'], { env: { DEMO_PORTS: ports.join(',') }, timeoutMs: 30000 });
  try {
    const page = await (await fetch(demo.ready.url)).text();
    t.regex(page, /fdproxy demo: sticky chat rooms/);
    t.is((await fetch(demo.ready.dashboard)).status, 200);
    const base = `ws://127.0.0.1:${ports[0]}/chat/`;
    const a = await who(base + 'lobby'), b = await who(base + 'lobby');
    t.is(a.backend, b.backend);
    t.is(a.worker!.pid, b.worker!.pid);
    t.true(demo.ready.proxy.workers.some(w => w.pid === a.worker!.pid));
    const rooms = await Promise.all(Array.from({ length: 12 }, (_, i) => who(base + `room${i}`)));
    t.is(new Set(rooms.map(r => r.backend)).size, 2, 'rooms spread over both backends');
  } finally {
    t.is(await demo.stop('SIGINT'), 0);
    t.true(await until(() => { try { process.kill(demo.ready.proxy.pid, 0); return false; } catch { return true; } }, 5000), 'fdproxy stopped with the demo');
  }
});
