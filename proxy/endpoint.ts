// endpoint: one side of a WebSocket tunnel — a byte stream with back-pressure, half-close and
// release for a handoff. The common implementation drives libuv's stream handle directly
// (tcp_wrap / pipe_wrap: onread, writeBuffer, shutdown, close — what net.Socket does underneath)
// because a tunnel only moves bytes: the Readable/Writable machinery of a net.Socket cost more
// CPU per relayed message than the write syscall, building one for each fd of an adopted tunnel
// cost 30–90 µs, and destroying one 15–35 µs (bench/RESULTS.md "continuity"). Where Node's
// bindings are missing, or a socket cannot give up its handle (bytes still queued), the same
// interface runs over the net.Socket.
import * as net from 'node:net';
import * as util from 'node:util';
import { nodeBinding, releaseSocket, resumeSocket, socketFromFd, streamBase } from '../fdpass';
import { rawPending } from './rawwrite';

/** What release() returns when nothing is unread (one per side per migration otherwise). Read only. */
const NOTHING = Buffer.alloc(0);

export interface EndpointEvents {
  /** Bytes from the peer (the tunnel owns the buffer). */
  data(d: Buffer): void;
  /** The peer sent FIN. */
  end(): void;
  /** Read or write failed (reset, EPIPE): the endpoint is dead; close() it. */
  error(code: string): void;
  /** Every byte written so far has gone to the kernel. */
  drain(): void;
}

export interface Endpoint {
  /** Bytes accepted by write() and not yet handed to the kernel. */
  readonly queued: number;
  readonly closed: boolean;
  /** Who hears this endpoint; null: nobody (a lingering end, or released for a handoff). */
  setEvents(ev: EndpointEvents | null): void;
  /** Queue bytes; false once the queue is above the high-water mark (drain() follows). */
  write(b: Buffer): boolean;
  pause(): void;
  resume(): void;
  /** `last`, then FIN after everything queued. The endpoint closes itself once the peer's FIN
   *  has arrived too; with nobody listening it reads and discards until then, at most LINGER_MS. */
  end(last?: Buffer): void;
  /** Close now (queued bytes are dropped). */
  close(): void;
  /** Stop reading and give the fd and the bytes read but not delivered, for a handoff. Nothing
   *  is shut down; close() after the target has the connection. Throws if bytes are queued. */
  release(): { fd: number; unread: Buffer };
  /** Undo release() (rollback): `unread` first, then reading again. */
  unrelease(unread: Buffer): void;
  /** The connection as a net.Socket (for the relay, which needs Node streams), with the bytes read
   *  and not delivered; this endpoint is done with it. */
  toSocket(): { sock: net.Socket; unread: Buffer };
}

const HIGH_WATER = 64 * 1024;
const LINGER_MS = 5000;
const UV_EOF = -4095;

// ---------------------------------------------------------------- libuv handles

interface StreamHandle {
  fd: number;
  writeQueueSize: number;
  reading?: boolean;
  onread: (ab?: ArrayBuffer) => void;
  open(fd: number): number;
  readStart(): number;
  readStop(): number;
  writeBuffer(req: WriteReq, b: Buffer): number;
  shutdown(req: ShutdownReq): number;
  close(cb?: () => void): void;
  connect?(req: ConnectReq, address: string, port: number): number;
  connect6?(req: ConnectReq, address: string, port: number): number;
  setNoDelay?(on: boolean): number;
}
interface WriteReq { handle: StreamHandle; oncomplete: (status: number) => void; async: boolean; bytes: number; buffer: Buffer | null }
interface ShutdownReq { handle: StreamHandle; oncomplete: (status: number) => void; callback?: () => void }
interface ConnectReq { oncomplete: (status: number, handle: StreamHandle, req: ConnectReq, readable: boolean, writable: boolean) => void; address: string; port: number }
interface Uv {
  TCP: new (type: number) => StreamHandle;
  TCPConnectWrap: new () => ConnectReq;
  Pipe: new (type: number) => StreamHandle;
  TCP_SOCKET: number; PIPE_SOCKET: number;
  WriteWrap: new () => WriteReq;
  ShutdownWrap: new () => ShutdownReq;
  state: Int32Array;
  kNread: number; kOffset: number; kAsync: number;
}

let uvCached: Uv | null | undefined;
let spareReq: WriteReq | null = null;
// FDPROXY_SOCKET_TUNNELS=1: the net.Socket implementation everywhere (tests run both).
const forceSocket = process.env.FDPROXY_SOCKET_TUNNELS === '1';

