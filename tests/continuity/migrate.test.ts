import test from 'ava';
import * as net from 'node:net';
import WebSocket from 'ws';
import { startBackend, startProxy, twoBackendConfig, adminGet, adminPost, type ProxyHandle, type BackendReady } from '../helpers/proxy';
import { ownersOfConnections, ownerOfClientSocket, until, fdCount, type Started } from '../helpers/procs';
import { Traffic } from '../helpers/traffic';
import { localPort, openWs as open, echo } from '../helpers/ws';

let b1: Started<BackendReady>, b2: Started<BackendReady>;
test.before(async () => { [b1, b2] = await Promise.all([startBackend('b1'), startBackend('b2')]); });
test.after.always(async () => { await b1?.stop(); await b2?.stop(); });

async function counterNow(px: ProxyHandle, name: string): Promise<number> {
  const m: string = await adminGet(px, '/metrics');
  let sum = 0;
  for (const line of m.split('\n')) if (line.startsWith(`fdproxy_${name}_total{`)) sum += Number(line.split(' ').pop());
  return sum;
}
/** The counter across workers, once it reaches `min` (workers report every second, later on a
 *  loaded machine: poll, bounded) — or its last value after 10 s. */
async function counter(px: ProxyHandle, name: string, min = 1): Promise<number> {
  let v = 0;
  await until(async () => (v = await counterNow(px, name)) >= min, 10000);
  return v;
}

async function ownerOf(px: ProxyHandle, ws: WebSocket): Promise<{ slot: number; pid: number; other: { slot: number; pid: number } }> {
  const st = await adminGet(px, '/status');
  const ws_ = st.workers as { slot: number; pid: number }[];
  const pid = ownersOfConnections([localPort(ws)], px.port, ws_.map(w => w.pid)).get(localPort(ws));
  const mine = ws_.find(w => w.pid === pid)!;
  return { slot: mine.slot, pid: mine.pid, other: ws_.find(w => w.pid !== pid)! };
}

test.serial('moving a key under traffic: all its connections end on the target worker, nothing lost', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port));
  const traffic = new Traffic();
  try {
    await traffic.open(px.port, ['hot', 'cold'], 10);
    const hot = traffic.flows.filter(f => f.key === 'hot');
    const from = await ownerOf(px, hot[0].ws);
    const r = await adminPost(px, `/move?key=hot&slot=${from.other.slot}`);
    t.is(r.status, 202);
    const moved = await until(() => {
      const o = ownersOfConnections(hot.map(f => localPort(f.ws)), px.port, [from.pid, from.other.pid]);
      return hot.every(f => o.get(localPort(f.ws)) === from.other.pid);
    }, 10000);
    t.true(moved, 'every connection of the key moved');
    // A new connection of the key goes to the new worker too.
    const again = await open(px.port, '/chat/hot');
    t.is(ownersOfConnections([localPort(again)], px.port, [from.pid, from.other.pid]).get(localPort(again)), from.other.pid);
    again.close();
    await traffic.stop();
    const s = traffic.summary();
    t.is(s.closed, 0); t.is(s.errors, 0); t.is(s.lost, 0);
    t.true(await counter(px, 'migrations_done', 10) >= 10);
  } finally { traffic.closeAll(); await px.stop(); }
});

test.serial('a migration whose target dies mid-handoff rolls back: the connection keeps working in the old worker', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port));
  try {
    const ws = await open(px.port, '/chat/victim');
    const o = await ownerOf(px, ws);
    process.kill(o.other.pid, 'SIGSTOP');        // the target takes nothing
    await adminPost(px, `/move?key=victim&slot=${o.other.slot}`);
    await new Promise(r => setTimeout(r, 300));  // the handoff is in the target's queue
    process.kill(o.other.pid, 'SIGKILL');         // … and the target dies with it
    t.is(await echo(ws, 'after rollback'), 'after rollback');
    t.true(await counter(px, 'migrations_rolled_back') >= 1);
    t.is(await echo(ws, 'still here'), 'still here');
    ws.close();
  } finally { await px.stop(); }
});

test.serial('a migration whose target does not answer in time rolls back; the late target refuses the stale handoff; a retry completes the move', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port));
  try {
    const ws = await open(px.port, '/chat/slowtarget');
    const o = await ownerOf(px, ws);
    const targetFds = fdCount(o.other.pid);
    process.kill(o.other.pid, 'SIGSTOP');
    await adminPost(px, `/move?key=slowtarget&slot=${o.other.slot}`);
    // The old worker resumes the tunnel after the deadline.
    t.is(await echo(ws, 'rolled back'), 'rolled back');
    process.kill(o.other.pid, 'SIGCONT');
    t.is(await echo(ws, 'still mine'), 'still mine');
    t.true(await counter(px, 'migrations_refused_late') >= 1);
    t.true(await counter(px, 'migrations_rolled_back') >= 1);
    // The worker retries the move once the target is back: the connection ends there, exactly once.
    t.true(await until(() => ownersOfConnections([localPort(ws)], px.port, [o.pid, o.other.pid]).get(localPort(ws)) === o.other.pid, 10000));
    t.is(await echo(ws, 'moved at last'), 'moved at last');
    // Target holds the client + backend sockets of the one tunnel now, plus nothing stale.
    t.true(await until(() => fdCount(o.other.pid) <= targetFds + 2, 5000), 'the target kept no stale copies');
    ws.close();
  } finally { await px.stop(); }
});

