// worker: owns connections. Receives handoffs (new connections from the acceptor, live tunnels
// and idle keep-alive connections from other workers), proxies them, and moves them on when
// told to (reload, rebalance, drain): what goes where is decided here, one move is migrate.ts.
import * as net from 'node:net';
import type { Config, Route, Server } from '../conf/types';
import { Router, rankSlots } from '../routing';
import { Channel, channelFromStdio, socketFromFd, releaseSocket, resumeSocket, closeFd, type Handoff, type SendCallbacks } from '../fdpass';
import { errorResponse, ProxyError, clientAnswer } from './errors';
import { HeadReader, type RequestHead } from './head';
import { HttpConn, type HttpHooks } from './http';
import { Tunnel, type TunnelEnd } from './tunnel';
import { endpointFromFd, endpointFromSocket, type Endpoint } from './endpoint';
import { collectGarbage, holdMigratedCopies, optimizeMigrationPath, initMigrate, limited, migrateIdle, spread, migrateTunnel, traceAdopted, MIGRATE_ADAPT, MIGRATE_CONCURRENCY, MIGRATE_DEADLINE_MS } from './migrate';
import { Upstreams } from './backend';
import { backendHandshake, acceptFor, type UpgradeResult } from './upgrade';
import { Relay, Tallies, relayRequestHead, acceptClientDeflate, acceptBackendDeflate, formatDeflate, wsLib, type RelayEnd } from './relay';
import { Quotas } from './quota';
import { parseResponseHead } from './framing';
import { Log } from './log';
import { Counters } from './counters';
import { jsonParts, type ConnMeta, type FromChild, type HandoffMeta, type IdleHttpMeta, type PeerMeta, type PlanMeta, type RelayMeta, type RerouteMeta, type ToChild, type TunnelMeta } from './messages';

let slot = Number(process.env.FDPROXY_SLOT ?? 0);
let gen = Number(process.env.FDPROXY_GEN ?? 1);
/** A warm spare: loaded and configured, waiting to be assigned the slot of a worker that died. */
let standby = process.env.FDPROXY_STANDBY === '1';
let config: Config;
let router: Router;
let upstreams: Upstreams;
const log = new Log(`worker${slot}`);
const counters = new Counters();
const routes = new Map<string, Route>();
/** Channels to the acceptors, by index (one unless `acceptors: N`). */
const acceptors = new Map<number, Channel>();
/** Which acceptor placed each connection (closes are reported to that acceptor's table). */
const accOf = new WeakMap<Tunnel | Relay | HttpConn, number>();
const anyAcceptor = (prefer = 0): Channel | null => acceptors.get(prefer) ?? acceptors.values().next().value ?? null;
const peers = new Map<string, Channel>();   // "gen:slot" → channel to that worker
const tunnels = new Set<Tunnel | Relay>();   // relay-mode WebSockets too (same bookkeeping)
const conns = new Set<HttpConn>();
const byKey = new Map<string, Set<Tunnel | Relay | HttpConn>>();
/** WebSocket handshakes in progress per key (between their HTTP connection and their tunnel). */
const upgrading = new Map<string, number>();
function countUpgrade(key: string | null, d: 1 | -1): void {
  if (key === null) return;
  const n = (upgrading.get(key) ?? 0) + d;
  if (n > 0) upgrading.set(key, n); else upgrading.delete(key);
}
const quotas = new Quotas();    // relay: per-key message/byte windows
const tallies = new Tallies();  // relay: messages/bytes/limit hits per route and key
let closedBatch = new Map<string, [string, string | null, number, number]>();   // id → [route, key, count, acceptor]
const landedBatch = new Map<string, [number, number, number, number]>();        // id → [gen, slot, count, acceptor]
const routeTotals = new Map<string, number>();   // connections adopted per route (metrics)
const serverTotals = new Map<string, number>();  // tunnels opened + HTTP exchanges per server (metrics)
const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
let stopping = false;
/** A reload's plan: where keys go (moves; several acceptors: any other key to its rendezvous
 *  winner among `hrw`), keyless connections round-robin over `keyless`. */
let retiring: { moves: Map<string, number>; keyless: number[]; rr: number; done: boolean; hrw?: number[] } | null = null;
/** Keys this worker has given away (a move, a drain) while some of their connections are still
 *  here: an HTTP connection in the middle of an exchange cannot move until the exchange ends.
 *  Until then the key is not ours: its next request is handed over like any request for another
 *  worker's key, and the connection moves as soon as it rests. Gone once nothing of it is left
 *  (moveKey), or when the key comes back. `to` follows later moves of the key (acceptor notices). */
const givenAway = new Map<string, { to: number; gen: number }>();
/** Several acceptors: keys this worker has given away, kept after their last connection has left
 *  (givenAway forgets them then), and whether the lead acceptor is draining this worker. Another
 *  acceptor may not have heard of the move or the drain yet (messages to acceptors are not
 *  synchronous, and an auto-rebalance reaches them through the supervisor) and place a new
 *  connection here by its old view: such a connection goes to the lead acceptor instead of being
 *  served (adoptConnection), or the key would be split. Forgotten when the key comes back (the
 *  lead places a connection of it here, or moves it here); bounded, oldest first. */
const movedAway = new Set<string>();
const MAX_MOVED_AWAY = 100_000;
let drained = false;
function markMovedAway(key: string): void {
  if (config.acceptors <= 1) return;   // one acceptor: it sends the moves, it is never behind them
  movedAway.delete(key);
  movedAway.add(key);
  if (movedAway.size > MAX_MOVED_AWAY) movedAway.delete(movedAway.values().next().value!);
}
/** A key given away comes back (the acceptor placed a connection of it here, or moved it here):
 *  its connections stay. */
function takenBack(key: string | null): void {
  if (key !== null && givenAway.size > 0) givenAway.delete(key);
  if (key !== null && movedAway.size > 0) movedAway.delete(key);
  if (key !== null && lately.size > 0) lately.delete(key);
}
/** Keys whose last connection here has just left (moveKey done), for as long as a handoff of them
 *  may still be on its way here: one moved to us and on again in quick succession (/move twice,
 *  a rebalance after a move) can arrive after we moved on what we had. It follows the key
 *  (followKey) instead of staying here, split from the rest. */
const lately = new Map<string, { to: number; gen: number; until: number }>();
const MAX_LATELY = 100_000;
function followKey(key: string | null): void {
  if (key === null || lately.size === 0 || givenAway.has(key)) return;
  const e = lately.get(key);
  if (!e) return;
  lately.delete(key);
  if (Date.now() < e.until) moveKey(key, e.to, e.gen);
}
/** The acceptor moved keys (anywhere): a key given away here follows its new worker. */
function onMoved(m: { gen: number; moves: [string, number][] }): void {
  if (givenAway.size === 0 && movedAway.size === 0 && lately.size === 0) return;
  for (const [key, to] of m.moves) {
    if (to === slot && m.gen === gen) { movedAway.delete(key); lately.delete(key); }
    else { const l = lately.get(key); if (l) { l.to = to; l.gen = m.gen; } }
    const e = givenAway.get(key);
    if (!e) continue;
    if (to === slot && m.gen === gen) givenAway.delete(key);
    else { e.to = to; e.gen = m.gen; }
  }
}

function send(m: FromChild): void { if (process.connected) process.send!(m); }

