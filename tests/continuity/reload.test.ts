import test from 'ava';
import * as fs from 'node:fs';
import WebSocket from 'ws';
import { startBackend, startProxy, twoBackendConfig, adminGet, adminPost, type ProxyHandle, type BackendReady } from '../helpers/proxy';
import { ownersOfConnections, until, type Started } from '../helpers/procs';
import { Traffic } from '../helpers/traffic';
import { localPort } from '../helpers/ws';
import { connect, LongPoller } from '../helpers/longpoll';

let b1: Started<BackendReady>, b2: Started<BackendReady>;
test.before(async () => { [b1, b2] = await Promise.all([startBackend('b1'), startBackend('b2')]); });
test.after.always(async () => { await b1?.stop(); await b2?.stop(); });


function config(workers: number, variant: number): string {
  // Some reloads change the worker count, some the routes (an extra route in front).
  const extra = variant % 2 ? `  - name: extra${variant}
    match: { path: "/extra/{x}" }
    key: "{x}"
    backend: app
` : '';
  return twoBackendConfig(b1.ready.port, b2.ready.port, `${extra}  - name: chat
    match: { path: "/chat/{room}" }
    key: "{room}"
    backend: app
  - name: default
    match: { path: / }
    backend: app`).replace('workers: 2', `workers: ${workers}`);
}

async function reload(px: ProxyHandle, text: string): Promise<void> {
  fs.writeFileSync(px.file, text);
  const r = await adminPost(px, '/reload');
  if (r.status !== 200) throw new Error(`reload refused: ${JSON.stringify(r.body)}`);
  const done = await until(async () => (await adminGet(px, '/status')).retiring.length === 0, 20000);
  if (!done) throw new Error('old generation did not retire');
}

test.serial('500 WebSockets under numbered echo traffic survive 20 reloads (worker count and routes changing): nothing closed, lost or reordered', async t => {
  const px = await startProxy(config(2, 0));
  const traffic = new Traffic();
  try {
    const keys = Array.from({ length: 100 }, (_, i) => `room${i}`);
    await traffic.open(px.port, keys, 5);
    const counts = [3, 2, 1, 2, 3, 2, 2, 3, 1, 2, 2, 3, 2, 1, 2, 3, 2, 2, 3, 2];
    for (let i = 0; i < 20; i++) {
      const before = traffic.summary().messages;
      await reload(px, config(counts[i], i + 1));
      t.true(traffic.summary().messages > before || i === 0, 'traffic flows during reloads');
    }
    const status = await adminGet(px, '/status');
    t.is(status.generation, 21);
    await traffic.stop();
    const s = traffic.summary();
    t.is(s.closed, 0, 'no connection closed');
    t.is(s.errors, 0, `no message lost, duplicated or reordered: ${traffic.flows.flatMap(f => f.errors).slice(0, 3)}`);
    t.is(s.lost, 0);
    t.true(s.messages > 5000, `${s.messages} messages echoed`);
    // Every connection of a key sits on one worker of the current generation.
    const pids = status.workers.map((w: { pid: number }) => w.pid);
    const owners = ownersOfConnections(traffic.flows.map(f => localPort(f.ws)), px.port, pids);
    const byKey = new Map<string, Set<number | null>>();
    for (const f of traffic.flows) (byKey.get(f.key) ?? byKey.set(f.key, new Set()).get(f.key)!).add(owners.get(localPort(f.ws)) ?? null);
    t.true([...byKey.values()].every(s => s.size === 1 && !s.has(null)), 'each key on exactly one current worker');
    const metrics = await adminGet(px, '/metrics');
    t.regex(metrics, /fdproxy_config_reloads_total\{result="ok"\} 20/);
  } finally {
    traffic.closeAll();
    await px.stop();
  }
});

