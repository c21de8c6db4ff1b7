// Active health checks and new processes: a server the check has marked down stays out of the
// hash in every worker that serves traffic — a new generation after a reload, a warm spare that
// takes a dead worker's slot, a worker restarted in its slot — not only in the workers that were
// running when the server went down. Real processes: two backends, one stopped.
import test, { type ExecutionContext } from 'ava';
import * as http from 'node:http';
import { startBackend, startProxy, twoBackendConfig, adminGet, adminPost, type ProxyHandle, type BackendReady } from '../helpers/proxy';
import { until, type Started } from '../helpers/procs';
import { openWs, echo } from '../helpers/ws';

const KEYS = Array.from({ length: 40 }, (_, i) => `room${i}`);

interface Answer { status: number; backend: string | null }

/** One GET on a new connection: its status and the backend that answered. */
function get(port: number, path: string): Promise<Answer> {
  return new Promise(resolve => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false }, res => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', d => { body += d; });
      res.on('end', () => {
        let backend: string | null = null;
        try { backend = (JSON.parse(body) as { backend?: string }).backend ?? null; } catch { /* an error page */ }
        resolve({ status: res.statusCode ?? 0, backend });
      });
    });
    req.on('error', () => resolve({ status: 0, backend: null }));
    req.setTimeout(5000, () => req.destroy());
  });
}

const answers = (px: ProxyHandle, keys: string[]) => Promise.all(keys.map(k => get(px.port, `/chat/${k}`)));
const serverOf = (st: any, port: number) => st.backends[0].servers.find((s: any) => s.id.endsWith(`:${port}`));

interface Setup { px: ProxyHandle; b1: Started<BackendReady>; b2: Started<BackendReady>; onB2: string[]; probe: string }

/** Two backends with a 200 ms health check; learn which keys hash to b2, stop b2, wait until
 *  the check has marked it down and every key is answered by b1. */
async function setup(t: ExecutionContext, opts: { workers: number; standby: boolean }): Promise<Setup> {
  const [b1, b2] = await Promise.all([startBackend('b1'), startBackend('b2')]);
  const yaml = twoBackendConfig(b1.ready.port, b2.ready.port, undefined, `standby: ${opts.standby}`)
    .replace('workers: 2', `workers: ${opts.workers}`).replace('log_level: warn', 'log_level: info')
    .replace(/(servers: \[.*\])/, '$1\n    health: { path: /healthz, interval: 200ms, timeout: 150ms }');
  const px = await startProxy(yaml);
  t.teardown(async () => { await px.stop(); await b1.stop(); await b2.stop(); });
  t.true(await until(async () => (await adminGet(px, '/status')).backends[0].servers.every((s: any) => s.healthy === true), 10000), 'both servers checked up');
  const before = await answers(px, KEYS);
  t.true(before.every(a => a.status === 200), `all 200 with both up: ${JSON.stringify(before)}`);
  const onB2 = KEYS.filter((_, i) => before[i].backend === 'b2');
  const probe = KEYS.find((_, i) => before[i].backend === 'b1')!;
  t.true(onB2.length > 0 && probe !== undefined, `keys on both servers: ${JSON.stringify(before.map(a => a.backend))}`);

  await b2.stop();
  t.true(await until(async () => serverOf(await adminGet(px, '/status'), b2.ready.port).healthy === false, 10000), 'b2 marked down');
  // Poll on responses (the change reaches the workers over IPC just after /status shows it).
  t.true(await until(async () => (await answers(px, onB2)).every(a => a.status === 200 && a.backend === 'b1'), 10000), 'keys of the down server go to b1');
  return { px, b1, b2, onB2, probe };
}

/** Every key of the down server answers at once 200 from b1 (HTTP and a WebSocket). */
async function expectOnB1(t: ExecutionContext, s: Setup, when: string): Promise<void> {
  const got = await answers(s.px, s.onB2);
  const bad = got.map((a, i) => ({ key: s.onB2[i], ...a })).filter(a => a.status !== 200 || a.backend !== 'b1');
  t.deepEqual(bad, [], `${when}: keys of the down server must go to b1, no 502`);
  const ws = await openWs(s.px.port, `/chat/${s.onB2[0]}`).catch((e: Error) => e);
  if (ws instanceof Error) { t.fail(`${when}: WebSocket for ${s.onB2[0]}: ${ws.message}`); return; }
  t.is(JSON.parse(await echo(ws, 'whoami')).backend, 'b1', `${when}: WebSocket goes to b1`);
  ws.close();
}