/** Node's stream bindings as net uses them; null where this Node does not expose them. */
function uv(): Uv | null {
  if (uvCached !== undefined) return uvCached;
  uvCached = null;
  const tcp = nodeBinding('tcp_wrap'), pipe = nodeBinding('pipe_wrap'), sb = streamBase();
  const ok = sb && typeof tcp?.TCP === 'function' && typeof pipe?.Pipe === 'function' && typeof tcp.TCPConnectWrap === 'function' &&
    typeof tcp.constants?.SOCKET === 'number' && typeof pipe.constants?.SOCKET === 'number' &&
    ['writeBuffer', 'shutdown', 'connect', 'setNoDelay'].every(m => typeof tcp.TCP.prototype[m] === 'function');
  if (ok) {
    uvCached = { TCP: tcp.TCP, TCPConnectWrap: tcp.TCPConnectWrap, Pipe: pipe.Pipe, TCP_SOCKET: tcp.constants.SOCKET, PIPE_SOCKET: pipe.constants.SOCKET,
      WriteWrap: sb.WriteWrap, ShutdownWrap: sb.ShutdownWrap, state: sb.state, kNread: sb.kNread, kOffset: sb.kOffset, kAsync: sb.kAsync };
  }
  return uvCached;
}

class RawEndpoint implements Endpoint {
  private ev: EndpointEvents | null = null;
  private reading = false;
  private paused = false;
  private released = false;
  private pending = 0;          // async writes not completed
  private readEnded = false;    // peer's FIN (or a read error)
  private writeEnded = false;   // end() called
  private shutDown = false;     // our FIN went out
  private dead = false;         // error reported
  private linger: NodeJS.Timeout | null = null;
  private early: Buffer | null = null;   // bytes read before the tunnel listened (handed over with the socket)
  closed = false;

  constructor(private readonly I: Uv, private readonly h: StreamHandle, first?: Buffer) {
    h.onread = this.onRead;
    if (first && first.length) this.early = first;
  }

  get queued(): number { return this.closed ? 0 : this.h.writeQueueSize; }

  setEvents(ev: EndpointEvents | null): void {
    this.ev = ev;
    if (this.closed) return;
    if (ev && this.early) { const e = this.early; this.early = null; ev.data(e); }
    if (this.closed) return;
    if (!ev && this.writeEnded && !this.released) this.startLinger();
    this.sync();
  }

  /** Read whenever someone listens (or a lingering end discards), unless paused or released.
   *  A stop waits for the end of the current callback (a microtask; no read can come before it)
   *  and is dropped if reading is wanted again by then: the handover from the upgrade to the
   *  tunnel stops and restarts both sides in one callback, and each restart cost libuv two
   *  epoll_ctl (an ADD that fails with EEXIST, then a MOD) — 4 of the worker's 10 per handshake.
   *  A handoff (release) stops at once. */
  private sync(): void {
    const want = !this.closed && !this.readEnded && !this.released && !this.paused && (this.ev !== null || this.writeEnded);
    if (want === this.reading) return;
    this.reading = want;
    if (want) {
      if (this.stopQueued) { this.stopQueued = false; return; }   // never stopped
      const r = this.h.readStart(); if (r < 0) this.fail(r);
    } else if (this.released) this.stopNow();
    else if (!this.stopQueued) { this.stopQueued = true; queueMicrotask(this.applyStop); }
  }

  private stopQueued = false;
  private readonly applyStop = (): void => {
    if (!this.stopQueued) return;
    this.stopQueued = false;
    if (!this.closed && !this.reading) this.h.readStop();
  };
  /** Stop libuv reading now (it may still be reading while a stop is queued). */
  private stopNow(): void {
    this.reading = false;
    this.stopQueued = false;
    this.h.readStop();
  }

  private readonly onRead = (ab?: ArrayBuffer): void => {
    const n = this.I.state[this.I.kNread];
    if (this.closed) return;
    if (n > 0) { if (ab && this.ev) this.ev.data(Buffer.from(ab, this.I.state[this.I.kOffset], n)); return; }
    if (n === 0) return;
    this.readEnded = true;
    this.stopNow();
    if (n !== UV_EOF) { this.fail(n); return; }
    if (this.ev) this.ev.end();
    this.maybeClose();
  };

  write(b: Buffer): boolean {
    // Nothing can be sent any more (the listener has heard why): drop it. false would mean "wait
    // for drain", which never comes.
    if (this.closed || this.writeEnded || this.dead) return true;
    if (b.length === 0) return true;
    // A write request that the kernel took whole was never handed to libuv: the next write reuses it.
    const req = spareReq ?? new this.I.WriteWrap();
    spareReq = null;
    req.handle = this.h;
    req.oncomplete = this.onWritten;
    req.async = false;
    req.bytes = 0;
    req.buffer = b;   // keeps the bytes alive while libuv may still hold them
    const err = this.h.writeBuffer(req, b);
    if (err < 0) { req.buffer = null; spareReq = req; process.nextTick(() => this.fail(err)); return false; }
    if (this.I.state[this.I.kAsync]) { this.pending++; return this.h.writeQueueSize < HIGH_WATER; }
    req.buffer = null;
    spareReq = req;
    return true;
  }

