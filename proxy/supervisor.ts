// supervisor: loads config, owns the listening sockets, starts the acceptor and the workers,
// wires their channels, restarts any that dies into the same slot, reloads and stops.
// Lifecycle: starting → running ⇄ reloading → stopping → stopped.
import { spawn, type ChildProcess } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { EventEmitter } from 'node:events';
import type { Config } from '../conf/types';
import { loadConfig, ConfigError } from '../conf';
import { Channel, channelPair, closeFd, type ChannelFds } from '../fdpass';
import { bindListener, type BoundListener } from './listeners';
import { HealthChecker } from './health';
import { Log } from './log';
import type { FromChild, PeerMeta, ToChild } from './messages';
import { VERSION } from './version';

export type State = 'starting' | 'running' | 'reloading' | 'stopping' | 'stopped';

export interface Child {
  role: 'acceptor' | 'worker';
  slot: number;           // -1 for an acceptor
  acc: number;            // an acceptor's index (0 leads: reload plans, auto-rebalance); -1 for workers
  gen: number;
  proc: ChildProcess;
  control: Channel;
  ready: boolean;
  planned: boolean;       // exit expected (retired, stopped): no restart
  started: number;
  stats: Record<string, unknown> | null;
  /** When it last said anything over IPC (the watchdog's measure). */
  seen: number;
}

export interface SupervisorOptions { configFile: string; workers?: number; logLevel?: string }

/** How long a reload waits for every process to take its new channels (a live one does in ms). */
const RELOAD_WIRE_MS = Number(process.env.FDPROXY_RELOAD_WIRE_MS) || 10_000;
/** The longest one retiring worker's pass holds the others' turns (see nextTurn). */
const TURN_MS = 3000;
/** Retiring workers' passes at once: one per two cores (one on this two-core machine). */
const PASSES_AT_ONCE = Number(process.env.FDPROXY_RETIRE_PASSES) || Math.max(1, Math.floor(os.availableParallelism() / 2));
/** A process silent this long (no stats, no answer to the pings sent every third of it) is hung —
 *  alive but stuck, stopped, or in an endless loop — and is killed, so that it is replaced like
 *  one that died. A live process answers in milliseconds; a long GC pause is well under a second. */
const HANG_MS = Number(process.env.FDPROXY_HANG_MS) || 30_000;

export class Supervisor extends EventEmitter {
  state: State = 'starting';
  config!: Config;
  gen = 1;
  readonly log = new Log('supervisor');
  bound: BoundListener[] = [];
  /** acceptor processes by index (`acceptors: N`, one by default). */
  acceptors: Child[] = [];
  get acceptor(): Child | null { return this.acceptors[0] ?? null; }
  /** fixed at start: a reload does not change it. */
  private acceptorCount = 1;
  workers = new Map<number, Child>();       // current generation, by slot
  retiring = new Set<Child>();              // previous generations still migrating
  /** Acceptors that handed over to a fresh one, finishing their heads in flight. */
  readonly leaving = new Set<Child>();
  /** A fresh acceptor being started and wired to take an old one's place. */
  private renewing: Child | null = null;
  /** Per acceptor index: the counters of the acceptors it replaced — final, and the last stats
   *  of those still leaving — so that the counters carry on across a handover. */
  private carried = new Map<number, { final: Record<string, number>; leaving: Map<Child, Record<string, number>> }>();
  /** An acceptor's own counters, as it last sent them (before anything carried is added). */
  private ownCounters = new WeakMap<Child, Record<string, number>>();
  readonly restarts = new Map<string, number>();
  readonly totals = { worker_restarts: 0, acceptor_restarts: 0, reloads_ok: 0, reloads_failed: 0, migrations_done: 0, migrations_failed: 0, log_lines_dropped: 0 };
  lastReloadError: string | null = null;
  /** Health changes go to every worker process: the current ones, a new generation not yet
   *  switched to, the retiring ones and the spare. One started later gets the down-set with its config. */
  readonly health = new HealthChecker((server, up) => { for (const w of this.workerProcs) this.send(w, { t: 'health', server, up }); });
  private readonly workerProcs = new Set<Child>();
  /** Every child process until it exits (spares, retiring and leaving ones too). */
  private readonly children = new Set<Child>();
  private watchdog: NodeJS.Timeout | undefined;

