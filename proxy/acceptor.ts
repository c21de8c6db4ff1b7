// acceptor: accept → read head → route → hand off. Answers head errors itself (400 408 431 404
// 503) and owns the placement table (key → worker slot). Stateless apart from that table,
// which the workers re-send when a restarted acceptor connects to them.
//
// With `acceptors: N` (N > 1) the N processes accept from the same listening sockets and each
// counts only the connections it placed (workers report closes to the acceptor named in the
// connection's meta). To agree on key → worker without talking to each other, they place keys
// by pure rendezvous hashing (no bounded load) plus the same overrides (moves are applied by
// every acceptor); acceptor 0 leads: it alone sends workers their reload and move plans and runs
// auto-rebalance, whose moves the supervisor passes on to the others. The others hear of a move
// later than the workers do: what one of them still places by its old view, the worker hands to
// acceptor 0 (as a reroute) instead of serving it (worker.ts adoptConnection).
import * as net from 'node:net';
import type { Config } from '../conf/types';
import { Router, Placement, rankSlots } from '../routing';
import { Channel, channelFromStdio, releaseSocket, resumeSocket, socketFromFd, closeFd, type Handoff } from '../fdpass';
import { errorResponse, ProxyError } from './errors';
import { HeadReader, type RequestHead } from './head';
import { Log } from './log';
import { Counters } from './counters';
import { readProxyHeader } from './proxyproto';
import * as raw from './rawaccept';
import { stopListening } from './listeners';
import { jsonParts, type ClosedMeta, type ConnMeta, type FromChild, type HandoffMeta, type HoldingMeta, type PeerMeta, type PlanMeta, type ToChild } from './messages';

const log = new Log('acceptor');
/** A spare acceptor: configured, not listening, until the supervisor assigns it. */
let standby = process.env.FDPROXY_STANDBY === '1';
/** This acceptor's index, and how many there are. */
let acc = Number(process.env.FDPROXY_ACC ?? 0);
const many = Number(process.env.FDPROXY_ACCEPTORS ?? 1) > 1;
const leads = () => acc === 0;
/** Several acceptors: keys moved away from their rendezvous slot (the same in every acceptor). */
const overrides = new Map<string, number>();
const MAX_OVERRIDES = 200_000;
/** Several acceptors: connections the others hold (for max_connections). */
let peersTotal = 0;
const counters = new Counters();
let config: Config;
let router: Router;
let gen = 0;
let slots: number[] = [];
let placement: Placement;
const workers = new Map<string, Channel>();      // "gen:slot" → channel
const waiting = new Map<number, (() => void)[]>(); // slot → handoffs waiting for the worker's channel
let inflight = 0;                                 // connections whose head is being read
/** Keep-alive connections the acceptor answered itself (404), idle until their next head: closers. */
const idleBetween = new Set<() => void>();
let stopping = false;
/** A fresh acceptor has taken this one's place: finishing the heads in flight, then exiting. */
let leaving = false;
/** What this acceptor listens on: the fd (shared with the supervisor and any other acceptor). */
const servers: { fd: number; unix: boolean; li: Listening; close(): void }[] = [];
const WAIT_FOR_WORKER_MS = 3000;
/** Workers ("gen:slot") whose whole 'holding' report has arrived, and who waits for the next. */
const heldFrom = new Set<string>();
let onHeld: (() => void) | null = null;
const HELD_WAIT_MS = 1000;
/** Table commands (move, drain, undrain, override) that came before this acceptor accepts: a
 *  standby taking an index (crash, renewal) gets them once it is among the acceptors, while its
 *  table is still filling from the workers' reports. Applied in order once the table is whole —
 *  applied at once, a move of a key not yet reported is dropped (unknown key) and the 202 lies. */
let deferred: ToChild[] | null = standby ? [] : null;
const AWAY_GRACE_MS = 5000;

function send(m: FromChild): void { if (process.connected) process.send!(m); }

const draining = new Set<number>();               // slots being emptied: no new keys

/** The slot for a new connection: the placement table, avoiding slots being drained. */
function placeFor(key: string | null): number {
  const o = key !== null && many ? overrides.get(key) : undefined;
  const s = o ?? placement.place(key);
  if (!draining.has(s)) return s;
  const open = slots.filter(x => !draining.has(x));
  if (open.length === 0) return s;
  if (key === null) return open.reduce((a, b) => (placement.load(b) < placement.load(a) ? b : a));
  return rankSlots(key, open)[0];
}

