// The supervisor owns the listening sockets: bound here, never polled here (so this process
// never accepts), listened on and accepted from by the acceptor, which gets the fds at spawn.
// A restarted acceptor inherits the same sockets, so queued connections are not lost.
import * as net from 'node:net';
import * as fs from 'node:fs';
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