function keyIndex(key: string | null, c: Tunnel | Relay | HttpConn, add: boolean): void {
  if (key === null) return;
  let s = byKey.get(key);
  if (add) { if (!s) byKey.set(key, s = new Set()); s.add(c); }
  else if (s) { s.delete(c); if (s.size === 0) byKey.delete(key); }
}

/** A connection of (route, key) is gone from this worker: the acceptor's placement counts it down. */
function reportClosed(route: string, key: string | null, acc = 0): void {
  const id = `${acc}\0${route}\0${key ?? ''}`;
  const e = closedBatch.get(id);
  if (e) e[2]++; else closedBatch.set(id, [route, key, 1, acc]);
  // Batched: one report per 100 ms at most, and no timer at all while nothing closes.
  closedTimer ??= setTimeout(flushClosed, 100);
}
/** A keyless connection migrated here from worker `fromSlot` of generation `fromGen`: its acceptor
 *  counts it on this slot from now on (reported before any close of it, in the same batches). */
function reportLanded(key: string | null, fromGen: number | undefined, fromSlot: number | undefined, acc = 0): void {
  if (key !== null || fromGen === undefined || fromSlot === undefined) return;
  const id = `${acc}\0${fromGen}\0${fromSlot}`;
  const e = landedBatch.get(id);
  if (e) e[2]++; else landedBatch.set(id, [fromGen, fromSlot, 1, acc]);
  closedTimer ??= setTimeout(flushClosed, 100);
}
let closedTimer: NodeJS.Timeout | undefined;
function flushClosed(): void {
  closedTimer = undefined;
  if (closedBatch.size + landedBatch.size === 0) return;
  sendClosed();
  if (closedBatch.size + landedBatch.size) closedTimer = setTimeout(flushClosed, 100);
}

/** Send the batched closes, each to the acceptor that placed the connections; a close for an
 *  acceptor that is restarting stays batched for its successor. Returns the sends made. */
function sendClosed(cb?: SendCallbacks): number {
  const per = new Map<number, { closed: [string, string | null, number][]; landed?: [number, number, number][] }>();
  const of = (acc: number) => per.get(acc) ?? per.set(acc, { closed: [] }).get(acc)!;
  for (const [id, [g, s, n, acc]] of landedBatch) {
    if (!acceptors.has(acc)) continue;
    landedBatch.delete(id);
    (of(acc).landed ??= []).push([g, s, n]);
  }
  for (const [id, [route, key, n, acc]] of closedBatch) {
    if (!acceptors.has(acc)) continue;
    closedBatch.delete(id);
    of(acc).closed.push([route, key, n]);
  }
  // Landings before closes (a connection that landed and closed is counted on its new slot
  // first): they ride on the first part, the closes follow in parts that each fit a handoff.
  let sends = 0;
  for (const [acc, m] of per) {
    for (const bytes of jsonParts(m.closed, (closed, _last, first) => ({ t: 'closed', slot, closed, ...(first && m.landed ? { landed: m.landed } : {}) }))) {
      acceptors.get(acc)!.send({ fds: [], bytes, meta: { t: 'closed' } }, cb);
      sends++;
    }
  }
  return sends;
}

function setConfig(c: Config): void {
  config = c;
  router = new Router(c);
  if (upstreams) upstreams.setConfig(c); else upstreams = new Upstreams(c);
  routes.clear();
  for (const r of c.routes) routes.set(r.name, r);
  log.level = c.log_level;
  // Relay routes: `ws` now, as before 'ready' (else at the first relay, see relay.ts).
  if (c.routes.some(r => r.websocket === 'relay')) wsLib();
}

// ---------------------------------------------------------------- handoffs in

/** Keys of a move that arrives in parts, until its last part. */
let movesNamed = new Set<string>();

function onHandoff(h: Handoff, from: Channel): void {
  const meta = h.meta as HandoffMeta;
  switch (meta.t) {
    case 'conn': return adoptConnection(h.fds[0], h.bytes, meta);
    case 'http': return adoptIdle(h.fds[0], h.bytes, meta);
    case 'tunnel': return adoptTunnel(h, meta);
    case 'relay': return adoptRelay(h, meta);
    case 'plan': return onPlan(JSON.parse(h.bytes.toString()) as PlanMeta);
    case 'moved': return onMoved(JSON.parse(h.bytes.toString()));
    case 'move': {
      // A long list comes in parts (the last one says so); keys named in any part are moved there.
      const p = JSON.parse(h.bytes.toString()) as PlanMeta;
      for (const [key, to] of p.moves) { moveKey(key, to, p.gen); movesNamed.add(key); }
      tellSuccessor(from, p.moves, p.gen);
      if (p.last === false) return;
      const named = movesNamed;
      movesNamed = new Set();
      if (p.hrw?.length) {
        // Drain with several acceptors: every other key to its rendezvous winner among p.hrw.
        drained = true;
        const moved: [string, number][] = [];
        for (const key of [...byKey.keys()]) {
          if (named.has(key)) continue;
          const to = rankSlots(key, p.hrw)[0];
          moveKey(key, to, p.gen);
          moved.push([key, to]);
        }
        // Every acceptor learns where these went (the acceptor that placed one knows; the others
        // do not, and after an /undrain would place its next connection on this worker by hash
        // again: split). The same message as a move that could not be done: "they live there".
        for (const a of acceptors.values()) tellWhere(a, moved);
      }
      if (p.keyless.length) moveKeyless(p.keyless, p.gen);
      return;
    }
    default:
      for (const fd of h.fds) closeFd(fd);
      log.warn('handoff_unexpected', { meta, from: from.name });
  }
}

/** Which acceptor index a channel from an acceptor serves. */
const accIndex = new WeakMap<Channel, number>();
/** Keys now living on other slots, told to an acceptor as a 'kept' ("these keys live on `to`"). */
function tellWhere(ch: Channel, moves: Iterable<[string, number]>): void {
  const byTo = new Map<number, string[]>();
  for (const [key, to] of moves) (byTo.get(to) ?? byTo.set(to, []).get(to)!).push(key);
  for (const [to, keys] of byTo) for (const bytes of jsonParts(keys, part => ({ t: 'kept', slot: to, keys: part }))) ch.send({ fds: [], bytes, meta: { t: 'kept' } });
}
/** A move ordered by an acceptor that a fresh one has already replaced (a renewal after a reload:
 *  the old one finishes the commands it was sent before its handover): the fresh one built its
 *  table from our report, before this move, and would place the key's next connections here —
 *  split. It learns where the keys went. */
function tellSuccessor(from: Channel, moves: [string, number][], moveGen: number): void {
  const i = accIndex.get(from);
  const now = i === undefined ? undefined : acceptors.get(i);
  if (now && now !== from && moveGen === gen && moves.length) tellWhere(now, moves);
}

const STATUS_CLASS = ['http_0xx', 'http_1xx', 'http_2xx', 'http_3xx', 'http_4xx', 'http_5xx'];

