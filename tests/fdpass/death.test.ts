import test from 'ava';
import * as net from 'node:net';
import { once } from 'node:events';
import { releaseSocket, resumeSocket, type FdpassError, type Handoff } from '../../fdpass';
import { fdCount, fdList, kill, spawnPeer } from './helpers';

test.serial('receiver SIGKILLed with handoffs in flight: each unacked one comes back, connections still usable', async (t) => {
  const base = fdCount();
  const p = await spawnPeer('late'); // never opens its channel: nothing is taken or acked
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as net.AddressInfo).port;
  const N = 20;
  const clients: net.Socket[] = [];
  const returned: Promise<[Handoff, FdpassError, net.Socket]>[] = [];
  for (let i = 0; i < N; i++) {
    const c = net.connect(port, '127.0.0.1');
    clients.push(c);
    const [s] = (await once(srv, 'connection')) as [net.Socket];
    c.write(`hello ${i}`);
    await once(s, 'readable');
    const { fd, unread } = releaseSocket(s);
    returned.push(new Promise((res) => p.ch.send({ fds: [fd], bytes: unread, meta: { i } }, {
      onAck: () => t.fail('nothing may be acked'),
      onReturn: (h, err) => res([h, err, s]),
    })));
  }
  await new Promise((r) => setImmediate(r)); // flushed into the kernel queue
  t.is(p.ch.pending, N);
  p.child.kill('SIGKILL');
  const back = await Promise.all(returned);
  t.is(p.ch.pending, 0);
  for (const [i, [h, err, s]] of back.entries()) {
    t.is(err.code, 'FDP_FDPASS_PEER_GONE');
    t.deepEqual(h.meta, { i });
    t.is(h.bytes.toString(), `hello ${i}`);
    // Roll back: the sender still owns the connection.
    resumeSocket(s, h.bytes);
    s.once('data', (d) => s.write(`echo:${d}`));
  }
  for (const [i, c] of clients.entries()) {
    const got = once(c, 'data');
    const [d] = (await got) as [Buffer];
    t.is(d.toString(), `echo:hello ${i}`);
  }
  for (const c of clients) c.destroy();
  srv.close();
  await kill(p);
  await new Promise((r) => setTimeout(r, 100));
  t.is(fdCount(), base, fdList().join(' '));
});

test.serial('receiver that took some handoffs then died: acked ones stay acked, the rest come back', async (t) => {
  const p = await spawnPeer('tcp');
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const c = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1');
  const [s] = (await once(srv, 'connection')) as [net.Socket];
  const { fd } = releaseSocket(s);
  await new Promise<void>((r) => p.ch.send({ fds: [fd], bytes: Buffer.alloc(0), meta: { cmd: 'tcp' } }, { onAck: r }));
  s.destroy();
  p.child.kill('SIGSTOP'); // frozen: handoffs now stay in its queue
  const rets: Promise<string>[] = [];
  for (let i = 0; i < 5; i++) rets.push(new Promise((res) => p.ch.send({ fds: [0], bytes: Buffer.from('x'), meta: { i } }, { onReturn: (_h, e) => res(e.code) })));
  await new Promise((r) => setImmediate(r));
  p.child.kill('SIGKILL');
  t.deepEqual(await Promise.all(rets), Array(5).fill('FDP_FDPASS_PEER_GONE'));
  c.destroy(); srv.close();
  await kill(p);
});
