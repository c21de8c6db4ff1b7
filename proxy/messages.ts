// What processes tell each other. Handoff metas travel with fds over fdpass channels; control
// messages travel over Node IPC between the supervisor and each child.
import type { Config, RelayOptions } from '../conf/types';
import { HANDOFF_MAX_BYTES } from '../fdpass';
import type { FrameState } from './wsframes';

/** A control message about a list (closes, held keys, moves) as JSON payloads that each fit one
 *  handoff: halved until they do. `wrap(part, last, first)` builds one message; `last` is true for
 *  the final part only (a plan's `last`, and anything said once after the list), `first` for the
 *  first (anything said once before it). 2,000 keys of 400
 *  characters are ~800 KB of JSON: one message would not fit. */
export function jsonParts<T>(items: T[], wrap: (part: T[], last: boolean, first: boolean) => unknown, max = HANDOFF_MAX_BYTES): Buffer[] {
  const out: Buffer[] = [];
  const go = (lo: number, hi: number, last: boolean): void => {
    const b = Buffer.from(JSON.stringify(wrap(items.slice(lo, hi), last, lo === 0)));
    if (b.length <= max || hi - lo <= 1) { out.push(b); return; }
    const mid = (lo + hi) >> 1;
    go(lo, mid, false);
    go(mid, hi, last);
  };
  go(0, items.length, true);
  return out;
}

/** acceptor → worker: a new connection (or a request rerouted between workers). */
export interface ConnMeta {
  t: 'conn'; route: string; key: string | null; ip: string; port: number; proto: 'http' | 'https'; at: number;
  /** the acceptor that placed it (its index): closes are reported to that acceptor's table. */
  acc?: number;
  /** 1: the socket has TCP_NODELAY already (inherited from the listener, or set by whoever wrapped it). */
  nd?: 1;
  /** 1: the head is a WebSocket upgrade (the worker goes straight to the handshake). */
  ws?: 1;
}
/** worker → worker: a live WebSocket tunnel (fds: client, backend; bytes: c2s unread then s2c unread). */
export interface TunnelMeta {
  t: 'tunnel'; route: string; key: string | null; server: string; ip: string; opened: number;
  bytesIn: number; bytesOut: number; c2s: number; s2c: number; frames: FrameState; from: number; gen: number;
  /** epoch ms after which the target must refuse it (the sender rolls back). */
  deadline?: number;
  /** epoch ms (fractional) when the sender stopped reading: the target computes the pause. */
  stoppedAt?: number;
  sentAt?: number;
  acc?: number;
}
/** worker → worker: a live relay-mode WebSocket, stopped at a message boundary on both sides
 *  (fds: client, backend; bytes: c2s (held client messages as frames, then unread), s2c unread,
 *  then `q` bytes of the key's rate window as JSON [[epoch ms, bytes], ...]). */
export interface RelayMeta {
  t: 'relay'; route: string; key: string | null; server: string; ip: string; opened: number;
  msgsIn: number; msgsOut: number; bytesIn: number; bytesOut: number; hits: number;
  proto: { protocol: string; cdeflate: Record<string, unknown> | null; bdeflate: Record<string, unknown> | null };
  opts: RelayOptions; c2s: number; s2c: number; q: number; from: number; gen: number;
  deadline: number; stoppedAt: number; sentAt: number; acc?: number;
}
/** worker → worker: an idle keep-alive HTTP connection (bytes: what was read of its next request). */
export interface IdleHttpMeta { t: 'http'; route: string; key: string | null; ip: string; port: number; proto: 'http' | 'https'; acc?: number; from?: number; gen?: number }
/** worker → acceptor: connection (and the bytes of its next request) to route again. */
export interface RerouteMeta { t: 'reroute'; ip: string; port: number; proto: 'http' | 'https' }
/** worker → acceptor: connections closed since the last report, per key: [route, key, count];
 *  `landed`: keyless connections migrated here since then, by origin: [gen, slot, count]. */
export interface ClosedMeta { t: 'closed'; slot: number; closed: [string, string | null, number][]; landed?: [number, number, number][] }
/** worker → acceptor when a channel opens: what the worker holds, so a restarted acceptor can rebuild its table.
 *  keys: [route, key, count] of the connections that acceptor placed; count 0: a key only another acceptor placed here. */