function hooks(): HttpHooks {
  return {
    upstreams,
    route(head, ip) {
      const d = router.route({ method: head.method, url: head.url, headers: head.headers, clientIp: ip });
      return d ? { route: d.route, key: d.key } : null;
    },
    owns(route, key, current) {
      // Same key (or both keyless on a keyless route): stays here. Anything else asks the acceptor,
      // as does every request for a key given away and, once a reload's plan is in, every request
      // (the acceptor routes it in the new generation).
      if (retiring?.done || (key !== null && givenAway.has(key))) return false;
      return key === current.key && (key !== null || routes.get(current.route)?.key === null);
    },
    reroute(conn, bytes) {
      untrackHttp(conn);
      handToAcceptor(conn.client, bytes, { t: 'reroute', ip: conn.ctx.clientIp, port: 0, proto: conn.ctx.proto }, accOf.get(conn));
    },
    done(conn, info) {
      counters.inc(STATUS_CLASS[Math.floor(info.status / 100)] ?? `http_${Math.floor(info.status / 100)}xx`);
      if (info.server) bump(serverTotals, info.server);
      // Per request: build the access line only when it is written (log_level info or debug).
      if (log.enabled('info')) log.access({ kind: 'http', client: conn.ctx.clientIp, worker: slot, ...info });
    },
    closed(conn) { untrackHttp(conn); },
    upgrade(conn, head, bytes, route, key) {
      untrackHttp(conn, false);
      startUpgrade(endpointFromSocket(conn.client), head, bytes, route, key, conn.ctx.clientIp, conn.ctx.proto, accOf.get(conn) ?? 0);
    },
    rested(conn) {
      if (givenAway.size === 0 && !retiring?.done) return;   // the usual case: one check per exchange
      if (conn.key !== null && givenAway.has(conn.key) || retiring?.done) leaveWhenIdle(conn, Date.now() + config.limits.drain_timeout);
    },
  };
}
let httpHooks: HttpHooks;

function untrackHttp(conn: HttpConn, closed = true): void {
  if (!conns.delete(conn)) return;
  keyIndex(conn.key, conn, false);
  if (closed) { reportClosed(conn.routeName, conn.key, accOf.get(conn)); counters.dec('open_http'); }
  else counters.dec('open_http');
  // A retiring worker whose last connection was an HTTP exchange (closed at drain_timeout, or
  // ended by either side) has nothing left: it exits now, as after a tunnel's end.
  if (closed) maybeRetired();
}

/** `nodelay: false` for a socket that already has TCP_NODELAY (a socket option lives with the
 *  socket, not the fd: a migrated tunnel's sockets keep what the first worker set), saving a
 *  setsockopt per socket on the adopt path. */
function wrap(fd: number, kind: 'tcp' | 'unix' = 'tcp', nodelay = true): net.Socket {
  const s = socketFromFd(fd, kind);
  s.allowHalfOpen = true;
  if (kind === 'tcp' && nodelay) s.setNoDelay(true);
  return s;
}

function adoptConnection(fd: number, bytes: Buffer, meta: ConnMeta, mayForward = true): void {
  counters.inc('handoffs_in');
  counters.observe('handoff_ms', Date.now() - meta.at);
  const acc = meta.acc ?? 0;
  // Placed by an acceptor other than the lead, for a key given away here, on this worker while the
  // lead drains it, or on this worker once its reload plan is whole (that acceptor has not switched
  // yet): that acceptor is behind the lead. Served here, the connection would split the key (or,
  // on a retiring worker, go down with it). The lead, which told us of the move, drain or plan, is
  // not behind it: it places the connection again. One check while nothing moved; a Set lookup after.
  if (acc !== 0 && mayForward && !stopping && (drained || retiring?.done || (meta.key !== null && movedAway.has(meta.key)))
      && toLead(fd, bytes, meta)) return;
  const route = routes.get(meta.route);
  // A WebSocket upgrade as the first request (the acceptor says so): no net.Socket and no HttpConn,
  // the handshake and then the tunnel run on the fd's libuv handle. Anything else, or a head that
  // does not parse here, takes the HTTP path (which answers it).
  const head = meta.ws === 1 && route && route.websocket !== 'relay' ? upgradeHead(bytes) : null;
  let client: net.Socket | Endpoint;
  try { client = head ? endpointFromFd(fd, 'tcp', meta.nd !== 1) : wrap(fd, 'tcp', meta.nd !== 1); }
  catch (e) { closeFd(fd); log.error('wrap_failed', { err: String(e) }); reportClosed(meta.route, meta.key, acc); return; }
  const refuse = (code: string) => { (client as { end(b: Buffer): void }).end(errorResponse(code)); reportClosed(meta.route, meta.key, acc); };
  if (stopping) return refuse('FDP_PROXY_STOPPING');
  // The acceptor that sends moves placed this key here after any move it sent us (one channel, in
  // order): the key is ours again, and so is this worker, if it was drained (an undrain). (Another
  // acceptor lagging behind a move was handled above.)
  if (acc === 0) { takenBack(meta.key); drained = false; }
  // connections_per_key, exactly: all of a key's connections live on this worker, whichever
  // acceptor placed them (each acceptor counts only its own).
  const limit = route?.connections_per_key ?? 0;
  if (limit > 0 && meta.key !== null && (byKey.get(meta.key)?.size ?? 0) + (upgrading.get(meta.key) ?? 0) >= limit) {
    counters.inc('limit_key_refused');
    return refuse('FDP_PROXY_LIMIT_KEY');
  }
  counters.inc('connections_total'); bump(routeTotals, meta.route);
  if (head) return startUpgrade(client as Endpoint, head, bytes, route!, meta.key, meta.ip, meta.proto, acc);
  const conn = new HttpConn(client as net.Socket, ctxFor(meta.ip, meta.proto), meta.route, meta.key, n => routes.get(n) ?? null, httpHooks);
  accOf.set(conn, acc);
  conns.add(conn); keyIndex(meta.key, conn, true);
  counters.inc('open_http');
  conn.start(bytes);
}

/** New connections handed to the lead acceptor and not taken yet: a retiring worker does not
 *  exit before they are (flushAndExit), or they would be lost. */
let forwarding = 0;
let onForwarded: (() => void) | null = null;

/** Hand a new connection (fd and the bytes its acceptor read) to the lead acceptor, which routes
 *  it again as it does a keep-alive reroute. Its first acceptor counted it here: it hears it
 *  closed once the lead has it. False: no lead acceptor to ask (it is restarting); served here. */
function toLead(fd: number, bytes: Buffer, meta: ConnMeta): boolean {
  const lead = acceptors.get(0);
  if (!lead || lead.isClosed) return false;
  const m: RerouteMeta = { t: 'reroute', ip: meta.ip, port: meta.port, proto: meta.proto };
  const settled = () => { forwarding--; onForwarded?.(); };
  forwarding++;
  try {
    lead.send({ fds: [fd], bytes, meta: m }, {
      onAck: () => { closeFd(fd); reportClosed(meta.route, meta.key, meta.acc); settled(); },
      // The lead went away before taking it: our copy is intact, served here after all.
      onReturn: () => { adoptConnection(fd, bytes, meta, false); settled(); },
    });
  } catch { forwarding--; return false; }   // not expected: its acceptor sent the same bytes in one handoff
  counters.inc('handoffs_forwarded');
  return true;
}

/** The head in `bytes` when it is a whole, valid WebSocket upgrade; else null. */
function upgradeHead(bytes: Buffer): RequestHead | null {
  try {
    const h = new HeadReader(config.limits.head_bytes).push(bytes);
    return h?.websocket ? h : null;
  } catch { return null; }
}