function newPlacement(s: number[]): Placement {
  // ε = ∞: pure rendezvous, so every acceptor places a key alike whatever it has counted.
  return new Placement(s, many ? { epsilon: Infinity } : {});
}

/** Record a move in this acceptor's table (and, with several acceptors, as an override). */
/** Keys moved during this generation → the slots they were moved from. A worker that gave a key
 *  away may still hold part of it (an HTTP exchange that had not ended): a reload's plan for that
 *  worker names the key too, so those leftovers follow the key to its new worker. */
let movedFrom = new Map<string, Set<number>>();
const MAX_MOVED_FROM = 100_000;

function applyMove(key: string, to: number, from?: number): void {
  if (from !== undefined && from !== to && (movedFrom.has(key) || movedFrom.size < MAX_MOVED_FROM)) {
    (movedFrom.get(key) ?? movedFrom.set(key, new Set()).get(key)!).add(from);
  }
  placement.move(key, to);
  if (!many) return;
  overrides.delete(key);
  overrides.set(key, to);
  // Bounded: the oldest overrides go first (those keys fall back to rendezvous everywhere alike).
  if (overrides.size > MAX_OVERRIDES) overrides.delete(overrides.keys().next().value!);
}

function channelFor(slot: number): Channel | null {
  const ch = workers.get(`${gen}:${slot}`);
  return ch && !ch.isClosed ? ch : null;
}

// ---------------------------------------------------------------- accept, read head

interface Listening { proxyProtocol: boolean; proto: 'http' | 'https' }

/** The route's connections_per_key reached for this key (by this acceptor's count). */
function atKeyLimit(d: { route: { connections_per_key: number }; key: string | null }): boolean {
  const limit = d.route.connections_per_key;
  return limit > 0 && d.key !== null && placement.keyCount(d.key) >= limit;
}

const overLimit = () => placement.total() + inflight + peersTotal >= config.limits.max_connections;

/** The common path, without a net.Socket: a head that arrives whole and routes cleanly to a
 *  worker that is there is handed off from the raw handle. Anything else goes on as a net.Socket
 *  through onConnection with what was read (errors, 404s, waiting for a worker). */
function onRawConnection(h: raw.TcpHandle, l: Listening): void {
  if (stopping || l.proxyProtocol || overLimit()) { onConnection(raw.toSocket(h), l); return; }
  counters.inc('accepted');
  const { ip, port } = raw.peerOf(h);
  const reader = new HeadReader(config.limits.head_bytes);
  let done = false;
  inflight++;
  const finish = () => { done = true; inflight--; clearTimeout(timer); };
  const general = () => {
    if (done) return;
    finish();
    onConnection(raw.toSocket(h), l, reader.length ? reader.bytes : Buffer.alloc(0));
  };
  const timer = setTimeout(() => {
    if (done) return;
    finish();
    failSocket(raw.toSocket(h), 'FDP_PROXY_HEAD_TIMEOUT');
  }, config.limits.head_timeout);
  raw.readRaw(h, d => {
    if (done) return;
    let head: RequestHead | null;
    try { head = reader.push(d); } catch { return general(); }
    if (head === null) return;
    const decision = router.route({ method: head.method, url: head.url, headers: head.headers, clientIp: ip });
    if (stopping || decision === null) return general();
    if (atKeyLimit(decision)) return general();
    const slot = placeFor(decision.key);
    const ch = channelFor(slot);
    if (!ch) return general();
    finish();
    h.readStop();
    const bytes = reader.bytes;
    const meta: ConnMeta = { t: 'conn', route: decision.route.name, key: decision.key, ip, port, proto: l.proto, at: Date.now(), acc };
    if (raw.acceptedNoDelay()) meta.nd = 1;
    if (head.websocket) meta.ws = 1;
    dispatch(ch, slot, h.fd, bytes, meta, () => h.close(), () => {
      // Route it again as a socket (its slot restarts).
      const sock = raw.toSocket(h);
      sock.on('error', () => {});
      handOff(sock, bytes, meta, 1);
    }, () => failSocket(raw.toSocket(h), 'FDP_PROXY_HANDOFF_FAILED'));
  }, () => { if (!done) { finish(); h.close(); } });
}

/** Answer a head error and close (after 2 s at the latest, if the client does not read). */
function failSocket(sock: net.Socket, code: string): void {
  counters.inc(`head_error_${errorResponse(code).toString('latin1', 9, 12)}`);
  sock.on('error', () => {});
  sock.end(errorResponse(code));
  setTimeout(() => sock.destroy(), 2000).unref();
}

/** A connection as a net.Socket; `already`: bytes the raw path read (it counted the accept and
 *  checked the limits). */
