// migrate: moving one live connection out of this worker to another — a WebSocket tunnel or relay
// (two-phase and byte-exact: our copies stay until the target acks, and the connection resumes
// here if the handoff comes back or no ack arrives in time) or an idle keep-alive HTTP
// connection. worker.ts decides what goes where (reload plans, moves, drains) and keeps the books;
// it gives this file what it needs once, with initMigrate().
import * as net from 'node:net';
import * as v8 from 'node:v8';
import { releaseSocket, resumeSocket, type Channel, type Handoff } from '../fdpass';
import type { Counters } from './counters';
import type { Endpoint } from './endpoint';
import type { HttpConn } from './http';
import type { Log } from './log';
import type { IdleHttpMeta, RelayMeta, TunnelMeta } from './messages';
import { Relay } from './relay';
import type { Tunnel } from './tunnel';

export interface MigrateContext {
  counters: Counters;
  log: Log;
  /** This worker's slot and generation, now. */
  self(): { from: number; gen: number };
  /** The acceptor that placed `c` (closes are reported to it, wherever `c` lives). */
  acceptorOf(c: Tunnel | Relay | HttpConn): number | undefined;
  /** `c` left this worker: off the books, no close reported (its new worker reports it). */
  gone(c: Tunnel | Relay | HttpConn): void;
  /** An idle HTTP connection whose handoff came back: serve it here again. */
  back(c: HttpConn): void;
}
let ctx: MigrateContext;
export function initMigrate(c: MigrateContext): void { ctx = c; }

/** How long a migration may wait for the target's ack before rolling back. The target refuses a
 *  handoff whose deadline has passed (it closes its copies without touching the connection), so a
 *  slow target and our rollback can never both own the tunnel. */
export const MIGRATE_DEADLINE_MS = 2000;
/** Tunnels migrating at once. Each one pauses only from its own stop() to its ack, so a small
 *  window keeps every pause short while the channel still batches several per sendmsg. Fixed
 *  (FDPROXY_MIGRATE_CONCURRENCY) for a move or a drain and, when set, for a reload's pass too. */
export const MIGRATE_CONCURRENCY = Number(process.env.FDPROXY_MIGRATE_CONCURRENCY) || 12;   // moves and drains: as measured before the reload's window adapted

/** A window that widens only while the migrations are slower than a floor (spread's `adapt`). */
export interface Adapt { start: number; max: number; perSec: number }
/**
 * A reload's pass: the smallest window that migrates at least FDPROXY_MIGRATE_RATE connections
 * per second (default 6,000), between 6 and 24. Why not one fixed window: every stall of a
 * receiver (descheduled on a busy machine, a collection) stretches the pause of each connection
 * it holds, so the pause p99 is about how many are in flight; and how many are needed for a rate
 * depends on the machine. Where the sender's CPU is the bottleneck (~120 µs per migration), 6 in
 * flight already give its whole rate and 12 only doubled the pauses caught in stalls (p99 12–14
 * ms vs 6–8 at the same ~7,500/s); where the handoff's round trip is (~1.8 ms, a slower host), 8
 * gave 4,000–4,900/s and 12 gave 5,300–5,600 at the same p99 (bench/RESULTS.md "continuity").
 */
export const MIGRATE_ADAPT: Adapt | undefined = Number(process.env.FDPROXY_MIGRATE_CONCURRENCY) > 0 ? undefined
  : { start: 6, max: 24, perSec: Number(process.env.FDPROXY_MIGRATE_RATE) || 6000 };
/** Completions per rate measurement of an adaptive window. */
const ADAPT_SPAN = 64;

export async function limited<T>(items: T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]);
  }));
}
const MIGRATE_ROLLBACK_MS = MIGRATE_DEADLINE_MS + 500;

/** Like limited(), for items that each go to a target worker: at most `n` in flight in all, and
 *  at most an even share of `n` per target. A target that stalls (descheduled on a busy machine,
 *  or in a scavenge) then holds only its share of stopped connections, while the other slots go
 *  on with the other targets; with one window for all targets, the slots whose handoffs went to
 *  the stalled one stay taken, the next ones picked often go there too, and within a few ms the
 *  whole window — every connection of it stopped — waits on that one process.
 *  With `adapt`, the window starts at adapt.start instead of `n` and, measured over every
 *  ADAPT_SPAN completions, widens by 2 (up to adapt.max) while fewer than adapt.perSec complete
 *  per second, and narrows by 1 (not below the start) while more do: a stall that slowed one
 *  span does not keep it wide. A span in which an item failed (`fn` resolved false: it timed
 *  out, its target did not ack) does not widen it — slowness a stuck target causes is not
 *  helped by putting more connections behind it. Resolves with the window at the end. */
