// Stopping: the listening sockets close in every process that holds them (supervisor, acceptors,
// spare acceptor) as soon as a stop begins, so a new connection is refused at once (clients and
// L4 load balancers fail over) while established connections are served and drained as before.
import test from 'ava';
import * as net from 'node:net';
import { startBackend, startProxy, twoBackendConfig, adminGet, type BackendReady } from '../helpers/proxy';
import { until, type Started } from '../helpers/procs';
import { openWs, echo } from '../helpers/ws';

let b1: Started<BackendReady>;
test.before(async () => { b1 = await startBackend('b1'); });
test.after.always(async () => { await b1?.stop(); });

/** One TCP connect: 'connected' (then closed at once) or the error code. */
function tryConnect(port: number): Promise<string> {
  return new Promise(resolve => {
    const s = net.connect(port, '127.0.0.1');
    const done = (r: string) => { clearTimeout(t); s.destroy(); resolve(r); };
    const t = setTimeout(() => done('timeout'), 1000);
    s.once('connect', () => done('connected'));
    s.once('error', e => done((e as NodeJS.ErrnoException).code ?? e.message));
  });
}

/** Poll (bounded) until a new connection to `port` is refused; the last outcome otherwise. */
async function refusedWithin(port: number, ms: number): Promise<{ refused: boolean; last: string }> {
  let last = '';
  const refused = await until(async () => (last = await tryConnect(port)) === 'ECONNREFUSED', ms);
  return { refused, last };
}

test('SIGTERM: a new connection is refused at once; a live WebSocket keeps echoing, gets 1001 at drain_timeout; exit 0', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b1.ready.port, undefined, 'limits: { drain_timeout: 5s }').replace('log_level: warn', 'log_level: info'));
  t.is(await tryConnect(px.port), 'connected');
  const ws = await openWs(px.port, '/chat/stop');
  t.is(await echo(ws, 'before'), 'before');
  const closed = new Promise<{ code: number; at: number }>(r => ws.once('close', code => r({ code, at: Date.now() })));
  const exited = new Promise<{ code: number | null; at: number }>(r => px.proc.once('exit', code => r({ code, at: Date.now() })));
  const t0 = Date.now();
  px.proc.kill('SIGTERM');
  // (a) refused within 2 s (not after drain_timeout + the supervisor's wait for its children).
  const r = await refusedWithin(px.port, 2000);
  t.true(r.refused, `${Date.now() - t0} ms after SIGTERM a new connection still ends in "${r.last}", not ECONNREFUSED`);
  // (b) the established WebSocket is still served after the stop began.
  t.is(await echo(ws, 'after stop'), 'after stop');
  t.true(Date.now() - t0 < 4000, 'checked well before the drain deadline');
  // (c) closed with 1001 at the drain deadline, then the proxy exits 0.
  const c = await closed;
  t.is(c.code, 1001);
  t.true(c.at - t0 >= 4500, `closed ${c.at - t0} ms after SIGTERM (drain_timeout 5 s)`);
  const e = await exited;
  t.is(e.code, 0);
  t.true(e.at - t0 < 12000, `exited ${e.at - t0} ms after SIGTERM`);
  // The supervisor says when the stop began and when it ended (after the children's last lines).
  const events = px.lines.map(l => { try { return JSON.parse(l) as { event?: string; proc?: string; mode?: string; killed?: number; drain_timeout_ms?: number }; } catch { return {}; } });
  const stopping = events.find(o => o.event === 'stopping' && o.proc === 'supervisor');
  const stopped = events.find(o => o.event === 'stopped' && o.proc === 'supervisor');
  t.like(stopping, { mode: 'graceful', drain_timeout_ms: 5000 });
  t.like(stopped, { mode: 'graceful', killed: 0 });
  t.true(events.indexOf(stopping!) < events.indexOf(stopped!));
});