function onConnection(sock: net.Socket, l: Listening, already?: Buffer): void {
  sock.on('error', () => {});
  if (already === undefined) {
    counters.inc('accepted');
    if (stopping) { refuseStopping(sock); return; }
    if (overLimit()) {
      counters.inc('head_error_503');
      sock.end(errorResponse('FDP_PROXY_LIMIT_GLOBAL'));
      return;
    }
  }
  inflight++;
  let reader = new HeadReader(config.limits.head_bytes);
  let clientIp = sock.remoteAddress ?? '';
  if (clientIp.startsWith('::ffff:')) clientIp = clientIp.slice(7);
  let clientPort = sock.remotePort ?? 0;
  let pp: Buffer | null = l.proxyProtocol ? Buffer.alloc(0) : null;   // bytes of a PROXY header still being read
  let done = false;
  // head_timeout is absolute (from the first byte of a head), not an idle timer: a slowloris client
  // dribbling one byte at a time must not hold the connection forever.
  let headTimer: NodeJS.Timeout | null = null;
  const armHeadTimer = () => {
    if (headTimer) clearTimeout(headTimer);
    headTimer = setTimeout(() => { if (!done) fail('FDP_PROXY_HEAD_TIMEOUT'); }, config.limits.head_timeout);
  };
  // Between requests (after a keep-alive 404) the connection is idle: closed silently after
  // idle_timeout (0: never); head_timeout starts again with the next head's first byte.
  let idle = false;
  const closeIdle = () => {
    if (done) return;
    finish();
    sock.end();
    setTimeout(() => sock.destroy(), 2000).unref();
  };
  const waitIdle = () => {
    if (headTimer) clearTimeout(headTimer);
    headTimer = null;
    idle = true;
    idleBetween.add(closeIdle);   // a stop closes it at once (nothing in flight)
    if (config.limits.idle_timeout > 0) headTimer = setTimeout(closeIdle, config.limits.idle_timeout);
  };
  const finish = () => { if (!done) { done = true; inflight--; idleBetween.delete(closeIdle); if (headTimer) clearTimeout(headTimer); sock.removeListener('data', onData); } };
  const fail = (code: string) => { finish(); failSocket(sock, code); };
  const onData = (d: Buffer) => {
    if (idle) { idle = false; idleBetween.delete(closeIdle); armHeadTimer(); }
    if (pp !== null) {
      const buf: Buffer = pp.length ? Buffer.concat([pp, d]) : d;
      pp = buf;
      let r;
      try { r = readProxyHeader(buf); } catch { return fail('FDP_PROXY_BAD_REQUEST'); }
      if (r === null) return;
      if (r.ip) { clientIp = r.ip; clientPort = r.port; }
      d = buf.subarray(r.length);
      pp = null;
      if (d.length === 0) return;
    }
    let head: RequestHead | null;
    try { head = reader.push(d); } catch (e) { return fail((e as ProxyError).code); }
    if (head === null) return;
    const bytes = reader.bytes;
    const decision = router.route({ method: head.method, url: head.url, headers: head.headers, clientIp });
    if (decision === null) {
      counters.inc('head_error_404');
      if (head.keepAlive && head.contentLength <= 0 && !head.chunked && !head.websocket) {
        // Answer and read the next request on the same connection.
        sock.write(errorResponse('FDP_ROUTE_NO_MATCH'));
        reader = new HeadReader(config.limits.head_bytes);
        waitIdle();
        const rest = bytes.subarray(head.headEnd);
        if (rest.length) onData(rest);
        return;
      }
      return fail('FDP_ROUTE_NO_MATCH');
    }
    if (atKeyLimit(decision)) return fail('FDP_PROXY_LIMIT_KEY');
    finish();
    handOff(sock, bytes, { t: 'conn', route: decision.route.name, key: decision.key, ip: clientIp, port: clientPort, proto: l.proto, at: Date.now(), acc, nd: 1 });
  };
  sock.on('data', onData);
  armHeadTimer();
  sock.on('close', () => finish());
  if (already?.length) onData(already);
}

/** Stopping: answer 503 (Retry-After, Connection: close) without reading the request, discard
 *  what the client sends meanwhile (closing with unread bytes would reset the connection and
 *  could lose the answer), and close after 2 s at the latest (failSocket). */
function refuseStopping(sock: net.Socket): void {
  sock.resume();
  failSocket(sock, 'FDP_PROXY_STOPPING');
}

/** On stop: stop listening at once, for every process that holds the listening sockets, and
 *  answer what the kernel had already queued (503, "stopping") instead of letting it be reset. */