  private readonly onWritten = (status: number): void => {
    this.pending--;
    if (this.closed) return;
    if (status < 0) { this.fail(status); return; }
    if (this.pending === 0 && this.ev) this.ev.drain();
  };

  pause(): void { this.paused = true; this.sync(); }
  resume(): void { this.paused = false; this.sync(); }

  end(last?: Buffer): void {
    if (this.closed || this.writeEnded) return;
    if (last) this.write(last);
    this.writeEnded = true;
    const req = new this.I.ShutdownWrap();
    req.handle = this.h;
    req.oncomplete = (status: number) => this.onShutdown(status);
    const err = this.h.shutdown(req);
    if (err === 1) process.nextTick(() => this.onShutdown(0));  // finished synchronously
    else if (err < 0) process.nextTick(() => this.onShutdown(err));
    if (!this.ev && !this.released) this.startLinger();
    this.sync();
  }

  private onShutdown(status: number): void {
    if (this.closed) return;
    this.shutDown = true;
    // ENOTCONN, ECONNRESET: the peer is gone. Whoever listens must hear it (a tunnel waiting for
    // this side's FIN would otherwise wait forever, holding the other side open).
    if (status < 0) { this.fail(status); return; }
    this.maybeClose();
  }

  private maybeClose(): void {
    if (this.readEnded && this.shutDown && !this.released) this.close();
  }

  private startLinger(): void {
    if (this.linger || this.closed) return;
    this.linger = setTimeout(() => this.close(), LINGER_MS);
    this.linger.unref();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.reading = false;
    if (this.linger) { clearTimeout(this.linger); this.linger = null; }
    this.h.close();   // onread stays a function: Node CHECKs it
  }

  release(): { fd: number; unread: Buffer } {
    if (this.closed || this.released) throw new Error('endpoint: not releasable (closed or released)');
    if (this.h.writeQueueSize > 0 || this.pending > 0) throw new Error(`endpoint: ${this.h.writeQueueSize} bytes still queued`);
    this.released = true;
    this.sync();
    if (this.stopQueued) this.stopNow();   // paused earlier in this callback: the stop is still queued
    const unread = this.early ?? NOTHING;
    this.early = null;
    return { fd: this.h.fd, unread };
  }

  unrelease(unread: Buffer): void {
    if (!this.released) return;
    this.released = false;
    if (unread.length) this.early = unread;
    if (this.ev && this.early) { const e = this.early; this.early = null; this.ev.data(e); }
    this.sync();
  }

  toSocket(): { sock: net.Socket; unread: Buffer } {
    if (this.closed) throw new Error('endpoint: closed');
    this.ev = null;
    if (this.reading || this.stopQueued) this.stopNow();
    this.closed = true;   // the socket owns the handle now
    if (this.linger) { clearTimeout(this.linger); this.linger = null; }
    const sock = new net.Socket({ handle: this.h, readable: true, writable: true } as net.SocketConstructorOpts);
    sock.allowHalfOpen = true;
    const unread = this.early ?? Buffer.alloc(0);
    this.early = null;
    return { sock, unread };
  }

  private fail(errno: number): void {
    if (this.closed || this.dead) return;
    this.dead = true;
    this.readEnded = true;
    if (this.reading || this.stopQueued) this.stopNow();
    const code = util.getSystemErrorName(errno);
    if (this.ev) this.ev.error(code);
    else this.close();
  }
}

/** The same contract over a net.Socket (fallback). */
class SocketEndpoint implements Endpoint {
  private ev: EndpointEvents | null = null;
  private released = false;
  private linger: NodeJS.Timeout | null = null;

  private readonly on = {
    data: (d: Buffer) => this.ev?.data(d),
    end: () => this.ev?.end(),
    drain: () => this.ev?.drain(),
    error: (e: NodeJS.ErrnoException) => { if (this.ev) this.ev.error(e.code ?? 'EIO'); else this.s.destroy(); },
    close: () => { if (this.linger) clearTimeout(this.linger); if (!this.released) this.ev?.error('ECONNRESET'); },
  };

