// Backend servers on unix sockets (`servers: ["unix:/abs/path"]`): HTTP and WebSocket through
// them, and WebSocket tunnels to them migrating on a reload.
import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startBackend, startProxy, adminGet, reloadWith, type BackendReady } from '../helpers/proxy';
import { ownersOfConnections, until, type Started } from '../helpers/procs';
import { Traffic } from '../helpers/traffic';
import { echo, localPort, openWs } from '../helpers/ws';

let dir: string;
let ux: Started<BackendReady>;
test.before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fdproxy-unix-'));
  ux = await startBackend('ux', { SOCK: path.join(dir, 'b.sock') });
});
test.after.always(async () => { await ux?.stop(); if (dir) fs.rmSync(dir, { recursive: true, force: true }); });

function config(workers: number): string {
  return `listen: 127.0.0.1:0
workers: ${workers}
admin: 127.0.0.1:0
log_level: warn
backends:
  app:
    servers: ["unix:${ux.ready.path}"]
routes:
  - name: chat
    match: { path: "/chat/{room}" }
    key: "{room}"
    backend: app
  - name: default
    match: { path: / }
    backend: app
`;
}

test.serial('HTTP and WebSocket through a backend on a unix socket', async t => {
  t.is(ux.ready.port, 0);
  t.true(fs.statSync(ux.ready.path!).isSocket(), 'the backend listens on a unix socket only');
  const px = await startProxy(config(2));
  try {
    // Keep-alive GETs, and a body both ways.
    for (const p of ['/a', '/b?x=1', '/c']) {
      const res = await fetch(`http://127.0.0.1:${px.port}${p}`);
      t.is(res.status, 200, p);
      const body = await res.json() as { backend: string; url: string; headers: Record<string, string> };
      t.is(body.backend, 'ux');
      t.is(body.url, p);
      t.is(body.headers['x-forwarded-for'], '127.0.0.1');
    }
    const payload = Buffer.alloc(300_000, 'z');
    const up = await fetch(`http://127.0.0.1:${px.port}/echo`, { method: 'POST', body: payload });
    t.is(up.status, 200);
    t.true(Buffer.from(await up.arrayBuffer()).equals(payload), 'a 300 KB body echoed intact');

    const ws = await openWs(px.port, '/chat/room1');
    t.is(await echo(ws, 'hello over unix'), 'hello over unix');
    const who = JSON.parse(await echo(ws, 'whoami')) as { backend: string; url: string; pid: number };
    t.is(who.backend, 'ux');
    t.is(who.pid, ux.ready.pid);
    t.is(who.url, '/chat/room1');
    const big = 'x'.repeat(200_000);
    t.is(await echo(ws, big), big);
    ws.close();
  } finally { await px.stop(); }
});

const reload = reloadWith;

test.serial('WebSocket tunnels to a unix backend survive a reload: they move to the new workers, echo still works, nothing lost', async t => {
  const px = await startProxy(config(2));
  const traffic = new Traffic();
  try {
    await traffic.open(px.port, Array.from({ length: 10 }, (_, i) => `r${i}`), 3);
    const oldPids = px.ready.workers.map(w => w.pid);
    const before = ownersOfConnections(traffic.flows.map(f => localPort(f.ws)), px.port, oldPids);
    t.true([...before.values()].every(p => p !== null), 'every tunnel is on a first-generation worker');
    await until(() => traffic.summary().messages > 100, 5000);
    await reload(px, config(3));
    const st = await adminGet(px, '/status');
    t.is(st.generation, 2);
    const newPids: number[] = st.workers.map((w: { pid: number }) => w.pid);
    t.is(newPids.length, 3);
    t.true(newPids.every(p => !oldPids.includes(p)), 'new worker processes');
    const after = ownersOfConnections(traffic.flows.map(f => localPort(f.ws)), px.port, newPids);
    t.true([...after.values()].every(p => p !== null), 'every tunnel is now held by a new worker');
    const mid = traffic.summary().messages;
    t.true(await until(() => traffic.summary().messages > mid + 100, 5000), 'traffic flows after the reload');
    await traffic.stop();
    const s = traffic.summary();
    t.is(s.closed, 0, 'no tunnel closed');
    t.is(s.errors, 0, `no message lost, duplicated or reordered: ${traffic.flows.flatMap(f => f.errors).slice(0, 3)}`);
    t.is(s.lost, 0);
    // A migrated tunnel still reaches the unix backend (its original handshake, its url).
    const f = traffic.flows[0];
    const who = JSON.parse(await echo(f.ws, 'whoami')) as { backend: string; url: string };
    t.is(who.backend, 'ux');
    t.is(who.url, `/chat/${f.key}`);
    // New connections after the reload reach it too.
    const res = await fetch(`http://127.0.0.1:${px.port}/after`);
    t.is(((await res.json()) as { backend: string }).backend, 'ux');
    t.regex(await adminGet(px, '/metrics'), /fdproxy_config_reloads_total\{result="ok"\} 1/);
  } finally {
    traffic.closeAll();
    await px.stop();
  }
});

test.serial('a listener on a unix socket: HTTP keep-alive across keys, WebSocket, and the backend told the client is unknown', async t => {
  const http = await import('node:http');
  const WebSocket = (await import('ws')).default;
  const sock = path.join(dir, 'px.sock');
  const px = await startProxy(config(2).replace('listen: 127.0.0.1:0', `listen: unix:${sock}`));
  try {
    t.true(fs.statSync(sock).isSocket());
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const get = (p: string) => new Promise<{ status: number; body: { url: string; headers: Record<string, string> } }>((resolve, reject) => {
      http.get({ socketPath: sock, path: p, agent, headers: { host: 'x' } }, res => {
        let b = ''; res.on('data', d => { b += d; }); res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(b) }));
      }).on('error', reject);
    });
    // One keep-alive connection, requests for keys that live on different workers.
    for (const p of ['/chat/u1', '/chat/u2', '/chat/u3', '/chat/u4', '/plain']) {
      const r = await get(p);
      t.is(r.status, 200, p);
      t.is(r.body.url, p);
      t.is(r.body.headers['x-forwarded-for'], 'unknown');
      t.regex(r.body.headers.forwarded, /^for=unknown;proto=http;host="x"$/);
    }
    agent.destroy();
    const ws = new WebSocket(`ws+unix://${sock}:/chat/u9`);
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
    t.is(await echo(ws, 'over a unix listener'), 'over a unix listener');
    ws.close();
  } finally { await px.stop(); }
});