function closeListeners(): void {
  let queued = 0;
  for (const s of servers.splice(0)) {
    const r = stopListening(s.fd, fd => {
      let sock: net.Socket;
      try { sock = socketFromFd(fd, s.unix ? 'unix' : 'tcp'); } catch { closeFd(fd); return; }
      onConnection(sock, s.li);
    });
    queued += r.queued;
    if (r.errno) log.warn('shutdown_listener_failed', { fd: s.fd, errno: r.errno });
    s.close();
  }
  if (queued) log.info('stop_queued_answered', { connections: queued });
}

// ---------------------------------------------------------------- hand off

/** Hand a socket we hold (reading or not) to the worker that owns its key. */
function handOff(sock: net.Socket, bytes: Buffer, meta: ConnMeta, attempt = 0): void {
  // Stopping: the workers take no new connection (and one with nothing to drain is gone
  // already); waiting for a restart that will not come would end in a silent close.
  if (stopping) { refuseStopping(sock); return; }
  const slot = placeFor(meta.key);
  const ch = channelFor(slot);
  if (!ch) {
    // Already waited once: give up. (A handoff the dead worker returned, attempt 1, still waits.)
    if (attempt >= 2) { sock.end(errorResponse('FDP_PROXY_NO_WORKER')); counters.inc('head_error_503'); return; }
    // The worker is restarting in its slot: wait for its channel, briefly.
    sock.pause();
    const go = () => { clearTimeout(t); handOff(sock, bytes, meta, 2); };
    const t = setTimeout(() => { const l = waiting.get(slot); if (l) l.splice(l.indexOf(go), 1); go(); }, WAIT_FOR_WORKER_MS);
    (waiting.get(slot) ?? waiting.set(slot, []).get(slot)!).push(go);
    return;
  }
  let r;
  try { r = releaseSocket(sock); } catch { sock.destroy(); return; }
  const all = r.unread.length ? Buffer.concat([bytes, r.unread]) : bytes;
  dispatch(ch, slot, r.fd, all, meta, () => sock.destroy(), () => {
    // Our copy is intact: route it again (its slot restarts).
    resumeSocket(sock);
    sock.pause();
    if (attempt >= 2) { sock.end(errorResponse('FDP_PROXY_HANDOFF_FAILED')); return; }
    handOff(sock, all, meta, attempt + 1);
  }, () => { resumeSocket(sock); failSocket(sock, 'FDP_PROXY_HANDOFF_FAILED'); });
}

/** Send one connection's fd to the worker on `slot`, counted in the table while it is there.
 *  `acked`: the worker has it (drop our copy); `returned`: the worker died before taking it
 *  (uncounted again; our copy is intact). */
function dispatch(ch: Channel, slot: number, fd: number, bytes: Buffer, meta: ConnMeta, acked: () => void, returned: () => void,
                  refused: () => void): void {
  placement.opened(meta.key, slot);
  counters.inc('handoffs');
  try {
    ch.send({ fds: [fd], bytes, meta }, {
      onAck: acked,
      onReturn: () => { placement.closed(meta.key, slot); counters.inc('handoffs_returned'); returned(); },
    });
  } catch (e) {
    // Refused at once (FDP_FDPASS_TOO_BIG: more read than one handoff carries): our copy is intact.
    placement.closed(meta.key, slot);
    log.warn('handoff_refused', { code: (e as { code?: string }).code, bytes: bytes.length, key: meta.key });
    counters.inc('handoffs_refused');
    refused();
  }
}

/** A connection a worker gives back between requests: route its next request again. */
function onReroute(h: Handoff, meta: { ip: string; port: number; proto: 'http' | 'https' }): void {
  const fd = h.fds[0];
  let sock: net.Socket;
  try { sock = socketFromFd(fd); } catch { closeFd(fd); return; }
  sock.on('error', () => {});
  sock.pause();
  const reader = new HeadReader(config.limits.head_bytes);
  let head: RequestHead | null = null;
  try { head = reader.push(h.bytes); } catch (e) { sock.end(errorResponse((e as ProxyError).code)); return; }
  if (!head) { sock.end(errorResponse('FDP_PROXY_BAD_REQUEST')); return; }
  const d = router.route({ method: head.method, url: head.url, headers: head.headers, clientIp: meta.ip });
  if (!d) { sock.end(errorResponse('FDP_ROUTE_NO_MATCH')); return; }
  counters.inc('reroutes');
  handOff(sock, h.bytes, { t: 'conn', route: d.route.name, key: d.key, ip: meta.ip, port: meta.port, proto: meta.proto, at: Date.now(), acc, nd: 1 });
}

