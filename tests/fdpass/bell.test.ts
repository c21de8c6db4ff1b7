import test from 'ava';
import { once } from 'node:events';
import { channelPair, Channel, type FdpassError, type Handoff } from '../../fdpass';
import { _rawBellAvailable, _setSocketBellForTest } from '../../fdpass/bell';
import { _setRingMarksForTest } from '../../fdpass/channel';
import { _usesBindingLoad } from '../../fdpass/native';
import { fdCount } from './helpers';

// The fast paths fall back silently on another Node or ffi-rs layout: make that visible here.
test('this Node uses the fast paths: the bell on the raw libuv handle, ffi-rs binding load', (t) => {
  t.true(_rawBellAvailable(), 'pipe_wrap/stream_wrap internals missing: bell runs through net.Socket');
  t.true(_usesBindingLoad(), 'ffi-rs binding not identified: calls go through the JS wrapper');
});

// Lone handoffs (each acked before the next: the "send now" path, one RING each) then a burst
// (batched, RING every 8 messages) from A to B, and the same back; all in order, all acked.
async function exchange(t: import('ava').ExecutionContext, A: Channel, B: Channel, tag: string): Promise<void> {
  const got: number[] = [];
  const on = (h: Handoff): void => { const m = h.meta as { tag: string; i: number }; if (m.tag === tag) got.push(m.i); };
  B.on('handoff', on);
  let i = 0;
  for (; i < 20; i++) await new Promise<void>((res, rej) => A.send({ fds: [], bytes: Buffer.from(`${i}`), meta: { tag, i } }, { onAck: res, onReturn: (_h, e) => rej(e) }));
  const acks: Promise<void>[] = [];
  for (; i < 520; i++) acks.push(new Promise<void>((res, rej) => A.send({ fds: [], bytes: Buffer.alloc(100), meta: { tag, i } }, { onAck: res, onReturn: (_h, e) => rej(e) })));
  await Promise.all(acks);
  B.off('handoff', on);
  t.deepEqual(got, Array.from({ length: 520 }, (_, k) => k), tag);
  t.is(A.pending, 0);
}

test.serial('net.Socket bell and a sender that marks no RING (older fdpass) interoperate with the current channel', async (t) => {
  const base = fdCount();
  const { a, b } = channelPair();
  _setSocketBellForTest(true);
  _setRingMarksForTest(false);
  let A: Channel;
  try { A = new Channel(a, { name: 'old' }); } finally { _setSocketBellForTest(false); }
  const B = new Channel(b, { name: 'new' });
  try {
    await exchange(t, A, B, 'old→new'); // B drains to EAGAIN: nothing is marked
    _setRingMarksForTest(true);
    await exchange(t, B, A, 'new→socket-bell');
    await exchange(t, A, B, 'marked→new');
  } finally { _setRingMarksForTest(true); }
  const closed = once(B, 'close');
  A.close();
  t.is(((await closed) as [FdpassError])[0].code, 'FDP_FDPASS_PEER_GONE');
  await new Promise((r) => setTimeout(r, 50));
  t.is(fdCount(), base);
});