export function spread<T>(items: T[], targetOf: (x: T) => number | null, n: number, fn: (x: T, to: number) => Promise<void | boolean>, adapt?: Adapt): Promise<number> {
  const queues = new Map<number, T[]>();
  for (const x of items) {
    const to = targetOf(x);
    if (to === null) continue;
    const q = queues.get(to);
    if (q) q.push(x); else queues.set(to, [x]);
  }
  if (queues.size === 0) return Promise.resolve(adapt ? adapt.start : n);
  const busy = new Map<number, number>();
  const next = new Map<number, number>();   // index of each queue's next item
  let inFlight = 0;
  let win = adapt ? adapt.start : n;
  let completed = 0, spanStart = performance.now(), spanFailed = false;
  const measure = (ok: boolean): void => {
    const a = adapt!;
    if (!ok) spanFailed = true;
    if (++completed % ADAPT_SPAN !== 0) return;
    const now = performance.now(), perSec = ADAPT_SPAN * 1000 / Math.max(now - spanStart, 0.001);
    spanStart = now;
    if (perSec < a.perSec) { if (!spanFailed) win = Math.min(a.max, win + 2); }
    else win = Math.max(a.start, win - 1);
    spanFailed = false;
  };
  return new Promise<number>(resolve => {
    const pump = (): void => {
      const n = win;
      while (inFlight < n) {
        // The share: the window over the targets that still have work or handoffs in flight (one
        // whose queue is done gives its share to the others).
        let live = 0;
        for (const [to, q] of queues) if ((next.get(to) ?? 0) < q.length || (busy.get(to) ?? 0) > 0) live++;
        const share = Math.max(1, Math.ceil(n / live));
        // The target with the fewest in flight that has work and room.
        let best = -1, bestBusy = Infinity;
        for (const [to, q] of queues) {
          const b = busy.get(to) ?? 0;
          if ((next.get(to) ?? 0) < q.length && b < share && b < bestBusy) { best = to; bestBusy = b; }
        }
        if (best < 0) break;
        const i = next.get(best) ?? 0;
        next.set(best, i + 1);
        busy.set(best, bestBusy + 1);
        inFlight++;
        const done = (ok: boolean): void => { if (adapt) measure(ok); busy.set(best, busy.get(best)! - 1); inFlight--; pump(); };
        fn(queues.get(best)![i], best).then(r => done(r !== false), () => done(false));
      }
      if (inFlight === 0) resolve(win);
    };
    pump();
  });
}


/** Move one live tunnel to `to`. Two-phase: our copies stay until the target acks; on return,
 *  or no ack in time, the tunnel resumes here (rollback). */
export function migrateTunnel(t: Tunnel | Relay, to: Channel, toSlot: number): Promise<boolean> {
  if (t instanceof Relay) return migrateRelay(t, to, toSlot);
  const t0 = process.hrtime.bigint();
  const stoppedAt = performance.timeOrigin + performance.now();
  // Stopped and flushed at once (the usual case): hand over in this same turn. A promise hop here
  // put the rest of the turn (other tunnels' reads; on a busy machine, a preemption) in the pause.
  const stopped = t.stop(1000);
  if (stopped === true) return handOver(t, to, toSlot, t0, stoppedAt);
  return stopped.then(flushed => {
    if (flushed) return handOver(t, to, toSlot, t0, stoppedAt);
    t.resume(); ctx.counters.inc('migrations_failed'); return false;
  });
}

