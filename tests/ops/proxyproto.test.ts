// PROXY protocol v1/v2 on a listener with proxy_protocol: true: the address the load balancer
// reports reaches {client_ip} (sticky key), the access log and X-Forwarded-For; a connection
// without the header is refused. Also: access log fields, and --log-level beating log_level:.
import test from 'ava';
import * as net from 'node:net';
import { startBackend, startProxy, twoBackendConfig, type ProxyHandle, type BackendReady } from '../helpers/proxy';
import { until, type Started } from '../helpers/procs';

let b1: Started<BackendReady>, b2: Started<BackendReady>, px: ProxyHandle;
const routes = `  - name: byip
    match: { path: /ip/ }
    key: "{client_ip}"
    backend: app
  - name: default
    match: { path: / }
    backend: app`;

test.before(async () => {
  [b1, b2] = await Promise.all([startBackend('b1'), startBackend('b2')]);
  px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port, routes)
    .replace('listen: 127.0.0.1:0', 'listen: [{ address: "127.0.0.1:0", proxy_protocol: true }]').replace('log_level: warn', 'log_level: info'));
});
test.after.always(async () => { await px?.stop(); await b1?.stop(); await b2?.stop(); });

function exchange(port: number, bytes: Buffer): Promise<string> {
  return new Promise(resolve => {
    const s = net.connect(port, '127.0.0.1', () => s.write(bytes));
    let out = '';
    s.on('data', d => { out += d; }); s.on('close', () => resolve(out)); s.on('error', () => resolve(out));
    setTimeout(() => s.destroy(), 5000).unref();
  });
}
const request = (path: string) => Buffer.from(`GET ${path} HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n`);
const body = (res: string) => JSON.parse(res.slice(res.indexOf('\r\n\r\n') + 4));

function v2(ip: string, port: number): Buffer {
  const sig = Buffer.from('\r\n\r\n\0\r\nQUIT\n', 'latin1');
  if (net.isIPv4(ip)) {
    const b = Buffer.alloc(16 + 12);
    sig.copy(b); b[12] = 0x21; b[13] = 0x11; b.writeUInt16BE(12, 14);
    ip.split('.').forEach((x, i) => { b[16 + i] = Number(x); });
    b.set([10, 0, 0, 1], 20); b.writeUInt16BE(port, 24); b.writeUInt16BE(443, 26);
    return b;
  }
  const b = Buffer.alloc(16 + 36);
  sig.copy(b); b[12] = 0x21; b[13] = 0x21; b.writeUInt16BE(36, 14);
  const full = ip.replace('::', ':' + '0:'.repeat(8 - ip.split(':').filter(Boolean).length)).split(':').filter(Boolean);
  full.forEach((h, i) => b.writeUInt16BE(parseInt(h, 16), 16 + i * 2));
  b.writeUInt16BE(port, 48); b.writeUInt16BE(443, 50);
  return b;
}

test('v1: the reported client address is X-Forwarded-For, {client_ip} and the access log client', async t => {
  const res = await exchange(px.port, Buffer.concat([Buffer.from('PROXY TCP4 203.0.113.7 10.0.0.1 56324 80\r\n'), request('/ip/a')]));
  t.regex(res, /^HTTP\/1\.1 200/);
  t.is(body(res).headers['x-forwarded-for'], '203.0.113.7');
  t.true(await until(() => px.lines.some(l => l.includes('"event":"access"') && l.includes('"client":"203.0.113.7"') && l.includes('"key":"203.0.113.7"')), 5000));
  const line = JSON.parse(px.lines.find(l => l.includes('"event":"access"') && l.includes('"client":"203.0.113.7"'))!);
  for (const f of ['time', 'client', 'route', 'key', 'worker', 'backend', 'status', 'bytes_in', 'bytes_out', 'duration_ms']) t.true(f in line, `access line has ${f}`);
  t.is(line.route, 'byip'); t.is(line.status, 200); t.is(typeof line.worker, 'number'); t.regex(line.backend, /^127\.0\.0\.1:\d+$/);
});

test('v2 (IPv4 and IPv6): the reported address is used; the same client address sticks to one backend', async t => {
  const r4 = await exchange(px.port, Buffer.concat([v2('198.51.100.9', 40000), request('/ip/b')]));
  t.is(body(r4).headers['x-forwarded-for'], '198.51.100.9');
  const r6 = await exchange(px.port, Buffer.concat([v2('2001:db8::1', 40001), request('/ip/c')]));
  t.regex(body(r6).headers['x-forwarded-for'], /2001:db8/);
  // 10 addresses, 3 connections each: every address always on the same backend.
  for (let i = 0; i < 10; i++) {
    const seen = new Set<string>();
    for (let j = 0; j < 3; j++) seen.add(body(await exchange(px.port, Buffer.concat([v2(`192.0.2.${i + 1}`, 1000 + j), request('/ip/x')]))).backend);
    t.is(seen.size, 1);
  }
});

test('a connection without the PROXY header (or with a broken one) is refused with 400 and closed', async t => {
  t.regex(await exchange(px.port, request('/ip/a')), /^HTTP\/1\.1 400/);
  t.regex(await exchange(px.port, Buffer.from('PUT / HTTP/1.1\r\nHost: x\r\n\r\n')), /^HTTP\/1\.1 400/);
  t.regex(await exchange(px.port, Buffer.from('PROXY TCP4 nonsense\r\nGET / HTTP/1.1\r\n\r\n')), /^HTTP\/1\.1 400/);
  const bad = v2('198.51.100.9', 1); bad[12] = 0x31;
  t.regex(await exchange(px.port, Buffer.concat([bad, request('/')])), /^HTTP\/1\.1 400/);
});

test('--log-level warn on the command line silences access lines even with log_level: info', async t => {
  const quiet = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port).replace('log_level: warn', 'log_level: info'), ['--log-level', 'warn']);
  try {
    for (let i = 0; i < 3; i++) t.is((await fetch(`http://127.0.0.1:${quiet.port}/chat/q${i}`)).status, 200);
    await new Promise(r => setTimeout(r, 300));
    t.false(quiet.lines.some(l => l.includes('"event":"access"')));
  } finally { await quiet.stop(); }
  const loud = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port), ['--log-level', 'info']);
  try {
    t.is((await fetch(`http://127.0.0.1:${loud.port}/chat/l`)).status, 200);
    t.true(await until(() => loud.lines.some(l => l.includes('"event":"access"') && l.includes('"route":"chat"')), 5000));
  } finally { await loud.stop(); }
});