  /** Ping every child every third of HANG_MS; kill one silent for HANG_MS (its exit is handled
   *  as any death: restarted in its slot, or the spare takes it). Not while stopping: the stop
   *  has its own bounds. */
  private watch(): void {
    this.watchdog ??= setInterval(() => {
      if (this.state === 'stopping' || this.state === 'stopped') return;
      const now = Date.now();
      for (const c of this.children) {
        if (c.proc.exitCode !== null || c.proc.signalCode !== null) continue;
        if (now - c.seen < HANG_MS) { this.send(c, { t: 'ping' }); continue; }
        this.log.warn('process_hung', { role: c.role, slot: c.slot, ...(c.role === 'acceptor' ? { acceptor: c.acc } : {}), pid: c.proc.pid, silent_ms: now - c.seen });
        c.seen = now;   // one kill per silence
        c.proc.kill('SIGKILL');
      }
    }, Math.max(100, Math.floor(HANG_MS / 3))).unref();
  }
  private backoff = new Map<string, number>();

  constructor(readonly opts: SupervisorOptions) { super(); }

  private load(): Config {
    return loadConfig(this.opts.configFile, this.opts.workers ? { workers: this.opts.workers } : undefined);
  }

  async start(): Promise<void> {
    this.config = this.load();
    this.log.level = (this.opts.logLevel as Log['level']) ?? this.config.log_level;
    this.bound = this.config.listen.map(bindListener);
    const slots = this.slots(this.config);
    for (const s of slots) this.workers.set(s, this.spawnChild('worker', s, this.gen));
    this.acceptorCount = this.config.acceptors;
    for (let i = 0; i < this.acceptorCount; i++) this.acceptors.push(this.spawnChild('acceptor', -1, this.gen, false, i));
    // Spares start alongside (no later start-up cost): they are warm by the time anything dies.
    this.state = 'running';
    this.fillSpares();
    this.state = 'starting';
    await this.waitReady([...this.acceptors, ...this.workers.values()], 15000);
    await this.wireAll();   // channels up before "ready": the first connection needs no wait
    this.health.start(this.config);
    this.state = 'running';
    this.watch();
  }

  slots(c: Config): number[] { return Array.from({ length: c.workers }, (_, i) => i); }

  // ------------------------------------------------------------ children

  spawnChild(role: 'acceptor' | 'worker', slot: number, gen: number, standby = false, acc = -1): Child {
    const pair = channelPair();
    const script = path.join(__dirname, role === 'acceptor' ? 'acceptor.js' : 'worker.js');
    const listenFds = role === 'acceptor' ? this.bound.map(l => l.fd) : [];
    const env: NodeJS.ProcessEnv = { ...process.env, FDPROXY_CHANNEL_FDS: '4,5', FDPROXY_SLOT: String(slot), FDPROXY_GEN: String(gen),
      FDPROXY_LOG_LEVEL: this.log.level, FDPROXY_STANDBY: standby ? '1' : '0', FDPROXY_ACC: String(acc),
      FDPROXY_ACCEPTORS: String(this.acceptorCount) };
    if (role === 'acceptor') env.FDPROXY_LISTEN = JSON.stringify(this.bound.map((l, i) => ({ fd: 6 + i, proxyProtocol: l.proxyProtocol, unix: l.unix })));
    const proc = spawn(process.execPath, [...process.execArgv, script], {
      stdio: ['ignore', 'pipe', 'inherit', 'ipc', pair.b.data, pair.b.bell, ...listenFds], env,
    });
    this.relayLines(proc.stdout!);
    closeFd(pair.b.data); closeFd(pair.b.bell);
    const control = new Channel(pair.a, { name: `supervisor->${role}${slot >= 0 ? slot : acc >= 0 ? acc : ''}` });
    control.on('error', () => {});
    const child: Child = { role, slot, acc, gen, proc, control, ready: false, planned: false, started: Date.now(), stats: null, seen: Date.now() };
    proc.on('message', (m: FromChild) => { child.seen = Date.now(); this.onChildMessage(child, m); });
    if (role === 'worker') this.workerProcs.add(child);
    this.children.add(child);
    proc.on('exit', (code, signal) => { this.workerProcs.delete(child); this.children.delete(child); this.onExit(child, code, signal); });
    proc.on('error', e => this.log.error('spawn_failed', { role, slot, err: e.message }));
    this.send(child, { t: 'config', config: this.config, gen, slots: this.slots(this.config), down: this.health.down(this.config) });
    return child;
  }

  /** Children's JSON log lines pass through here whole: processes writing to one shared pipe can
   *  interleave partial lines once the pipe fills up. Bounded: lines are dropped (and counted)
   *  when our own stdout cannot keep up. */
  private relayLines(from: NodeJS.ReadableStream): void {
    let rest = '';
    from.setEncoding('utf8');
    from.on('data', (d: string) => {
      const text = rest + d;
      const nl = text.lastIndexOf('\n');
      if (nl < 0) { rest = text.length > 1 << 20 ? '' : text; return; }
      rest = text.slice(nl + 1);
      if (process.stdout.writableLength > 16 << 20) { this.totals.log_lines_dropped += text.slice(0, nl).split('\n').length; return; }
      process.stdout.write(text.slice(0, nl + 1));
    });
  }