function handOver(t: Tunnel, to: Channel, toSlot: number, t0: bigint, stoppedAt: number): Promise<boolean> {
  if (t.isClosed) { t.resume(); ctx.counters.inc('migrations_failed'); return Promise.resolve(false); }
  let c, b;
  try { c = t.client.release(); b = t.backend.release(); }
  catch { if (c) t.client.unrelease(c.unread); t.resume(); ctx.counters.inc('migrations_failed'); return Promise.resolve(false); }
  const meta: TunnelMeta = { t: 'tunnel', route: t.info.route, key: t.info.key, server: t.info.server, ip: t.info.clientIp, opened: t.info.opened,
    bytesIn: t.info.bytesIn, bytesOut: t.info.bytesOut, c2s: c.unread.length, s2c: b.unread.length, frames: t.s2c.state(), ...ctx.self(), acc: ctx.acceptorOf(t),
    deadline: Date.now() + MIGRATE_DEADLINE_MS, stoppedAt, sentAt: performance.timeOrigin + performance.now() };
  const cu = c.unread, bu = b.unread;
  return twoPhase(to, { fds: [c.fd, b.fd], bytes: cu.length + bu.length === 0 ? cu : Buffer.concat([cu, bu]), meta }, t0, { key: t.info.key, toSlot }, {
    rollback: () => { t.client.unrelease(cu); t.backend.unrelease(bu); t.resume(); },
    done: () => { t.relinquish(); ctx.gone(t); reap(t.client, t.backend); },
  });
}

/** Our copies of migrated sockets (acked: the target owns the connection; closing our fds does
 *  not touch it) are destroyed a loop turn later, so that an ack's turn goes to starting the next
 *  migrations (their sendmsg) rather than to tearing down the last ones. */
let reaping: (net.Socket | Endpoint)[] = [];
let holding = false;
function reap(a: net.Socket | Endpoint, b: net.Socket | Endpoint): void {
  if (reaping.length === 0 && !holding) setTimeout(reapNow, 0);
  reaping.push(a, b);
}

/** A retiring worker's first pass moves every connection in one burst and then, most often, exits:
 *  it holds its copies meanwhile and the kernel closes them at exit. A socket is released when its
 *  last fd goes: a connection that ends in its new worker meanwhile has sent its FIN (tunnels end
 *  with shutdown) but is released, and where it was closed without a shutdown (an error path) its
 *  FIN goes out, only when the old worker exits — one pass later, about a second for 2,000
 *  connections. Closing two handles per migration in the
 *  burst was ~15 % of the sender's CPU per migration (alternating runs: 165–172 vs 195–208 µs).
 *  `false` closes what is held (a worker that goes on: drain wait, moves, rebalances). */
export function holdMigratedCopies(on: boolean): void {
  holding = on;
  if (!on && reaping.length > 0) reapNow();
}
/** A retiring worker runs the migration path in one burst, once in its life, and then most often
 *  exits. V8 tiers it up meanwhile: TurboFan compiling it on background threads was ~25 % of the
 *  old worker's CPU in the pass (perf), on the two cores every pause waits for, for code that does
 *  not run again. `true` stops new optimizations (code already optimized, the tunnels' hot path,
 *  stays as it is); `false`, after the pass, restores V8's default for a worker that goes on.
 *  Alternating runs, 2,000 WebSockets × 3 reloads: sender CPU per migration 171–176 → 116–130 µs.
 *  The flag is read at each tier-up decision (V8 11, Node 20–22); where a V8 does not know it,
 *  nothing changes. */
const ownTiering = process.env.FDPROXY_RETIRE_OPTIMIZE === '1' ||   // measuring V8's default
  [...process.execArgv, process.env.NODE_OPTIONS ?? ''].some(a => /turbofan|jitless|max-opt/.test(a));   // the operator's choice stands
export function optimizeMigrationPath(on: boolean): void {
  if (ownTiering) return;
  try { v8.setFlagsFromString(on ? '--turbofan' : '--no-turbofan'); } catch { /* unknown flag: V8's default */ }
}

/** A collection now, at a moment when no connection is stopped. `full`: a new worker, once it is
 *  configured, before it can adopt anything — its young generation is full of start-up objects,
 *  and its first scavenges came during a reload's first adoptions (V8's "task" scavenges, 6–12 ms
 *  of wall time each on the busy two cores), each stalling every handoff in flight to it
 *  (`--trace-gc`, 2 × 3 reloads: 7–9 collections in all processes during the adoption windows
 *  instead of 10–13). `minor`: a retiring worker, just before its pass — its young generation is
 *  full of the traffic's leftovers, and a scavenge (up to 20–26 ms there) early in the pass
 *  fell between a tunnel's stop and the sendmsg that is batched to the end of that loop turn
 *  (alternating runs: migrated/s higher in 7 of 7 pairs, 4,878 vs 4,386 median; pause p99 lower
 *  in 5). `FDPROXY_GC_HINTS=0` turns both off. */