function adoptIdle(fd: number, bytes: Buffer, meta: IdleHttpMeta): void {
  counters.inc('migrations_in');
  reportLanded(meta.key, meta.gen, meta.from, meta.acc);
  let client: net.Socket;
  try { client = wrap(fd); } catch { closeFd(fd); reportClosed(meta.route, meta.key, meta.acc); return; }
  const conn = new HttpConn(client, ctxFor(meta.ip, meta.proto), meta.route, meta.key, n => routes.get(n) ?? null, httpHooks);
  accOf.set(conn, meta.acc ?? 0);
  (conn as any).first = false;
  conns.add(conn); keyIndex(meta.key, conn, true);
  counters.inc('open_http');
  conn.start(bytes);
  // Sent here for a key this worker has given away since (moved twice while it was busy): on.
  if (meta.key !== null && givenAway.has(meta.key)) leaveWhenIdle(conn, Date.now() + config.limits.drain_timeout);
  else followKey(meta.key);
}

function ctxFor(ip: string, proto: 'http' | 'https') {
  const l = config.limits;
  return { clientIp: ip, proto, headBytes: l.head_bytes, headTimeout: l.head_timeout, idleTimeout: l.idle_timeout };
}

// ---------------------------------------------------------------- WebSocket: handshake, tunnel

function startUpgrade(client: Endpoint, head: RequestHead, bytes: Buffer, route: Route, key: string | null, ip: string, proto: 'http' | 'https', acc: number): void {
  countUpgrade(key, 1);
  let upgradeDone = false;
  const settled = () => { if (!upgradeDone) { upgradeDone = true; countUpgrade(key, -1); } };
  // Until the tunnel starts: keep what the client sends (frames after its upgrade) and notice a
  // client that gives up, so the backend connection is not left behind.
  const early: Buffer[] = [];
  let earlyBytes = 0, gone = false, backend: Endpoint | null = null;
  const onEarly = (d: Buffer) => { early.push(d); earlyBytes += d.length; if (earlyBytes > 1 << 20) client.pause(); };
  const onGone = () => { if (gone) return; gone = true; backend?.close(); client.close(); };
  client.setEvents({ data: onEarly, end: onGone, error: onGone, drain: noop });
  const stopEarly = () => client.setEvents(null);
  const fail = (code: string) => {
    stopEarly();
    counters.inc(`ws_fail_${clientAnswer(code).status}`);
    log.access({ kind: 'ws', client: ip, worker: slot, route: route.name, key, status: clientAnswer(code).status, error: code, url: head.url });
    if (!gone) client.end(errorResponse(code));
    settled(); reportClosed(route.name, key, acc);
  };
  const abandoned = (be: Endpoint) => { be.close(); stopEarly(); settled(); reportClosed(route.name, key, acc); };
  if (stopping) return fail('FDP_PROXY_STOPPING');
  const picked = upstreams.pick(route.backend, key);
  if (!picked) return fail('FDP_PROXY_NO_SERVER');
  let server: Server = picked;
  const be = upstreams.backend(route.backend);
  const started = Date.now();
  const connected = (err: ProxyError | null, sock: Endpoint | null, used: Server): void => {
    server = used;
    if (err || !sock) return fail(err?.code ?? 'FDP_PROXY_BACKEND_UNREACHABLE');
    if (gone) return abandoned(sock);
    backend = sock;
    // Relay: our own extension offer, and the client's bytes after its head stay ours (its frames).
    const relay = route.websocket === 'relay';
    const bhead = relay ? relayRequestHead(head, route.relay.deflate_backend ?? route.relay.deflate) : head;
    backendHandshake(client, sock, bhead, relay ? bytes.subarray(0, head.headEnd) : bytes, { clientIp: ip, proto }, be.response_timeout, (e, res) => {
      if (gone) return abandoned(sock);
      if (e) { sock.close(); return fail(e.code); }
      stopEarly();
      if (res.refused !== undefined) {
        sock.close();
        counters.inc(`ws_refused`);
        log.access({ kind: 'ws', client: ip, worker: slot, route: route.name, key, status: res.refused, url: head.url });
        client.end();
        settled(); reportClosed(route.name, key, acc);
        return;
      }
      settled();
      if (relay) {
        const err = openRelay(client, sock, head, Buffer.concat([bytes.subarray(head.headEnd), ...early]), res, route, key, server.id, ip, started, acc);
        if (err) { sock.close(); fail(err); }
        return;
      }
      for (const d of early) sock.write(d);
      const rest = res.switched!.subarray(res.headEnd!);
      client.write(res.switched!.subarray(0, res.headEnd!));
      if (rest.length) client.write(rest);
      const t = new Tunnel(client, sock, { route: route.name, key, server: server.id, clientIp: ip, opened: started, bytesIn: earlyBytes, bytesOut: 0 }, onTunnelEnd);
      if (rest.length) { t.s2c.feed(rest); t.info.bytesOut += rest.length; }
      accOf.set(t, acc);
      trackTunnel(t, server.id);
      counters.inc('ws_opened'); bump(serverTotals, server.id);
      counters.observe('ws_handshake_ms', Date.now() - started);
    });
  };
  upstreams.connectFailover(server, route.backend, key, () => gone, (s, cb) => upstreams.connectEndpoint(s, be.connect_timeout, cb), connected);
}

function noop(): void {}

/** Relay mode: answer the client's handshake ourselves (subprotocol as the backend chose it,
 *  deflate per route), then terminate WebSocket on both sides. Returns an error code or null. */
function openRelay(cend: Endpoint, bend: Endpoint, head: RequestHead, clientBytes: Buffer, res: UpgradeResult,
                   route: Route, key: string | null, serverId: string, ip: string, started: number, acc: number): string | null {
  const hdr = (h: readonly string[], n: string) => { for (let i = 0; i < h.length; i += 2) if (h[i].toLowerCase() === n) return h[i + 1]; return null; };
  const bres = parseResponseHead(res.switched!, res.headEnd!);
  const o = route.relay;
  const deflateClient = o.deflate_client ?? o.deflate, deflateBackend = o.deflate_backend ?? o.deflate;
  let bdeflate: Record<string, unknown> | null = null;
  const bext = hdr(bres.headers, 'sec-websocket-extensions');
  if (bext && !deflateBackend) return 'FDP_PROXY_BACKEND_BAD_RESPONSE';   // an extension we did not offer
  try { bdeflate = deflateBackend ? acceptBackendDeflate(bext, o.max_message) : null; } catch { return 'FDP_PROXY_BACKEND_BAD_RESPONSE'; }
  const protocol = hdr(bres.headers, 'sec-websocket-protocol')?.trim() ?? '';
  const cdeflate = deflateClient ? acceptClientDeflate(hdr(head.headers, 'sec-websocket-extensions'), o.max_message) : null;
  let out = `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptFor(hdr(head.headers, 'sec-websocket-key')!.trim())}\r\n`;
  if (protocol) out += `Sec-WebSocket-Protocol: ${protocol}\r\n`;
  if (cdeflate) out += `Sec-WebSocket-Extensions: ${formatDeflate(cdeflate)}\r\n`;
  // The relay parses frames with Node streams: the endpoints become sockets again.
  const c = cend.toSocket(), b = bend.toSocket();
  const client = c.sock, sock = b.sock;
  const clientHead = c.unread.length ? Buffer.concat([clientBytes, c.unread]) : clientBytes;
  const backendHead = b.unread.length ? Buffer.concat([res.switched!.subarray(res.headEnd!), b.unread]) : res.switched!.subarray(res.headEnd!);
  client.write(out + '\r\n');
  const r = new Relay({ client, backend: sock, clientHead, backendHead,
    info: { route: route.name, key, server: serverId, clientIp: ip, opened: started, msgsIn: 0, msgsOut: 0, bytesIn: 0, bytesOut: 0, hits: 0 },
    proto: { protocol, cdeflate, bdeflate }, opts: o, quota: quotas.acquire(route.name, key, o.messages_per_second_per_key, o.bytes_per_second_per_key),
    tallies: tallies.acquire(route.name, key) }, onTunnelEnd);
  accOf.set(r, acc);
  trackRelay(r, serverId);
  counters.inc('ws_opened'); counters.inc('relay_opened'); bump(serverTotals, serverId);
  counters.observe('ws_handshake_ms', Date.now() - started);
  return null;
}

