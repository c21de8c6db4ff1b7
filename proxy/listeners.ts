// The supervisor owns the listening sockets: bound here, never polled here (so this process
// never accepts), listened on and accepted from by the acceptor, which gets the fds at spawn.
// A restarted acceptor inherits the same sockets, so queued connections are not lost.
// On stop, stopListening ends the listening for every holder at once.
import * as net from 'node:net';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { acceptFd, shutdownFd, SHUT_RD } from '../fdpass';
import type { Listener } from '../conf/types';

interface RawHandle { fd: number; close(): void; getsockname?(out: Record<string, unknown>): number }

export interface BoundListener { fd: number; text: string; proxyProtocol: boolean; unix: boolean; handle: RawHandle }

export class ListenError extends Error {
  readonly code = 'FDP_PROXY_LISTEN';
  constructor(message: string) { super(message); }
}

export function bindListener(l: Listener): BoundListener {
  const create = (net as unknown as { _createServerHandle(a: string | null, p: number, t: number, fd?: number, flags?: number): RawHandle | number })._createServerHandle;
  const a = l.address;
  let h: RawHandle | number;
  if (a.kind === 'unix') {
    try { if (fs.statSync(a.path).isSocket()) fs.unlinkSync(a.path); } catch { /* absent */ }
    h = create(a.path, -1, -1);
  } else {
    const host = a.host === '' ? null : a.host.replace(/^\[|\]$/g, '');
    h = create(host, a.port, host === null ? 4 : net.isIPv6(host) ? 6 : 4);
    if (typeof h === 'number' && host === null) h = create('::', a.port, 6);
  }
  if (typeof h === 'number') throw new ListenError(`cannot bind ${a.text}: ${errname(h)}`);
  let text = a.text;
  if (a.kind === 'tcp' && h.getsockname) {
    const out: Record<string, unknown> = {};
    h.getsockname(out);
    const host = String(out.address);
    text = `${host.includes(':') ? `[${host}]` : host}:${out.port}`;
  }
  return { fd: h.fd, text, proxyProtocol: l.proxy_protocol, unix: a.kind === 'unix', handle: h };
}

function errname(n: number): string {
  try { return (require('node:util') as typeof import('node:util')).getSystemErrorName(n); } catch { return String(n); }
}

const E = os.constants.errno;

/** Stop listening on a listening socket that several processes hold (supervisor, acceptors, a
 *  spare): closing one copy keeps the socket listening while any other copy is open, and the
 *  kernel goes on completing handshakes nobody will accept (clients hang instead of being
 *  refused). So: first accept what the kernel has already queued (each new fd to `onQueued`,
 *  to be answered), then shutdown(SHUT_RD), which ends the listening itself: from then on a
 *  connect is refused (TCP: RST; unix: ECONNREFUSED), whoever still holds a copy. Only a
 *  handshake completing between the last accept and the shutdown (microseconds) is reset.
 *  `fd` must be non-blocking (libuv made it so when it opened it). The caller closes its copy. */
export function stopListening(fd: number, onQueued: (fd: number) => void): { queued: number; errno: number } {
  let queued = 0;
  for (;;) {
    const c = acceptFd(fd);
    if (c >= 0) { queued++; onQueued(c); continue; }
    if (c === -E.EINTR || c === -E.ECONNABORTED) continue;
    break;   // EAGAIN: the queue is empty; EMFILE/ENFILE: what is left is reset; EINVAL: not listening (any more)
  }
  const r = shutdownFd(fd, SHUT_RD);
  return { queued, errno: r < 0 && r !== -E.ENOTCONN && r !== -E.EINVAL ? -r : 0 };
}
