// What a handoff can carry. A connection is handed to its worker with everything read so far — the
// head plus the rest of the read that completed it — and control messages carry lists that grow
// with the keys (closes, held keys, reload plans). None of these may outgrow one fdpass handoff:
// where they did (64 KiB), the process threw FDP_FDPASS_TOO_BIG uncaught and exited, dropping
// every connection it had. Each case here crashed a process before the fix.
import test from 'ava';
import * as net from 'node:net';
import { createHash } from 'node:crypto';
import type WebSocket from 'ws';
import { startBackend, startProxy, twoBackendConfig, adminGet, adminPost, type ProxyHandle, type BackendReady } from '../helpers/proxy';
import { until, type Started } from '../helpers/procs';
import { openWs, echo } from '../helpers/ws';

let b: Started<BackendReady>;
let px: ProxyHandle;
test.before(async () => {
  b = await startBackend('hs');
  px = await startProxy(twoBackendConfig(b.ready.port, b.ready.port));
});
test.after.always(async () => { await px?.stop(); await b?.stop(); });

const workerPids = async (): Promise<number[]> => ((await adminGet(px, '/status')).workers as { pid: number }[]).map(w => w.pid).sort();
const metric = async (name: string): Promise<number> => {
  const text = await adminGet(px, '/metrics') as string;
  return [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)`, 'gm'))].reduce((a, m) => a + Number(m[1]), 0);
};

/** Send `parts` one after another (each once the previous one is on the wire, 100 ms apart so that
 *  the proxy reads them separately), then read one HTTP response per request; resolves with the
 *  bodies in order. */
function exchange(parts: Buffer[], responses: number): Promise<{ status: number; body: string }[]> {
  return new Promise((resolve, reject) => {
    const s = net.connect(px.port, '127.0.0.1');
    let acc = Buffer.alloc(0);
    const out: { status: number; body: string }[] = [];
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`timeout; got ${out.length} responses: ${acc.toString('latin1', 0, 200)}`)); }, 15000);
    s.on('data', d => {
      acc = Buffer.concat([acc, d]);
      for (;;) {
        const he = acc.indexOf('\r\n\r\n');
        if (he < 0) return;
        const head = acc.toString('latin1', 0, he);
        let text: string, end: number;
        if (/transfer-encoding: chunked/i.test(head)) {
          const z = acc.indexOf('\r\n0\r\n\r\n', he + 4 - 2);
          if (z < 0) return;
          end = z + 7;
          text = '';
          for (let p = he + 4; p < z;) {   // size CRLF data CRLF …
            const nl = acc.indexOf('\r\n', p);
            const n = parseInt(acc.toString('latin1', p, nl), 16);
            text += acc.toString('utf8', nl + 2, nl + 2 + n);
            p = nl + 2 + n + 2;
          }
        } else {
          const len = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
          if (acc.length < he + 4 + len) return;
          end = he + 4 + len;
          text = acc.toString('utf8', he + 4, end);
        }
        out.push({ status: Number(head.slice(9, 12)), body: text });
        acc = acc.subarray(end);
        if (out.length === responses) { clearTimeout(timer); s.destroy(); resolve(out); return; }
      }
    });
    s.on('error', e => { clearTimeout(timer); reject(e); });
    s.on('close', () => { clearTimeout(timer); if (out.length < responses) reject(new Error(`closed after ${out.length} responses`)); });
    let i = 0;
    const next = () => { if (i < parts.length) s.write(parts[i++], () => setTimeout(next, 100)); };
    s.on('connect', next);
  });
}

const body = (n: number): Buffer => { const b = Buffer.alloc(n); for (let i = 0; i < n; i++) b[i] = (i * 31 + 7) & 255; return b; };
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test.serial('a head that ends in a read carrying ~64 KiB of body is handed over whole (acceptor, then a keep-alive reroute in a worker)', async t => {
  const acceptor = (await adminGet(px, '/status')).acceptor.pid;
  const workers = await workerPids();
  const pad = `X-Pad: ${'p'.repeat(12 * 1024)}\r\n`;   // a 12 KiB head: under head_bytes (16 KiB)
  const upload = body(200_000);
  // The head without its last CRLF, then the CRLF and the body: the read that completes the head
  // brings up to 64 KiB of body with it (12 + 64 KiB > the old 64 KiB handoff limit).
  const post = (url: string) => [Buffer.from(`POST ${url} HTTP/1.1\r\nHost: x\r\nContent-Length: ${upload.length}\r\n${pad}`), Buffer.concat([Buffer.from('\r\n'), upload])];
  const [r] = await exchange(post('/sha256'), 1);
  t.is(r.status, 200);
  t.deepEqual(JSON.parse(r.body).bytes, upload.length);
  t.is(JSON.parse(r.body).sha256, sha(upload));
  // Keep-alive: the first request on a key, then one on other keys read the same way: a worker
  // that does not own the next key hands the connection back to the acceptor with what it read.
  const reroutes0 = await metric('fdproxy_reroutes_total');
  for (const [a, c] of [['r1', 'r2'], ['r3', 'r4'], ['r5', 'r6'], ['r7', 'r8']]) {
    const first = Buffer.from(`GET /chat/${a} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const res = await exchange([first, ...post(`/chat/${c}`)], 2);
    t.is(res[0].status, 200);
    t.is(res[1].status, 200, res[1].body.slice(0, 200));
  }
  t.true(await until(async () => await metric('fdproxy_reroutes_total') > reroutes0, 5000), 'at least one request moved to another worker');
  t.is((await adminGet(px, '/status')).acceptor.pid, acceptor, 'the acceptor did not restart');
  t.deepEqual(await workerPids(), workers, 'no worker restarted');
});

