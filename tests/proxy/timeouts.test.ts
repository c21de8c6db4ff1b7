// Client- and backend-side timeouts, end to end: limits.idle_timeout between requests (after a
// 200 and after a 404, on both the acceptor's and the worker's side), head_timeout from the first
// byte of the next head, and connect_timeout against a backend that never accepts.
import test from 'ava';
import * as net from 'node:net';
import * as path from 'node:path';
import { startBackend, startProxy, twoBackendConfig, type BackendReady } from '../helpers/proxy';
import { ROOT, startReady, until, type Started } from '../helpers/procs';
import { raw } from '../fixtures/rawclient';

let b1: Started<BackendReady>;
test.before(async () => { b1 = await startBackend('b1'); });
test.after.always(async () => { await b1?.stop(); });

interface Response { status: number; head: string; at: number }

/** A raw keep-alive connection: every byte received, when the proxy closed it and how. */
class Client {
  private buf = Buffer.alloc(0);
  private used = 0;           // bytes of `buf` taken by complete responses
  endedAt = 0;                // the proxy's FIN
  closed = false;
  error: string | undefined;  // ECONNRESET etc.: not a clean close
  private constructor(readonly sock: net.Socket) {
    sock.on('data', d => { this.buf = Buffer.concat([this.buf, d]); });
    sock.on('end', () => { this.endedAt = Date.now(); this.sock.end(); });
    sock.on('error', e => { this.error = (e as NodeJS.ErrnoException).code ?? e.message; });
    sock.on('close', () => { this.closed = true; });
  }

  static open(port: number): Promise<Client> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => resolve(new Client(s)));
      s.once('error', reject);
    });
  }

  send(text: string): void { this.sock.write(text); }

  /** The next complete response (content-length framed), or null if none came within `ms`. */
  async response(ms = 5000): Promise<Response | null> {
    let r: Response | null = null;
    await until(() => (r = this.take()) !== null || this.closed, ms);
    return r ?? this.take();
  }

  private take(): Response | null {
    const end = this.buf.indexOf('\r\n\r\n', this.used);
    if (end < 0) return null;
    const head = this.buf.toString('latin1', this.used, end);
    const len = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
    if (this.buf.length < end + 4 + len) return null;
    this.used = end + 4 + len;
    return { status: Number(head.slice(9, 12)), head, at: Date.now() };
  }

  /** Bytes received after the last complete response. */
  rest(): string { return this.buf.toString('latin1', this.used); }
}

const GET = (p: string) => `GET ${p} HTTP/1.1\r\nHost: x\r\n\r\n`;

test.serial('limits.idle_timeout: an idle keep-alive connection stays open before the timeout, a request re-arms it, then it is closed cleanly (FIN, no bytes)', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b1.ready.port, undefined, 'limits: { idle_timeout: 1s }'));
  try {
    const c = await Client.open(px.port);
    c.send(GET('/first'));
    t.is((await c.response())?.status, 200);
    t.false(await until(() => c.closed, 600), 'still open 600 ms after the first response');
    c.send(GET('/second'));
    const r2 = await c.response();
    t.is(r2?.status, 200, 'the connection still serves after 600 ms idle');
    // 1.3 s after the first response: the second request re-armed the timer.
    t.false(await until(() => c.closed, 700), 'still open 700 ms after the second response');
    t.true(await until(() => c.closed, 2000), 'closed by idle_timeout + 1 s');
    const idle = c.endedAt - r2!.at;
    t.log(`closed ${idle} ms after the last response (idle_timeout 1s)`);
    t.true(idle >= 900 && idle <= 2000, `closed after ${idle} ms`);
    t.true(c.endedAt > 0, 'the proxy sent a FIN');
    t.is(c.error, undefined, 'no reset');
    t.is(c.rest(), '', 'no bytes after the last response');
  } finally { await px.stop(); }
});

const NO_CATCH_ALL = `  - name: only
    match: { path: /only/ }
    backend: app`;

/** A connection whose last response is a 404: by the acceptor (first request) or by the worker
 *  (a later request on a connection the worker owns). */
async function after404(port: number, where: 'acceptor' | 'worker'): Promise<{ c: Client; r404: Response }> {
  const c = await Client.open(port);
  if (where === 'worker') {
    c.send(GET('/only/a'));
    const ok = await c.response();
    if (ok?.status !== 200) throw new Error(`expected 200, got ${ok?.status}`);
  }
  c.send(GET('/nope'));
  const r = await c.response();
  if (r?.status !== 404 || !/x-fdproxy-error: FDP_ROUTE_NO_MATCH/.test(r.head)) throw new Error(`expected 404, got ${r?.head}`);
  return { c, r404: r };
}

const AFTER_404_LIMITS = 'limits: { head_timeout: 1s, idle_timeout: 1500ms }';