export interface HoldingMeta { t: 'holding'; slot: number; gen: number; keys: [string, string | null, number][]; /** the report's last part */ last?: boolean }
/** acceptor → old worker during a reload: where each of its keys goes now. */
export interface PlanMeta {
  t: 'plan'; gen: number; moves: [string, number][]; keyless: number[]; last: boolean;
  /** several acceptors: keys not in `moves` go to their rendezvous winner among these slots. */
  hrw?: number[];
}
/** supervisor → child over the control channel: a channel to a peer (fds: data, bell). */
export interface PeerMeta { t: 'peer'; peer: string; slot: number; gen: number; role: 'acceptor' | 'worker'; acc?: number }

/** acceptor → worker: move these keys (bytes: PlanMeta JSON). */
export interface MoveMeta { t: 'move' }

/** acceptor → every worker: keys moved (bytes: {gen, moves} JSON, in parts that fit), for a worker
 *  still holding a connection of a key it gave away earlier (an HTTP exchange that was in
 *  progress): it goes to the key's new worker, or stays if that is this one. */
export interface MovedMeta { t: 'moved' }

/** worker → acceptor: a rebalance failed, these keys stayed (bytes: {slot, keys} JSON). */
export interface KeptMeta { t: 'kept' }

export type HandoffMeta = KeptMeta | MoveMeta | MovedMeta | ConnMeta | TunnelMeta | RelayMeta | IdleHttpMeta | RerouteMeta | ClosedMeta | HoldingMeta | PlanMeta | PeerMeta;

/** supervisor → child (Node IPC). */
export type ToChild =
  | { t: 'ping' }                                                      // watchdog: answer with 'pong'
  | { t: 'config'; config: Config; gen: number; slots: number[]; down: string[] }   // down: servers the health check has down now
  | { t: 'assign'; slot: number; gen: number; acc?: number }            // a standby process takes a slot (acceptors: an index)
  | { t: 'override'; moves: [string, number][] }                        // acceptor: keys another acceptor moved
  | { t: 'peers'; total: number }                                       // acceptor: connections the other acceptors hold
  | { t: 'health'; server: string; up: boolean }
  | { t: 'stop'; mode: 'graceful' | 'fast'; drainTimeout: number }
  | { t: 'handover' }                                                   // acceptor: a fresh one takes over; stop accepting, finish, exit
  | { t: 'switch'; gen: number; slots: number[]; config: Config }      // acceptor: route to the new generation
  | { t: 'retire'; drainTimeout: number; wait?: boolean }              // old worker: migrate everything per plan, then exit (wait: for a 'turn')
  | { t: 'turn' }                                                       // retiring worker: start the migration pass now
  | { t: 'move'; key: string; slot: number }                            // acceptor: rebalance one key
  | { t: 'drain'; slot: number; quiet?: boolean }                       // acceptor: move every key off a worker (quiet: only keep new keys off it)
  | { t: 'undrain'; slot: number }                                      // acceptor: a drained worker takes new keys again
  | { t: 'migrate'; keys: string[] | null; slot: number; gen: number };  // worker: move these keys' connections (null: all)

/** child → supervisor (Node IPC). */
export type FromChild =
  | { t: 'pong' }
  | { t: 'ready'; role: 'acceptor' | 'worker'; slot: number; gen: number }
  | { t: 'stats'; role: 'acceptor' | 'worker'; slot: number; gen: number; stats: Record<string, unknown> }
  | { t: 'log'; entry: Record<string, unknown> }
  | { t: 'moved'; moves: [string, number][] }                            // lead acceptor rebalanced: tell the others
  | { t: 'retired'; slot: number; gen: number; migrated: number; failed: number; closed: number }
  | { t: 'passed'; slot: number; gen: number }                           // retiring worker: its first migration pass is over (the next one's turn)
  | { t: 'stopped'; slot: number }
  | { t: 'handed_over'; counters: Record<string, number> };               // acceptor leaving after a handover: its final counters