// ---------------------------------------------------------------- worker channels

/** The placement id of a worker of an earlier generation (whose keyless connections are held away). */
const awayId = (g: number, s: number) => `${g}:${s}`;
/** Where a worker (of generation `g`, slot `s`) is counted: a slot of the table, or held away. */
const whereIs = (g: number, s: number) => (g === gen ? s : awayId(g, s));

function onWorkerMessage(h: Handoff, from: Channel, slot: number, wgen: number): void {
  const meta = h.meta as HandoffMeta;
  counters.inc('worker_reports');
  if (meta.t === 'reroute') return onReroute(h, meta);
  for (const fd of h.fds) closeFd(fd);
  if (meta.t === 'closed') {
    const m = JSON.parse(h.bytes.toString()) as ClosedMeta;
    // Keyless connections that migrated here first (a reload, a drain), then what closed.
    for (const [g, s, n] of m.landed ?? []) for (let i = 0; i < n; i++) placement.landed(whereIs(g, s), whereIs(wgen, m.slot));
    for (const [, key, n] of m.closed) {
      if (key === null && wgen !== gen) { for (let i = 0; i < n; i++) placement.closedAway(awayId(wgen, m.slot)); continue; }
      const s = key !== null ? placement.slotOf(key) ?? m.slot : m.slot;
      for (let i = 0; i < n; i++) placement.closed(key, s);
    }
  } else if (meta.t === 'holding') {
    const m = JSON.parse(h.bytes.toString()) as HoldingMeta;
    if (m.gen !== gen) return;
    for (const [, key, n] of m.keys) {
      for (let i = 0; i < n; i++) placement.opened(key, m.slot);
      // Several acceptors: a key another one placed there (count 0). Not where this one would
      // place it: it was moved, an override this one lost if it restarted; take it again.
      if (n === 0 && many && key !== null && placement.place(key) !== m.slot) applyMove(key, m.slot);
    }
    if (m.last) { heldFrom.add(`${m.gen}:${m.slot}`); onHeld?.(); }
  } else if (meta.t === 'kept') {
    // These keys live on `slot`: a rebalance could not move them off the sender, or a drained
    // worker moved keys placed by other acceptors there. Not after a reload: a worker of an
    // earlier generation keeps nothing (its plan moves everything).
    if (wgen !== gen) return;
    const m = JSON.parse(h.bytes.toString()) as { slot: number; keys: string[] };
    for (const key of m.keys) applyMove(key, m.slot);
  } else log.warn('unexpected_message', { from: from.name, slot, t: (meta as { t: string }).t });
}

function addWorker(h: Handoff): void {
  const m = h.meta as PeerMeta;
  const id = `${m.gen}:${m.slot}`;
  workers.get(id)?.close();
  const ch = new Channel({ data: h.fds[0], bell: h.fds[1] }, { name: `acceptor->w${m.slot}g${m.gen}` });
  workers.set(id, ch);
  ch.on('handoff', (x: Handoff) => onWorkerMessage(x, ch, m.slot, m.gen));
  ch.on('error', (e: Error) => log.warn('channel_error', { worker: m.slot, err: e.message }));
  ch.on('close', () => {
    if (workers.get(id) !== ch) return;
    workers.delete(id);
    // A worker that died took its connections with it: forget its keys.
    if (m.gen === gen) placement.forgetSlot(m.slot);
    // A retiring one: what it still counts, keyless, is its last migrations, which the new
    // workers report landed a moment later (or, if it died, connections gone with it). Until
    // then it stays counted: never under max_connections.
    else setTimeout(() => placement.dropAway(awayId(m.gen, m.slot)), AWAY_GRACE_MS).unref();
  });
  if (m.gen === gen) for (const go of waiting.get(m.slot)?.splice(0) ?? []) go();
}

// ---------------------------------------------------------------- reload, rebalance

