// Raw accept for the acceptor's common path: libuv TCP handles without net.Socket. An accepted
// connection whose head arrives whole and routes cleanly is read and handed off without ever
// building a net.Socket (a Socket, its Readable and Writable states and listeners cost more CPU
// than reading the head itself). Anything else (an error to answer, a 404 on keep-alive, the
// PROXY protocol, waiting for a worker) becomes a net.Socket on the spot, with the bytes already
// read, and takes the general path. Uses Node's tcp_wrap/stream_wrap bindings, as net does
// (fdpass's nodeBinding); `available()` is false where they are missing, and the acceptor then
// uses net.Server.
import * as net from 'node:net';
import { nodeBinding, streamBase } from '../fdpass';

/** A connected TCP handle (libuv uv_tcp_t) as tcp_wrap exposes it. */
export interface TcpHandle {
  fd: number;
  onread: (ab: ArrayBuffer | undefined) => void;
  readStart(): number;
  readStop(): number;
  getpeername(out: { address?: string; port?: number }): number;
  close(cb?: () => void): void;
}
interface ServerHandle {
  onconnection: ((err: number, h: TcpHandle | undefined) => void) | null;
  open(fd: number): number;
  listen(backlog: number): number;
  setNoDelay(on: boolean): number;
  close(cb?: () => void): void;
}

interface Bindings {
  TCP: new (type: number) => ServerHandle;
  SERVER: number;
  state: Int32Array;
  kRead: number;
  kOffset: number;
}
let b: Bindings | null | undefined;

function bindings(): Bindings | null {
  if (b !== undefined) return b;
  const tcp = nodeBinding('tcp_wrap'), sb = streamBase();
  b = typeof tcp?.TCP === 'function' && sb ? { TCP: tcp.TCP, SERVER: tcp.constants.SERVER, state: sb.state, kRead: sb.kNread, kOffset: sb.kOffset } : null;
  return b;
}

export function available(): boolean { return bindings() !== null; }

/** Accept on a listening TCP fd; each connection arrives as a raw handle. */
export function listenRaw(fd: number, backlog: number, onConnection: (h: TcpHandle) => void, onError: (errno: number) => void): { close(): void } {
  const x = bindings()!;
  const server = new x.TCP(x.SERVER);
  let err = server.open(fd);
  // Accepted sockets inherit TCP_NODELAY from the listening socket (Linux): one setsockopt here
  // instead of one per connection.
  if (err === 0) listenerNoDelay = server.setNoDelay(true) === 0;
  if (err === 0) err = server.listen(backlog);
  if (err !== 0) { onError(err); }
  server.onconnection = (e, h) => { if (e === 0 && h) onConnection(h); };
  return { close: () => server.close() };
}

let listenerNoDelay = false;
/** Connections accepted by listenRaw have TCP_NODELAY already (set on the listener, inherited). */
export function acceptedNoDelay(): boolean { return listenerNoDelay; }

/** Start reading: `onData(buf)` per chunk, `onEnd()` once at EOF or error. */
export function readRaw(h: TcpHandle, onData: (d: Buffer) => void, onEnd: () => void): void {
  const x = bindings()!;
  h.onread = (ab) => {
    const n = x.state[x.kRead];
    if (n < 0 || ab === undefined) { h.readStop(); onEnd(); return; }
    if (n > 0) onData(Buffer.from(ab, x.state[x.kOffset], n));
  };
  h.readStart();
}

/** The handle as a net.Socket (reading again as soon as it has a 'data' listener): for
 *  everything but the common path. */
export function toSocket(h: TcpHandle): net.Socket {
  h.readStop();
  // (net.Socket sets its own onread; tcp_wrap accepts only a function there.)
  const s = new net.Socket({ handle: h, readable: true, writable: true } as net.SocketConstructorOpts);
  if (!listenerNoDelay) s.setNoDelay(true);
  return s;
}

export function peerOf(h: TcpHandle): { ip: string; port: number } {
  const out: { address?: string; port?: number } = {};
  h.getpeername(out);
  let ip = out.address ?? '';
  if (ip.startsWith('::ffff:')) ip = ip.slice(7);
  return { ip, port: out.port ?? 0 };
}