test.serial('the old workers migrate one at a time: their passes do not overlap, and every connection arrives', async t => {
  // All at once, the two cores ran every old worker's pass and every new worker's adoptions
  // together, and a receiver waited for a core while the handoffs in flight to it were paused.
  // One pass at a time is the default on two cores (one per two cores): said here for any machine.
  const px = await startProxy(config(3, 0).replace('log_level: warn', 'log_level: debug'), [], { ...process.env, FDPROXY_RETIRE_PASSES: '1' });
  const traffic = new Traffic();
  try {
    await traffic.open(px.port, Array.from({ length: 150 }, (_, i) => `turn${i}`), 2);
    await reload(px, config(2, 0).replace('log_level: warn', 'log_level: debug'));
    t.true(await until(() => px.lines.filter(l => l.includes('"event":"retire_pass"')).length === 3, 10000), 'three passes logged');
    // Each pass: [end - ms, end] (one clock: this machine's).
    const passes = px.lines.filter(l => l.includes('"event":"retire_pass"')).map(l => JSON.parse(l) as { time: string; ms: number; migrated: number; proc: string })
      .map(p => ({ ...p, end: Date.parse(p.time), start: Date.parse(p.time) - p.ms })).sort((a, b) => a.start - b.start);
    t.is(passes.reduce((a, p) => a + p.migrated, 0), 300, 'every connection migrated');
    for (let i = 1; i < passes.length; i++) {
      // Log times have ms resolution: 2 ms of slack.
      t.true(passes[i].start >= passes[i - 1].end - 2, `${passes[i].proc} began ${passes[i - 1].end - passes[i].start} ms before ${passes[i - 1].proc} ended`);
    }
    await traffic.stop();
    const sum = traffic.summary();
    t.is(sum.closed, 0); t.is(sum.lost, 0); t.is(sum.errors, 0);
  } finally { traffic.closeAll(); await px.stop(); }
});

test.serial('a retiring worker whose pass is slow holds the next one\'s turn for 3 s at most', async t => {
  // 60 WebSockets whose clients stop reading while their backend floods: migrating one waits 1 s
  // for its queue to the client to empty, then gives up (it stays, and drain_timeout closes it).
  // With 6 in flight, each old worker's pass takes ~5 s: the next one must start 3 s after the
  // first began (the turn's bound), not when it ends.
  const cfg = config(2, 0).replace('log_level: warn', 'log_level: debug').replace('tenant:', 'limits: { drain_timeout: 8s }\ntenant:');
  const px = await startProxy(cfg, [], { ...process.env, FDPROXY_RETIRE_PASSES: '1' });
  const stuck: WebSocket[] = [];
  try {
    for (let i = 0; i < 60; i++) {
      const ws = new WebSocket(`ws://127.0.0.1:${px.port}/chat/stuck${i}`);
      ws.on('error', () => {});
      await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
      ws.send(`flood:${1 << 30}`);
      ws.pause();
      stuck.push(ws);
    }
    // Every client's socket full and bytes queued on the proxy's side (/proc/net/tcp: tx_queue of
    // the proxy's end of each client connection).
    const ports = new Set(stuck.map(w => localPort(w)));
    const hex = (n: number) => ':' + n.toString(16).toUpperCase().padStart(4, '0');
    const queued = () => {
      let n = 0;
      for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
        let text = '';
        try { text = fs.readFileSync(file, 'utf8'); } catch { continue; }
        for (const line of text.split('\n').slice(1)) {
          const f = line.trim().split(/\s+/);
          if (f.length < 5 || !f[1].endsWith(hex(px.port))) continue;
          if (ports.has(parseInt(f[2].split(':').pop()!, 16)) && parseInt(f[4].split(':')[0], 16) > 0) n++;
        }
      }
      return n;
    };
    t.true(await until(() => queued() === 60, 10000), `every flood backed up (${queued()} of 60)`);
    fs.writeFileSync(px.file, cfg.replace('workers: 2', 'workers: 3'));
    t.is((await adminPost(px, '/reload')).status, 200);
    t.true(await until(() => px.lines.filter(l => l.includes('"event":"retire_pass"')).length >= 2, 20000), 'both passes logged');
    const passes = px.lines.filter(l => l.includes('"event":"retire_pass"')).map(l => JSON.parse(l) as { time: string; ms: number; failed: number; proc: string })
      .map(p => ({ ...p, end: Date.parse(p.time), start: Date.parse(p.time) - p.ms })).sort((a, b) => a.start - b.start).slice(0, 2);
    t.log(passes.map(p => `${p.proc}: ${Math.round(p.start - passes[0].start)}–${Math.round(p.end - passes[0].start)} ms, ${p.failed} not moved`).join('; '));
    t.true(passes[0].ms > 3500, `the first pass was slow (${Math.round(passes[0].ms)} ms)`);
    const gap = passes[1].start - passes[0].start;
    t.true(gap >= 2000, `the second pass waited for its turn (${Math.round(gap)} ms)`);
    t.true(passes[1].start < passes[0].end, `the second pass began ${Math.round(passes[0].end - passes[1].start)} ms before the first ended`);
  } finally {
    for (const w of stuck) w.terminate();
    await px.stop();
  }
});