function switchGeneration(newGen: number, newSlots: number[], newConfig: Config): void {
  const old = placement, oldGen = gen, oldSlots = slots;
  config = newConfig; router = new Router(newConfig); gen = newGen; slots = newSlots;
  draining.clear();
  overrides.clear();
  placement = newPlacement(slots);
  const plans = new Map<number, [string, number][]>();
  for (const { key, slot, connections } of old.entries()) {
    const s = placement.place(key);
    for (let i = 0; i < connections; i++) placement.opened(key, s);
    (plans.get(slot) ?? plans.set(slot, []).get(slot)!).push([key, s]);
  }
  // A key moved during the old generation: the worker it left may still hold part of it.
  for (const [key, froms] of movedFrom) {
    const s = placement.slotOf(key);
    if (s === undefined) continue;
    for (const f of froms) if (old.slotOf(key) !== f) (plans.get(f) ?? plans.set(f, []).get(f)!).push([key, s]);
  }
  movedFrom = new Map();
  // Keyless connections stay counted (max_connections) while the old workers hold them; each is
  // counted on its new slot once that worker reports it landed, or uncounted when it closes.
  for (const s of oldSlots) placement.holdAway(awayId(oldGen, s), old.keylessOn(s));
  for (const [id, n] of old.away()) {
    const [g, s] = id.split(':').map(Number);
    if (g === newGen) for (let i = 0; i < n; i++) placement.opened(null, s);   // landed before this switch
    else placement.holdAway(id, n);
  }
  for (const [id, ch] of workers) {
    const [g, s] = id.split(':').map(Number);
    if (g !== oldGen) continue;
    if (many) {
      // Only the lead acceptor plans; no acceptor knows every key, but every key's new slot is
      // its rendezvous winner, which the old worker works out itself.
      if (!leads()) continue;
      const plan: PlanMeta = { t: 'plan', gen: newGen, moves: [], keyless: slots, last: true, hrw: slots };
      ch.send({ fds: [], bytes: Buffer.from(JSON.stringify(plan)), meta: { t: 'plan' } });
      continue;
    }
    // Keyless connections spread over the new workers; keyed ones follow their key. In parts that
    // each fit a handoff; the worker starts once it has the last.
    const parts = jsonParts(plans.get(s) ?? [], (moves, last): PlanMeta => ({ t: 'plan', gen: newGen, moves, keyless: slots, last }));
    for (const bytes of parts) ch.send({ fds: [], bytes, meta: { t: 'plan' } });
  }
  log.info('switched', { gen: newGen, workers: slots.length, keys: plans.size });
  for (const [slot, list] of waiting) if (channelFor(slot)) for (const go of list.splice(0)) go();
}

/** Move keys (all their live connections) to other workers: the table first, so new
 *  connections already go to the target, then the owning worker migrates what it holds. */
function moveKeys(moves: [string, number][], keylessTo: number[] = [], fromSlot?: number, hrw?: number[]): void {
  const byFrom = new Map<number, [string, number][]>();
  for (const [key, to] of moves) {
    // Several acceptors: this one may not have counted the key, but it knows where it lives.
    const from = placement.slotOf(key) ?? (many ? placeFor(key) : undefined);
    if (from === undefined || from === to) continue;
    applyMove(key, to, from);
    counters.inc('rebalanced_keys');
    (byFrom.get(from) ?? byFrom.set(from, []).get(from)!).push([key, to]);
  }
  // Several acceptors: each updates its table; the lead one alone tells the workers.
  if (many && !leads()) return;
  if (fromSlot !== undefined && (keylessTo.length || hrw) && !byFrom.has(fromSlot)) byFrom.set(fromSlot, []);
  for (const [from, list] of byFrom) {
    const ch = channelFor(from);
    // In parts that each fit a handoff; the keyless moves and the rendezvous drain ride on the last.
    const parts = jsonParts(list, (moves, last): PlanMeta => ({ t: 'plan', gen, moves, keyless: last && from === fromSlot ? keylessTo : [], last,
      ...(last && from === fromSlot && hrw ? { hrw } : {}) }));
    for (const bytes of parts) ch?.send({ fds: [], bytes, meta: { t: 'move' } });
  }
  // Every worker hears where the keys went (after the moves themselves): one that gave a key away
  // earlier and still holds an exchange of it in progress sends that connection to the key's new
  // worker when it ends — or keeps it, if the key came back to it.
  const moved = [...byFrom.values()].flat();
  if (moved.length === 0) return;
  const notices = jsonParts(moved, part => ({ gen, moves: part }));
  for (const s of slots) for (const bytes of notices) channelFor(s)?.send({ fds: [], bytes, meta: { t: 'moved' } });
}

function drainSlot(slot: number): void {
  draining.add(slot);
  const open = slots.filter(s => !draining.has(s));
  if (open.length === 0) return;
  const moves: [string, number][] = placement.keysOn(slot).map(key => [key, rankSlots(key, open)[0]]);
  // Several acceptors: keys counted elsewhere go to their rendezvous winner among the open slots,
  // which the draining worker works out itself (as every acceptor's placeFor does).
  moveKeys(moves, open, slot, many ? open : undefined);
  log.info('draining', { slot, keys: moves.length });
}