export function collectGarbage(kind: 'full' | 'minor'): void {
  if (process.env.FDPROXY_GC_HINTS === '0') return;
  try {
    // `gc` without --expose-gc on the command line: the flag applies to contexts made after it.
    // Not kept: the context it comes from goes with the next collection.
    v8.setFlagsFromString('--expose-gc');
    (require('node:vm').runInNewContext('gc') as (o?: { type: string }) => void)(kind === 'minor' ? { type: 'minor' } : undefined);
  } catch { /* a V8 without it: its own schedule */ }
}

function reapNow(): void {
  const l = reaping;
  reaping = [];
  for (const s of l) { if (s instanceof net.Socket) s.destroy(); else s.close(); }
}

/** The two-phase handoff of a live connection: our copies stay until the target acks (then
 *  `done` drops them); if the handoff comes back, or no ack arrives before the target's deadline
 *  has passed (it then refuses the stale copies), `rollback` resumes the connection here. */
function twoPhase(to: Channel, h: Handoff, t0: bigint, what: { key: string | null; toSlot: number; relay?: boolean },
                  act: { rollback: () => void; done: () => void }): Promise<boolean> {
  return new Promise<boolean>(resolve => {
    let settled = false;
    const rollback = (why: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      act.rollback();
      ctx.counters.inc('migrations_rolled_back');
      ctx.log.warn('migration_rolled_back', { ...what, why });
      resolve(false);
    };
    const timer = setTimeout(() => rollback('no ack in time'), MIGRATE_ROLLBACK_MS);
    const cb = {
      onAck: () => {
        if (settled) return;   // too late: the target refused it (deadline passed) and we resumed
        settled = true;
        clearTimeout(timer);
        act.done();
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        ctx.counters.inc('migrations_done');
        ctx.counters.observe('migration_handoff_ms', ms);
        if (ctx.log.enabled('debug')) traceMigrated(ms);
        resolve(true);
      },
      onReturn: (_h: Handoff, err: { code: string }) => rollback(err.code),
    };
    try { to.send(h, cb); } catch (e) {
      // Refused at once (FDP_FDPASS_TOO_BIG: more unread bytes than one handoff carries).
      rollback((e as { code?: string }).code ?? 'send failed');
    }
  });
}

/** Move a relay: both sides stopped at a message boundary (bounded wait; a relay that cannot get
 *  there stays and is retried or drained), then the same two-phase handoff as a tunnel. */
function migrateRelay(r: Relay, to: Channel, toSlot: number): Promise<boolean> {
  const t0 = process.hrtime.bigint();
  const stoppedAt = performance.timeOrigin + performance.now();
  return r.stop(1000).then(ok => {
    if (!ok || r.isClosed) { r.resume(); ctx.counters.inc('migrations_failed'); return false; }
    let c, b;
    try { c = releaseSocket(r.clientSocket); b = releaseSocket(r.backendSocket); }
    catch { if (c) resumeSocket(r.clientSocket, c.unread); r.resume(); ctx.counters.inc('migrations_failed'); return false; }
    const held = r.heldFrames();
    const c2s = held.length ? Buffer.concat([held, c.unread]) : c.unread;
    let q = r.quota ? Buffer.from(JSON.stringify(r.quota.snapshot())) : Buffer.alloc(0);
    if (c2s.length + b.unread.length + q.length > 60000) q = Buffer.alloc(0);   // the window is recomputed there
    if (c2s.length + b.unread.length > 60000) {   // too much in flight for one handoff: try again later
      resumeSocket(r.clientSocket, c.unread); resumeSocket(r.backendSocket, b.unread); r.resume(); ctx.counters.inc('migrations_failed'); return false;
    }
    const i = r.info;
    const meta: RelayMeta = { t: 'relay', route: i.route, key: i.key, server: i.server, ip: i.clientIp, opened: i.opened,
      msgsIn: i.msgsIn, msgsOut: i.msgsOut, bytesIn: i.bytesIn, bytesOut: i.bytesOut, hits: i.hits, proto: r.proto, opts: r.opts,
      c2s: c2s.length, s2c: b.unread.length, q: q.length, ...ctx.self(), acc: ctx.acceptorOf(r),
      deadline: Date.now() + MIGRATE_DEADLINE_MS, stoppedAt, sentAt: performance.timeOrigin + performance.now() };
    const cu = c.unread, bu = b.unread;
    return twoPhase(to, { fds: [c.fd, b.fd], bytes: Buffer.concat([c2s, bu, q]), meta }, t0, { key: i.key, toSlot, relay: true }, {
      rollback: () => { resumeSocket(r.clientSocket, cu); resumeSocket(r.backendSocket, bu); r.resume(); },
      done: () => { r.relinquish(); ctx.gone(r); reap(r.clientSocket, r.backendSocket); },
    });
  });
}