test.serial('HTTP keep-alive connection alternating keys: each request served by the worker and backend of its key', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port));
  try {
    const pids = px.ready.workers.map(w => w.pid);
    const sock = net.connect(px.port, '127.0.0.1');
    await new Promise(r => sock.once('connect', r));
    let buf = '';
    sock.on('data', d => buf += d);
    const ask = async (path: string) => {
      buf = '';
      sock.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
      await until(() => { const i = buf.indexOf('\r\n\r\n'); const m = /content-length: (\d+)/i.exec(buf); return i > 0 && !!m && buf.length >= i + 4 + Number(m[1]); }, 5000);
      const body = JSON.parse(buf.slice(buf.indexOf('\r\n\r\n') + 4));
      const backendPort = body.backend === 'b1' ? b1.ready.port : b2.ready.port;
      return { backend: body.backend as string, worker: ownerOfClientSocket(body.peerPort, backendPort, pids) };
    };
    const seen = new Map<string, Set<string>>();
    const keys = ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta'];
    for (let round = 0; round < 3; round++) for (const k of keys) {
      const r = await ask(`/chat/${k}`);
      t.not(r.worker, null);
      (seen.get(k) ?? seen.set(k, new Set()).get(k)!).add(`${r.worker}/${r.backend}`);
    }
    t.true([...seen.values()].every(s => s.size === 1), 'one worker and one backend per key');
    t.is(new Set([...seen.values()].map(s => [...s][0].split('/')[0])).size, 2, 'both workers served the one connection');
    sock.destroy();
  } finally { await px.stop(); }
});

test.serial('HTTP pipelining: a request for another worker waits until the previous response is written out, then moves; nothing is cut', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port));
  try {
    const sock = net.connect(px.port, '127.0.0.1');
    await new Promise(r => sock.once('connect', r));
    const N = 4 * 1024 * 1024;
    // Two requests in one write: a 4 MiB response (content-length, sent in one write) on the
    // keyless route, then one for a key (handed back to the acceptor and placed). The client
    // reads slowly, so the worker's last read of the backend (the response's end) is still
    // partly queued for the client when the response is done and the next request comes up.
    sock.write(`GET /bigfixed?n=${N} HTTP/1.1\r\nHost: x\r\n\r\nGET /chat/pipelined HTTP/1.1\r\nHost: x\r\n\r\n`);
    const chunks: Buffer[] = [];
    let closed = false;
    sock.on('close', () => { closed = true; });
    sock.on('data', d => { chunks.push(d); sock.pause(); setTimeout(() => sock.resume(), 2); });
    const all = () => Buffer.concat(chunks);
    // Response 1: N bytes after its head; response 2: JSON with a content-length.
    const parse = (b: Buffer): { body1: Buffer; res2: string } | null => {
      let i = b.indexOf('\r\n\r\n');
      if (i < 0) return null;
      if (!/^HTTP\/1\.1 200/.test(b.subarray(0, i).toString('latin1'))) throw new Error(`first response: ${b.subarray(0, i)}`);
      i += 4;
      if (b.length < i + N) return null;
      const parts = [b.subarray(i, i + N)];
      i += N;
      const rest = b.subarray(i).toString('latin1');
      const h = rest.indexOf('\r\n\r\n'), m = /content-length: (\d+)/i.exec(rest);
      if (h < 0 || !m || rest.length < h + 4 + Number(m[1])) return null;
      return { body1: Buffer.concat(parts), res2: rest };
    };
    let got: ReturnType<typeof parse> = null;
    t.true(await until(() => (got = parse(all())) !== null || closed, 20000), 'both responses or a close');
    t.false(closed, 'the connection was not closed');
    t.truthy(got, 'both responses arrived whole');
    const { body1, res2 } = got!;
    t.is(body1.length, N);
    let bad = -1;
    for (let k = 0; k < N; k++) if (body1[k] !== (((k % 65536) * 7 + 3) & 255)) { bad = k; break; }
    t.is(bad, -1, 'the first response is byte-exact');
    t.regex(res2, /^HTTP\/1\.1 200/);
    t.is(JSON.parse(res2.slice(res2.indexOf('\r\n\r\n') + 4)).url, '/chat/pipelined');
    t.true(await counter(px, 'reroutes') >= 1, 'the second request was handed back for placement');
    sock.destroy();
  } finally { await px.stop(); }
});
