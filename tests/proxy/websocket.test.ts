import test from 'ava';
import * as net from 'node:net';
import { randomBytes, createHash } from 'node:crypto';
import WebSocket from 'ws';
import { startBackend, startProxy, twoBackendConfig, type ProxyHandle } from '../helpers/proxy';
import type { Started } from '../helpers/procs';
import type { BackendReady } from '../helpers/proxy';

let b1: Started<BackendReady>, b2: Started<BackendReady>, px: ProxyHandle;

test.before(async () => {
  [b1, b2] = await Promise.all([startBackend('b1'), startBackend('b2')]);
  px = await startProxy(twoBackendConfig(b1.ready.port, b2.ready.port));
});
test.after.always(async () => { await px?.stop(); await b1?.stop(); await b2?.stop(); });

function open(path: string, opts: WebSocket.ClientOptions = {}, protocols?: string[]): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${px.port}${path}`, protocols, opts);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`status ${res.statusCode}`), { status: res.statusCode })));
  });
}
function next(ws: WebSocket): Promise<{ data: Buffer; binary: boolean }> {
  return new Promise(resolve => ws.once('message', (data: Buffer, binary: boolean) => resolve({ data, binary })));
}

test('text and binary echo from 1 B to 1 MiB', async t => {
  const ws = await open('/chat/sizes');
  for (const n of [1, 125, 126, 65535, 65536, 1024 * 1024]) {
    const bin = randomBytes(n);
    ws.send(bin);
    const r = await next(ws);
    t.true(r.binary);
    t.true(r.data.equals(bin), `binary ${n}`);
    const text = 'x'.repeat(n);
    ws.send(text);
    const r2 = await next(ws);
    t.false(r2.binary);
    t.is(r2.data.toString(), text);
  }
  ws.close();
});

test('fragmented frames, ping/pong, close codes both ways', async t => {
  const ws = await open('/chat/frag');
  ws.send('hello ', { fin: false });
  ws.send('world', { fin: true });
  t.is((await next(ws)).data.toString(), 'hello world');
  const pong = new Promise<Buffer>(r => ws.once('pong', r));
  ws.ping('p1');
  t.is((await pong).toString(), 'p1');
  // Client-initiated close code reaches the backend and its answer comes back.
  const closed = new Promise<number>(r => ws.once('close', code => r(code)));
  ws.close(4001, 'bye');
  t.is(await closed, 4001);
  // Backend-initiated close code reaches the client.
  const ws2 = await open('/chat/frag2');
  const closed2 = new Promise<[number, string]>(r => ws2.once('close', (code, reason) => r([code, reason.toString()])));
  ws2.send('close:4321');
  t.deepEqual(await closed2, [4321, 'bye']);
});

test('subprotocol chosen by the backend reaches the client; X-Forwarded-* are set', async t => {
  const ws = await open('/chat/proto', {}, ['chat.v2', 'chat.v1']);
  t.is(ws.protocol, 'chat.v2');
  ws.send('whoami');
  const who = JSON.parse((await next(ws)).data.toString());
  t.is(who.headers['x-forwarded-for'], '127.0.0.1');
  t.is(who.headers['x-forwarded-proto'], 'http');
  t.is(who.headers['x-forwarded-host'], `127.0.0.1:${px.port}`);
  t.is(who.url, '/chat/proto');
  ws.close();
});

test('a backend refusal (403) reaches the client as sent', async t => {
  const err = await t.throwsAsync(open('/chat/refuse'));
  t.is((err as Error & { status: number }).status, 403);
});

test('the first frame sent in the same packet as the upgrade is delivered', async t => {
  const key = randomBytes(16).toString('base64');
  const sock = net.connect(px.port, '127.0.0.1');
  await new Promise(r => sock.once('connect', r));
  const payload = Buffer.from('early bird');
  const mask = randomBytes(4);
  const frame = Buffer.alloc(6 + payload.length);
  frame[0] = 0x81; frame[1] = 0x80 | payload.length; mask.copy(frame, 2);
  for (let i = 0; i < payload.length; i++) frame[6 + i] = payload[i] ^ mask[i % 4];
  const head = `GET /chat/early HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
  sock.write(Buffer.concat([Buffer.from(head), frame]));   // one write, one packet
  let got = Buffer.alloc(0);
  await new Promise<void>(resolve => sock.on('data', d => {
    got = Buffer.concat([got, d]);
    const end = got.indexOf('\r\n\r\n');
    if (end >= 0 && got.length >= end + 4 + 2 + payload.length) resolve();
  }));
  const end = got.indexOf('\r\n\r\n');
  const headText = got.subarray(0, end).toString();
  t.regex(headText, /^HTTP\/1.1 101/);
  t.true(headText.toLowerCase().includes(`sec-websocket-accept: ${createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64').toLowerCase()}`));
  const echoed = got.subarray(end + 4);
  t.is(echoed[0], 0x81);
  t.is(echoed.subarray(2, 2 + payload.length).toString(), 'early bird');
  sock.destroy();
});

test('unreachable backend gives 502 before any 101', async t => {
  const dead = await startBackend('dead');
  const port = dead.ready.port;
  await dead.stop();
  const p2 = await startProxy(twoBackendConfig(port, port));
  try {
    const err = await t.throwsAsync(new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${p2.port}/chat/x`);
      ws.once('open', resolve);
      ws.once('error', reject);
      ws.once('unexpected-response', (_q, res) => reject(Object.assign(new Error('x'), { status: res.statusCode })));
    }));
    t.is((err as Error & { status: number }).status, 502);
  } finally { await p2.stop(); }
});

test('backend gone after the 101: the client gets close 1011', async t => {
  const b3 = await startBackend('b3');
  const p3 = await startProxy(twoBackendConfig(b3.ready.port, b3.ready.port));
  try {
    const ws = await new Promise<WebSocket>((resolve, reject) => {
      const w = new WebSocket(`ws://127.0.0.1:${p3.port}/chat/gone`);
      w.once('open', () => resolve(w)); w.once('error', reject);
    });
    const closed = new Promise<number>(r => ws.once('close', code => r(code)));
    b3.proc.kill('SIGKILL');
    t.is(await closed, 1011);
  } finally { await p3.stop(); await b3.stop(); }
});
