import test from 'ava';
import * as http from 'node:http';
import * as net from 'node:net';
import { execFile } from 'node:child_process';
import WebSocket from 'ws';
import { startBackend, startProxy, twoBackendConfig, type BackendReady } from '../helpers/proxy';
import { BIN, tmpFile, type Started } from '../helpers/procs';

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