let relaysOpen = 0;   // their tallies move without counters (stats every second while > 0)
function trackRelay(r: Relay, serverId: string): void {
  tunnels.add(r); keyIndex(r.info.key, r, true); relaysOpen++;
  counters.inc('open_ws');
  const s = upstreams.find(serverId); if (s) upstreams.opened(s);
}

function trackTunnel(t: Tunnel, serverId: string): void {
  tunnels.add(t); keyIndex(t.info.key, t, true);
  counters.inc('open_ws');
  const s = upstreams.find(serverId); if (s) upstreams.opened(s);
  t.client.resume(); t.backend.resume();
}

function untrackTunnel(t: Tunnel | Relay, closed: boolean): void {
  if (!tunnels.delete(t)) return;
  if (t instanceof Relay) { quotas.release(t.info.route, t.info.key, t.quota); tallies.release(t.info.route, t.info.key); relaysOpen--; }
  keyIndex(t.info.key, t, false);
  counters.dec('open_ws');
  const s = upstreams.find(t.info.server); if (s) upstreams.closed(s);
  if (closed) reportClosed(t.info.route, t.info.key, accOf.get(t));
}

function onTunnelEnd(t: Tunnel | Relay, why: TunnelEnd | RelayEnd): void {
  untrackTunnel(t, true);
  counters.inc('ws_bytes_in', t.info.bytesIn); counters.inc('ws_bytes_out', t.info.bytesOut);
  const rl = t instanceof Relay ? { relay: true, msgsIn: t.info.msgsIn, msgsOut: t.info.msgsOut, limitHits: t.info.hits } : {};
  log.access({ kind: 'ws', client: t.info.clientIp, worker: slot, route: t.info.route, key: t.info.key, server: t.info.server, status: 101,
    bytesIn: t.info.bytesIn, bytesOut: t.info.bytesOut, ...rl, ms: Date.now() - t.info.opened, end: why });
  maybeRetired();
}

function adoptTunnel(h: Handoff, m: TunnelMeta): void {
  if (m.deadline !== undefined && Date.now() > m.deadline) {
    // The sender has rolled back (or is about to): these are stale copies; the connection is its.
    for (const fd of h.fds) closeFd(fd);
    counters.inc('migrations_refused_late');
    return;
  }
  counters.inc('migrations_in');
  reportLanded(m.key, m.gen, m.from, m.acc);
  const a0 = performance.now();
  const server = upstreams.find(m.server);
  const kind = server?.address.kind === 'unix' ? 'unix' : 'tcp';
  let client: Endpoint, backend: Endpoint;
  try { client = endpointFromFd(h.fds[0], 'tcp'); } catch { closeFd(h.fds[0]); closeFd(h.fds[1]); reportClosed(m.route, m.key, m.acc); return; }
  try { backend = endpointFromFd(h.fds[1], kind); } catch { client.close(); closeFd(h.fds[1]); reportClosed(m.route, m.key, m.acc); return; }
  const t = new Tunnel(client, backend, { route: m.route, key: m.key, server: m.server, clientIp: m.ip, opened: m.opened, bytesIn: m.bytesIn, bytesOut: m.bytesOut }, onTunnelEnd, m.frames);
  accOf.set(t, m.acc ?? 0);
  if (m.c2s > 0) backend.write(h.bytes.subarray(0, m.c2s));
  if (m.s2c > 0) { const s2c = h.bytes.subarray(m.c2s, m.c2s + m.s2c); t.s2c.feed(s2c); client.write(s2c); }
  trackTunnel(t, m.server);
  followKey(m.key);
  // The pause: from the old worker's last read to our first (both clocks are this machine's).
  if (m.stoppedAt !== undefined) {
    const now = performance.now();
    const pause = performance.timeOrigin + now - m.stoppedAt;
    counters.observe('migration_pause_ms', pause);
    if (log.enabled('debug')) traceAdopted(pause, now - a0, m.sentAt ? m.sentAt - m.stoppedAt : -1);
  }
}

function adoptRelay(h: Handoff, m: RelayMeta): void {
  if (Date.now() > m.deadline) { for (const fd of h.fds) closeFd(fd); counters.inc('migrations_refused_late'); return; }
  counters.inc('migrations_in');
  reportLanded(m.key, m.gen, m.from, m.acc);
  const server = upstreams.find(m.server);
  const kind = server?.address.kind === 'unix' ? 'unix' : 'tcp';
  let client: net.Socket, backend: net.Socket;
  try { client = wrap(h.fds[0], 'tcp', false); } catch { closeFd(h.fds[0]); closeFd(h.fds[1]); reportClosed(m.route, m.key, m.acc); return; }
  try { backend = wrap(h.fds[1], kind, false); } catch { client.destroy(); closeFd(h.fds[1]); reportClosed(m.route, m.key, m.acc); return; }
  // The route's options under our config (a reload may have changed the limits).
  const o = routes.get(m.route)?.relay ?? m.opts;
  const quota = quotas.acquire(m.route, m.key, o.messages_per_second_per_key, o.bytes_per_second_per_key);
  const qb = h.bytes.subarray(m.c2s + m.s2c, m.c2s + m.s2c + m.q);
  if (quota && qb.length) { try { quota.merge(`${m.gen}:${m.from}`, JSON.parse(qb.toString())); } catch { /* recomputed from now on */ } }
  const r = new Relay({ client, backend, clientHead: h.bytes.subarray(0, m.c2s), backendHead: h.bytes.subarray(m.c2s, m.c2s + m.s2c),
    info: { route: m.route, key: m.key, server: m.server, clientIp: m.ip, opened: m.opened, msgsIn: m.msgsIn, msgsOut: m.msgsOut, bytesIn: m.bytesIn, bytesOut: m.bytesOut, hits: m.hits },
    proto: m.proto, opts: o, quota, tallies: tallies.acquire(m.route, m.key) }, onTunnelEnd);
  accOf.set(r, m.acc ?? 0);
  trackRelay(r, m.server);
  followKey(m.key);
  counters.observe('migration_pause_ms', performance.timeOrigin + performance.now() - m.stoppedAt);
}

// ---------------------------------------------------------------- moving connections out

function adoptBack(conn: HttpConn): void {
  conn.leaving = false;
  const c = new HttpConn(conn.client, conn.ctx, conn.routeName, conn.key, n => routes.get(n) ?? null, httpHooks);
  accOf.set(c, accOf.get(conn) ?? 0);
  (c as any).first = false;
  conns.add(c); keyIndex(c.key, c, true); counters.inc('open_http');
  c.start(Buffer.alloc(0));
}