/** SIGKILL every current worker, then wait until each slot has a new, ready process that answers. */
async function killWorkers(t: ExecutionContext, s: Setup): Promise<void> {
  const old = (await adminGet(s.px, '/status')).workers as { slot: number; pid: number }[];
  for (const w of old) process.kill(w.pid, 'SIGKILL');
  const replaced = async () => {
    const now = (await adminGet(s.px, '/status')).workers as { slot: number; pid: number; ready: boolean }[];
    return now.length === old.length && now.every(w => w.ready && !old.some(o => o.pid === w.pid));
  };
  t.true(await until(replaced, 10000), 'every slot has a new worker');
  // A key on the healthy server answers once the new worker is wired (a probe the bug cannot fail).
  t.true(await until(async () => (await get(s.px.port, `/chat/${s.probe}`)).status === 200, 10000), 'new worker serves');
}

const restartLines = (px: ProxyHandle) => px.lines.filter(l => l.includes('"event":"process_restarted"') && l.includes('"role":"worker"')).map(l => JSON.parse(l));

test.serial('after POST /reload the new generation keeps a down server out of the hash', async t => {
  const s = await setup(t, { workers: 2, standby: true });
  const r = await adminPost(s.px, '/reload');
  t.is(r.status, 200, JSON.stringify(r.body));
  await expectOnB1(t, s, 'after reload');
  t.true(await until(async () => (await adminGet(s.px, '/status')).retiring.length === 0, 20000), 'old generation retired');
  await expectOnB1(t, s, 'after the old generation retired');
});

test.serial('a warm spare that takes a killed worker\'s slot keeps a down server out of the hash', async t => {
  const s = await setup(t, { workers: 1, standby: true });
  await killWorkers(t, s);
  t.true(await until(() => restartLines(s.px).length === 1, 10000));
  t.is(restartLines(s.px)[0].standby, true, 'the spare took the slot');
  await expectOnB1(t, s, 'after the spare took over');
});

test.serial('a worker restarted in its slot (no spare) keeps a down server out of the hash', async t => {
  const s = await setup(t, { workers: 1, standby: false });
  await killWorkers(t, s);
  t.true(await until(() => restartLines(s.px).length === 1, 10000));
  t.is(restartLines(s.px)[0].standby, undefined, 'restarted, not a spare');
  await expectOnB1(t, s, 'after the restart');
});

test.serial('after a reload, the spare that takes a killed worker\'s slot keeps a down server out of the hash', async t => {
  const s = await setup(t, { workers: 2, standby: true });
  const r = await adminPost(s.px, '/reload');
  t.is(r.status, 200, JSON.stringify(r.body));
  t.true(await until(async () => (await adminGet(s.px, '/status')).retiring.length === 0, 20000), 'old generation retired');
  await killWorkers(t, s);
  await expectOnB1(t, s, 'after reload + kill -9 of both workers');
});

// Passive health: without any active check, the first request after a server dies is served by
// the key's next server (the connect failed, nothing was sent), not answered 502 until someone
// notices; the keys of the servers still up stay where they are.
test.serial('no health check: a server that refuses connections is skipped at once, its keys served by their next server (HTTP and WebSocket)', async t => {
  const b1 = await startBackend('pa'), b2 = await startBackend('pb');
  const px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port));
  try {
    const before = await answers(px, KEYS);
    t.true(before.every(a => a.status === 200));
    const onB2 = KEYS.filter((_, i) => before[i].backend === 'pb');
    const onB1 = KEYS.filter((_, i) => before[i].backend === 'pa');
    t.true(onB2.length > 0 && onB1.length > 0, 'the keys spread over both servers');
    await b2.stop();
    // At once: every key answered 200, b2's by b1 (each worker learns on its first failed connect).
    const after = await answers(px, KEYS);
    t.deepEqual(after.map(a => a.status), KEYS.map(() => 200), 'no 502 after the server died');
    t.true(after.every(a => a.backend === 'pa'));
    const ws = await openWs(px.port, `/chat/${onB2[0]}`);
    t.is(JSON.parse(await echo(ws, 'whoami')).backend, 'pa', 'a WebSocket upgrade goes to the next server too');
    ws.close();
    // The surviving server's keys never moved; b2's keys moved as a whole.
    t.deepEqual(onB1.map((_, i) => after[KEYS.indexOf(onB1[i])].backend), onB1.map(() => 'pa'));
  } finally { await px.stop(); await b1.stop(); await b2.stop(); }
});