test.serial('reload with an invalid config keeps the old one serving and names file:line:col', async t => {
  const px = await startProxy(config(2, 0));
  try {
    const good = fs.readFileSync(px.file, 'utf8');
    fs.writeFileSync(px.file, good.replace('backend: app\n  - name: default', 'backend: apq\n  - name: default'));
    const r = await adminPost(px, '/reload');
    t.is(r.status, 422);
    t.regex(r.body.error, /proxy\.yaml:\d+:\d+ routes\[0\]\.backend: unknown backend "apq" \(did you mean "app"\?\)/);
    const ws = await new Promise<WebSocket>((resolve, reject) => { const w = new WebSocket(`ws://127.0.0.1:${px.port}/chat/x`); w.once('open', () => resolve(w)); w.once('error', reject); });
    const echo = await new Promise<string>(r => { ws.once('message', d => r(d.toString())); ws.send('alive'); });
    t.is(echo, 'alive');
    const st = await adminGet(px, '/status');
    t.is(st.generation, 1);
    t.regex(st.last_reload_error, /unknown backend "apq"/);
    t.regex(await adminGet(px, '/metrics'), /fdproxy_config_reloads_total\{result="failed"\} 1/);
    ws.close();
  } finally { await px.stop(); }
});

test.serial('a reload with a hung acceptor fails in bounded time, names it, and keeps the old generation serving; the next reload works', async t => {
  // 2 s instead of 10 s for the wiring bound (the knob exists for this).
  const px = await startProxy(config(2, 0), [], { ...process.env, FDPROXY_RELOAD_WIRE_MS: '2000' });
  let hung = 0;
  try {
    const st = await adminGet(px, '/status');
    hung = st.acceptor.pid as number;
    const oldWorkers = st.workers.map((w: { pid: number }) => w.pid);
    process.kill(hung, 'SIGSTOP');
    const r = await adminPost(px, '/reload');
    t.is(r.status, 422);
    t.regex(r.body.error, new RegExp(`not responding: acceptor 0 \\(pid ${hung}\\)`));
    process.kill(hung, 'SIGCONT');
    hung = 0;
    const after = await adminGet(px, '/status');
    t.is(after.generation, 1, 'the running generation stays');
    t.deepEqual(after.workers.map((w: { pid: number }) => w.pid), oldWorkers);
    t.regex(after.last_reload_error, /not responding/);
    const ws = await new Promise<WebSocket>((resolve, reject) => { const w = new WebSocket(`ws://127.0.0.1:${px.port}/chat/x`); w.once('open', () => resolve(w)); w.once('error', reject); });
    t.is(await new Promise<string>(res => { ws.once('message', d => res(d.toString())); ws.send('alive'); }), 'alive');
    // Not stuck in 'reloading': the next reload goes through, and the WebSocket moves with it.
    await reload(px, config(3, 1));
    t.is((await adminGet(px, '/status')).generation, 2);
    t.is(await new Promise<string>(res => { ws.once('message', d => res(d.toString())); ws.send('moved'); }), 'moved');
    ws.close();
  } finally { if (hung) process.kill(hung, 'SIGCONT'); await px.stop(); }
});

