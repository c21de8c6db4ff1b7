// Deploying a new fdproxy version without dropping connections: a reload starts new worker
// processes from the code on disk, and live WebSockets migrate to them; then the acceptor and the
// spares are replaced by fresh processes too (every process but the supervisor runs the new code),
// the acceptor handing over without refusing or losing a connection.
import test from 'ava';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { startBackend, startProxy, twoBackendConfig, adminGet, adminPost, type BackendReady, type ProxyHandle, type ProxyReady } from '../helpers/proxy';
import { ROOT, childrenRunning, ownerOfConnection, ownersOfConnections, startReady, until, type Started } from '../helpers/procs';
import { openWs, localPort } from '../helpers/ws';
import { Traffic } from '../helpers/traffic';

let b1: Started<BackendReady>;
test.before(async () => { b1 = await startBackend('b1'); });
test.after.always(async () => { await b1?.stop(); });

/** An installed copy of fdproxy (bin/, dist/, package.json; node_modules shared), running. */
async function installed(): Promise<{ dir: string; px: ProxyHandle }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fdproxy-upgrade-'));
  fs.cpSync(path.join(ROOT, 'bin'), path.join(dir, 'bin'), { recursive: true });
  fs.cpSync(path.join(ROOT, 'dist'), path.join(dir, 'dist'), { recursive: true });
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(dir, 'package.json'));
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  const file = path.join(dir, 'proxy.yaml');
  fs.writeFileSync(file, twoBackendConfig(b1.ready.port, b1.ready.port).replace('log_level: warn', 'log_level: info'));
  const s = await startReady<ProxyReady>([path.join(dir, 'bin', 'fdproxy.js'), '-c', file], { cwd: dir });
  return { dir, px: Object.assign(s, { port: Number(s.ready.listen[0].split(':').pop()), file, adminPort: Number(s.ready.admin!.split(':').pop()) }) };
}

