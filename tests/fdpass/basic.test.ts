import test from 'ava';
import * as net from 'node:net';
import { once } from 'node:events';
import { FDPASS_ERRORS, FdpassError, HANDOFF_MAX_BYTES, _setPlatformForTest, assertSupported, channelPair, Channel, releaseSocket, resumeSocket } from '../../fdpass';
import { fdCount, kill, spawnPeer } from './helpers';

function readUntil(s: net.Socket, needle: string): Promise<string> {
  let acc = '';
  return new Promise((res, rej) => {
    const t = setTimeout(() => rej(new Error(`no "${needle}" in "${acc}"`)), 5000);
    const on = (d: Buffer): void => { acc += d; if (acc.includes(needle)) { clearTimeout(t); s.off('data', on); res(acc); } };
    s.on('data', on);
  });
}

test('fds + the largest bytes (114,668) + a 16 KiB meta arrive intact in one handoff, close-on-exec', async (t) => {
  const p = await spawnPeer('inspect');
  t.is(HANDOFF_MAX_BYTES, 114668);   // a 32 KiB head (conf's head_bytes maximum) + the 64 KiB read that completed it fit
  t.true(HANDOFF_MAX_BYTES >= 32 * 1024 + 65536);
  const bytes = Buffer.alloc(HANDOFF_MAX_BYTES);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + 3) & 255;
  const sum = bytes.reduce((a, b) => (a + b) % 65521, 0);
  const pair = channelPair(); // four real unix socket fds to pass
  const meta = { cmd: 'inspect', s: 'é€', n: [1, 2], pad: 'p'.repeat(16384 - 60) };
  const ml = Buffer.byteLength(JSON.stringify(meta));
  t.true(ml > 16300 && ml <= 16384, String(ml));   // near MAX_META: the largest message there is
  const acked = new Promise<void>((r) => p.ch.send({ fds: [pair.a.data, pair.a.bell, pair.b.data, pair.b.bell], bytes, meta }, { onAck: r }));
  const l = await p.waitFor((x) => x.event === 'inspect');
  t.deepEqual(l, { event: 'inspect', nfds: 4, len: HANDOFF_MAX_BYTES, sum, meta, cloexec: [true, true, true, true] });
  await acked;
  t.is(p.ch.pending, 0);
  new Channel(pair.a).close(); new Channel(pair.b).close();
  p.ch.send({ fds: [], bytes: Buffer.alloc(0), meta: { cmd: 'inspect' } }); // 0 fds: control message
  const l2 = await p.waitFor((x) => x.event === 'inspect' && x.nfds === 0);
  t.is(l2.len, 0);
  p.ch.close();
  await kill(p);
});

test.serial('a TCP client keeps talking to the receiving process after the handoff (both directions)', async (t) => {
  const p = await spawnPeer('tcp');
  const base = fdCount();
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const client = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1');
  const [sock] = (await once(srv, 'connection')) as [net.Socket];
  client.write('GET / HTTP/1.1\r\n\r\n');
  await once(sock, 'readable'); // Node read the head into its buffer; nobody consumed it
  const { fd, unread } = releaseSocket(sock);
  t.is(unread.toString(), 'GET / HTTP/1.1\r\n\r\n');
  await new Promise<void>((r) => p.ch.send({ fds: [fd], bytes: unread, meta: { cmd: 'tcp' } }, { onAck: () => { sock.destroy(); r(); } }));
  t.regex(await readUntil(client, 'HTTP/1.1'), /child got 18 bytes:GET \/ HTTP\/1.1/);
  client.write('ping');
  t.regex(await readUntil(client, 'child:ping'), /child:ping/);
  const l = await p.waitFor((x) => x.event === 'tcp');
  t.true(l.cloexec);
  client.destroy(); srv.close();
  await new Promise((r) => setTimeout(r, 50)); // let libuv close the destroyed sockets
  t.is(fdCount(), base);
  p.ch.close();
  await kill(p);
});

test('releaseSocket/resumeSocket round trip keeps unread bytes', async (t) => {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const client = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1');
  const [sock] = (await once(srv, 'connection')) as [net.Socket];
  client.write('abc');
  await once(sock, 'readable');
  const { unread } = releaseSocket(sock);
  t.throws(() => releaseSocket(sock), { instanceOf: FdpassError });
  client.write('def');
  await new Promise((r) => setTimeout(r, 30));
  resumeSocket(sock, unread);
  let got = '';
  sock.on('data', (d) => { got += d; });
  await new Promise((r) => setTimeout(r, 50));
  t.is(got, 'abcdef');
  client.destroy(); sock.destroy(); srv.close();
});

test('errors table, TOO_BIG, UNSUPPORTED, CLOSED', async (t) => {
  t.truthy(FDPASS_ERRORS.FDP_FDPASS_CTRUNC);
  for (const c of ['UNSUPPORTED', 'CTRUNC', 'EMFILE', 'TOOMANYREFS', 'PEER_GONE', 'TOO_BIG', 'QUEUE_FULL', 'CLOSED', 'SYSCALL']) t.true(`FDP_FDPASS_${c}` in FDPASS_ERRORS);
  _setPlatformForTest({ platform: 'darwin', arch: 'arm64' });
  const e = t.throws(() => assertSupported(), { instanceOf: FdpassError });
  t.is(e?.code, 'FDP_FDPASS_UNSUPPORTED');
  t.is(e?.source, 'fdpass');
  _setPlatformForTest(undefined);
  t.notThrows(() => assertSupported());
  const { a, b } = channelPair();
  const A = new Channel(a), B = new Channel(b);
  t.is(t.throws<FdpassError>(() => A.send({ fds: [], bytes: Buffer.alloc(HANDOFF_MAX_BYTES + 1), meta: null }))?.code, 'FDP_FDPASS_TOO_BIG');
  t.is(t.throws<FdpassError>(() => A.send({ fds: [0, 1, 2, 0, 1], bytes: Buffer.alloc(0), meta: null }))?.code, 'FDP_FDPASS_TOO_BIG');
  const bClosed = once(B, 'close');
  A.close();
  const [err] = (await bClosed) as [FdpassError];
  t.is(err.code, 'FDP_FDPASS_PEER_GONE');
  const r = await new Promise<FdpassError>((res) => A.send({ fds: [], bytes: Buffer.from('x'), meta: 1 }, { onReturn: (_h, e2) => res(e2) }));
  t.is(r.code, 'FDP_FDPASS_CLOSED');
});