/** When one worker holds far more than its share, move whole keys from it to the coolest. */
function autoRebalance(): void {
  const rb = config.rebalance;
  if (!rb?.auto || stopping || leaving || !leads()) return;
  const open = slots.filter(s => !draining.has(s) && channelFor(s));
  if (open.length < 2) return;
  const load = new Map(open.map(s => [s, placement.load(s)]));
  const total = [...load.values()].reduce((a, b) => a + b, 0);
  const avg = total / open.length;
  const hot = open.reduce((a, b) => (load.get(b)! > load.get(a)! ? b : a));
  if (load.get(hot)! < rb.min_connections || load.get(hot)! <= rb.threshold * avg) return;
  const keys = [...placement.entries()].filter(e => e.slot === hot).sort((a, b) => b.connections - a.connections);
  const moves: [string, number][] = [];
  for (const e of keys) {
    if (load.get(hot)! <= avg * 1.05 || moves.length >= 500) break;
    const cold = open.reduce((a, b) => (load.get(b)! < load.get(a)! ? b : a));
    // Moving a key bigger than half the gap would only swap which worker is hot.
    if (e.connections > (load.get(hot)! - load.get(cold)!) / 2) continue;
    moves.push([e.key, cold]);
    load.set(hot, load.get(hot)! - e.connections);
    load.set(cold, load.get(cold)! + e.connections);
  }
  if (moves.length === 0) return;
  counters.inc('auto_rebalances');
  log.info('rebalance', { from: hot, keys: moves.length, load: placement.load(hot), average: Math.round(avg) });
  moveKeys(moves);
  // The lead acceptor sees a sample of the traffic (its share of the accepts): the others
  // apply the same moves.
  if (many) send({ t: 'moved', moves });
}

// ---------------------------------------------------------------- wiring

function listen(fds: { fd: number; proxyProtocol: boolean; unix?: boolean }[]): void {
  for (const l of fds) {
    const li: Listening = { proxyProtocol: l.proxyProtocol, proto: 'http' };
    if (!l.unix && raw.available()) {
      const srv = raw.listenRaw(l.fd, 4096, h => onRawConnection(h, li), e => log.error('listen_error', { errno: e }));
      servers.push({ fd: l.fd, unix: false, li, close: () => srv.close() });
      continue;
    }
    const srv = net.createServer({ noDelay: true }, s => onConnection(s, li));
    srv.on('error', e => log.error('listen_error', { err: e.message }));
    srv.listen({ fd: l.fd, backlog: 4096 });
    servers.push({ fd: l.fd, unix: !!l.unix, li, close: () => srv.close() });
  }
}