  private send(c: Child, m: ToChild): void {
    if (c.proc.connected) c.proc.send(m, (err: Error | null) => { if (err) this.log.debug('ipc_send_failed', { err: err.message }); });
  }

  private onChildMessage(c: Child, m: FromChild): void {
    switch (m.t) {
      case 'ready': c.ready = true; this.emit('child-ready', c); break;
      case 'stats':
        if (c.role === 'acceptor') this.ownCounters.set(c, (m.stats.counters ?? {}) as Record<string, number>);
        c.stats = c.role === 'acceptor' && this.acceptors[c.acc] === c ? this.withCarried(c.acc, m.stats) : m.stats;
        if (c.role === 'acceptor' && this.acceptors.length > 1) this.shareTotals();
        break;
      case 'moved':
        // The lead acceptor rebalanced: every other acceptor places those keys the same way.
        for (const a of this.acceptors) if (a !== c) this.send(a, { t: 'override', moves: m.moves });
        break;
      case 'handed_over': {
        const k = this.carried.get(c.acc);
        if (k?.leaving.delete(c)) k.final = addCounters(k.final, m.counters);
        break;
      }
      case 'passed': this.turnDone(c); break;
      case 'retired':
        c.planned = true;
        this.totals.migrations_done += m.migrated; this.totals.migrations_failed += m.failed;
        this.log.info('worker_retired', { slot: m.slot, gen: m.gen, migrated: m.migrated, failed: m.failed, closed: m.closed });
        break;
    }
  }

  /** Retiring workers migrate in turns, one at a time per two cores (FDPROXY_RETIRE_PASSES): a
   *  pass stops its connections only while they are in flight, and the pauses they see are the
   *  receivers' scheduling delays. With every old worker's pass at once, the two cores had 8–11
   *  runnable processes and the receivers waited up to 20–50 ms for a core (perf sched); one pass
   *  at a time halved the median pause and cut the p99 (bench/RESULTS.md, continuity). A worker
   *  waiting for its turn relays its connections as before. A turn ends when the pass reports
   *  `passed`, when its worker exits, or after TURN_MS whatever happens (a pass that hangs delays
   *  the others, never stops them). */
  private readonly turns: Child[] = [];
  private readonly passing = new Map<Child, NodeJS.Timeout>();
  private turnDone(c: Child): void {
    const t = this.passing.get(c);
    if (t === undefined) return;
    clearTimeout(t);
    this.passing.delete(c);
    this.nextTurn();
  }
  private nextTurn(): void {
    while (this.passing.size < PASSES_AT_ONCE) {
      const c = this.turns.shift();
      if (!c) return;
      if (c.proc.exitCode !== null || c.proc.signalCode !== null) continue;
      const t = setTimeout(() => this.turnDone(c), TURN_MS);
      t.unref();
      this.passing.set(c, t);
      this.send(c, { t: 'turn' });
    }
  }

  /** Several acceptors: each enforces max_connections on the sum of all their connections, so
   *  each is told what the others hold (as of their last stats, at most about a second old). */
  private shareTotals(): void {
    const totals = this.acceptors.map(a => Number((a.stats as { total?: number } | null)?.total ?? 0));
    const sum = totals.reduce((x, y) => x + y, 0);
    this.acceptors.forEach((a, i) => this.send(a, { t: 'peers', total: sum - totals[i] }));
  }

