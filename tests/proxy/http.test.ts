import test from 'ava';
import * as net from 'node:net';
import * as http from 'node:http';
import { createHash } from 'node:crypto';
import { startBackend, startProxy, twoBackendConfig, type ProxyHandle, type BackendReady } from '../helpers/proxy';
import type { Started } from '../helpers/procs';

let b1: Started<BackendReady>, b2: Started<BackendReady>, px: ProxyHandle;

test.before(async () => {
  [b1, b2] = await Promise.all([startBackend('b1'), startBackend('b2')]);
  px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port));
});
test.after.always(async () => { await px?.stop(); await b1?.stop(); await b2?.stop(); });

/** Raw request/response over one socket: send `req`, collect until `done(buf)` says the answer is complete. */
function raw(req: string | Buffer, done: (b: Buffer) => boolean, port = px.port): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    s.on('data', d => { buf = Buffer.concat([buf, d]); if (done(buf)) { s.destroy(); resolve(buf); } });
    s.on('end', () => resolve(buf));
    s.on('error', reject);
    s.write(req);
  });
}

test('chunked upload and download of 50 MiB, checksummed', async t => {
  const agent = new http.Agent({ keepAlive: true });
  const block = Buffer.alloc(1 << 20);
  for (let i = 0; i < block.length; i++) block[i] = (i * 31 + 7) & 255;
  const expect = createHash('sha256');
  for (let i = 0; i < 50; i++) expect.update(block);
  const up = await new Promise<{ sha256: string; bytes: number }>((resolve, reject) => {
    const req = http.request({ port: px.port, host: '127.0.0.1', path: '/sha256', method: 'POST', agent }, res => {
      let s = ''; res.on('data', d => s += d); res.on('end', () => resolve(JSON.parse(s)));
    });
    req.on('error', reject);
    let i = 0;
    const pump = () => { while (i < 50) { i++; if (!req.write(block)) { req.once('drain', pump); return; } } req.end(); };
    pump();
  });
  t.is(up.bytes, 50 << 20);
  t.is(up.sha256, expect.digest('hex'));
  const n = 50 << 20;
  const got = await new Promise<{ n: number; sha: string; te?: string }>((resolve, reject) => {
    http.get({ port: px.port, host: '127.0.0.1', path: `/big?n=${n}`, agent }, res => {
      const h = createHash('sha256'); let k = 0;
      res.on('data', d => { h.update(d); k += d.length; });
      res.on('end', () => resolve({ n: k, sha: h.digest('hex'), te: res.headers['transfer-encoding'] }));
    }).on('error', reject);
  });
  const blk = Buffer.alloc(65536);
  for (let i = 0; i < blk.length; i++) blk[i] = (i * 7 + 3) & 255;
  const e2 = createHash('sha256');
  for (let k = 0; k < n; k += blk.length) e2.update(blk.subarray(0, Math.min(blk.length, n - k)));
  t.is(got.n, n);
  t.is(got.te, 'chunked');
  t.is(got.sha, e2.digest('hex'));
  agent.destroy();
});

test('keep-alive reuse and pipelined requests are answered in order', async t => {
  const reqs = [1, 2, 3].map(i => `GET /p${i} HTTP/1.1\r\nHost: x\r\n\r\n`).join('');
  const buf = await raw(reqs, b => (b.toString().match(/HTTP\/1.1 200/g) ?? []).length === 3 && b.toString().trimEnd().endsWith('}'));
  const urls = [...buf.toString().matchAll(/"url":"(\/p\d)"/g)].map(m => m[1]);
  t.deepEqual(urls, ['/p1', '/p2', '/p3']);
});

test('Expect: 100-continue gets its 100 then the answer', async t => {
  const res = await new Promise<{ status: number; cont: boolean; body: string }>((resolve, reject) => {
    let cont = false;
    const req = http.request({ port: px.port, host: '127.0.0.1', path: '/sha256', method: 'POST', headers: { expect: '100-continue', 'content-length': 5 } }, r => {
      let s = ''; r.on('data', d => s += d); r.on('end', () => resolve({ status: r.statusCode!, cont, body: s }));
    });
    req.on('continue', () => { cont = true; req.end('hello'); });
    req.on('error', reject);
  });
  t.true(res.cont);
  t.is(res.status, 200);
  t.is(JSON.parse(res.body).bytes, 5);
});

test('hop-by-hop headers are dropped and X-Forwarded-*/Forwarded set; client-sent X-Forwarded-For is not trusted', async t => {
  const buf = await raw('GET /hdr HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nX-Forwarded-For: 6.6.6.6\r\nTE: trailers\r\n\r\n',
    b => b.toString().trimEnd().endsWith('}'));
  const body = JSON.parse(buf.toString().slice(buf.indexOf('\r\n\r\n') + 4));
  t.is(body.headers['x-forwarded-for'], '127.0.0.1');
  t.is(body.headers['x-forwarded-host'], 'example.test');
  t.is(body.headers['forwarded'], 'for=127.0.0.1;proto=http;host="example.test"');
  t.is(body.headers['x-secret'], undefined);
  t.is(body.headers['keep-alive'], undefined);
  t.is(body.headers['te'], undefined);
});

test('502 when the backend resets, 504 when it never answers', async t => {
  const cfg = twoBackendConfig(b1.ready.port, b1.ready.port).replace(`servers: ["127.0.0.1:${b1.ready.port}"]`,
    `servers: ["127.0.0.1:${b1.ready.port}"]\n    response_timeout: 500ms`);
  const p = await startProxy(cfg);
  try {
    const r1 = await raw('GET /reset HTTP/1.1\r\nHost: x\r\n\r\n', () => false, p.port);
    t.regex(r1.toString(), /^HTTP\/1.1 502/);
    const r2 = await raw('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n', () => false, p.port);
    t.regex(r2.toString(), /^HTTP\/1.1 504/);
  } finally { await p.stop(); }
});

test('head errors: 400 malformed, 404 no route, 431 too large, 408 slowloris — others served meanwhile', async t => {
  const cfg = twoBackendConfig(b1.ready.port, b2.ready.port, `  - name: only
    match: { path: /only/ }
    backend: app`, 'limits: { head_timeout: 2s, head_bytes: 4KiB }');
  const p = await startProxy(cfg);
  try {
    const slow = net.connect(p.port, '127.0.0.1');
    slow.write('GET /only/x HTTP/1.1\r\nHost: x\r\n');
    const slowAnswer = new Promise<string>(r => { let s = ''; slow.on('data', d => s += d); slow.on('close', () => r(s)); });
    t.regex((await raw('GET / HTTP/1.1\r\nHost : x\r\n\r\n', () => false, p.port)).toString(), /^HTTP\/1.1 400/);
    t.regex((await raw('GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', () => false, p.port)).toString(), /^HTTP\/1.1 404/);
    t.regex((await raw(`GET /only/ HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(5000)}\r\n\r\n`, () => false, p.port)).toString(), /^HTTP\/1.1 431/);
    t.regex((await raw('GET /only/ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', () => false, p.port)).toString(), /^HTTP\/1.1 200/);
    t.regex(await slowAnswer, /^HTTP\/1.1 408/);
  } finally { await p.stop(); }
});
