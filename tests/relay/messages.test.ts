// Relay mode: messages relayed one by one (types, sizes, fragments), close codes both ways,
// protocol errors answered by the proxy (1007, 1009), refusals before the 101, subprotocols.
import test from 'ava';
import * as http from 'node:http';
import WebSocket, { WebSocketServer } from 'ws';
import { startProxy, twoBackendConfig, adminGet, type ProxyHandle } from '../helpers/proxy';
import { until } from '../helpers/procs';

// The backend runs in this process, so the test sees what reached it (messages, close codes).
interface Seen { url: string; protocol: string; extensions: string; messages: [Buffer, boolean][]; close?: [number, string] }
const seen: Seen[] = [];
let backendPort = 0;
let server: http.Server;
let px: ProxyHandle;

test.before(async () => {
  server = http.createServer((_q, r) => r.end('ok'));
  const wss = new WebSocketServer({ noServer: true, handleProtocols: p => [...p][0] ?? false });
  const wssDeflate = new WebSocketServer({ noServer: true, perMessageDeflate: true });
  server.on('upgrade', (req, sock, head) => {
    if (req.url?.endsWith('/refuse')) { sock.end('HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 9\r\n\r\nforbidden'); return; }
    (req.url?.startsWith('/deflb/') ? wssDeflate : wss).handleUpgrade(req, sock, head, ws => {
      const s: Seen = { url: req.url ?? '', protocol: ws.protocol, extensions: String(req.headers['sec-websocket-extensions'] ?? ''), messages: [] };
      seen.push(s);
      ws.on('message', (d: Buffer, bin) => {
        s.messages.push([d, bin]);
        const text = bin ? '' : d.toString();
        if (text.startsWith('close:')) { ws.close(Number(text.slice(6)), 'from backend'); return; }
        if (text === 'big') { ws.send(Buffer.alloc(2048, 1)); return; }
        ws.send(d, { binary: bin });
      });
      ws.on('close', (code, reason) => { s.close = [code, reason.toString()]; });
    });
  });
  await new Promise<void>(r => server.listen(0, '127.0.0.1', r));
  backendPort = (server.address() as { port: number }).port;
  px = await startProxy(twoBackendConfig(backendPort, backendPort, `  - name: chat
    match: { path: "/chat/{room}" }
    key: "{room}"
    backend: app
    websocket: relay
    relay: { heartbeat: 0 }
  - name: small
    match: { path: "/small/{room}" }
    key: "{room}"
    backend: app
    websocket: relay
    relay: { max_message: 1KiB }
  - name: deflc
    match: { path: "/deflc/{room}" }
    key: "{room}"
    backend: app
    websocket: relay
    relay: { deflate_client: true }
  - name: deflb
    match: { path: "/deflb/{room}" }
    key: "{room}"
    backend: app
    websocket: relay
    relay: { deflate_backend: true }
  - name: default
    match: { path: / }
    backend: app`));
});
test.after.always(async () => { await px?.stop(); server?.close(); });

