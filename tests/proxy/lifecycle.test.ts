import test from 'ava';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { execFile } from 'node:child_process';
import WebSocket from 'ws';
import { startBackend, startProxy, twoBackendConfig, adminGet, type BackendReady } from '../helpers/proxy';
import { BIN, tmpFile, until, type Started } from '../helpers/procs';
import { echo, openWs } from '../helpers/ws';

let b1: Started<BackendReady>;
test.before(async () => { b1 = await startBackend('b1'); });
test.after.always(async () => { await b1?.stop(); });

function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise(resolve => execFile(process.execPath, [BIN, ...args], (e, out, err) => resolve({ code: e ? (e as { code?: number }).code ?? 1 : 0, out, err })));
}

test('CLI: --help, --version, check (0 / 1 with file:line:col / 2 on usage)', async t => {
  const help = await run(['--help']);
  t.is(help.code, 0);
  t.regex(help.out, /SYNOPSIS/);
  t.regex(help.out, /SIGHUP/);
  t.regex((await run(['--version'])).out, /^fdproxy \d+\.\d+\.\d+/);
  const good = tmpFile('proxy.yaml', twoBackendConfig(b1.ready.port, b1.ready.port));
  const ok = await run(['check', '-c', good]);
  t.is(ok.code, 0);
  t.regex(ok.out, /ok/);
  const bad = tmpFile('proxy.yaml', 'listen: 127.0.0.1:8080\nworkres: 2\nbackends: { web: { servers: [127.0.0.1:9001] } }\nroutes: [{ backend: wbe }]\n');
  const r = await run(['check', '-c', bad]);
  t.is(r.code, 1);
  t.regex(r.err, /proxy\.yaml:2:1 workres: unknown key "workres" \(did you mean "workers"\?\)/);
  t.regex(r.err, /proxy\.yaml:4:\d+ routes\[0\]\.backend: unknown backend "wbe" \(did you mean "web"\?\)/);
  t.is((await run(['--bogus'])).code, 2);
  t.is((await run(['-c', bad])).code, 1, 'run refuses an invalid config too');
});

test('SIGTERM: stops accepting, lets an in-flight request finish, closes WebSockets with 1001 after drain_timeout, exits 0', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b1.ready.port, undefined, 'limits: { drain_timeout: 1s }'));
  const ws = await new Promise<WebSocket>((res, rej) => { const w = new WebSocket(`ws://127.0.0.1:${px.port}/chat/stop`); w.once('open', () => res(w)); w.once('error', rej); });
  const closed = new Promise<number>(r => ws.once('close', code => r(code)));
  const slow = new Promise<{ status: number; body: string }>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: px.port, path: '/delay?ms=600' }, res => {
      let b = ''; res.on('data', d => b += d); res.on('end', () => resolve({ status: res.statusCode!, body: b }));
    }).on('error', reject);
  });
  await new Promise(r => setTimeout(r, 150));
  const exited = new Promise<number | null>(r => px.proc.once('exit', code => r(code)));
  px.proc.kill('SIGTERM');
  const res = await slow;
  t.is(res.status, 200);
  t.is(res.body, 'delayed');
  t.is(await closed, 1001);
  t.is(await exited, 0);
  // Nothing listens any more.
  await t.throwsAsync(new Promise((resolve, reject) => { const s = net.connect(px.port, '127.0.0.1'); s.once('connect', () => { s.destroy(); resolve(null); }); s.once('error', reject); }));
});

test('SIGINT: fast stop closes WebSockets with 1001 at once', async t => {
  const px = await startProxy(twoBackendConfig(b1.ready.port, b1.ready.port, undefined, 'limits: { drain_timeout: 30s }'));
  const ws = await new Promise<WebSocket>((res, rej) => { const w = new WebSocket(`ws://127.0.0.1:${px.port}/chat/int`); w.once('open', () => res(w)); w.once('error', rej); });
  const closed = new Promise<number>(r => ws.once('close', code => r(code)));
  const exited = new Promise<number | null>(r => px.proc.once('exit', code => r(code)));
  px.proc.kill('SIGINT');
  t.is(await closed, 1001);
  t.is(await exited, 0);
});

test('SIGHUP reloads: a new generation, counted in /metrics, a changed route takes effect, a live WebSocket stays; a bad file keeps the running config', async t => {
  const routes = (extra: string) => `${extra}  - name: chat
    match: { path: "/chat/{room}" }
    key: "{room}"
    backend: app
  - name: only
    match: { path: /only/ }
    backend: app`;
  const fresh = `  - name: fresh
    match: { path: "/fresh/{x}" }
    key: "{x}"
    backend: app
`;
  const px = await startProxy(twoBackendConfig(b1.ready.port, b1.ready.port, routes('')));
  let stderr = '';
  px.proc.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const status = (p: string) => fetch(`http://127.0.0.1:${px.port}${p}`).then(async r => ({ status: r.status, body: await r.text() }));
  const reloads = async (result: string) => Number(new RegExp(`fdproxy_config_reloads_total\\{result="${result}"\\} (\\d+)`).exec(await adminGet(px, '/metrics'))?.[1] ?? -1);
  try {
    t.is((await status('/fresh/a')).status, 404, 'no route for /fresh/ yet');
    t.is(await reloads('ok'), 0);
    const ws = await openWs(px.port, '/chat/hup');
    t.is(await echo(ws, 'before'), 'before');

    fs.writeFileSync(px.file, twoBackendConfig(b1.ready.port, b1.ready.port, routes(fresh)));
    process.kill(px.ready.pid, 'SIGHUP');
    t.true(await until(async () => await reloads('ok') === 1, 20000), 'fdproxy_config_reloads_total{result="ok"} 1');
    t.true(await until(async () => (await adminGet(px, '/status')).retiring.length === 0, 20000), 'the old generation retired');
    const st = await adminGet(px, '/status');
    t.is(st.generation, 2);
    t.true(st.workers.every((w: { pid: number }) => !px.ready.workers.some(o => o.pid === w.pid)), 'new worker processes');
    const r = await status('/fresh/a');
    t.is(r.status, 200, 'the new route serves');
    t.is(JSON.parse(r.body).url, '/fresh/a');
    t.is(await echo(ws, 'after'), 'after', 'the WebSocket opened before the reload still echoes');

    // A broken file: SIGHUP keeps the running config and says why (stderr, /status, /metrics).
    fs.writeFileSync(px.file, twoBackendConfig(b1.ready.port, b1.ready.port, routes(fresh)).replace('backend: app\n  - name: only', 'backend: apq\n  - name: only'));
    process.kill(px.ready.pid, 'SIGHUP');
    t.true(await until(async () => await reloads('failed') === 1, 20000), 'fdproxy_config_reloads_total{result="failed"} 1');
    t.true(await until(() => /reload failed, still running the previous config/.test(stderr), 5000), stderr);
    t.regex(stderr, /proxy\.yaml:\d+:\d+ routes\[\d\]\.backend: unknown backend "apq"/);
    const st2 = await adminGet(px, '/status');
    t.is(st2.generation, 2);
    t.regex(st2.last_reload_error, /unknown backend "apq"/);
    t.is((await status('/fresh/b')).status, 200, 'still served by the running config');
    t.is(await echo(ws, 'still'), 'still');
    ws.close();
  } finally { await px.stop(); }
});