test.serial('a reload while keep-alive connections long-poll (the next request as soon as an answer arrives): they follow to the new workers between polls, none is closed, the old workers retire at once', async t => {
  // The new config names its routes differently: the access lines tell which generation served a
  // poll. drain_timeout 5 s: what cannot move is closed then; the polls must move long before.
  const yaml = (v: string) => twoBackendConfig(b1.ready.port, b2.ready.port, `  - name: poll${v}
    match: { path: /delay, query: { room: "{room}" } }
    key: "{room}"
    backend: app
  - name: default${v}
    match: { path: / }
    backend: app`, 'limits: { drain_timeout: 5s }').replace('log_level: warn', 'log_level: info');
  const px = await startProxy(yaml('_old'));
  // Three keyed connections (three keys) and three keyless ones, each its own poll sequence.
  const paths = [0, 1, 2].flatMap(i => [(n: number) => `/delay?room=r${i}&ms=400&c=${i}&n=${n}`, (n: number) => `/delay?ms=400&c=${3 + i}&n=${n}`]);
  const socks = await Promise.all(paths.map(() => connect(px.port)));
  const pollers = socks.map((s, i) => new LongPoller(s, paths[i]));
  try {
    for (const p of pollers) p.start();
    t.true(await until(() => pollers.every(p => p.answers.length >= 1), 5000));
    fs.writeFileSync(px.file, yaml('_new'));
    const r = await adminPost(px, '/reload');
    t.is(r.status, 200);
    const reloaded = Date.now();
    // Four more polls on every connection (the test stays quiet meanwhile: a client that answers
    // at once leaves only a short gap between two polls).
    const before = pollers.map(p => p.answers.length);
    t.true(await until(() => pollers.every((p, i) => p.answers.length >= before[i] + 4 || p.errors.length > 0), 8000), 'polls go on');
    // After the reload, the old generation answered at most the poll in flight (and one that came
    // just before its plan did) on each connection; the new one answered the rest.
    const served = (i: number) => px.lines.filter(l => l.includes('"event":"access"') && l.includes(`&c=${i}&`)).map(l => JSON.parse(l)).filter(a => Date.parse(a.time) > reloaded);
    t.true(await until(() => paths.every((_, i) => served(i).length >= 4), 2000), 'access lines');
    for (let i = 0; i < paths.length; i++) {
      const old = served(i).filter(a => a.route.endsWith('_old')).length;
      t.true(old <= 2, `connection ${i}: ${old} polls served by the old generation after the reload`);
    }
    t.true(await until(async () => (await adminGet(px, '/status')).retiring.length === 0, 3000), 'the old workers retired, well before drain_timeout');
    const st = await adminGet(px, '/status');
    t.is(st.generation, 2);
    const pids = st.workers.map((w: { pid: number }) => w.pid);
    const owners = ownersOfConnections(socks.map(s => s.localPort!), px.port, pids);
    t.true(socks.every(s => pids.includes(owners.get(s.localPort!))), 'every connection lives on a new worker');
    for (const p of pollers) await p.stop();
    for (const p of pollers) {
      t.deepEqual(p.errors, []);
      t.true(p.answers.every(a => a.status === 200 && a.body === 'delayed'));
    }
  } finally { for (const s of socks) s.destroy(); await px.stop(); }
});

test.serial('a reload while an HTTP exchange outlasts drain_timeout: the exchange is closed at drain_timeout and the old worker exits', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port, `  - name: poll
    match: { path: /delay }
    key: "{query.room}"
    backend: app`, 'limits: { drain_timeout: 1s }').replace('log_level: warn', 'log_level: info'));
  const s = await connect(px.port);
  const ended = new Promise<void>(r => { s.on('end', r); s.on('close', r); });
  s.on('data', () => { /* the answer, if it came, is not what this test is about */ });
  try {
    const before = await adminGet(px, '/status');
    const oldPids: number[] = before.workers.map((w: { pid: number }) => w.pid);
    // A request whose answer takes longer than drain_timeout (1 s) and the test's wait together.
    s.write('GET /delay?room=x&ms=30000 HTTP/1.1\r\nHost: x\r\n\r\n');
    t.true(await until(async () => (await adminGet(px, '/status')).workers.some((w: { http: number }) => w.http > 0), 5000), 'the exchange is in flight');
    t.is((await adminPost(px, '/reload')).status, 200);
    // drain_timeout closes the exchange; then nothing is left on the old worker: it must exit.
    t.true(await until(() => ended.then(() => true), 10000), 'the client connection was closed at drain_timeout');
    t.true(await until(async () => (await adminGet(px, '/status')).retiring.length === 0, 10000), 'the old workers retired');
    t.true(await until(() => oldPids.every(p => !fs.existsSync(`/proc/${p}`)), 5000), 'the old worker processes are gone');
  } finally { s.destroy(); await px.stop(); }
});