test.serial('300 WebSockets with 900-character keys: a reload (plan), an acceptor restart (held keys) and closing them all at once (closes) each fit', async t => {
  const keys = Array.from({ length: 300 }, (_, i) => `${String(i).padStart(4, '0')}-${'k'.repeat(895)}`);
  const socks: WebSocket[] = [];
  for (let i = 0; i < keys.length; i += 50) socks.push(...await Promise.all(keys.slice(i, i + 50).map(k => openWs(px.port, `/chat/${k}`))));
  t.true(await until(async () => (await adminGet(px, '/status')).acceptor.connections === 300, 10000), 'the acceptor counts 300');
  // Reload: the plan names 300 keys × ~920 bytes of JSON (~276 KB). Then a fresh acceptor takes
  // over (a reload renews it) and learns the 300 held keys from the workers.
  const acc0 = (await adminGet(px, '/status')).acceptor.pid;
  const r = await adminPost(px, '/reload');
  t.is(r.status, 200);
  t.true(await until(async () => (await adminGet(px, '/status')).retiring.length === 0, 15000), 'the old workers retired');
  t.true(await until(async () => { const s = await adminGet(px, '/status'); return s.acceptor?.pid !== acc0 && s.acceptor?.connections === 300; }, 15000), 'the renewed acceptor counts 300');
  const answers = await Promise.all(socks.map((w, i) => echo(w, `m${i}`)));
  t.deepEqual(answers, socks.map((_, i) => `m${i}`), 'every WebSocket migrated and still echoes');
  const workers = await workerPids();
  // The acceptor dies: its successor (a cold start: the spare is being renewed too, or a fresh
  // spare) learns the 300 held keys from the workers.
  const acc = (await adminGet(px, '/status')).acceptor.pid;
  process.kill(acc, 'SIGKILL');
  t.true(await until(async () => { const s = await adminGet(px, '/status'); return s.acceptor?.pid !== acc && s.acceptor?.connections === 300; }, 15000), 'the new acceptor counts 300 again');
  t.deepEqual(await workerPids(), workers, 'no worker died telling it');
  // All 300 close at once: one batch of closes (~140 KB of JSON) from each worker.
  for (const w of socks) w.terminate();
  t.true(await until(async () => (await adminGet(px, '/status')).acceptor.connections === 0, 10000), 'every close counted');
  t.deepEqual(await workerPids(), workers, 'no worker died reporting the closes');
  const w = await openWs(px.port, '/chat/after');
  t.is(await echo(w, 'still'), 'still');
  w.close();
});