test.serial('a reload runs the new worker code from disk; live WebSockets move to it without a drop', async t => {
  const { dir, px } = await installed();
  const traffic = new Traffic();
  try {
    await traffic.open(px.port, Array.from({ length: 20 }, (_, i) => `u${i}`), 3);
    // "Deploy" version 2 of the worker and the acceptor: same code plus a line each logs when it starts.
    for (const role of ['worker', 'acceptor']) {
      const file = path.join(dir, 'dist', 'proxy', `${role}.js`);
      fs.writeFileSync(file, fs.readFileSync(file, 'utf8') + `\nprocess.stdout.write(JSON.stringify({ event: "${role}_code", version: 2, pid: process.pid }) + "\\n");\n`);
    }
    const v2 = (role: string) => new Set(px.lines.filter(l => l.includes(`"event":"${role}_code"`)).map(l => JSON.parse(l).pid as number));
    const accepted = async () => Number(/^fdproxy_accepted_total\S* (\d+)/m.exec(await metrics(px))?.[1] ?? NaN);
    t.true(await until(async () => await accepted() >= 60, 5000), 'the 60 WebSockets counted as accepted');
    const acceptedBefore = await accepted();
    const acceptor0 = (await adminGet(px, '/status')).acceptor.pid;
    // New connections all along the reload and the acceptor's handover: every one answered 200.
    let requests = 0, failed = 0, stopLoad = false;
    const load = (async () => {
      while (!stopLoad && requests < 3000) {
        requests++;
        const status = await get(px.port, `/chat/r${requests % 7}`).catch(() => 0);
        if (status !== 200) failed++;
      }
    })();
    const r = await adminPost(px, '/reload');
    t.is(r.status, 200);
    t.true(await until(async () => (await adminGet(px, '/status')).retiring.length === 0, 20000));
    t.true(await until(() => px.lines.some(l => l.includes('"event":"renewed"')), 20000), 'acceptor and spares renewed');
    stopLoad = true;
    await load;
    t.is(failed, 0, `${failed} of ${requests} requests during the reload failed`);
    t.true(requests > 0);
    const st = await adminGet(px, '/status');
    t.deepEqual([...v2('worker')].filter(p => st.workers.some((w: { pid: number }) => w.pid === p)).sort(),
      st.workers.map((w: { pid: number }) => w.pid).sort(), 'every current worker runs the new code');
    t.not(st.acceptor.pid, acceptor0, 'a fresh acceptor');
    t.true(v2('acceptor').has(st.acceptor.pid), 'the acceptor runs the new code');
    t.true(await until(() => { try { process.kill(acceptor0, 0); return false; } catch { return true; } }, 10000), 'the old acceptor has exited');
    // (stats reach the supervisor once a second)
    t.true(await until(async () => await accepted() >= acceptedBefore + requests, 5000), `the acceptor counters carry on across the handover: ${acceptedBefore} + ${requests} > ${await accepted()}`);
    // The fresh acceptor knows where every live key is: a new connection of a key joins its others.
    const pids = st.workers.map((w: { pid: number }) => w.pid as number);
    for (const key of ['u0', 'u7', 'u13', 'u19']) {
      const flow = traffic.flows.find(f => f.key === key)!;
      const w = await openWs(px.port, `/chat/${key}`);
      t.is(ownerOfConnection(localPort(w), px.port, pids), ownerOfConnection(localPort(flow.ws), px.port, pids), `${key}: the new connection joins the key's worker`);
      w.close();
    }
    await traffic.stop();
    const sum = traffic.summary();
    t.is(sum.closed, 0); t.is(sum.errors, 0); t.is(sum.lost, 0);
    traffic.closeAll();
    // A spare started before the deploy would bring the old code back: the one that takes a
    // killed worker's slot now is a fresh one.
    t.true(await until(() => v2('worker').size >= st.workers.length + 1, 15000), 'a fresh spare worker started');
    const victim = st.workers[0].pid as number;
    process.kill(victim, 'SIGKILL');
    t.true(await until(() => px.lines.some(l => l.includes('"event":"process_restarted"')), 15000));
    const restarted = JSON.parse(px.lines.find(l => l.includes('"event":"process_restarted"'))!);
    t.is(restarted.standby, true, 'the spare took the slot');
    t.true(v2('worker').has(restarted.pid), 'the spare that took the slot runs the new code');
  } finally {
    traffic.closeAll();
    await px.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.serial('a deploy whose acceptor cannot start: the reload keeps the running acceptor and the spares, nothing is refused', async t => {
  const { dir, px } = await installed();
  try {
    const acceptor0 = (await adminGet(px, '/status')).acceptor.pid;
    const file = path.join(dir, 'dist', 'proxy', 'acceptor.js');
    fs.writeFileSync(file, 'process.exit(3);\n' + fs.readFileSync(file, 'utf8'));
    t.is((await adminPost(px, '/reload')).status, 200, 'the workers start: the reload itself succeeds');
    t.true(await until(() => px.lines.some(l => l.includes('"event":"acceptor_renew_failed"')), 20000), 'the failed renewal is logged');
    t.is((await adminGet(px, '/status')).acceptor.pid, acceptor0, 'the running acceptor stays');
    for (let i = 0; i < 20; i++) t.is(await get(px.port, `/chat/k${i}`), 200);
    t.false(px.lines.some(l => l.includes('"event":"renewed"')));
  } finally {
    await px.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.serial('moves the replaced acceptor still orders after a renewal reach the fresh one: no key splits', async t => {
  // The old acceptor finishes the commands it was sent before its handover. Held here (SIGSTOP)
  // from the moment the fresh acceptor starts, it is sent /move commands, the fresh one takes
  // over meanwhile (its table from the workers' reports), and then the old one orders the moves.
  const px = await startProxy(twoBackendConfig(b1.ready.port, b1.ready.port).replace('log_level: warn', 'log_level: info'));
  const traffic = new Traffic();
  let old = 0;
  try {
    const keys = Array.from({ length: 8 }, (_, i) => `m${i}`);
    await traffic.open(px.port, keys, 2);
    old = (await adminGet(px, '/status')).acceptor.pid;
    const before = new Set(childrenRunning(px.proc.pid!, 'acceptor.js'));
    t.is((await adminPost(px, '/reload')).status, 200);
    let fresh: number | undefined;
    t.true(await until(() => (fresh = childrenRunning(px.proc.pid!, 'acceptor.js').find(p => !before.has(p))) !== undefined, 20000), 'a fresh acceptor starts');
    process.kill(old, 'SIGSTOP');
    const st = await adminGet(px, '/status');
    const pids = st.workers.map((w: { pid: number }) => w.pid as number);
    const slotOf = new Map<number, number>(st.workers.map((w: { pid: number; slot: number }) => [w.pid, w.slot]));
    // Every key to the worker that does not hold it.
    const owners = ownersOfConnections(traffic.flows.map(f => localPort(f.ws)), px.port, pids);
    const target = new Map<string, number>();
    for (const key of keys) {
      const holder = owners.get(localPort(traffic.flows.find(f => f.key === key)!.ws))!;
      target.set(key, pids.find((p: number) => p !== holder)!);
      t.is((await adminPost(px, `/move?key=${key}&slot=${slotOf.get(target.get(key)!)}`)).status, 202);
    }
    t.true(await until(() => px.lines.some(l => l.includes('"event":"acceptor_renewed"')), 20000), 'the fresh acceptor takes over');
    t.is((await adminGet(px, '/status')).acceptor.pid, fresh);
    process.kill(old, 'SIGCONT');
    t.true(await until(() => { try { process.kill(old, 0); return false; } catch { return true; } }, 10000), 'the old acceptor has exited');
    const ports = traffic.flows.map(f => localPort(f.ws));
    t.true(await until(() => { const o = ownersOfConnections(ports, px.port, pids); return traffic.flows.every(f => o.get(localPort(f.ws)) === target.get(f.key)); }, 10000), 'every key moved whole');
    // The fresh acceptor knows: a new connection of each key joins the others.
    for (const key of keys) {
      const w = await openWs(px.port, `/chat/${key}`);
      t.is(ownerOfConnection(localPort(w), px.port, pids), target.get(key)!, `${key}: the new connection joins the key's worker`);
      w.close();
    }
    await traffic.stop();
    const sum = traffic.summary();
    t.is(sum.closed, 0); t.is(sum.errors, 0); t.is(sum.lost, 0);
  } finally {
    if (old) try { process.kill(old, 'SIGCONT'); } catch { /* gone */ }
    traffic.closeAll();
    await px.stop();
  }
});

test.serial('/status shows the whole key table all through an acceptor renewal (no gap while the fresh one learns it)', async t => {
  // After a reload the acceptor is renewed: the fresh one learns its table from the workers'
  // reports. /status (and the metrics) must not show an empty or partial table meanwhile.
  const px = await startProxy(twoBackendConfig(b1.ready.port, b1.ready.port).replace('log_level: warn', 'log_level: info'));
  const traffic = new Traffic();
  try {
    const keys = Array.from({ length: 6 }, (_, i) => `s${i}`);
    await traffic.open(px.port, keys, 2);
    const counts = (st: any) => keys.map(k => (st.top_keys as { key: string; connections: number }[]).find(e => e.key === k)?.connections ?? 0);
    t.true(await until(async () => counts(await adminGet(px, '/status')).every(n => n === 2), 5000), 'the acceptor reports the table');
    t.is((await adminPost(px, '/reload')).status, 200);
    // Back to back until the renewal is done (bounded: 20 s).
    const bad: string[] = [];
    let samples = 0;
    const deadline = Date.now() + 20000;
    while (!px.lines.some(l => l.includes('"event":"renewed"')) && Date.now() < deadline) {
      const st = await adminGet(px, '/status');
      samples++;
      const c = counts(st);
      if (c.some(n => n !== 2) || st.acceptor.connections !== keys.length * 2) bad.push(`acceptor ${st.acceptor.pid}: keys ${c.join(',')}, connections ${st.acceptor.connections}`);
    }
    t.true(px.lines.some(l => l.includes('"event":"acceptor_renewed"')), 'the acceptor was renewed');
    t.log(`${samples} samples of /status during the reload and the renewal`);
    t.deepEqual(bad.slice(0, 5), [], `${bad.length} of ${samples} samples lacked part of the table`);
    await traffic.stop();
    const sum = traffic.summary();
    t.is(sum.closed, 0); t.is(sum.lost, 0);
  } finally {
    traffic.closeAll();
    await px.stop();
  }
});

/** One request on a fresh connection (no agent): its status. */
function get(port: number, p: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, agent: false }, res => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)); });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
  });
}

async function metrics(px: ProxyHandle): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: px.adminPort!, path: '/metrics', agent: false }, res => {
      let b = ''; res.setEncoding('utf8'); res.on('data', d => { b += d; }); res.on('end', () => resolve(b));
    }).on('error', reject);
  });
}