function handToAcceptor(client: net.Socket, bytes: Buffer, meta: HandoffMeta, prefer = 0): void {
  const acceptor = anyAcceptor(prefer);
  if (!acceptor) { client.end(errorResponse('FDP_PROXY_HANDOFF_FAILED')); return; }
  let r;
  try { r = releaseSocket(client); } catch { client.destroy(); return; }
  const all = r.unread.length ? Buffer.concat([bytes, r.unread]) : bytes;
  const failed = () => { resumeSocket(client); client.end(errorResponse('FDP_PROXY_HANDOFF_FAILED')); };
  try {
    acceptor.send({ fds: [r.fd], bytes: all, meta }, { onAck: () => client.destroy(), onReturn: failed });
  } catch (e) {
    // FDP_FDPASS_TOO_BIG: more read ahead (pipelined requests) than one handoff carries.
    log.warn('reroute_refused', { code: (e as { code?: string }).code, bytes: all.length });
    counters.inc('reroutes_refused');
    failed();
    return;
  }
  counters.inc('reroutes');
}

function peerFor(slotTo: number, genTo: number): Channel | null {
  return peers.get(`${genTo}:${slotTo}`) ?? null;
}

/** Move the connections of `keys` (null: all) to worker `toSlot` of generation `toGen`. An HTTP
 *  connection in the middle of an exchange is not tried: `busy` counts those. */
async function migrateKeys(keys: string[] | null, toSlot: number, toGen: number): Promise<{ migrated: number; failed: number; busy: number }> {
  const to = peerFor(toSlot, toGen);
  let migrated = 0, failed = 0, busy = 0;
  if (!to) return { migrated, failed: -1, busy };
  const list: (Tunnel | Relay | HttpConn)[] = [];
  if (keys === null) { list.push(...tunnels, ...conns); }
  else for (const k of keys) for (const c of byKey.get(k) ?? []) list.push(c);
  await limited(list, MIGRATE_CONCURRENCY, async c => {
    if (c instanceof HttpConn && (c.isClosed || c.leaving)) return;   // gone, or already on its way
    if (c instanceof HttpConn && (!c.idle || c.writesQueued())) { busy++; return; }
    const ok = c instanceof HttpConn ? migrateIdle(c, to) : await migrateTunnel(c, to, toSlot);
    if (ok) migrated++; else failed++;
  });
  return { migrated, failed, busy };
}

/** What of `key` is still here: connections, and WebSocket handshakes that will be tunnels. */
const leftOf = (key: string) => (byKey.get(key)?.size ?? 0) + (upgrading.get(key) ?? 0);

/** Rebalance one key to another worker, whole. Tunnels and idle HTTP connections move now; an HTTP
 *  connection in the middle of an exchange moves when the exchange ends (or its next request is
 *  handed over), so until nothing of the key is left here the key is "given away" (see givenAway).
 *  A migration that rolls back (target died, or no ack in time) is tried again (a restarting slot
 *  comes back with a new channel); if one never succeeds, the acceptor is told the key stayed
 *  here. An exchange still going after drain_timeout (a stream that does not end) is closed, as a
 *  reload closes what cannot migrate: the key never stays split between two workers. */
async function moveKey(key: string, to: number, toGen: number): Promise<void> {
  const mine = { to, gen: toGen };
  givenAway.set(key, mine);
  markMovedAway(key);
  // The rest of this read is handled first (the channel delivers what it read in one go): a
  // worker that fell behind (busy, stopped) and finds a later notice there — the key moved on
  // again, or back here — sends straight to the key's newest worker, or keeps the key.
  await Promise.resolve();
  const deadline = Date.now() + config.limits.drain_timeout;
  let failures = 0, migrated = 0, attempts = 0, closedBusy = 0;
  while (givenAway.get(key) === mine) {
    attempts++;
    // mine.to: a later move of the key (onMoved) sends what is left here to its newest worker.
    const r = await migrateKeys([key], mine.to, mine.gen);
    if (givenAway.get(key) !== mine) return;   // taken back, or moved again meanwhile
    migrated += r.migrated;
    if (r.failed !== 0 && ++failures >= 10 && migrated === 0) {
      // Nothing of the key moved: it stays here, whole (the acceptor is told).
      givenAway.delete(key);
      movedAway.delete(key);
      log.warn('move_failed', { key, to: mine.to });
      for (const a of acceptors.values()) a.send({ fds: [], bytes: Buffer.from(JSON.stringify({ t: 'kept', slot, keys: [key] })), meta: { t: 'kept' } });
      return;
    }
    if (leftOf(key) === 0) {
      givenAway.delete(key);
      lately.delete(key);
      lately.set(key, { to: mine.to, gen: mine.gen, until: Date.now() + MIGRATE_DEADLINE_MS });
      for (const [k, e] of lately) { if (lately.size <= MAX_LATELY && e.until > Date.now()) break; lately.delete(k); }
      log.info('moved_key', { key, to: mine.to, migrated, attempts, ...(closedBusy ? { closed: closedBusy } : {}) });
      return;
    }
    if (Date.now() >= deadline) {
      // What did not move in time (an exchange that goes on, a response the client does not read,
      // a tunnel whose migration keeps failing after part of the key moved) is closed, as a
      // reload closes what cannot migrate: the key is never left split between two workers.
      for (const c of byKey.get(key) ?? []) {
        if (c instanceof HttpConn) { if (!c.idle || r.failed !== 0) { closedBusy++; c.client.destroy(); } }
        else if (r.failed !== 0) { closedBusy++; c.closeWith(clientAnswer('FDP_PROXY_RESTART').ws!, 'moved'); }
      }
    }
    // Busy exchanges move by themselves when they end (leaveWhenIdle): this only watches for the end.
    await new Promise(res => setTimeout(res, r.failed !== 0 ? 300 : 100));
  }
}

/** An HTTP connection of a key given away (or of a retiring worker) whose exchange ended: move it
 *  as soon as it is idle (its response written out). A new exchange started first: its request
 *  was handed over with the connection (hooks.owns), or it comes back here when it ends. */
const leaveScheduled = new WeakSet<HttpConn>();
function leaveWhenIdle(conn: HttpConn, until: number): void {
  if (!conns.has(conn) || conn.isClosed || conn.leaving || conn.inExchange) return;
  let to: number | null = null, toGen = 0;
  const away = conn.key !== null ? givenAway.get(conn.key) : undefined;
  if (away) { to = away.to; toGen = away.gen; }
  else if (retiring?.done) { to = targetFor(conn.key); toGen = retireGen; }
  if (to === null) return;
  const ch = peerFor(to, toGen);
  if (conn.idle && ch && migrateIdle(conn, ch)) { if (!away) retireStats.migrated++; return; }
  // A response still queued for the client, or no channel to the target yet: look again shortly.
  if (Date.now() >= until || leaveScheduled.has(conn)) return;
  leaveScheduled.add(conn);
  setTimeout(() => { leaveScheduled.delete(conn); leaveWhenIdle(conn, until); }, 20);
}