/** twoBackendConfig with `passive:` set on its backend. */
const withPassive = (yaml: string, passive: string) => yaml.replace(/(servers: \[.*\])/, `$1\n    passive: ${passive}`);

// A configured window: a server that died and came back at the same address is used again for its
// keys once its fail_timeout has passed, with no active check to say it is up. The poll is bounded
// well under 10 s (the fixed window before the setting), so on that code it fails.
/** Two servers (pa, pb) behind a proxy with `passive:` set; which keys each serves. */
async function passiveSetup(t: ExecutionContext, passive: string) {
  const b1 = await startBackend('pa');
  const b2 = await startBackend('pb');
  const px = await startProxy(withPassive(twoBackendConfig(b1.ready.port, b2.ready.port), passive));
  const before = await answers(px, KEYS);
  t.true(before.every(a => a.status === 200));
  const onB2 = KEYS.filter((_, i) => before[i].backend === 'pb');
  const onB1 = KEYS.filter((_, i) => before[i].backend === 'pa');
  t.true(onB2.length > 0 && onB1.length > 0, 'the keys spread over both servers');
  return { b1, b2, port2: b2.ready.port, px, onB1, onB2 };
}

test.serial('passive fail_timeout 300ms, no health check: a dead server\'s keys go to their next server, and back to it once it is up again and the window has passed', async t => {
  const s = await passiveSetup(t, '{ fail_timeout: 300ms }');
  const { b1, port2, px, onB1, onB2 } = s;
  let b2 = s.b2;
  try {
    await b2.stop();
    const down = await answers(px, onB2);
    t.deepEqual(down.map(a => [a.status, a.backend]), onB2.map(() => [200, 'pa']), 'while down: served by the next server, no 502');
    b2 = await startBackend('pb', { PORT: String(port2) });
    t.true(await until(async () => (await answers(px, onB2)).every(a => a.status === 200 && a.backend === 'pb'), 5000),
      'every key of the revived server is served by it again (no active check; the window passed)');
    const ws = await openWs(px.port, `/chat/${onB2[0]}`);
    t.is(JSON.parse(await echo(ws, 'whoami')).backend, 'pb', 'a WebSocket upgrade goes back to it too');
    ws.close();
    const after = await answers(px, onB1);
    t.deepEqual(after.map(a => a.backend), onB1.map(() => 'pa'), 'the other server\'s keys never moved');
  } finally { await px.stop(); await b1.stop(); await b2.stop(); }
});

// Passive health off: nothing is recorded on a failed connect. Each request for the dead server's
// keys still tries it first and fails over (not a 502), and the first request after it is back
// goes to it — with the 10 s default it would still be skipped.
test.serial('passive fail_timeout 0: a dead server is never skipped: each request for its keys fails over to the next server, the first one after it is back goes to it (HTTP and WebSocket)', async t => {
  const s = await passiveSetup(t, '{ fail_timeout: 0 }');
  const { b1, port2, px, onB2 } = s;
  let b2 = s.b2;
  try {
    await b2.stop();
    for (let round = 1; round <= 3; round++) {
      const down = await answers(px, onB2);
      t.deepEqual(down.map(a => [a.status, a.backend]), onB2.map(() => [200, 'pa']), `round ${round} while down: every request fails over, no 502`);
    }
    const wsDown = await openWs(px.port, `/chat/${onB2[0]}`);
    t.is(JSON.parse(await echo(wsDown, 'whoami')).backend, 'pa', 'a WebSocket upgrade while down fails over too');
    wsDown.close();
    b2 = await startBackend('pb', { PORT: String(port2) });
    // No poll: nothing marks the server failed, so the very next request for each key goes to it.
    const back = await answers(px, onB2);
    t.deepEqual(back.map(a => [a.status, a.backend]), onB2.map(() => [200, 'pb']), 'back at once on its own server');
    const ws = await openWs(px.port, `/chat/${onB2[0]}`);
    t.is(JSON.parse(await echo(ws, 'whoami')).backend, 'pb', 'a WebSocket upgrade goes to it at once too');
    ws.close();
  } finally { await px.stop(); await b1.stop(); await b2.stop(); }
});
