// The retire pass's scheduler (migrate.ts spread): a target worker that stops answering holds
// only its share of the migration window while the other targets have work; they go on.
import test from 'ava';
import { spread } from '../../proxy/migrate';

type Item = { id: number; to: number | null };
const items = (perTarget: number, targets: number[]): Item[] => {
  const l: Item[] = [];
  for (let i = 0; i < perTarget; i++) for (const to of targets) l.push({ id: l.length, to });
  return l;
};

test('a stalled target holds only its share of the window; the others finish meanwhile', async t => {
  const list = items(10, [0, 1, 2]);
  const stalled: (() => void)[] = [];
  const started: Item[] = [];
  let inFlight = 0, maxInFlight = 0;
  let othersDone = 0, finished = false, zeroWhenOthersDone = -1;
  let allOthers!: () => void;
  const othersFinished = new Promise<void>(r => { allOthers = r; });
  const done = spread(list, x => x.to, 6, async x => {
    started.push(x);
    inFlight++; maxInFlight = Math.max(maxInFlight, inFlight);
    if (x.to === 0) await new Promise<void>(r => stalled.push(r));
    else await new Promise<void>(r => setImmediate(r));
    inFlight--;
    if (x.to !== 0 && ++othersDone === 20) { zeroWhenOthersDone = started.filter(y => y.to === 0).length; allOthers(); }
  }).then(() => { finished = true; });
  await othersFinished;
  t.false(finished);
  // Target 0 never answered: while the others had work it got its share — 6 / 3 targets = 2, then
  // 6 / 2 = 3 once one of them had nothing left — never the whole window; once it is the only one
  // left, the whole window is its.
  t.true(zeroWhenOthersDone >= 2 && zeroWhenOthersDone <= 3, `${zeroWhenOthersDone} on the stalled target`);
  t.is(othersDone, 20);
  await new Promise<void>(r => setImmediate(r));   // the last one's slot is given out
  t.is(started.filter(x => x.to === 0).length, 6);
  t.true(maxInFlight <= 6);
  // It answers again: the rest of its queue goes, in order, each item once.
  for (let i = 0; i < 20 && started.length < 30; i++) {
    stalled.splice(0).forEach(r => r());
    await new Promise<void>(r => setImmediate(r));
  }
  stalled.splice(0).forEach(r => r());
  await done;
  t.is(started.length, 30);
  t.deepEqual(new Set(started.map(x => x.id)).size, 30);
  t.deepEqual(started.filter(x => x.to === 0).map(x => x.id), list.filter(x => x.to === 0).map(x => x.id));
});

test('no target is skipped, one target gets the whole window, and the window is never exceeded', async t => {
  const one = items(20, [5]);
  let inFlight = 0, max = 0, n = 0;
  await spread(one, x => x.to, 8, async () => {
    inFlight++; max = Math.max(max, inFlight); n++;
    await new Promise<void>(r => setImmediate(r));
    inFlight--;
  });
  t.is(n, 20);
  t.is(max, 8);
  // Items with no target (null) are left where they are; an empty list resolves at once.
  const mixed: Item[] = [{ id: 0, to: null }, { id: 1, to: 3 }, { id: 2, to: null }];
  const seen: number[] = [];
  await spread(mixed, x => x.to, 8, async x => { seen.push(x.id); });
  t.deepEqual(seen, [1]);
  await spread([] as Item[], x => x.to, 8, async () => { t.fail('called'); });
  // A rejected migration frees its slot like a finished one.
  let calls = 0;
  await spread(items(3, [1, 2]), x => x.to, 2, async () => { calls++; throw new Error('rolled back'); });
  t.is(calls, 6);
});

// A reload's pass: the window widens only while migrations complete slower than a floor.
async function run(count: number, adapt: { start: number; max: number; perSec: number }, each: () => Promise<void | boolean>) {
  let inFlight = 0, max = 0, n = 0;
  const window = await spread(items(count / 2, [0, 1]), x => x.to, 99, async () => {
    inFlight++; max = Math.max(max, inFlight); n++;
    const ok = await each();
    inFlight--;
    return ok;
  }, adapt);
  return { max, n, window };
}

test('adaptive window: slow handoffs (a round trip bound) widen it up to its bound, never past', async t => {
  // 10 ms each: 4 in flight give at most 400/s, under the 1,000/s floor.
  const r = await run(512, { start: 4, max: 12, perSec: 1000 }, () => new Promise<void>(res => setTimeout(res, 10)));
  t.is(r.n, 512);
  t.true(r.max > 4, `widened: at most ${r.max} in flight`);
  t.true(r.max <= 12, `bounded: ${r.max} in flight`);
  t.true(r.window > 4);
});

test('adaptive window: fast handoffs keep it at its start (fewer stopped at once)', async t => {
  // A turn of the event loop each: far above a 100/s floor.
  const r = await run(512, { start: 4, max: 12, perSec: 100 }, () => new Promise<void>(res => setImmediate(res)));
  t.is(r.n, 512);
  t.is(r.max, 4);
  t.is(r.window, 4);
});

test('adaptive window: slow failures (a stuck target) do not widen it', async t => {
  // As slow as the first test's, but every one fails (timed out, not acked).
  const r = await run(256, { start: 4, max: 12, perSec: 1000 }, () => new Promise<boolean>(res => setTimeout(() => res(false), 10)));
  t.is(r.n, 256);
  t.is(r.max, 4);
  t.is(r.window, 4);
});