/** Drain: keyless connections spread over the given workers. */
async function moveKeyless(targets: number[], toGen: number): Promise<void> {
  let i = 0;
  for (const c of [...conns]) if (c.key === null && c.idle) { const s = targets[i++ % targets.length]; const ch = peerFor(s, toGen); if (ch) migrateIdle(c, ch); }
  await limited([...tunnels].filter(t => t.info.key === null), MIGRATE_CONCURRENCY, async t => {
    const s = targets[i++ % targets.length]; const ch = peerFor(s, toGen);
    if (ch) await migrateTunnel(t, ch, s);
  });
}

// ---------------------------------------------------------------- retire (reload) and stop

function onPlan(p: PlanMeta): void {
  // Keys given away before the reload: what is left of them here follows the plan now (their
  // moves aimed at a worker of this generation, which is retiring too).
  if (!retiring) { retiring = { moves: new Map(), keyless: [], rr: 0, done: false }; givenAway.clear(); movedAway.clear(); lately.clear(); drained = false; }
  for (const [k, s] of p.moves) retiring.moves.set(k, s);
  if (p.keyless.length) retiring.keyless = p.keyless;
  if (p.hrw) retiring.hrw = p.hrw;
  if (p.last) { retiring.done = true; runRetire(p.gen); }
}

let retireGen = 0;
let retireStats = { migrated: 0, failed: 0, closed: 0 };
let passWindow = 0;   // the retire pass's migration window at its end (debug trace)
function targetFor(key: string | null): number | null {
  if (!retiring) return null;
  if (key !== null && retiring.moves.has(key)) return retiring.moves.get(key)!;
  // Given away before the reload: not in our plan (the acceptor counted it on its new worker,
  // whose plan says where it goes); it follows the move (leaveWhenIdle) or its next request.
  if (key !== null && givenAway.has(key)) return null;
  if (key !== null && retiring.hrw?.length) return rankSlots(key, retiring.hrw)[0];
  if (retiring.keyless.length === 0) return null;
  return retiring.keyless[retiring.rr++ % retiring.keyless.length];
}

/** The supervisor lets retiring workers migrate in turns (Supervisor.nextTurn: one at a time per
 *  two cores); until its turn a worker relays its connections as before. */
let myTurn: Promise<void> | null = null;
let takeTurn: (() => void) | null = null;

async function runRetire(newGen: number): Promise<void> {
  if (myTurn) await myTurn;
  collectGarbage('minor');   // before any tunnel is stopped (migrate.ts)
  retireGen = newGen;
  const cpu0 = process.cpuUsage(), t0 = performance.now();
  const pass = async () => {
    for (const c of [...conns]) {
      if (!c.idle) continue;  // in the middle of an exchange: moved once the response is done
      const s = targetFor(c.key), ch = s === null ? null : peerFor(s, newGen);
      if (ch && migrateIdle(c, ch)) retireStats.migrated++;
    }
    passWindow = await spread([...tunnels], t => targetFor(t.info.key), MIGRATE_CONCURRENCY, async (t, s) => {
      const ch = peerFor(s, newGen);
      if (t.isClosed || !ch) return;
      if (await migrateTunnel(t, ch, s)) { retireStats.migrated++; return true; }
      retireStats.failed++;
      return false;
    }, MIGRATE_ADAPT);
  };
  holdMigratedCopies(true);
  optimizeMigrationPath(false);
  try { await pass(); } finally { optimizeMigrationPath(true); }
  // Nothing left: exit (maybeRetired below) closes the copies with the process. Else close them now.
  if (tunnels.size + conns.size > 0 || !retiring?.done) holdMigratedCopies(false);
  if (log.enabled('debug')) {
    // Batching: handoffs per sendmsg and per ring, acks (bell wake-ups) received, over all peers.
    const ch = { handoffs: 0, sendmsgs: 0, rings: 0, wakeups: 0 };
    for (const p of peers.values()) { ch.handoffs += p.stats.sent; ch.sendmsgs += p.stats.msgsSent; ch.rings += p.stats.rings; ch.wakeups += p.stats.wakeups; }
    const c = process.cpuUsage(cpu0);
    log.debug('retire_pass', { ...retireStats, window: passWindow, ms: performance.now() - t0, cpu_ms: (c.user + c.system) / 1000, channels: ch });
  }
  send({ t: 'passed', slot, gen });   // the next retiring worker's turn
  const deadline = Date.now() + config.limits.drain_timeout;
  while (tunnels.size + conns.size > 0 && Date.now() < deadline) {
    await new Promise(r => setTimeout(r, 50));
    await pass();
  }
  closeEverything(clientAnswer('FDP_PROXY_RESTART').ws!, 'proxy reloading');
  maybeRetired();
  // What drain_timeout closed normally ends within a moment (a close handshake, a FIN). Whatever
  // has not after 2 s (a peer that never answers) goes with the process, as on a stop.
  setTimeout(() => maybeRetired(true), 2000).unref();
}

let retiredSent = false;
function maybeRetired(force = false): void {
  if (retiredSent || !retiring?.done || (!force && tunnels.size + conns.size > 0)) return;
  retiredSent = true;
  send({ t: 'retired', slot, gen, ...retireStats });
  flushAndExit();
}

function closeEverything(code: number, reason: string): void {
  for (const t of [...tunnels]) { retireStats.closed++; t.closeWith(code, reason); }
  for (const c of [...conns]) { retireStats.closed++; c.client.end(); }
}

function flushAndExit(): void {
  // Exit once every acceptor has its last closes (or after 500 ms), but not while a new connection
  // handed to the lead acceptor is not taken yet (a lagging acceptor may still place some here:
  // toLead): exiting would lose it. Its close report, sent when it is taken, is waited for too.
  // Bounded: 2 s.
  let pending = 0;
  const exit = () => {
    if (forwarding > 0) return;   // each one settled calls this again
    if (closedBatch.size + landedBatch.size > 0) pending += sendClosed({ onAck: one, onReturn: one });
    if (pending === 0) process.exit(0);
  };
  const one = () => { if (--pending === 0) exit(); };
  onForwarded = exit;
  pending = sendClosed({ onAck: one, onReturn: one });
  if (pending === 0) setTimeout(exit, 20);
  setTimeout(() => { if (forwarding === 0) process.exit(0); }, 500);
  setTimeout(() => process.exit(0), 2000);
}

function stop(mode: 'graceful' | 'fast', drainTimeout: number): void {
  stopping = true;
  if (mode === 'fast') { for (const t of tunnels) t.closeWith(clientAnswer('FDP_PROXY_STOPPING').ws!, 'proxy stopping'); setTimeout(() => process.exit(0), 100); return; }
  for (const c of conns) c.closeIdle();
  const deadline = Date.now() + drainTimeout;
  const tick = () => {
    if (tunnels.size + conns.size === 0) return process.exit(0);
    if (Date.now() >= deadline) { closeEverything(clientAnswer('FDP_PROXY_STOPPING').ws!, 'proxy stopping'); setTimeout(() => process.exit(0), 2100); return; }
    for (const c of conns) c.closeIdle();
    setTimeout(tick, 50);
  };
  tick();
}

// ---------------------------------------------------------------- wiring

