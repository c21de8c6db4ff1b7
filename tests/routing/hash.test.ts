// Pinned hashing: golden fixtures (an accidental change would re-shuffle every user) and the
// distribution properties that make rendezvous hashing worth having.
import fs from 'node:fs';
import path from 'node:path';
import test from 'ava';
import type { Server } from '../../conf';
import { hashKey, pickServer, rankSlots, rendezvousSlot } from '../../routing';

const fixtures = path.resolve(__dirname, '../../../tests/routing/fixtures');
const load = (f: string) => JSON.parse(fs.readFileSync(path.join(fixtures, f), 'utf8')).cases;

function server(id: string, weight = 1): Server {
  if (id.startsWith('unix:')) return { address: { kind: 'unix', path: id.slice(5), text: id }, weight, id };
  const c = id.lastIndexOf(':');
  return { address: { kind: 'tcp', host: id.slice(0, c), port: Number(id.slice(c + 1)), text: id }, weight, id };
}

test('hashKey is MurmurHash3 x86_32, seed 0 (published vectors)', (t) => {
  t.is(hashKey(''), 0);
  t.is(hashKey('hello'), 0x248bfa47);
  t.is(hashKey('The quick brown fox jumps over the lazy dog'), 0x2e4ff723);
});

test('golden: key → hash', (t) => {
  for (const c of load('key-hash.json')) t.is(hashKey(c.key), c.hash, c.key);
});

test('golden: key → worker slot and HRW order', (t) => {
  const cases = load('key-slot.json');
  t.true(cases.length >= 50);
  for (const c of cases) {
    t.is(rendezvousSlot(c.key, c.slots), c.slot, `${c.key} over ${c.slots}`);
    t.deepEqual(rankSlots(c.key, c.slots), c.rank, `${c.key} over ${c.slots}`);
  }
});

test('golden: key → backend server', (t) => {
  const cases = load('key-server.json');
  t.true(cases.length >= 30);
  for (const c of cases) {
    const servers = c.servers.map(([id, w]: [string, number]) => server(id, w));
    t.is(pickServer(c.key, servers)?.id, c.server, c.key);
  }
});

const KEYS = Array.from({ length: 10_000 }, (_, i) => `key-${i}`);

test('10,000 keys over 2..16 slots: every slot within ±10% of even', (t) => {
  for (let n = 2; n <= 16; n++) {
    const slots = Array.from({ length: n }, (_, i) => i);
    const counts = new Array(n).fill(0);
    for (const k of KEYS) counts[rendezvousSlot(k, slots)]++;
    const even = KEYS.length / n;
    for (let s = 0; s < n; s++) t.true(Math.abs(counts[s] - even) <= 0.1 * even, `n=${n} slot ${s}: ${counts[s]} vs ${even}`);
  }
});

test('rankSlots starts with rendezvousSlot and is a permutation; order does not depend on input order', (t) => {
  for (const k of KEYS.slice(0, 200)) {
    const r = rankSlots(k, [3, 1, 4, 0, 2]);
    t.is(r[0], rendezvousSlot(k, [0, 1, 2, 3, 4]));
    t.deepEqual([...r].sort(), [0, 1, 2, 3, 4]);
    t.deepEqual(rankSlots(k, [0, 1, 2, 3, 4]), r);
  }
});

test('removing a slot or a server moves only its own keys', (t) => {
  const slots = [0, 1, 2, 3, 4, 5];
  const fewer = [0, 1, 2, 4, 5];
  const servers = ['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80', '10.0.0.4:80'].map((id) => server(id));
  const down = servers[2];
  let movedSlots = 0, movedServers = 0;
  for (const k of KEYS) {
    const before = rendezvousSlot(k, slots), after = rendezvousSlot(k, fewer);
    if (before !== 3) t.is(after, before); else movedSlots++;
    const sb = pickServer(k, servers)!, sa = pickServer(k, servers, (s) => s !== down)!;
    if (sb !== down) t.is(sa, sb); else { movedServers++; t.not(sa, down); }
  }
  t.true(movedSlots > 0 && movedServers > 0);
});

test('server weights are respected (within ±10% of the weight share)', (t) => {
  const servers = [server('a:1', 1), server('b:1', 2), server('c:1', 3), server('d:1', 0.5)];
  const total = 6.5;
  const counts = new Map<string, number>();
  for (const k of KEYS) { const s = pickServer(k, servers)!.id; counts.set(s, (counts.get(s) ?? 0) + 1); }
  for (const s of servers) {
    const expected = (KEYS.length * s.weight) / total;
    t.true(Math.abs((counts.get(s.id) ?? 0) - expected) <= 0.1 * expected, `${s.id}: ${counts.get(s.id)} vs ${expected}`);
  }
});

test('pickServer: no healthy server → null; order of the list does not matter', (t) => {
  const servers = [server('a:1'), server('b:1'), server('c:1')];
  t.is(pickServer('k', servers, () => false), null);
  t.is(pickServer('k', []), null);
  for (const k of KEYS.slice(0, 500)) t.is(pickServer(k, servers)!.id, pickServer(k, [...servers].reverse())!.id);
});
