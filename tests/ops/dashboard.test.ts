// The dashboard in a real browser: headless Debian Chromium driven over the DevTools protocol
// (with `ws`, no extra dependency). The page loads, shows one column per worker, and its
// numbers follow when connections are opened and closed. Skipped (with a message) when
// /usr/bin/chromium is absent: .ci/run installs it (apt-get install chromium).
import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import WebSocket from 'ws';
import { startBackend, startProxy, twoBackendConfig, type ProxyHandle, type BackendReady } from '../helpers/proxy';
import { until, stopProc, type Started } from '../helpers/procs';

const CHROMIUM = '/usr/bin/chromium';
const have = fs.existsSync(CHROMIUM);
if (!have) console.log(`dashboard browser test skipped: ${CHROMIUM} not found (apt-get install -y chromium)`);
const maybe = have ? test : test.skip;

let b1: Started<BackendReady>, b2: Started<BackendReady>, px: ProxyHandle, browser: ChildProcess | null = null;
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'fdproxy-chromium-'));

test.after.always(async () => {
  if (browser) await stopProc(browser, 'SIGKILL');
  await px?.stop(); await b1?.stop(); await b2?.stop();
  fs.rmSync(profile, { recursive: true, force: true });
});

/** Start Chromium on `url`; resolve with a DevTools connection to its page. */
async function openPage(url: string): Promise<(expr: string) => Promise<unknown>> {
  browser = spawn(CHROMIUM, ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run',
    '--disable-dev-shm-usage', `--user-data-dir=${profile}`, '--remote-debugging-port=0', '--remote-debugging-address=127.0.0.1', url],
  { stdio: ['ignore', 'ignore', 'pipe'] });
  const port = await new Promise<number>((resolve, reject) => {
    let err = '';
    const t = setTimeout(() => reject(new Error(`chromium did not start: ${err}`)), 30000);
    browser!.stderr!.on('data', d => {
      err += d; const m = /DevTools listening on ws:\/\/[^:]+:(\d+)\//.exec(err);
      if (m) { clearTimeout(t); resolve(Number(m[1])); }
    });
    browser!.on('exit', c => { clearTimeout(t); reject(new Error(`chromium exited ${c}: ${err}`)); });
  });
  let target: { type: string; url: string; webSocketDebuggerUrl: string } | undefined;
  await until(async () => {
    const list = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json() as typeof target[];
    target = list.find(x => x!.type === 'page' && x!.url.startsWith(url.replace(/\/$/, '')));
    return !!target;
  }, 15000);
  if (!target) throw new Error('no page target');
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
  let id = 0;
  const pending = new Map<number, (v: any) => void>();
  ws.on('message', d => { const m = JSON.parse(d.toString()); pending.get(m.id)?.(m); pending.delete(m.id); });
  return expr => new Promise((resolve, reject) => {
    const n = ++id;
    pending.set(n, m => m.error || m.result?.exceptionDetails ? reject(new Error(JSON.stringify(m.error ?? m.result.exceptionDetails))) : resolve(m.result.result.value));
    ws.send(JSON.stringify({ id: n, method: 'Runtime.evaluate', params: { expression: expr, returnByValue: true } }));
  });
}

maybe('dashboard in headless Chromium: loads, shows the worker count, follows connections as they open and close', async t => {
  [b1, b2] = await Promise.all([startBackend('b1'), startBackend('b2')]);
  px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port, undefined, '').replace('workers: 2', 'workers: 3'));
  const evaluate = await openPage(`http://127.0.0.1:${px.adminPort}/`);
  const ticks = async () => Number(await evaluate('(document.body && document.body.dataset.ticks) || 0'));
  t.true(await until(async () => await ticks() >= 1, 15000), 'the page polled /status');
  t.is(await evaluate('document.title'), 'fdproxy');
  t.is(await evaluate(`document.querySelectorAll('.worker').length`), 3);
  t.is(await evaluate(`document.querySelectorAll('#backends tr').length`), 3);   // header + 2 servers
  const shown = async () => Number(await evaluate(`[...document.querySelectorAll('.worker .conns')].reduce((a, e) => a + Number(e.textContent), 0)`));
  t.is(await shown(), 0);
  const sockets = await Promise.all(Array.from({ length: 7 }, (_, i) => new Promise<WebSocket>((res, rej) => {
    const w = new WebSocket(`ws://127.0.0.1:${px.port}/chat/room${i % 3}`); w.once('open', () => res(w)); w.once('error', rej);
  })));
  t.true(await until(async () => await shown() === 7, 10000), 'worker columns count the new connections');
  t.true(await until(async () => /7 connections/.test(String(await evaluate(`document.getElementById('summary').textContent`))), 5000));
  t.true(await until(async () => Number(await evaluate(`document.querySelectorAll('#keys tr').length`)) === 4, 5000), 'three keys listed');
  for (const s of sockets) s.close();
  t.true(await until(async () => await shown() === 0, 10000), 'and the closed ones');
  t.true(Number(await evaluate('samples.length')) >= 2, 'chart has samples');
});