function addPeer(h: Handoff): void {
  const m = h.meta as PeerMeta;
  const ch = new Channel({ data: h.fds[0], bell: h.fds[1] }, { name: `w${slot}->${m.peer}` });
  ch.on('handoff', (x: Handoff) => onHandoff(x, ch));
  ch.on('error', (e: Error) => log.warn('channel_error', { peer: m.peer, code: (e as ProxyError).code, err: e.message }));
  if (m.role === 'acceptor') {
    const acc = m.acc ?? 0;
    // A connection from an acceptor that a fresh one has replaced (it finishes the heads it was
    // reading when it handed over): the new one counts it from now on, and hears of its close.
    ch.on('handoff', (x: Handoff) => {
      const now = acceptors.get(acc), c = x.meta as ConnMeta;
      if (now && now !== ch && c.t === 'conn') {
        now.send({ fds: [], bytes: Buffer.from(JSON.stringify({ t: 'holding', slot, gen, keys: [[c.route, c.key, 1]] })), meta: { t: 'holding' } });
      }
    });
    // The previous acceptor of this index stays wired until it is gone: a crashed one already is;
    // one that handed over to this one still hands off the heads it was reading.
    acceptors.set(acc, ch);
    accIndex.set(ch, acc);
    ch.on('close', () => { if (acceptors.get(acc) === ch) acceptors.delete(acc); });
    // Tell a (re)started acceptor which of its keys live here, so its placement table is whole
    // again. Closes not yet reported to its predecessor are already out of this count.
    for (const [id, e] of closedBatch) if (e[3] === acc) closedBatch.delete(id);
    for (const [id, e] of landedBatch) if (e[3] === acc) landedBatch.delete(id);
    const keys = new Map<string, [string, string | null, number]>();
    const hold = (route: string, key: string | null) => { const id = `${route}\0${key}`; const e = keys.get(id); if (e) e[2]++; else keys.set(id, [route, key, 1]); };
    // Several acceptors: a key placed here by another one is named too, with a count of 0: one
    // moved here (an override in every acceptor) must be sent here by this one as well, which
    // lost its overrides if it is a restarted one. Not a key given away (it is not ours).
    const others = new Map<string, [string, string, number]>();
    const other = (route: string, key: string | null) => { if (key !== null && !givenAway.has(key)) others.set(`${route}\0${key}`, [route, key, 0]); };
    for (const t of tunnels) if ((accOf.get(t) ?? 0) === acc) hold(t.info.route, t.info.key); else other(t.info.route, t.info.key);
    for (const c of conns) if ((accOf.get(c) ?? 0) === acc) hold(c.routeName, c.key); else other(c.routeName, c.key);
    for (const [id, e] of others) if (!keys.has(id)) keys.set(id, e);
    for (const bytes of jsonParts([...keys.values()], (part, last) => ({ t: 'holding', slot, gen, keys: part, last }))) ch.send({ fds: [], bytes, meta: { t: 'holding' } });
    // Keys being moved away: counted here above, they live where they are going.
    tellWhere(ch, [...givenAway].filter(([, e]) => e.gen === gen).map(([key, e]): [string, number] => [key, e.to]));
  } else {
    const id = `${m.gen}:${m.slot}`;
    peers.get(id)?.close();
    peers.set(id, ch);
    ch.on('close', () => { if (peers.get(id) === ch) peers.delete(id); });
  }
}

function main(): void {
  initMigrate({
    counters, log,
    self: () => ({ from: slot, gen }),
    acceptorOf: c => accOf.get(c),
    gone: c => { if (c instanceof HttpConn) untrackHttp(c, false); else untrackTunnel(c, false); },
    back: adoptBack,
  });
  const control = channelFromStdio(undefined, undefined, { name: `w${slot}-control` });
  control.on('handoff', (h: Handoff) => {
    if ((h.meta as HandoffMeta).t === 'peer') addPeer(h);
    else onHandoff(h, control);
  });
  control.on('close', () => process.exit(0));  // supervisor gone
  process.on('message', (m: ToChild) => {
    switch (m.t) {
      case 'config': {
        const first = !config;
        setConfig(m.config);
        upstreams.setDown(m.down);   // before 'ready': a new worker never picks a server already down
        httpHooks = hooks();
        // A new worker may adopt a reload's worth of connections next: start from an empty young generation.
        if (first) collectGarbage('full');
        if (first && !standby) send({ t: 'ready', role: 'worker', slot, gen });
        if (first && standby) send({ t: 'ready', role: 'worker', slot: -1, gen: -1 });
        break;
      }
      case 'assign':
        slot = m.slot; gen = m.gen; standby = false;
        log.proc = `worker${slot}`;
        send({ t: 'ready', role: 'worker', slot, gen });
        break;
      case 'health': upstreams?.setHealth(m.server, m.up); break;
      case 'ping': send({ t: 'pong' }); break;
      case 'stop': stop(m.mode, m.drainTimeout); break;
      case 'migrate':
        migrateKeys(m.keys, m.slot, m.gen).then(r => log.info('migrate_done', { ...r, to: m.slot }));
        break;
      case 'retire':
        retiring ??= { moves: new Map(), keyless: [], rr: 0, done: false };
        if (m.wait) myTurn ??= new Promise(go => { takeTurn = go; });
        break;
      case 'turn': takeTurn?.(); break;
    }
  });
  process.on('disconnect', () => process.exit(0));
  let quiet = 0, lastIdle = 0;
  setInterval(() => {
    // Nothing counted: nothing new to tell, but for what moves without counters — relay tallies
    // (every second while relays are open) and the backend pool's expiry (at once: /status's
    // idle_backend is what fd checks discount). Else a heartbeat every 5 s while connections are
    // open: idle WebSockets cost the supervisor one message per 5 s per worker.
    const idleNow = upstreams?.idleCount() ?? 0;
    const changed = counters.takeChanged() || idleNow !== lastIdle;
    lastIdle = idleNow;
    if (!changed && (tunnels.size + conns.size === 0 || (relaysOpen === 0 && ++quiet < 5))) return;
    quiet = 0;
    send({ t: 'stats', role: 'worker', slot, gen, stats: {
      ...relayCounters(counters.snapshot()), relay_keys: tallies.topKeys(20), open_ws: tunnels.size, open_http: conns.size, keys: byKey.size,
      top_keys: topKeys(10), routes: routeStats(), servers: Object.fromEntries(serverTotals), backend_active: upstreams?.activeSnapshot() ?? {}, idle_backend: upstreams?.idleCount() ?? 0, retiring: retiring !== null, retire_gen: retireGen,
    } });
  }, 1000).unref();
}

/** Relay tallies per route join the counters (→ fdproxy_relay_<route>_<what>_total). */
function relayCounters(s: ReturnType<Counters['snapshot']>): ReturnType<Counters['snapshot']> {
  return { counters: { ...s.counters, ...tallies.counters() }, histograms: s.histograms };
}

/** Open and total connections per route (for /metrics). */
function routeStats(): Record<string, { open: number; total: number }> {
  const r: Record<string, { open: number; total: number }> = {};
  for (const [name, total] of routeTotals) r[name] = { open: 0, total };
  for (const t of tunnels) (r[t.info.route] ??= { open: 0, total: 0 }).open++;
  for (const c of conns) (r[c.routeName] ??= { open: 0, total: 0 }).open++;
  return r;
}

function topKeys(n: number): [string, number][] {
  const all: [string, number][] = [];
  for (const [k, s] of byKey) all.push([k, s.size]);
  return all.sort((a, b) => b[1] - a[1]).slice(0, n);
}

process.on('uncaughtException', err => {
  log.error('uncaught', { err: String(err && (err as Error).stack || err) });
  process.exit(70);
});

main();

export { HeadReader, ProxyError };