function main(): void {
  const control = channelFromStdio(undefined, undefined, { name: 'acceptor-control' });
  control.on('handoff', (h: Handoff) => {
    if ((h.meta as HandoffMeta).t === 'peer') addWorker(h);
    else { for (const fd of h.fds) closeFd(fd); }
  });
  control.on('close', () => process.exit(0));
  const listenFds = JSON.parse(process.env.FDPROXY_LISTEN ?? '[]') as { fd: number; proxyProtocol: boolean; unix?: boolean }[];
  process.on('message', (m: ToChild) => {
    switch (m.t) {
      case 'assign': {
        // A standby acceptor takes over (a handover after a reload, or a dead acceptor's index):
        // the supervisor wired it to the workers first, which re-send what they hold. It starts
        // accepting once every worker's report is whole (bounded), so that no key they hold is
        // placed elsewhere meanwhile; new connections wait in the listening socket's queue.
        if (!standby) break;
        standby = false;
        gen = m.gen;
        if (m.acc !== undefined) acc = m.acc;
        const begin = () => {
          onHeld = null;
          clearTimeout(wait);
          // Stopped or handed over while it waited: it never accepts.
          if (stopping || leaving) return;
          for (const c of deferred?.splice(0) ?? []) tableCommand(c);
          deferred = null;
          listen(listenFds);
          setInterval(autoRebalance, config.rebalance?.interval ?? 5000).unref();
          sendStats();   // its table at once: /status and the metrics have no gap until the first periodic report
          send({ t: 'ready', role: 'acceptor', slot: -1, gen });
        };
        const whole = () => [...workers.keys()].every(id => !id.startsWith(`${gen}:`) || heldFrom.has(id));
        const wait = setTimeout(begin, HELD_WAIT_MS);
        if (whole()) begin(); else onHeld = () => { if (whole()) begin(); };
        break;
      }
      case 'config':
        if (!config) {
          config = m.config; router = new Router(config); gen = m.gen; slots = m.slots; placement = newPlacement(slots);
          log.level = config.log_level;
          if (standby) { send({ t: 'ready', role: 'acceptor', slot: -1, gen: -1 }); break; }
          listen(listenFds);
          setInterval(autoRebalance, config.rebalance?.interval ?? 5000).unref();
          send({ t: 'ready', role: 'acceptor', slot: -1, gen });
        }
        break;
      case 'switch': switchGeneration(m.gen, m.slots, m.config); break;
      case 'move': case 'override': case 'drain': case 'undrain':
        if (deferred) deferred.push(m); else tableCommand(m);
        break;
      case 'peers': peersTotal = m.total; break;
      case 'handover': {
        // A fresh acceptor takes this one's place (after a reload: it runs the code now on disk).
        // Stop accepting at once: only our copies of the listening sockets close, the socket stays
        // open in the supervisor and the new acceptor, and the kernel queues what arrives until
        // that one accepts (nothing refused or reset). Heads being read are finished and handed
        // off as usual, over our channels, which the workers keep until we are gone; keep-alive
        // connections idle after a 404 are closed (nothing in flight). Then our counters go to
        // the supervisor (they carry on in the new acceptor's) and we exit.
        if (stopping || standby || leaving) break;
        leaving = true;
        for (const s of servers.splice(0)) s.close();
        for (const close of [...idleBetween]) close();
        const until = Date.now() + Math.max(config.limits.head_timeout, WAIT_FOR_WORKER_MS) + 1000;
        const exitWhenDone = () => {
          const busy = inflight > 0 || [...waiting.values()].some(l => l.length > 0) || [...workers.values()].some(c => c.pending > 0);
          if (busy && Date.now() < until) { setTimeout(exitWhenDone, 20); return; }
          const last: FromChild = { t: 'handed_over', counters: counters.snapshot().counters };
          if (process.connected) process.send!(last, () => process.exit(0)); else process.exit(0);
        };
        setTimeout(exitWhenDone, 20);
        break;
      }
      case 'ping': send({ t: 'pong' }); break;
      case 'stop':
        if (stopping) break;
        stopping = true;
        // A spare never listened: it only lets go of its copies (draining the queue is the
        // listening acceptors' job; a shutdown here could reset what they have not accepted yet).
        if (standby) for (const l of listenFds) closeFd(l.fd);
        else closeListeners();
        // Connections waiting for a worker to come back: none will (answered in handOff).
        for (const list of waiting.values()) for (const go of list.splice(0)) go();
        for (const close of [...idleBetween]) close();
        if (m.mode === 'fast') { setTimeout(() => process.exit(0), 50); break; }
        // Graceful: heads still arriving are read to the end and answered (503, stopping), within
        // head_timeout; at least 500 ms, so that the answers already written go out.
        const t0 = Date.now();
        const exitWhenDone = () => {
          const ms = Date.now() - t0;
          if ((ms >= 500 && inflight === 0) || ms >= Math.max(500, config.limits.head_timeout)) process.exit(0);
          else setTimeout(exitWhenDone, 20);
        };
        setTimeout(exitWhenDone, 20);
        break;
    }
  });
  process.on('disconnect', () => process.exit(0));
  // Idle: nothing to tell, no CPU spent. Not while its table is still filling (a standby, or one
  // taking an index): a partial table would show in /status; it reports once it accepts.
  setInterval(() => { if (deferred === null && counters.takeChanged()) sendStats(); }, 1000).unref();
}

/** An admin or supervisor command on the placement table. */
function tableCommand(m: ToChild): void {
  switch (m.t) {
    case 'move': moveKeys([[m.key, m.slot]]); break;
    case 'override': for (const [key, to] of m.moves) applyMove(key, to); break;
    // quiet: a replacement learning a drain its predecessor was told of (the keys were moved then).
    case 'drain': if (m.quiet) draining.add(m.slot); else drainSlot(m.slot); break;
    case 'undrain': draining.delete(m.slot); break;
  }
}

function sendStats(): void {
  send({ t: 'stats', role: 'acceptor', slot: -1, gen, stats: {
    ...counters.snapshot(), inflight, total: placement?.total() ?? 0, top_keys: placement?.topKeys(20) ?? [],
    loads: slots.map(s => [s, placement.load(s)]),
  } });
}

process.on('uncaughtException', err => {
  log.error('uncaught', { err: String((err as Error)?.stack ?? err) });
  process.exit(70);
});

main();
