// The acceptor's placement table: stickiness while a key has connections, bounded load for new
// keys, rebalancing and slot changes.
import test from 'ava';
import { Placement, rankSlots, rendezvousSlot } from '../../routing';

test('a new key goes to its rendezvous slot; its entry lives while it has connections', (t) => {
  const p = new Placement([0, 1, 2, 3]);
  const s = p.place('room-1');
  t.is(s, rendezvousSlot('room-1', [0, 1, 2, 3]));
  t.is(p.slotOf('room-1'), undefined, 'place() alone records nothing');
  p.opened('room-1', s); p.opened('room-1', s);
  t.is(p.slotOf('room-1'), s);
  t.is(p.keyCount('room-1'), 2);
  t.is(p.load(s), 2);
  t.is(p.total(), 2);
  p.closed('room-1', s);
  t.is(p.place('room-1'), s);
  p.closed('room-1', s);
  t.is(p.slotOf('room-1'), undefined);
  t.is(p.keyCount('room-1'), 0);
  t.is(p.total(), 0);
});

test('the entry wins over the hash (sticky after a move)', (t) => {
  const p = new Placement([0, 1]);
  const home = p.place('k');
  p.opened('k', home); p.opened('k', home); p.opened('k', home);
  const other = home === 0 ? 1 : 0;
  p.move('k', other);
  t.is(p.place('k'), other);
  t.is(p.load(home), 0);
  t.is(p.load(other), 3);
  t.deepEqual(p.keysOn(other), ['k']);
  t.deepEqual(p.topKeys(5), [{ key: 'k', slot: other, connections: 3 }]);
  p.move('unknown', home);   // no-op
  t.is(p.slotOf('unknown'), undefined);
});

test('keyless connections go to the least-loaded slot', (t) => {
  const p = new Placement([0, 1, 2]);
  for (let i = 0; i < 30; i++) p.opened(null, p.place(null));
  t.deepEqual([p.load(0), p.load(1), p.load(2)], [10, 10, 10]);
  p.closed(null, 1);
  t.is(p.place(null), 1);
});

test('bounded load: no slot above (1+ε)·average + 1 while placing new keys, even with a hot slot', (t) => {
  for (const eps of [0.1, 0.25, 1]) {
    const slots = [0, 1, 2, 3, 4, 5, 6, 7];
    const p = new Placement(slots, { epsilon: eps });
    // Keys that all hash to slot 0 first: without the bound they would all land there.
    const hot: string[] = [];
    for (let i = 0; hot.length < 2000; i++) if (rendezvousSlot(`h${i}`, slots) === 0) hot.push(`h${i}`);
    for (const [i, k] of hot.entries()) {
      const s = p.place(k);
      p.opened(k, s);
      const avg = (i + 1) / slots.length;
      for (const x of slots) t.true(p.load(x) <= (1 + eps) * avg + 1, `eps=${eps} slot ${x} load ${p.load(x)} avg ${avg}`);
      t.true(slots.includes(s));
    }
  }
});

test('bounded load picks the next slot in the key\'s own HRW order', (t) => {
  const slots = [0, 1, 2, 3];
  const p = new Placement(slots, { epsilon: 0 });
  for (let i = 0; i < 4; i++) p.opened(null, i);   // total 4, each 1
  const k = 'some-key';
  const rank = rankSlots(k, slots);
  p.opened(null, rank[0]);                           // top slot now above the bound ceil(6/4)=2? load 2 → full
  t.is(p.place(k), rank[1]);
});

test('setSlots drops entries on removed slots; forgetSlot keeps the slot', (t) => {
  const p = new Placement([0, 1, 2]);
  const keys = Array.from({ length: 300 }, (_, i) => `k${i}`);
  for (const k of keys) p.opened(k, p.place(k));
  const on1 = p.keysOn(1);
  t.true(on1.length > 0);
  p.setSlots([0, 2, 3]);
  for (const k of on1) t.is(p.slotOf(k), undefined);
  t.is(p.load(1), 0);
  t.is(p.total(), p.load(0) + p.load(2));
  for (const k of keys) if (!on1.includes(k)) t.not(p.slotOf(k), undefined);
  const on0 = p.keysOn(0);
  p.forgetSlot(0);
  for (const k of on0) t.is(p.slotOf(k), undefined);
  t.is(p.load(0), 0);
  t.is(p.total(), p.load(2));
  t.true([0, 2, 3].includes(p.place('new')));
  t.throws(() => p.setSlots([1, 1]), { instanceOf: RangeError });
});

test('no slots → -1', (t) => {
  t.is(new Placement([]).place('k'), -1);
  t.is(new Placement([]).place(null), -1);
});

test('keyless closes count down keyless connections only, never a key\'s', (t) => {
  const p = new Placement([0, 1]);
  p.opened('k', 0); p.opened('k', 0); p.opened(null, 0);
  t.is(p.keylessOn(0), 1);
  p.closed(null, 0); p.closed(null, 0);   // the second is not counted here: changes nothing
  t.is(p.load(0), 2);
  t.is(p.keyCount('k'), 2);
  t.is(p.total(), 2);
  p.closed(null, 1);
  t.deepEqual([p.load(0), p.load(1), p.total()], [2, 0, 2]);
});

test('a reload: keyless connections held away stay in the total, land on a slot, or close away', (t) => {
  const old = new Placement([0, 1]);
  old.opened('k', 0); old.opened(null, 0); old.opened(null, 0); old.opened(null, 1);
  const p = new Placement([0, 1, 2]);
  for (const e of old.entries()) for (let i = 0; i < e.connections; i++) p.opened(e.key, p.place(e.key));
  for (const s of [0, 1]) p.holdAway(`1:${s}`, old.keylessOn(s));
  t.is(p.total(), 4, 'every connection still counted');
  t.is(p.load(0) + p.load(1) + p.load(2), 1, 'on slots: the key only');
  p.landed('1:0', 2);
  p.closedAway('1:0');
  t.is(p.total(), 3);
  t.is(p.load(2) - (p.slotOf('k') === 2 ? 1 : 0), 1);
  t.is(p.keylessOn(2), 1);
  p.closedAway('1:0');                     // nothing more held there: changes nothing
  t.is(p.total(), 3);
  p.dropAway('1:1');                       // that worker is gone, with what it held
  t.is(p.total(), 2);
  p.landed('1:1', 1);                      // landed after all: counted anew
  t.is(p.total(), 3);
  t.is(p.keylessOn(1), 1);
  p.landed(1, 0);                          // a drain: from one slot to another
  t.deepEqual([p.keylessOn(0), p.keylessOn(1), p.total()], [1, 0, 3]);
  t.deepEqual(p.away(), []);
  p.landed(0, '2:0');                      // to a worker of another generation: held away there
  t.deepEqual(p.away(), [['2:0', 1]]);
  t.is(p.total(), 3);
});
