import test from 'ava';
import * as fs from 'node:fs';
import { channelPair, closeFd, type ChannelFds } from '../../fdpass';
import { cpuMs, fdCount, kill, spawnPeer, type Peer } from './helpers';

// The supervisor hands each side of a fresh pair to a child through the child's channel, and
// closes its copies once acked.
function connect(x: Peer, xName: string, y: Peer, yName: string): Promise<void> {
  const { a, b } = channelPair();
  const give = (p: Peer, side: ChannelFds, name: string): Promise<void> => new Promise((res, rej) =>
    p.ch.send({ fds: [side.data, side.bell], bytes: Buffer.alloc(0), meta: { cmd: 'peer', name } }, {
      onAck: () => { closeFd(side.data); closeFd(side.bell); res(); },
      onReturn: (_h, e) => { closeFd(side.data); closeFd(side.bell); rej(e); },
    }));
  return Promise.all([give(x, a, yName), give(y, b, xName)]).then(() => undefined);
}

test.serial('10,000 handoffs each from two senders: all arrive in per-sender order; fd counts back to baseline', async (t) => {
  const base = fdCount();
  const r = await spawnPeer('collect');
  const s2 = await spawnPeer('collect');
  await connect(s2, 's2', r, 'r');
  await s2.waitFor((l) => l.event === 'peer');
  await r.waitFor((l) => l.event === 'peer');
  const rBase = fdCount(r.pid), s2Base = fdCount(s2.pid);
  const total = 10000;
  const fd = fs.openSync('/dev/null', 'r');
  let acked = 0;
  const parentAcked = new Promise<void>((res) => {
    for (let i = 0; i < total; i++) {
      r.ch.send({ fds: [fd], bytes: Buffer.from([i & 255]), meta: { cmd: 'seq', s: 1, i, total } }, {
        onAck: () => { if (++acked === total) res(); }, onReturn: (_h, e) => t.fail(e.message),
      });
    }
  });
  s2.ch.send({ fds: [], bytes: Buffer.alloc(0), meta: { cmd: 'burst', name: 'r', s: 2, total } });
  const [d1, d2] = await Promise.all([
    r.waitFor((l) => l.event === 'done' && l.s === 1, 30000),
    r.waitFor((l) => l.event === 'done' && l.s === 2, 30000),
    parentAcked,
    s2.waitFor((l) => l.event === 'burstAcked', 30000),
  ]);
  t.deepEqual([d1.n, d1.orderOk, d2.n, d2.orderOk], [total, true, total, true]);
  t.false(r.lines.some((l) => l.event === 'returned' || l.event === 'error'));
  fs.closeSync(fd);
  t.is(fdCount(r.pid), rBase);
  t.is(fdCount(s2.pid), s2Base);
  r.ch.close(); s2.ch.close();
  await kill(r); await kill(s2);
  t.is(fdCount(), base);
});

test.serial('supervisor → child → child channels; a child restarted in its slot is reconnected alone', async (t) => {
  const c1 = await spawnPeer('relay');
  let c2 = await spawnPeer('relay');
  await connect(c1, 'c1', c2, 'c2');
  await c1.waitFor((l) => l.event === 'peer' && l.name === 'c2');
  c1.ch.send({ fds: [], bytes: Buffer.alloc(0), meta: { cmd: 'sendTo', name: 'c2', n: 3 } });
  const got = await c2.waitFor((l) => l.event === 'fromPeer' && l.i === 2);
  t.is(got.pid, c1.pid);
  await c1.waitFor((l) => l.event === 'acked' && l.i === 2);

  // Restart c2 in its slot: c1 sees its peer channel close, then gets a new one.
  await kill(c2);
  const pc = await c1.waitFor((l) => l.event === 'peerClose' && l.name === 'c2');
  t.is(pc.code, 'FDP_FDPASS_PEER_GONE');
  c2 = await spawnPeer('relay');
  await connect(c1, 'c1', c2, 'c2');
  c1.ch.send({ fds: [], bytes: Buffer.alloc(0), meta: { cmd: 'sendTo', name: 'c2', n: 1 } });
  const got2 = await c2.waitFor((l) => l.event === 'fromPeer' && l.i === 0);
  t.is(got2.pid, c1.pid);
  t.true(c1.child.exitCode === null, 'c1 was not restarted');
  c1.ch.close(); c2.ch.close();
  await kill(c1); await kill(c2);
});

test.serial('idle: a receiver with an open channel uses < 1% CPU over 3 s', async (t) => {
  const r = await spawnPeer('collect');
  await new Promise<void>((res) => r.ch.send({ fds: [], bytes: Buffer.alloc(0), meta: { cmd: 'x' } }, { onAck: res }));
  await new Promise((res) => setTimeout(res, 300)); // let start-up JIT/GC settle
  const c0 = cpuMs(r.pid), p0 = process.cpuUsage();
  await new Promise((res) => setTimeout(res, 3000));
  const used = cpuMs(r.pid) - c0;
  const p = process.cpuUsage(p0);
  t.log(`receiver ${used} ms CPU in 3 s; this process ${((p.user + p.system) / 1000).toFixed(1)} ms`);
  t.true(used < 30, `receiver used ${used} ms`);
  r.ch.close();
  await kill(r);
});
