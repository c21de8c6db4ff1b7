// fd exhaustion: the acceptor's and the workers' open-files limit is lowered (prlimit on the live
// processes) just above what they hold. New connections must get 503 or be refused cleanly (never
// hang), established ones keep working, nothing crashes, and once fds are free again new
// connections are served.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import WebSocket from 'ws';
import { startBackend, startProxy, twoBackendConfig, adminGet, type BackendReady } from '../helpers/proxy';
import { fdCount, until, type Started } from '../helpers/procs';
import { alive, sleep } from '../fixtures/rawclient';

let b: Started<BackendReady>;
test.before(async () => { b = await startBackend('x1'); });
test.after.always(async () => { await b?.stop(); });

type Outcome = { kind: 'open'; ws: WebSocket } | { kind: 'status'; status: number } | { kind: 'closed'; why: string } | { kind: 'hang' };

function attempt(port: number, p: string, ms = 10000): Promise<Outcome> {
  return new Promise(resolve => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${p}`);
    const t = setTimeout(() => { ws.terminate(); resolve({ kind: 'hang' }); }, ms);
    ws.once('open', () => { clearTimeout(t); resolve({ kind: 'open', ws }); });
    ws.once('unexpected-response', (_q, res) => { clearTimeout(t); resolve({ kind: 'status', status: res.statusCode ?? 0 }); res.resume(); ws.terminate(); });
    ws.once('error', e => { clearTimeout(t); resolve({ kind: 'closed', why: (e as NodeJS.ErrnoException).code ?? e.message }); });
  });
}

async function echo(ws: WebSocket, msg: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no echo')), 5000);
    ws.once('message', d => { clearTimeout(t); resolve(d.toString()); });
    ws.send(msg);
  });
}

// Soft limit only: lowering the hard limit could not be undone without CAP_SYS_RESOURCE.
const setNofile = (pid: number, n: number) => execFileSync('prlimit', ['--pid', String(pid), `--nofile=${n}:`]);
const softNofile = (pid: number) => Number(/Max open files\s+(\d+)/.exec(require('node:fs').readFileSync(`/proc/${pid}/limits`, 'utf8'))![1]);

test('fd exhaustion (prlimit just above current use): new connections get 503 or a clean refusal, existing ones work, nothing crashes, recovery', async t => {
  const px = await startProxy(twoBackendConfig(b.ready.port, b.ready.port));
  const procs = [px.ready.acceptor, ...px.ready.workers.map(w => w.pid)];
  const before = procs.map(softNofile);
  try {
    const existing = await Promise.all(Array.from({ length: 20 }, (_, i) => attempt(px.port, `/chat/e${i}`)));
    t.true(existing.every(o => o.kind === 'open'));
    const wss = existing.map(o => (o as { ws: WebSocket }).ws);
    await sleep(300);
    const room = 40;
    for (const p of procs) setNofile(p, fdCount(p) + room);
    // Far more new connections than the fds left: each needs one fd in the acceptor (briefly)
    // and two in a worker (client + backend).
    const outcomes = await Promise.all(Array.from({ length: 150 }, (_, i) => attempt(px.port, `/chat/n${i}`)));
    const count = (k: string) => outcomes.filter(o => o.kind === k).length;
    const statuses = outcomes.filter(o => o.kind === 'status').map(o => (o as { status: number }).status);
    const why = [...new Set(outcomes.filter(o => o.kind === 'closed').map(o => (o as { why: string }).why))];
    t.log(`150 new WebSockets at the limit: ${count('open')} opened, ${count('status')} refused with ${JSON.stringify([...new Set(statuses)])}, ${count('closed')} closed (${why}), ${count('hang')} hung`);
    t.is(count('hang'), 0, 'no connection hangs');
    t.true(count('open') < 150, 'the limit was reached');
    t.true(statuses.every(s => s === 503), `refusals are 503: ${statuses}`);
    // Established connections keep working; nothing crashed or restarted.
    for (const ws of wss) t.is(await echo(ws, 'still'), 'still');
    t.true(procs.every(alive), 'acceptor and workers alive');
    const st = await adminGet(px, '/status');
    t.deepEqual(st.workers.map((w: { pid: number }) => w.pid), px.ready.workers.map(w => w.pid));
    t.is(st.acceptor.pid, px.ready.acceptor);
    // Free the fds: close what was opened; new connections are served again under the same limit.
    for (const o of outcomes) if (o.kind === 'open') o.ws.close();
    await until(() => procs.every(p => fdCount(p) < 1000), 3000);
    await sleep(500);
    const again = await Promise.all(Array.from({ length: 10 }, (_, i) => attempt(px.port, `/chat/r${i}`)));
    t.is(again.filter(o => o.kind === 'open').length, 10, 'recovered: new connections served once fds are free');
    for (const o of again) if (o.kind === 'open') { t.is(await echo(o.ws, 'ok'), 'ok'); o.ws.close(); }
    for (const ws of wss) ws.close();
  } finally {
    procs.forEach((p, i) => { try { setNofile(p, before[i]); } catch { /* gone */ } });
    await px.stop();
  }
});
