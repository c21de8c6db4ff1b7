// Header injection through forwarding headers, and malformed or oversized WebSocket upgrades.
import test from 'ava';
import { startBackend, startProxy, twoBackendConfig, type ProxyHandle, type BackendReady } from '../helpers/proxy';
import type { Started } from '../helpers/procs';
import { raw } from '../fixtures/rawclient';

let b: Started<BackendReady>;
let px: ProxyHandle;
test.before(async () => {
  b = await startBackend('inj');
  px = await startProxy(twoBackendConfig(b.ready.port, b.ready.port, undefined, 'limits: { head_bytes: 4KiB }'));
});
test.after.always(async () => { await px?.stop(); await b?.stop(); });

const statuses = (data: string) => [...data.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map(m => Number(m[1]));
const bodies = (data: string) => [...data.matchAll(/\r\n\r\n(\{.*?\})(?=HTTP\/1\.1|$)/gs)].map(m => JSON.parse(m[1]));

const SPOOF = 'X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 1\r\n' +
  'Forwarded: for=6.6.6.6;host=evil.example\r\nX-Real-IP: 6.6.6.6\r\nx-forwarded-for: 7.7.7.7\r\n';

test('client-sent X-Forwarded-*/Forwarded/X-Real-IP never reach the backend; the proxy\'s own values do (first and keep-alive requests)', async t => {
  const req = (p: string, last = false) => `GET ${p} HTTP/1.1\r\nHost: app.example\r\n${SPOOF}${last ? 'Connection: close\r\n' : ''}\r\n`;
  const r = await raw(px.port, [req('/one'), req('/two', true)], 4000, 200);
  t.deepEqual(statuses(r.data), [200, 200]);
  const seen = bodies(r.data);
  t.is(seen.length, 2);
  for (const s of seen) {
    const h = s.headers as Record<string, string | undefined>;
    t.is(h['x-forwarded-for'], '127.0.0.1');
    t.is(h['x-forwarded-host'], 'app.example');
    t.is(h['x-forwarded-proto'], 'http');
    t.is(h['forwarded'], 'for=127.0.0.1;proto=http;host="app.example"');
    t.is(h['x-real-ip'], undefined);
    t.is(h['x-forwarded-port'], undefined);
    t.false(JSON.stringify(h).includes('6.6.6.6') || JSON.stringify(h).includes('7.7.7.7') || JSON.stringify(h).includes('evil'));
  }
});

test('CRLF cannot be injected: raw CR/LF in values → 400; encoded CRLF stays in the target; a Host that would break Forwarded quoting → 400', async t => {
  const cases: [string, string, number][] = [
    ['CR LF inside a value (a header of its own is fine, but bare CR/LF is not)', `GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rX-Injected: 1\r\n\r\n`, 400],
    ['LF inside a value', `GET / HTTP/1.1\r\nHost: x\r\nX-A: a\nX-Injected: 1\r\n\r\n`, 400],
    ['quote in Host (would escape Forwarded host="…")', `GET / HTTP/1.1\r\nHost: a";for=evil\r\n\r\n`, 400],
    ['space in Host', `GET / HTTP/1.1\r\nHost: a b\r\n\r\n`, 400],
  ];
  for (const [name, req, want] of cases) {
    const r = await raw(px.port, req);
    t.deepEqual(statuses(r.data), [want], name);
    t.true(r.closed, name);
  }
  const enc = await raw(px.port, `GET /a%0d%0aX-Injected:%201 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  t.deepEqual(statuses(enc.data), [200]);
  const seen = bodies(enc.data)[0];
  t.is(seen.url, '/a%0d%0aX-Injected:%201');
  t.is(seen.headers['x-injected'], undefined);
});

const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
const up = (extra: string, key = `Sec-WebSocket-Key: ${KEY}\r\n`, version = 'Sec-WebSocket-Version: 13\r\n', method = 'GET') =>
  `${method} /chat/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n${key}${version}${extra}\r\n`;

test('malformed or oversized WebSocket upgrades: 400 (431 when too large) and close; the valid one gets 101', async t => {
  const cases: [string, string, number][] = [
    ['version 8', up('', undefined, 'Sec-WebSocket-Version: 8\r\n'), 400],
    ['version 14', up('', undefined, 'Sec-WebSocket-Version: 14\r\n'), 400],
    ['no version', up('', undefined, ''), 400],
    ['two versions "13, 8"', up('', undefined, 'Sec-WebSocket-Version: 13, 8\r\n'), 400],
    ['no key', up('', ''), 400],
    ['short key', up('', 'Sec-WebSocket-Key: abc==\r\n'), 400],
    ['key not base64', up('', 'Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==\r\n'), 400],
    ['key of 17 bytes', up('', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZTE=\r\n'), 400],
    ['two keys', up(`Sec-WebSocket-Key: ${KEY}\r\n`), 400],
    ['POST upgrade', up('', undefined, undefined, 'POST'), 400],
    ['upgrade with a body', up('Content-Length: 5\r\n'), 400],
    ['HTTP/1.0 upgrade', up('').replace('HTTP/1.1', 'HTTP/1.0'), 400],
    ['oversized Sec-WebSocket-Protocol', up(`Sec-WebSocket-Protocol: ${'p,'.repeat(3000)}p\r\n`), 431],
    ['oversized Sec-WebSocket-Extensions', up(`Sec-WebSocket-Extensions: ${'x'.repeat(5000)}\r\n`), 431],
  ];
  const wrong: unknown[] = [];
  for (const [name, req, want] of cases) {
    const r = await raw(px.port, req);
    if (statuses(r.data).join() !== String(want) || !r.closed) wrong.push({ name, got: statuses(r.data), closed: r.closed });
  }
  t.deepEqual(wrong, []);
  const ok = await raw(px.port, up(''), 1000);
  t.regex(ok.data, /^HTTP\/1\.1 101 /);
  t.regex(ok.data, /sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=/i);
});
