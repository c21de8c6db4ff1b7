// Security: admin on loopback by default; fdpass channels are socketpairs (no named or abstract
// unix socket anyone could connect to) and a process of another uid cannot reach them; global and
// per-key connection limits answer 503 with Retry-After.
import test from 'ava';
import * as fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import WebSocket from 'ws';
import { startBackend, startProxy, twoBackendConfig, type ProxyHandle, type BackendReady } from '../helpers/proxy';
import { socketInodes, until, type Started } from '../helpers/procs';
import { raw, get, sleep } from '../fixtures/rawclient';

let b: Started<BackendReady>;
test.before(async () => { b = await startBackend('s1'); });
test.after.always(async () => { await b?.stop(); });

const pidsOf = (px: ProxyHandle) => [px.ready.pid, px.ready.acceptor, ...px.ready.workers.map(w => w.pid)];

function openWs(port: number, p: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${p}`);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

test.serial('admin without a host binds 127.0.0.1 (never all interfaces)', async t => {
  const px = await startProxy(twoBackendConfig(b.ready.port, b.ready.port).replace('admin: 127.0.0.1:0', 'admin: ":0"'));
  try {
    t.regex(px.ready.admin!, /^127\.0\.0\.1:\d+$/);
    // And the kernel agrees: the listening socket of that port is bound to 127.0.0.1.
    const hex = px.adminPort!.toString(16).toUpperCase().padStart(4, '0');
    const rows = fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').filter(l => l.includes(`:${hex} 00000000:0000 0A`));
    t.true(rows.length >= 1 && rows.every(l => l.trim().split(/\s+/)[1] === `0100007F:${hex}`), rows.join('\n'));
    const six = fs.existsSync('/proc/net/tcp6') ? fs.readFileSync('/proc/net/tcp6', 'utf8').split('\n').filter(l => l.includes(`:${hex} 00000000000000000000000000000000:0000 0A`)) : [];
    t.deepEqual(six, []);
    t.is((await fetch(`http://127.0.0.1:${px.adminPort}/healthz`)).status, 200);
  } finally { await px.stop(); }
});

test.serial('fdpass channels are socketpairs: no fdproxy process has a named or abstract unix socket, none listening', async t => {
  const px = await startProxy(twoBackendConfig(b.ready.port, b.ready.port));
  try {
    const mine = new Set<string>();
    for (const p of pidsOf(px)) for (const ino of socketInodes(p)) mine.add(ino);
    const rows = fs.readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1).map(l => l.trim().split(/\s+/)).filter(f => f.length >= 7);
    const ours = rows.filter(f => mine.has(f[6]));
    t.true(ours.length >= 4, `fdproxy holds unix sockets (channels): ${ours.length}`);
    const named = ours.filter(f => f.length > 7);                                    // a path or @abstract name
    const listening = ours.filter(f => (parseInt(f[3], 16) & 0x10000) !== 0);        // __SO_ACCEPTCON
    t.deepEqual(named.map(f => f.join(' ')), []);
    t.deepEqual(listening.map(f => f.join(' ')), []);
  } finally { await px.stop(); }
});

test.serial('a process of another uid (nobody) cannot reach a channel: no /proc fd access, no address to connect to', async t => {
  const px = await startProxy(twoBackendConfig(b.ready.port, b.ready.port));
  try {
    const targets: string[] = [];
    for (const p of pidsOf(px)) for (const fd of fs.readdirSync(`/proc/${p}/fd`)) {
      try { if (fs.readlinkSync(`/proc/${p}/fd/${fd}`).startsWith('socket:')) targets.push(`/proc/${p}/fd/${fd}`); } catch { /* gone */ }
    }
    // Everything a local attacker could try from a shell: list the fds, open a socket fd through
    // /proc, connect to every named or abstract unix socket on the machine with SEQPACKET/DGRAM.
    const attacker = `
      const fs = require('fs'), net = require('net');
      const out = { uid: process.getuid(), listed: 0, opened: 0, errors: {} };
      const note = e => { out.errors[e.code] = (out.errors[e.code] || 0) + 1; };
      for (const p of ${JSON.stringify(pidsOf(px))}) { try { fs.readdirSync('/proc/' + p + '/fd'); out.listed++; } catch (e) { note(e); } }
      for (const f of ${JSON.stringify(targets)}) { try { fs.closeSync(fs.openSync(f, 'r+')); out.opened++; } catch (e) { note(e); } }
      console.log(JSON.stringify(out));`;
    const out = JSON.parse(execFileSync('setpriv', ['--reuid', 'nobody', '--regid', 'nogroup', '--clear-groups', process.execPath, '-e', attacker],
      { encoding: 'utf8', cwd: '/' }).trim());
    t.not(out.uid, 0);
    t.is(out.listed, 0, 'cannot list fdproxy\'s fds');
    t.is(out.opened, 0, `cannot open any of ${targets.length} socket fds through /proc`);
    t.true(targets.length > 0);
    t.log(JSON.stringify(out));
    // Nothing reached a worker and everything still works.
    t.is(await get(px.port, '/ok'), 200);
  } finally { await px.stop(); }
});

test.serial('max_connections: beyond the limit → 503 with Retry-After; a slot freed → accepted again', async t => {
  const px = await startProxy(twoBackendConfig(b.ready.port, b.ready.port, undefined, 'limits: { max_connections: 10 }'));
  try {
    const held = await Promise.all(Array.from({ length: 10 }, (_, i) => openWs(px.port, `/chat/m${i}`)));
    await sleep(200);
    const r = await raw(px.port, 'GET /chat/m99 HTTP/1.1\r\nHost: x\r\n\r\n');
    t.regex(r.data, /^HTTP\/1\.1 503 /);
    t.regex(r.data, /\r\nretry-after: \d+\r\n/i);
    t.true(r.closed);
    held[0].close();
    t.true(await until(async () => (await get(px.port, '/chat/m98')) === 200, 5000), 'accepted again after one closed');
    for (const w of held) w.close();
  } finally { await px.stop(); }
});

test.serial('connections_per_key: the key beyond its limit → 503 with Retry-After; other keys unaffected', async t => {
  const routes = `  - name: chat
    match: { path: "/chat/{room}" }
    key: "{room}"
    backend: app
    limits: { connections_per_key: 3 }
  - name: default
    match: { path: / }
    backend: app`;
  const px = await startProxy(twoBackendConfig(b.ready.port, b.ready.port, routes));
  try {
    const held = await Promise.all(Array.from({ length: 3 }, () => openWs(px.port, '/chat/hot')));
    await sleep(200);
    const r = await raw(px.port, 'GET /chat/hot HTTP/1.1\r\nHost: x\r\n\r\n');
    t.regex(r.data, /^HTTP\/1\.1 503 /);
    t.regex(r.data, /\r\nretry-after: \d+\r\n/i);
    const other = await openWs(px.port, '/chat/cold');
    other.close();
    held[0].close();
    t.true(await until(async () => (await raw(px.port, 'GET /chat/hot HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).status === 200, 5000));
    for (const w of held) w.close();
  } finally { await px.stop(); }
});