export function migrateIdle(conn: HttpConn, to: Channel): boolean {
  if (!conn.idle || conn.isClosed) return false;
  let r;
  try { r = releaseSocket(conn.client); } catch { return false; }
  conn.detach();
  conn.leaving = true;
  ctx.gone(conn);
  const meta: IdleHttpMeta = { t: 'http', route: conn.routeName, key: conn.key, ip: conn.ctx.clientIp, port: 0, proto: conn.ctx.proto, acc: ctx.acceptorOf(conn), ...ctx.self() };
  const back = () => { ctx.counters.inc('migrations_rolled_back'); resumeSocket(conn.client, r.unread); ctx.back(conn); };
  try {
    to.send({ fds: [r.fd], bytes: r.unread, meta }, { onAck: () => { conn.client.destroy(); ctx.counters.inc('migrations_done'); }, onReturn: back });
  } catch { back(); return false; }   // refused at once (too much read ahead): it stays here
  return true;
}

// Per-migration samples for the debug log, shipped in batches: a JSON line per migration (built,
// written, relayed by the supervisor) cost more CPU than the migration itself. A batch goes out
// once no sample has come for TRACE_QUIET_MS (after the burst: flushed every 100 ms, the lines
// of ~1,000 samples each landed in the middle of a reload's migrations, and the pauses of the
// handoffs in flight then were 10–20 ms — the trace disturbed what it measured), at TRACE_MAX
// samples, and at exit.
const TRACE_QUIET_MS = 200, TRACE_MAX = 8192;
const r3 = (x: number) => Math.round(x * 1000) / 1000;
let adoptedTrace: { pauses: number[]; at: number[]; adopt: number[]; flush: number[] } | null = null;
let migratedTrace: number[] | null = null;
let adoptCpu0: NodeJS.CpuUsage | null = null, adoptedTotal = 0;
let traceTimer: NodeJS.Timeout | null = null, lastTraceAt = 0, exitHooked = false;
function traceSoon(n: number): void {
  lastTraceAt = performance.now();
  if (!exitHooked) { exitHooked = true; process.once('exit', flushTrace); }
  if (n >= TRACE_MAX) { flushTrace(); return; }
  if (traceTimer) return;
  traceTimer = setTimeout(function check() {
    const quiet = performance.now() - lastTraceAt;
    traceTimer = quiet >= TRACE_QUIET_MS ? null : setTimeout(check, TRACE_QUIET_MS - quiet);
    if (!traceTimer) flushTrace();
  }, TRACE_QUIET_MS);
}
export function traceAdopted(pause: number, adopt: number, flush: number): void {
  adoptCpu0 ??= process.cpuUsage(); adoptedTotal++;
  adoptedTrace ??= { pauses: [], at: [], adopt: [], flush: [] };
  adoptedTrace.pauses.push(r3(pause)); adoptedTrace.at.push(Math.round(performance.timeOrigin + performance.now()));
  adoptedTrace.adopt.push(r3(adopt)); adoptedTrace.flush.push(r3(flush));
  traceSoon(adoptedTrace.pauses.length);
}
function traceMigrated(ms: number): void {
  migratedTrace ??= [];
  migratedTrace.push(r3(ms));
  traceSoon(migratedTrace.length);
}
function flushTrace(): void {
  if (adoptedTrace) {
    // CPU of this process since its first adoption (all of its work, traffic included), for per-migration cost.
    const c = process.cpuUsage(adoptCpu0 ?? undefined);
    ctx.log.debug('adopted_batch', { n: adoptedTrace.pauses.length, total: adoptedTotal, cpu_ms: (c.user + c.system) / 1000, ...adoptedTrace });
    adoptedTrace = null;
  }
  if (migratedTrace) { ctx.log.debug('migrated_batch', { n: migratedTrace.length, handoffs: migratedTrace }); migratedTrace = null; }
}