  private waitReady(children: Child[], timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (children.every(c => c.ready)) { cleanup(); resolve(); }
        else {
          const dead = children.find(c => c.proc.exitCode !== null || c.proc.signalCode !== null);
          if (dead) { cleanup(); reject(new Error(`${dead.role} ${dead.slot} (pid ${dead.proc.pid}) exited during start: code ${dead.proc.exitCode} signal ${dead.proc.signalCode}`)); }
        }
      };
      const t = setTimeout(() => { cleanup(); reject(new Error('processes not ready in time')); }, timeoutMs);
      const onExit = () => setImmediate(check);
      const cleanup = () => { clearTimeout(t); this.removeListener('child-ready', check); for (const c of children) c.proc.removeListener('exit', onExit); };
      this.on('child-ready', check);
      for (const c of children) c.proc.on('exit', onExit);
      check();
    });
  }

  /** A private channel between two children, sent to each over its control channel. */
  connect(a: Child, b: Child): Promise<void> {
    return Promise.all(this.link(a, b)).then(() => undefined);
  }

  /** connect's two halves: each resolves once that child has taken its end (it acks after adding
   *  the peer) or has died. */
  private link(a: Child, b: Child): [Promise<void>, Promise<void>] {
    const pair = channelPair();
    const give = (to: Child, side: ChannelFds, peer: Child) => new Promise<void>(resolve => {
      const meta: PeerMeta = { t: 'peer', peer: peer.role === 'acceptor' ? `acceptor${peer.acc}` : `w${peer.slot}g${peer.gen}`, slot: peer.slot, gen: peer.gen, role: peer.role, acc: peer.acc };
      const done = () => { closeFd(side.data); closeFd(side.bell); resolve(); };
      to.control.send({ fds: [side.data, side.bell], bytes: Buffer.alloc(0), meta }, { onAck: done, onReturn: done });
    });
    return [give(a, pair.a, b), give(b, pair.b, a)];
  }

  private live(): Child[] {
    return [...this.workers.values(), ...this.retiring].filter(c => c.proc.exitCode === null && c.proc.signalCode === null);
  }

  private wireAll(): Promise<void> {
    const ws = [...this.workers.values()];
    const jobs: Promise<void>[] = [];
    for (let i = 0; i < ws.length; i++) {
      for (const a of this.acceptors) jobs.push(this.connect(a, ws[i]));
      for (let j = i + 1; j < ws.length; j++) jobs.push(this.connect(ws[i], ws[j]));
    }
    return Promise.all(jobs).then(() => undefined);
  }

  /** Wire a (re)started child to everyone it talks to. An acceptor (standby until assigned):
   *  resolves once it holds its end of a channel to every ready worker, without waiting for the
   *  workers to take theirs — a worker slow to do so only delays its holding report, which the
   *  acceptor waits for, bounded. A worker still starting is left out: once ready it wires itself
   *  to the ready acceptors (this one among them), and a second channel would count its report
   *  twice. */
  private wireOne(c: Child): Promise<void> {
    const jobs: Promise<void>[] = [];
    if (c.role === 'acceptor') for (const w of this.live()) { if (w.ready) jobs.push(this.link(c, w)[0]); }
    else {
      for (const a of this.acceptors) if (a.ready) jobs.push(this.connect(a, c));
      for (const w of this.live()) if (w !== c) jobs.push(this.connect(w, c));
    }
    return Promise.all(jobs).then(() => undefined);
  }

  private onExit(c: Child, code: number | null, signal: string | null): void {
    c.control.close();
    if (c === this.spares.worker || c === this.spares.acceptor) {
      if (c === this.spares.worker) this.spares.worker = null; else this.spares.acceptor = null;
      if (!c.planned && this.state === 'running') setTimeout(() => this.fillSpares(), 1000).unref();
      return;
    }
    if (c.role === 'worker' && this.retiring.delete(c)) { this.turnDone(c); return; }
    if (c.role === 'acceptor' && this.leaving.delete(c)) {
      // Gone without its last word (killed): what it last reported stays counted.
      const k = this.carried.get(c.acc), last = k?.leaving.get(c);
      if (k && last) { k.leaving.delete(c); k.final = addCounters(k.final, last); }
      return;
    }
    if (c.planned || this.state === 'stopping' || this.state === 'stopped') { this.emit('child-exit', c); return; }
    if (c.role === 'worker' && this.workers.get(c.slot) !== c) return;
    if (c.role === 'acceptor' && this.acceptors[c.acc] !== c) return;
    if (c.role === 'acceptor') {
      // Crashed: what it last reported stays counted (as for a killed leaving acceptor), so its
      // index's counters never go down; its replacement's add on from there.
      const k = this.carried.get(c.acc) ?? { final: {}, leaving: new Map() };
      k.final = addCounters(k.final, this.ownCounters.get(c) ?? {});
      this.carried.set(c.acc, k);
    }
    const id = c.role === 'acceptor' ? `acceptor${c.acc}` : `worker${c.slot}`;
    this.log.warn('process_died', { role: c.role, slot: c.slot, ...(c.role === 'acceptor' ? { acceptor: c.acc } : {}), pid: c.proc.pid, code, signal });
    if (c.role === 'acceptor') this.totals.acceptor_restarts++; else this.totals.worker_restarts++;
    this.restarts.set(id, (this.restarts.get(id) ?? 0) + 1);
    // Backoff: immediate the first time, doubling while it keeps dying young; reset after 10 s up.
    const prev = this.backoff.get(id) ?? 0;
    const delay = Date.now() - c.started > 10_000 ? 0 : Math.min(prev === 0 ? 50 : prev * 2, 5000);
    this.backoff.set(id, delay);
    const spare = c.role === 'worker' ? this.spares.worker : this.spares.acceptor;
    if (spare && spare.ready) {
      // A warm spare takes the slot now; a new spare starts after the backoff.
      if (c.role === 'worker') this.spares.worker = null; else this.spares.acceptor = null;
      this.promote(spare, c);
      setTimeout(() => this.fillSpares(), delay).unref();
      return;
    }
    setTimeout(() => this.restart(c), delay).unref();
  }

  /** Standby processes: started, configured, not serving; promoted when a process dies. */
  readonly spares: { worker: Child | null; acceptor: Child | null } = { worker: null, acceptor: null };

  fillSpares(): void {
    if (this.state !== 'running' || !this.config.standby) return;
    if (!this.spares.worker) this.spares.worker = this.spawnChild('worker', -100, this.gen, true);
    if (!this.spares.acceptor) this.spares.acceptor = this.spawnChild('acceptor', -1, this.gen, true);
  }

  private promote(spare: Child, old: Child): void {
    spare.slot = old.slot;
    spare.acc = old.acc;
    spare.gen = old.role === 'acceptor' ? this.gen : old.gen;
    spare.started = Date.now();
    if (spare.role === 'acceptor') { this.replaceAcceptor(spare, true); return; }
    spare.ready = false;
    this.workers.set(spare.slot, spare);
    this.send(spare, { t: 'assign', slot: spare.slot, gen: spare.gen, acc: spare.acc });
    this.waitReady([spare], 15000).then(() => this.wireOne(spare)).then(() => {
      this.log.info('process_restarted', { role: spare.role, slot: spare.slot, pid: spare.proc.pid, standby: true, ms: Date.now() - spare.started });
      this.emit('restarted', spare);
    }, (e: unknown) => this.log.error('restart_failed', { role: spare.role, slot: spare.slot, err: (e as Error).message }));
  }

  private restart(old: Child): void {
    if (this.state === 'stopping' || this.state === 'stopped') return;
    // An acceptor starts as a standby (configured, not accepting) and is then assigned like a spare.
    const c = this.spawnChild(old.role, old.slot, old.role === 'acceptor' ? this.gen : old.gen, old.role === 'acceptor', old.acc);
    if (c.role === 'acceptor') { this.replaceAcceptor(c, false); return; }
    this.workers.set(c.slot, c);
    this.waitReady([c], 15000).then(() => this.wireOne(c)).then(() => {
      this.log.info('process_restarted', { role: c.role, slot: c.slot, pid: c.proc.pid });
      this.emit('restarted', c);
    }, (e: unknown) => this.log.error('restart_failed', { role: c.role, slot: c.slot, err: (e as Error).message }));
  }

  /** A standby acceptor (the spare, or one just spawned as a standby) takes a dead one's index.
   *  Wired to the workers first, then assigned: it accepts once every worker's holding report is
   *  whole (bounded by the acceptor's HELD_WAIT_MS), as in a handover after a reload. Accepting at
   *  once, its table would miss the keys that live away from their hash's worker (moved,
   *  rebalanced, placed by load), and a new connection of one would split the key. Meanwhile new
   *  connections wait in the listening socket's queue (the supervisor and any other acceptor keep
   *  it open): none is refused or reset. */
  private replaceAcceptor(c: Child, standby: boolean): void {
    const prev = this.acceptors[c.acc];
    this.acceptors[c.acc] = c;
    this.seedStats(c, prev && prev !== c ? prev : null);
    this.waitReady([c], 15000).then(() => this.wireOne(c)).then(() => {
      if (this.state === 'stopping' || this.state === 'stopped') throw new Error(`stopped (${this.state})`);
      const accepting = this.nextReady(c, 15000);
      this.send(c, { t: 'assign', slot: -1, gen: this.gen, acc: c.acc });
      this.tellDrained(c);   // before its holding reports are whole, so before it accepts
      return accepting;
    }).then(() => {
      this.log.info('process_restarted', { role: c.role, slot: c.slot, acceptor: c.acc, pid: c.proc.pid, standby, ms: Date.now() - c.started });
      this.emit('restarted', c);
    }, (e: unknown) => {
      if (this.state === 'stopping' || this.state === 'stopped') return;   // the stop ended it
      if (c.planned || this.acceptors[c.acc] !== c) return;   // a renewal replaced it while it waited: not a failure
      this.log.error('restart_failed', { role: c.role, slot: c.slot, acceptor: c.acc, err: (e as Error).message });
    });
  }

  /** Resolves on the next 'ready' from `c` (an assigned acceptor sends one once it accepts). */
  private nextReady(c: Child, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = (err?: Error) => { clearTimeout(t); c.proc.off('message', onMessage); c.proc.off('exit', onExit); if (err) reject(err); else resolve(); };
      const onMessage = (m: FromChild) => { if (m.t === 'ready') done(); };
      const onExit = () => done(new Error(`exited (pid ${c.proc.pid})`));
      const t = setTimeout(() => done(new Error('not accepting in time')), timeoutMs);
      c.proc.on('message', onMessage);
      c.proc.once('exit', onExit);
    });
  }

  /** An admin command for the acceptors (rebalance, drain): each updates its table; the lead
   *  one (index 0) tells the workers what to move. */
  command(m: ToChild): void {
    if (m.t === 'drain') this.drained.add(m.slot); else if (m.t === 'undrain') this.drained.delete(m.slot);
    for (const a of this.acceptors) this.send(a, m);
  }
  /** Slots drained by /drain and not undrained since, in this generation (a reload's switch clears
   *  the acceptors' drains): an acceptor that takes an index (crash, renewal) learns them with
   *  its `assign`, or new keys would go to a drained worker again. */
  readonly drained = new Set<number>();
  private tellDrained(a: Child): void { for (const slot of this.drained) this.send(a, { t: 'drain', slot, quiet: true }); }

  // ------------------------------------------------------------ reload

  /** Validate the new config, start a new generation, switch the acceptor, migrate, retire. */
  async reload(): Promise<{ ok: boolean; error?: string; gen?: number }> {
    if (this.state !== 'running') return { ok: false, error: `cannot reload while ${this.state}` };
    let next: Config;
    try { next = this.load(); } catch (e) {
      const msg = e instanceof ConfigError ? e.report() : (e as Error).message;
      this.totals.reloads_failed++;
      this.lastReloadError = msg;
      this.log.error('reload_failed', { error: msg });
      return { ok: false, error: msg };
    }
    const oldListen = this.config.listen.map(l => l.address.text).join(',');
    if (next.listen.map(l => l.address.text).join(',') !== oldListen) this.log.warn('reload_listen_unchanged', { note: 'listen addresses change on restart only' });
    if (next.acceptors !== this.acceptorCount) this.log.warn('reload_acceptors_unchanged', { running: this.acceptorCount, configured: next.acceptors, note: 'the acceptor count changes on restart only' });
    this.state = 'reloading';
    const t0 = Date.now();
    const oldWorkers = [...this.workers.values()];
    const prevConfig = this.config;
    this.config = next;
    this.gen++;
    const fresh = new Map<number, Child>();
    for (const s of this.slots(next)) fresh.set(s, this.spawnChild('worker', s, this.gen));
    // A stop began while the new workers started: it owns the processes now.
    const killFresh = () => { for (const c of fresh.values()) { c.planned = true; c.proc.kill('SIGKILL'); } };
    const stopped = () => { killFresh(); return { ok: false, error: `stopped during the reload (${this.state})` }; };
    // Nothing switched yet: the new workers go, the running generation and config stay.
    const abort = (error: string) => {
      killFresh();
      this.gen--;
      this.config = prevConfig;
      if (this.state === 'reloading') this.state = 'running';
      this.totals.reloads_failed++;
      this.lastReloadError = error;
      this.log.error('reload_failed', { error });
      return { ok: false, error };
    };
    try {
      await this.waitReady([...fresh.values()], 15000);
    } catch (e) {
      return abort(`new workers failed to start: ${(e as Error).message}`);
    }
    if (this.state !== 'reloading') return stopped();
    // Wire: acceptor ↔ new, new ↔ new, old ↔ new. Bounded: a process that is alive but does not
    // take its end (hung, stopped) would otherwise hold the reload — and every later one — forever.
    const jobs: Promise<void>[] = [];
    const owed = new Map<Child, number>();   // channel ends each process has not taken yet
    const pair = (x: Child, y: Child) => {
      const [px, py] = this.link(x, y);
      for (const [c, p] of [[x, px], [y, py]] as const) {
        owed.set(c, (owed.get(c) ?? 0) + 1);
        jobs.push(p.then(() => { owed.set(c, owed.get(c)! - 1); }));
      }
    };
    const fw = [...fresh.values()];
    for (let i = 0; i < fw.length; i++) {
      for (const a of this.acceptors) pair(a, fw[i]);
      for (let j = i + 1; j < fw.length; j++) pair(fw[i], fw[j]);
      for (const o of oldWorkers) pair(o, fw[i]);
    }
    let timer: NodeJS.Timeout | undefined;
    const wired = await Promise.race([Promise.all(jobs).then(() => true), new Promise<false>(r => { timer = setTimeout(() => r(false), RELOAD_WIRE_MS); })]);
    clearTimeout(timer);
    if (this.state !== 'reloading') return stopped();
    if (!wired) {
      const stuck = [...owed].filter(([, n]) => n > 0).map(([c]) => `${c.role === 'acceptor' ? `acceptor ${c.acc}` : `worker ${c.slot} gen ${c.gen}`} (pid ${c.proc.pid})`);
      return abort(`not responding: ${stuck.join(', ')} did not take its new channels within ${RELOAD_WIRE_MS / 1000} s; the running generation keeps serving`);
    }
    for (const o of oldWorkers) { this.retiring.add(o); this.send(o, { t: 'retire', drainTimeout: next.limits.drain_timeout, wait: true }); }
    this.turns.push(...oldWorkers);
    this.nextTurn();
    this.workers = fresh;
    this.health.start(next);   // before the switch: a server `next` no longer checks is up again in the new workers
    this.drained.clear();   // the switch clears every acceptor's drains: a new generation
    for (const a of this.acceptors) this.send(a, { t: 'switch', gen: this.gen, slots: this.slots(next), config: next });
    this.totals.reloads_ok++;
    this.lastReloadError = null;
    this.state = 'running';
    this.log.info('reloaded', { gen: this.gen, workers: fresh.size, ms: Date.now() - t0 });
    this.renew(this.gen).catch((e: unknown) => this.log.error('renew_failed', { gen: this.gen, err: (e as Error).message }));
    // Spares take the new config in place (no new processes competing with the migration).
    if (this.spares.worker) this.send(this.spares.worker, { t: 'config', config: next, gen: this.gen, slots: this.slots(next), down: this.health.down(next) });
    if (this.spares.acceptor) this.send(this.spares.acceptor, { t: 'switch', gen: this.gen, slots: this.slots(next), config: next });
    return { ok: true, gen: this.gen };
  }

  /** After a reload, once the old workers have gone (no process start competes with their
   *  migration): the acceptors and the spares are replaced by fresh processes too, so that every
   *  process but the supervisor runs the code now on disk — a deploy followed by a reload is a
   *  whole upgrade, and a spare promoted later is not older code than the workers it joins. An
   *  acceptor hands over without losing a connection: the fresh one is wired to every worker
   *  (which send it what they hold) before the old one stops accepting; meanwhile the kernel
   *  queues new connections on the listening socket (the supervisor and the spare keep it open);
   *  the old one finishes the heads it was reading, then exits. Another reload or a stop cancels
   *  what is left (the next reload renews everything again). */
  private async renew(gen: number): Promise<void> {
    const current = () => this.state === 'running' && this.gen === gen;
    const t0 = Date.now();
    while (this.retiring.size > 0) {
      if (!current()) return;
      await new Promise(r => setTimeout(r, 50));
    }
    if (!current()) return;
    const alive = (c: Child) => c.proc.exitCode === null && c.proc.signalCode === null;
    for (let i = 0; i < this.acceptors.length; i++) {
      // One that died meanwhile was restarted from the code on disk already: nothing to do.
      const old = this.acceptors[i];
      const fresh = this.renewing = this.spawnChild('acceptor', -1, this.gen, true, i);
      let wired: Set<Child>;
      try {
        await this.waitReady([fresh], 15000);
        if (!current()) throw new Error('cancelled');
        wired = new Set(this.live());
        await Promise.all([...wired].map(w => this.connect(fresh, w)));
        if (!current()) throw new Error('cancelled');
        if (this.acceptors[i] !== old || !old.ready || !alive(old)) throw new Error('restarted meanwhile');
      } catch (e) {
        this.renewing = null;
        fresh.planned = true; fresh.proc.kill('SIGKILL');
        const why = (e as Error).message;
        if (why === 'cancelled') return;
        if (why !== 'restarted meanwhile') { this.log.warn('acceptor_renew_failed', { acceptor: i, err: why }); return; }
        continue;
      }
      old.planned = true;
      this.leaving.add(old);
      const k = this.carried.get(i) ?? { final: {}, leaving: new Map() };
      k.leaving.set(old, this.ownCounters.get(old) ?? {});
      this.carried.set(i, k);
      this.send(old, { t: 'handover' });
      // `ready` stays set while it waits for the workers' reports: a worker that restarts
      // meanwhile wires itself to the ready acceptors, this one among them (it would be left
      // without a channel to that slot otherwise). Its next 'ready' says it accepts.
      fresh.started = Date.now();
      this.seedStats(fresh, old);
      this.acceptors[i] = fresh;
      this.renewing = null;
      const accepting = this.nextReady(fresh, 15000);
      this.send(fresh, { t: 'assign', slot: -1, gen: this.gen, acc: i });
      this.tellDrained(fresh);
      // A worker restarted while it was being wired found it not yet among the acceptors.
      for (const w of this.live()) if (!wired.has(w) && w.ready) this.connect(fresh, w).catch(() => undefined);
      await accepting.catch(() => undefined);
      this.log.info('acceptor_renewed', { acceptor: i, pid: fresh.proc.pid, previous: old.proc.pid, gen });
    }
    if (!current()) return;
    // Then the spares (an acceptor that could not be renewed returned above: the old spares stay).
    for (const sp of [this.spares.worker, this.spares.acceptor]) if (sp) { sp.planned = true; sp.proc.kill('SIGTERM'); }
    this.spares.worker = this.spares.acceptor = null;
    this.fillSpares();
    const spares = ([this.spares.worker, this.spares.acceptor] as (Child | null)[]).filter((c): c is Child => c !== null);
    await this.waitReady(spares, 15000).catch(() => undefined);   // one that fails is replaced by onExit
    this.log.info('renewed', { gen, ms: Date.now() - t0 });
  }

  /** An acceptor taking an index (renewal, crash replacement): until it reports its whole table
   *  (once it accepts), /status and the metrics show what the index had counted (never less after
   *  a crash) and the table its predecessor last reported — the same connections, which live on
   *  in the workers (no gap, never an empty table). */
  private seedStats(c: Child, prev: Child | null): void {
    c.stats = this.withCarried(c.acc, { ...(prev?.stats ?? {}), inflight: 0, counters: {} });
  }

  private withCarried(acc: number, stats: Record<string, unknown>): Record<string, unknown> {
    const k = this.carried.get(acc);
    if (!k) return stats;
    let base = k.final;
    for (const l of k.leaving.values()) base = addCounters(base, l);
    return { ...stats, counters: addCounters(base, (stats.counters ?? {}) as Record<string, number>) };
  }

  /** Resolves when every previous generation has finished migrating and exited. */
  retired(timeoutMs: number): Promise<boolean> {
    return new Promise(resolve => {
      const t0 = Date.now();
      const tick = () => {
        if (this.retiring.size === 0) return resolve(true);
        if (Date.now() - t0 > timeoutMs) return resolve(false);
        setTimeout(tick, 20);
      };
      tick();
    });
  }

  // ------------------------------------------------------------ stop

  stop(mode: 'graceful' | 'fast'): Promise<void> {
    if (this.state === 'stopping' || this.state === 'stopped') return Promise.resolve();
    this.state = 'stopping';
    this.health.stop();
    // Stop accepting now: our copies of the listening sockets go at once (the acceptors end the
    // listening itself, after answering what the kernel had queued; a spare closes its copies),
    // so a new connection is refused instead of waiting in a queue that nobody will accept from
    // while the live ones drain.
    this.closeListeners();
    const drain = this.config.limits.drain_timeout;
    const spares = [this.spares.worker, this.spares.acceptor, this.renewing].filter((c): c is Child => c !== null);
    const all = [...this.acceptors, ...this.leaving, ...this.live(), ...spares];
    for (const c of all) this.send(c, { t: 'stop', mode, drainTimeout: drain });
    const limit = (mode === 'fast' ? 1000 : drain + 5000);
    const open = all.reduce((n, c) => n + (c.role === 'worker' ? Number(c.stats?.open_ws ?? 0) + Number(c.stats?.open_http ?? 0) : 0), 0);
    this.log.info('stopping', { mode, drain_timeout_ms: mode === 'fast' ? 0 : drain, connections: open });
    return new Promise(resolve => {
      const t0 = Date.now();
      const tick = () => {
        const alive = all.filter(c => c.proc.exitCode === null && c.proc.signalCode === null);
        if (alive.length === 0 || Date.now() - t0 > limit) {
          for (const c of alive) c.proc.kill('SIGKILL');
          this.state = 'stopped';
          // The children's last lines may still be in their pipes: pass them on first (bounded).
          const ends = all.map(c => c.proc.stdout && !c.proc.stdout.readableEnded ? new Promise<void>(r => c.proc.stdout!.once('end', () => r())) : Promise.resolve());
          const cap = new Promise<void>(r => setTimeout(r, 500).unref());
          Promise.race([Promise.all(ends), cap]).then(() => {
            this.log.info('stopped', { mode, ms: Date.now() - t0, killed: alive.length });
            resolve();
          });
          return;
        }
        setTimeout(tick, 20);
      };
      tick();
    });
  }

  private listenersClosed = false;
  private closeListeners(): void {
    if (this.listenersClosed) return;
    this.listenersClosed = true;
    for (const l of this.bound) { try { l.handle.close(); } catch { /* already closed */ } }
  }

  readyLine(admin: string | null): Record<string, unknown> {
    return {
      event: 'ready', version: VERSION, pid: process.pid, acceptor: this.acceptor?.proc.pid ?? null, acceptors: this.acceptors.map(a => a.proc.pid),
      workers: [...this.workers.values()].map(w => ({ slot: w.slot, pid: w.proc.pid })),
      listen: this.bound.map(l => l.text), admin,
    };
  }
}

function addCounters(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = (out[k] ?? 0) + v;
  return out;
}