  constructor(private readonly s: net.Socket) {
    s.allowHalfOpen = true;
    for (const [e, f] of Object.entries(this.on)) s.on(e, f);
  }
  toSocket(): { sock: net.Socket; unread: Buffer } {
    this.ev = null;
    this.released = true;
    for (const [e, f] of Object.entries(this.on)) this.s.removeListener(e, f);
    return { sock: this.s, unread: Buffer.alloc(0) };
  }
  get queued(): number { return this.s.writableLength; }
  get closed(): boolean { return this.s.destroyed; }
  setEvents(ev: EndpointEvents | null): void {
    this.ev = ev;
    if (!ev && this.s.writableEnded && !this.released) this.startLinger();
    if (!ev && !this.released) this.s.resume();   // discard what still comes
  }
  write(b: Buffer): boolean { return this.s.destroyed ? false : this.s.write(b); }
  pause(): void { this.s.pause(); }
  resume(): void { this.s.resume(); }
  end(last?: Buffer): void {
    if (this.s.writableEnded) return;
    if (last) this.s.end(last); else this.s.end();
    if (!this.ev) this.startLinger();
  }
  private startLinger(): void {
    if (this.linger) return;
    this.linger = setTimeout(() => this.s.destroy(), LINGER_MS);
    this.linger.unref();
  }
  close(): void { this.released = true; this.s.destroy(); }
  release(): { fd: number; unread: Buffer } { const r = releaseSocket(this.s); this.released = true; return r; }
  unrelease(unread: Buffer): void { this.released = false; resumeSocket(this.s, unread); }
}

/** A received stream fd (TCP, or a unix stream socket) as an endpoint; throws if it cannot. */
export function endpointFromFd(fd: number, kind: 'tcp' | 'unix', nodelay = false): Endpoint {
  const I = forceSocket ? null : uv();
  if (I) {
    const h = kind === 'tcp' ? new I.TCP(I.TCP_SOCKET) : new I.Pipe(I.PIPE_SOCKET);
    const err = h.open(fd);
    if (err === 0) {
      if (nodelay) h.setNoDelay?.(true);
      return new RawEndpoint(I, h);
    }
    h.close();
  }
  const s = socketFromFd(fd, kind);
  if (nodelay) s.setNoDelay(true);
  return new SocketEndpoint(s);
}

/** Take a connected net.Socket's handle over (the socket is destroyed without closing the fd):
 *  for a tunnel that starts after a handshake Node's streams did. Falls back to the socket
 *  itself when it cannot give its handle up. `sock` must have no listeners that care about
 *  its 'close'. */
export function endpointFromSocket(sock: net.Socket): Endpoint {
  const I = forceSocket ? null : uv();
  const s = sock as unknown as { _handle: StreamHandle | null };
  // (A write of the HTTP path still in libuv's queue: the socket keeps the handle; rare.)
  if (I && s._handle && !sock.destroyed && sock.writableLength === 0 && rawPending(sock) === 0) {
    let r: { fd: number; unread: Buffer } | null = null;
    try { r = releaseSocket(sock); } catch { r = null; }
    if (r) {
      const h = s._handle;
      h.reading = false;
      s._handle = null;     // net.Socket's destroy() now closes nothing
      sock.destroy();
      return new RawEndpoint(I, h, r.unread);
    }
  }
  return new SocketEndpoint(sock);
}

/** Connect to a TCP backend at a numeric address on a raw handle: `cb(null, endpoint)` once
 *  connected (TCP_NODELAY on), or `cb(code)` with the errno name (ECONNREFUSED, ETIMEDOUT when
 *  `timeoutMs` passed first, EMFILE ...); called once, never synchronously. Returns false, calling
 *  nothing, where it cannot (a host name, no bindings, FDPROXY_SOCKET_TUNNELS): connect with net
 *  then, and take the socket with endpointFromSocket. */
export function connectRaw(host: string, port: number, timeoutMs: number, cb: (err: string | null, ep: Endpoint | null) => void): boolean {
  const I = forceSocket ? null : uv();
  const ipv = net.isIP(host);
  if (!I || ipv === 0) return false;
  let done = false;
  const finish = (err: string | null, ep: Endpoint | null): void => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    cb(err, ep);
  };
  let h: StreamHandle;
  try { h = new I.TCP(I.TCP_SOCKET); } catch { process.nextTick(finish, 'EMFILE', null); return true; }
  let closed = false;
  const close = () => { if (!closed) { closed = true; h.close(); } };
  const timer = setTimeout(() => { close(); finish('ETIMEDOUT', null); }, timeoutMs);
  h.setNoDelay!(true);   // applied when libuv creates the socket
  const req = new I.TCPConnectWrap();
  req.address = host; req.port = port;
  req.oncomplete = (status) => {
    if (status < 0 || done) { close(); finish(util.getSystemErrorName(status), null); return; }
    finish(null, new RawEndpoint(I, h));
  };
  const err = ipv === 6 ? h.connect6!(req, host, port) : h.connect!(req, host, port);
  if (err < 0) { close(); process.nextTick(finish, util.getSystemErrorName(err), null); }
  return true;
}

