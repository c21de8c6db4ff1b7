import test from 'ava';
import * as fs from 'node:fs';
import { channelPair, Channel, closeFd, type FdpassError } from '../../fdpass';
import { kill, spawnPeer } from './helpers';

const ret = (ch: Channel, fds: number[], meta: unknown): Promise<string> =>
  new Promise((res) => ch.send({ fds, bytes: Buffer.from('b'), meta }, { onAck: () => res('acked'), onReturn: (_h, e) => res(e.code) }));

test('CTRUNC: receiver control buffer too small → returned to sender, error on receiver', async (t) => {
  const p = await spawnPeer('ctrunc'); // recvFdSlots: 1
  const fd = fs.openSync('/dev/null', 'r');
  t.is(await ret(p.ch, [fd, fd, fd], { cmd: 'inspect' }), 'FDP_FDPASS_CTRUNC'); // 1 slot = 8 aligned bytes = 2 fds
  t.is((await p.waitFor((l) => l.event === 'error')).code, 'FDP_FDPASS_CTRUNC');
  t.is(await ret(p.ch, [fd], { cmd: 'inspect' }), 'acked'); // channel still works
  fs.closeSync(fd);
  p.ch.close();
  await kill(p);
});

test('EMFILE: receiver out of fds → returned to sender; works again once fds are freed', async (t) => {
  const p = await spawnPeer('emfile', { wrap: ['sh', '-c', 'ulimit -n 64; exec "$0" "$@"'] });
  const fd = fs.openSync('/dev/null', 'r');
  t.is(await ret(p.ch, [fd], { cmd: 'inspect' }), 'FDP_FDPASS_EMFILE');
  t.is((await p.waitFor((l) => l.event === 'error')).code, 'FDP_FDPASS_EMFILE');
  p.child.stdin!.write('free\n');
  await p.waitFor((l) => l.event === 'freed');
  t.is(await ret(p.ch, [fd], { cmd: 'inspect' }), 'acked');
  fs.closeSync(fd);
  p.ch.close();
  await kill(p);
});

test('EAGAIN is back-pressure: a receiver that does not drain, then drains, gets everything in order', async (t) => {
  const p = await spawnPeer('late');
  const fd = fs.openSync('/dev/null', 'r');
  const total = 3000;
  const done = new Promise<number>((res) => {
    let acked = 0;
    for (let i = 0; i < total; i++) {
      p.ch.send({ fds: [fd], bytes: Buffer.alloc(200, i & 255), meta: { cmd: 'seq', s: 1, i, total } }, {
        onAck: () => { if (++acked === total) res(acked); }, onReturn: () => t.fail('returned'),
      });
    }
  });
  await new Promise((r) => setTimeout(r, 200));
  t.true(p.ch.stats.eagain > 0, 'sender saw EAGAIN');
  t.true(p.ch.pending === total);
  p.child.stdin!.write('start\n');
  t.is(await done, total);
  const l = await p.waitFor((x) => x.event === 'done');
  t.deepEqual([l.n, l.orderOk], [total, true]);
  fs.closeSync(fd);
  p.ch.close();
  await kill(p);
});

test('QUEUE_FULL: bounded send queue returns the overflow', async (t) => {
  const p = await spawnPeer('late', { maxQueue: 10 });
  const fd = fs.openSync('/dev/null', 'r');
  const codes: Promise<string>[] = [];
  // fill the kernel queue first, then the bounded user queue
  for (let i = 0; i < 400; i++) codes.push(ret(p.ch, [fd], { cmd: 'seq', s: 1, i, total: -1 }));
  await new Promise((r) => setTimeout(r, 100));
  for (let i = 0; i < 30; i++) codes.push(ret(p.ch, [fd], { cmd: 'x' }));
  p.child.kill('SIGKILL');
  const all = await Promise.all(codes);
  t.true(all.filter((c) => c === 'FDP_FDPASS_QUEUE_FULL').length >= 20);
  t.true(all.every((c) => c === 'FDP_FDPASS_QUEUE_FULL' || c === 'FDP_FDPASS_PEER_GONE'));
  fs.closeSync(fd);
  await kill(p);
});

test('PEER_GONE: the receiver exits → close event, later sends are returned', async (t) => {
  const p = await spawnPeer('inspect');
  const closed = new Promise<FdpassError | undefined>((r) => p.ch.once('close', r));
  p.child.kill('SIGTERM');
  t.is((await closed)?.code, 'FDP_FDPASS_PEER_GONE');
  t.is(await ret(p.ch, [], { cmd: 'x' }), 'FDP_FDPASS_CLOSED');
  await kill(p);
});

test('PEER_GONE from sendmsg (EPIPE/ECONNREFUSED) when the data socket peer is closed', async (t) => {
  const { a, b } = channelPair();
  const A = new Channel(a);
  A.on('error', () => {});
  // Close only B's data end (raw), keep its bell open: the next sendmsg fails.
  closeFd(b.data);
  const code = await ret(A, [], { x: 1 });
  t.is(code, 'FDP_FDPASS_PEER_GONE');
  closeFd(b.bell);
});

test('TOOMANYREFS: an unprivileged sender with a low fd limit and many fds in flight', async (t) => {
  // Root (CAP_SYS_RESOURCE) is exempt from the in-flight limit: run the sender as nobody, no caps.
  const sender = await spawnPeer('inspect', { wrap: ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', 'sh', '-c', 'ulimit -n 32; exec "$0" "$@"'] });
  const recv = await spawnPeer('late');
  const { a, b } = channelPair();
  sender.ch.send({ fds: [a.data, a.bell], bytes: Buffer.alloc(0), meta: { cmd: 'peer', name: 'r' } });
  recv.ch.send({ fds: [b.data, b.bell], bytes: Buffer.alloc(0), meta: { cmd: 'peer', name: 's' } });
  await sender.waitFor((l) => l.event === 'peer');
  // 200 handoffs of one fd each to a receiver whose channel is not even open: > 32 in flight.
  sender.ch.send({ fds: [], bytes: Buffer.alloc(0), meta: { cmd: 'burst', name: 'r', s: 1, total: 200 } });
  const l = await sender.waitFor((x) => x.event === 'returned');
  t.is(l.code, 'FDP_FDPASS_TOOMANYREFS');
  sender.ch.close(); recv.ch.close();
  await kill(sender); await kill(recv);
});