for (const where of ['acceptor', 'worker'] as const) {
  test.serial(`after a keep-alive 404 (${where}), the connection is idle: closed silently after idle_timeout, no 408 at head_timeout`, async t => {
    const px = await startProxy(twoBackendConfig(b1.ready.port, b1.ready.port, NO_CATCH_ALL, AFTER_404_LIMITS));
    try {
      const { c, r404 } = await after404(px.port, where);
      t.false(await until(() => c.closed || c.rest() !== '', 1200), `nothing 1.2 s after the 404 (head_timeout 1s): got ${JSON.stringify(c.rest())}`);
      t.true(await until(() => c.closed, 2000), 'closed by idle_timeout + 1 s');
      const idle = c.endedAt - r404.at;
      t.log(`${where}: closed ${idle} ms after the 404 (idle_timeout 1.5s, head_timeout 1s)`);
      t.true(idle >= 1400 && idle <= 2500, `closed after ${idle} ms`);
      t.is(c.rest(), '', 'no bytes after the 404 (no unsolicited 408)');
      t.is(c.error, undefined, 'no reset');
    } finally { await px.stop(); }
  });

  test.serial(`after a keep-alive 404 (${where}), head_timeout runs from the first byte of the next head, not from the 404`, async t => {
    const px = await startProxy(twoBackendConfig(b1.ready.port, b1.ready.port, NO_CATCH_ALL, AFTER_404_LIMITS));
    try {
      // A head started 700 ms after the 404 gets its whole head_timeout (and the idle timer, due
      // 800 ms later, does not close it silently meanwhile).
      const { c } = await after404(px.port, where);
      t.false(await until(() => c.closed || c.rest() !== '', 700));
      const first = Date.now();
      c.send('GET /only/x HTTP/1.1\r\n');
      const r408 = await c.response(3000);
      t.is(r408?.status, 408, `a 408 for the incomplete head: got ${JSON.stringify(c.rest())}`);
      t.regex(r408?.head ?? '', /x-fdproxy-error: FDP_PROXY_HEAD_TIMEOUT/);
      const waited = (r408?.at ?? Date.now()) - first;
      t.log(`${where}: 408 ${waited} ms after the first byte of the head (head_timeout 1s)`);
      t.true(waited >= 900 && waited <= 2000, `408 after ${waited} ms`);
      t.true(await until(() => c.closed, 3000));
    } finally { await px.stop(); }
  });
}

test.serial('connect_timeout: a backend that never accepts → 502 FDP_PROXY_BACKEND_UNREACHABLE after connect_timeout, HTTP and WebSocket (before any 101)', async t => {
  const na = await startReady<BackendReady>([path.join(ROOT, 'dist', 'tests', 'fixtures', 'noaccept.js')]);
  const port = na.ready.port;
  const fill: net.Socket[] = [];
  try {
    // Fill its accept queue with our own connections: connect until one does not complete.
    let stalled = false;
    while (!stalled && fill.length < 16) {
      const s = net.connect(port, '127.0.0.1');
      s.on('error', () => {});
      fill.push(s);
      let up = false;
      s.once('connect', () => { up = true; });
      stalled = !await until(() => up, 1000);
    }
    t.true(stalled, `the accept queue filled after ${fill.length - 1} connections`);
    t.log(`accept queue full after ${fill.length - 1} connections; the next connect stalls`);
    const cfg = twoBackendConfig(port, port).replace(`servers: ["127.0.0.1:${port}"]`, `servers: ["127.0.0.1:${port}"]\n    connect_timeout: 500ms`);
    const px = await startProxy(cfg);
    try {
      const t0 = Date.now();
      const h = await raw(px.port, GET('/x'), 5000);
      const ms = Date.now() - t0;
      t.log(`HTTP: ${h.status} after ${ms} ms (connect_timeout 500ms)`);
      t.is(h.status, 502);
      t.regex(h.data, /x-fdproxy-error: FDP_PROXY_BACKEND_UNREACHABLE\r\n/);
      t.true(h.closed);
      t.true(ms >= 500 && ms < 2500, `502 after ${ms} ms`);

      const t1 = Date.now();
      const w = await raw(px.port, 'GET /chat/r HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n', 5000);
      const wms = Date.now() - t1;
      t.log(`WebSocket upgrade: ${w.status} after ${wms} ms`);
      t.is(w.status, 502);
      t.regex(w.data, /x-fdproxy-error: FDP_PROXY_BACKEND_UNREACHABLE\r\n/);
      t.notRegex(w.data, /101 Switching/);
      t.true(w.closed);
      t.true(wms >= 500 && wms < 2500, `502 after ${wms} ms`);
    } finally { await px.stop(); }
  } finally {
    for (const s of fill) s.destroy();
    await na.stop('SIGKILL');
  }
});