// The acceptor is frozen (SIGSTOP) so that a connection waits, accepted by the kernel and by
// nobody else, in the listening socket's queue when the stop begins. Connected before the
// SIGTERM, the acceptor sees it ready before its stop message (a last accept); connected after,
// the stop message comes first and the acceptor takes it from the queue as it stops listening.
for (const when of ['before', 'after'] as const) {
  test(`SIGTERM: a connection queued ${when} the stop began gets a whole 503, not a reset`, async t => {
    // drain_timeout only bounds how long the supervisor waits for its (idle, so at once exiting)
    // children before it kills them, the frozen acceptor among them: ample, for a loaded machine.
    const px = await startProxy(twoBackendConfig(b1.ready.port, b1.ready.port, undefined, 'limits: { drain_timeout: 10s }'));
    const acceptor = px.ready.acceptor;
    const exited = new Promise<number | null>(r => px.proc.once('exit', code => r(code)));
    type Answer = Promise<{ data: string; err: string | null }>;
    /** Connect and send a request; resolves once the kernel has completed the handshake. */
    const queue = (): Promise<{ answer: Answer }> => new Promise(queued => {
      const answer = new Promise<{ data: string; err: string | null }>(resolve => {
        const s = net.connect(px.port, '127.0.0.1');
        let data = '';
        const t = setTimeout(() => { s.destroy(); resolve({ data, err: 'timeout' }); }, 10000);
        s.on('data', d => data += d.toString('latin1'));
        s.once('error', e => { clearTimeout(t); resolve({ data, err: (e as NodeJS.ErrnoException).code ?? e.message }); });
        s.once('close', () => { clearTimeout(t); resolve({ data, err: null }); });
        s.once('connect', () => { s.write('GET /queued HTTP/1.1\r\nHost: x\r\n\r\n'); queued({ answer }); });
      });
      void answer.then(() => queued({ answer }));   // failed to connect: the answer says how
    });
    const gone = (pid: number) => { try { process.kill(pid, 0); return false; } catch { return true; } };
    process.kill(acceptor, 'SIGSTOP');
    const t0 = Date.now();
    let answer: Answer | undefined;
    try {
      if (when === 'before') ({ answer } = await queue());
      px.proc.kill('SIGTERM');
      // The stop has begun (the supervisor's /healthz says so; its stop message waits for the
      // acceptor) and the workers, with nothing to drain, are gone, before the acceptor runs again.
      t.true(await until(async () => { try { return (await adminGet(px, '/healthz')).startsWith('stopping'); } catch { return false; } }, 2000));
      if (when === 'after') ({ answer } = await queue());
      t.true(await until(() => px.ready.workers.every(w => gone(w.pid)), 5000), 'workers exited');
    } finally { t.log(`acceptor frozen for ${Date.now() - t0} ms`); process.kill(acceptor, 'SIGCONT'); }
    const a = await answer!;
    t.is(a.err, null, `the queued connection ended in ${a.err} after ${JSON.stringify(a.data.slice(0, 40))}`);
    t.regex(a.data, /^HTTP\/1\.1 503 /);
    t.regex(a.data, /\r\nretry-after: 1\r\n/i);
    const r = await refusedWithin(px.port, 2000);
    t.true(r.refused, `a new connection ends in "${r.last}"`);
    t.is(await exited, 0);
  });
}

test('SIGINT: a new connection is refused at once and the proxy exits 0', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b1.ready.port, undefined, 'limits: { drain_timeout: 30s }'));
  const ws = await openWs(px.port, '/chat/int');
  const closed = new Promise<number>(r => ws.once('close', code => r(code)));
  const exited = new Promise<number | null>(r => px.proc.once('exit', code => r(code)));
  px.proc.kill('SIGINT');
  const r = await refusedWithin(px.port, 2000);
  t.true(r.refused, `a new connection ends in "${r.last}"`);
  t.is(await closed, 1001);
  t.is(await exited, 0);
});

test('SIGTERM while a client is still sending its head: it is read to the end and answered 503 (not reset); an idle keep-alive connection the acceptor answered 404 is closed at once', async t => {
  const chatOnly = '  - name: chat\n    match: { path: "/chat/{room}" }\n    key: "{room}"\n    backend: app';
  const px = await startProxy(twoBackendConfig(b1.ready.port, b1.ready.port, chatOnly, 'limits: { drain_timeout: 5s, head_timeout: 5s }'));
  const exited = new Promise<number | null>(r => px.proc.once('exit', code => r(code)));
  try {
  const open = (first: string) => new Promise<{ s: net.Socket; data: () => string; ended: Promise<string> }>((resolve, reject) => {
    const s = net.connect(px.port, '127.0.0.1');
    let acc = '';
    s.on('data', d => { acc += d.toString('latin1'); });
    const ended = new Promise<string>(r => { s.on('end', () => r('end')); s.on('error', e => r((e as NodeJS.ErrnoException).code ?? e.message)); });
    s.once('connect', () => { s.write(first); resolve({ s, data: () => acc, ended }); });
    s.once('error', reject);
  });
  // A keep-alive request no route matches: the acceptor answers 404 and keeps the connection.
  const idle = await open('GET /nowhere-at-all HTTP/1.1\r\nHost: other.example\r\n\r\n');
  const slow = await open('GET /chat/late HTTP/1.1\r\nHost: x\r\n');   // a head not finished yet
  t.true(await until(() => idle.data().startsWith('HTTP/1.1 404'), 5000), 'the 404 came');
  t.true(await until(async () => (await adminGet(px, '/status')).acceptor?.inflight === 2, 5000), 'the acceptor holds both');
  const t0 = Date.now();
  px.proc.kill('SIGTERM');
  t.is(await idle.ended, 'end', 'the idle connection is closed cleanly');
  t.true(Date.now() - t0 < 2000, `closed ${Date.now() - t0} ms after SIGTERM`);
  // The rest of the head, well after the acceptor's minimum 500 ms.
  await new Promise(r => setTimeout(r, 900));
  slow.s.write('X-Late: 1\r\n\r\n');
  t.is(await slow.ended, 'end', 'answered and closed, not reset');
  t.regex(slow.data(), /^HTTP\/1\.1 503 /);
  t.is(await exited, 0);
  } finally { if (px.proc.exitCode === null) await px.stop('SIGKILL'); }
});