function open(path: string, protocols?: string[], opts: WebSocket.ClientOptions = {}): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${px.port}${path}`, protocols, opts);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}
const next = (ws: WebSocket) => new Promise<[Buffer, boolean]>(r => ws.once('message', (d: Buffer, bin) => r([d, bin])));
const closed = (ws: WebSocket) => new Promise<[number, string]>(r => ws.once('close', (c, why) => r([c, why.toString()])));
const backendFor = async (url: string) => { await until(() => seen.some(s => s.url === url), 5000); return seen.find(s => s.url === url)!; };

test.serial('text, binary, empty and 1 MiB messages keep their type and bytes; subprotocol as the backend chose it', async t => {
  const ws = await open('/chat/a', ['chat.v2', 'chat.v1']);
  t.is(ws.protocol, 'chat.v2');
  t.is(ws.extensions, '', 'no permessage-deflate unless the route turns it on');
  const cases: [Buffer | string, boolean][] = [['hello', false], [Buffer.from([0, 1, 2, 255]), true], ['', false], [Buffer.alloc(0), true],
    [Buffer.alloc(1 << 20, 7), true], ['é'.repeat(1000), false]];
  for (const [msg, bin] of cases) {
    const p = next(ws);
    ws.send(msg, { binary: bin });
    const [d, isBin] = await p;
    t.is(isBin, bin);
    t.true(d.equals(Buffer.from(msg as string)), `echo of ${bin ? 'binary' : 'text'} ${Buffer.byteLength(msg as string)} bytes`);
  }
  const b = await backendFor('/chat/a');
  t.is(b.protocol, 'chat.v2');
  t.is(b.extensions, '', 'the client\'s extension offer is not passed on');
  t.is(b.messages.length, cases.length);
  ws.close();
});

test.serial('fragmented input arrives as one message; interleaved ping answered by the proxy', async t => {
  const ws = await open('/chat/frag');
  const p = next(ws);
  ws.send('abc', { fin: false });
  ws.ping('x');
  const pong = new Promise<Buffer>(r => ws.once('pong', r));
  ws.send('def', { fin: false });
  ws.send('ghi', { fin: true });
  t.is((await p)[0].toString(), 'abcdefghi');
  t.is((await pong).toString(), 'x');
  const b = await backendFor('/chat/frag');
  t.deepEqual(b.messages.map(m => m[0].toString()), ['abcdefghi']);
  ws.close();
});

test.serial('invalid UTF-8 in a text message: the client gets 1007, the backend a close', async t => {
  const ws = await open('/chat/utf');
  const c = closed(ws);
  ws.on('error', () => {});
  ws.send(Buffer.from([0x61, 0xff, 0xfe]), { binary: false });   // ws does not validate what it sends
  t.is((await c)[0], 1007);
  const b = await backendFor('/chat/utf');
  t.true(await until(() => b.close !== undefined, 5000));
  t.is(b.close![0], 1001);
  t.is(b.messages.length, 0, 'the invalid message never reached the backend');
});

test.serial('max_message: a bigger message closes the client with 1009; smaller ones pass', async t => {
  const ws = await open('/small/x');
  const p = next(ws);
  ws.send(Buffer.alloc(1024, 1));
  t.is((await p)[0].length, 1024);
  const c = closed(ws);
  ws.on('error', () => {});
  ws.send(Buffer.alloc(1025, 1));
  t.is((await c)[0], 1009);
  const b = await backendFor('/small/x');
  t.true(await until(() => b.close !== undefined, 5000));
  t.is(b.messages.length, 1);
});

test.serial('close codes and reasons both ways', async t => {
  const ws1 = await open('/chat/c1');
  await new Promise<void>(r => { ws1.once('message', () => r()); ws1.send('hi'); });
  const c1 = closed(ws1);
  ws1.close(4001, 'client says bye');
  t.deepEqual(await c1, [4001, 'client says bye']);
  const b1 = await backendFor('/chat/c1');
  t.true(await until(() => b1.close !== undefined, 5000));
  t.deepEqual(b1.close, [4001, 'client says bye']);

  const ws2 = await open('/chat/c2');
  const c2 = closed(ws2);
  ws2.send('close:4002');
  t.deepEqual(await c2, [4002, 'from backend']);
  const ws3 = await open('/chat/c3');
  const c3 = closed(ws3);
  ws3.close(1000);
  t.is((await c3)[0], 1000);
});

test.serial('a backend refusal before the 101 reaches the client as sent', async t => {
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: px.port, path: '/chat/refuse', headers: {
      Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' } });
    req.once('response', resolve);
    req.once('upgrade', () => reject(new Error('upgraded')));
    req.once('error', reject);
    req.end();
  });
  t.is(res.statusCode, 403);
  const body = await new Promise<string>(r => { let s = ''; res.on('data', d => s += d); res.on('end', () => r(s)); });
  t.is(body, 'forbidden');
});

test.serial('metrics: messages and bytes each way per route, limit hits; per-key figures in the worker stats', async t => {
  const ws = await open('/chat/m');
  for (let i = 0; i < 5; i++) { const p = next(ws); ws.send('12345678'); await p; }
  ws.close();
  let m = '';
  t.true(await until(async () => { m = await adminGet(px, '/metrics'); return /fdproxy_relay_small_limit_max_message_total\{[^}]*\} 1/.test(m); }, 5000), 'max_message hit counted');
  const sum = (name: string) => [...m.matchAll(new RegExp(`^${name}\\{[^}]*\\} (\\d+)`, 'gm'))].reduce((a, x) => a + Number(x[1]), 0);
  t.true(sum('fdproxy_relay_chat_messages_in_total') >= 5);
  t.true(sum('fdproxy_relay_chat_messages_out_total') >= 5);
  t.true(sum('fdproxy_relay_chat_bytes_in_total') >= 40);
  // Per key: the worker's busiest relay keys in /status (while the key has live relays).
  const ws2 = await open('/chat/perkey');
  for (let i = 0; i < 3; i++) { const p = next(ws2); ws2.send('abc'); await p; }
  let k: { key: string; messages_in: number; bytes_out: number } | undefined;
  t.true(await until(async () => {
    const st = await adminGet(px, '/status');
    k = st.workers.flatMap((w: { relay_keys: { key: string; messages_in: number; bytes_out: number }[] }) => w.relay_keys).find((x: { key: string }) => x.key === 'perkey');
    // (a snapshot can fall between a message in and its echo out: wait for both)
    return k?.messages_in === 3 && k?.bytes_out === 9;
  }, 5000), 'per-key tallies in /status');
  t.is(k!.bytes_out, 9);
  ws2.close();
});

test.serial('permessage-deflate per side: deflate_client compresses only to the client, deflate_backend only to the backend', async t => {
  const text = 'compress me '.repeat(10_000);
  const c1 = await open('/deflc/a');
  t.regex(c1.extensions, /permessage-deflate/);
  c1.send(text);
  t.is((await next(c1))[0].toString(), text);
  t.is((await backendFor('/deflc/a')).extensions, '', 'no extension offered to the backend');
  c1.close();
  const c2 = await open('/deflb/b');
  t.is(c2.extensions, '', 'no extension accepted from the client');
  c2.send(text);
  t.is((await next(c2))[0].toString(), text);
  t.regex((await backendFor('/deflb/b')).extensions, /permessage-deflate; client_no_context_takeover; server_no_context_takeover/);
  c2.close();
});
