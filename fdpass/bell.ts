// The bell: the SOCK_STREAM end of a channel that libuv watches (wake-ups one way, acks the
// other). Its frames are 1–8 bytes and one or two of them cross per handoff, so the cost of one
// lone frame is on every handoff's critical path when handoffs come one at a time. Through a
// net.Socket that cost is mostly stream machinery (Writable state, nextTick callbacks, Readable
// push/'data'): a lone 1-byte write took ~37 µs on a cold cache against ~11 µs for the same write
// on the libuv handle (600 samples one per ms, this 2-vCPU VM). So the bell drives libuv's pipe
// handle directly — open / onread / writeBuffer / close, which is what Node's own IPC channel
// does — and falls back to a plain net.Socket where those internals are missing.
import * as net from 'node:net';
import * as util from 'node:util';
import { nodeBinding, streamBase } from './binding';

export interface BellEvents {
  /** Bytes from the peer (a view valid for the duration of the call). */
  data(chunk: Buffer): void;
  /** The peer is gone (EOF, read or write error); called at most once, never synchronously from write(). */
  gone(detail: string): void;
}

export interface Bell {
  write(b: Buffer): void;
  /** Flush what was written, then close (our side of a deliberate close). */
  end(): void;
  /** Close now. */
  destroy(): void;
  ref(): void;
  unref(): void;
}

let forceSocket = false;
/** Test hook: open new bells on a net.Socket even where the raw handle is available. */
export function _setSocketBellForTest(on: boolean): void { forceSocket = on; }

export function openBell(fd: number, ev: BellEvents): Bell {
  const raw = forceSocket ? null : internals();
  return raw ? new RawBell(raw, fd, ev) : new SocketBell(fd, ev);
}

interface PipeHandle {
  open(fd: number): number;
  readStart(): number;
  readStop(): number;
  writeBuffer(req: WriteReq, b: Buffer): number;
  close(cb?: () => void): void;
  ref(): void;
  unref(): void;
  onread: (ab?: ArrayBuffer) => void;
}
interface WriteReq { handle: PipeHandle; oncomplete: (status: number) => void; async: boolean; bytes: number; buffer: Buffer | null }
interface Internals {
  Pipe: new (type: number) => PipeHandle;
  SOCKET: number;
  WriteWrap: new () => WriteReq;
  state: Int32Array;
  kNread: number; kOffset: number; kAsync: number;
}

const UV_EOF = -4095;
let cached: Internals | null | undefined;
/** pipe_wrap + stream_wrap, as net.Socket uses them; null when this Node does not expose them. */
function internals(): Internals | null {
  if (cached !== undefined) return cached;
  cached = null;
  try {
    const pw = nodeBinding('pipe_wrap'), sb = streamBase();
    const ok = sb && typeof pw?.Pipe === 'function' && typeof pw.constants?.SOCKET === 'number' &&
      typeof pw.Pipe.prototype.writeBuffer === 'function' && typeof pw.Pipe.prototype.readStart === 'function';
    if (ok) cached = { Pipe: pw.Pipe, SOCKET: pw.constants.SOCKET, WriteWrap: sb.WriteWrap, state: sb.state, kNread: sb.kNread, kOffset: sb.kOffset, kAsync: sb.kAsync };
  } catch { /* fallback */ }
  return cached;
}
/** Test hook: false when this Node runs the bell through net.Socket. */
export function _rawBellAvailable(): boolean { return internals() !== null; }

class RawBell implements Bell {
  private readonly h: PipeHandle;
  private pending = 0;     // writes libuv could not finish synchronously
  private closing = false; // end(): close once pending writes are done
  private closed = false;
  private dead = false;

  constructor(private readonly I: Internals, fd: number, private readonly ev: BellEvents) {
    const h = new I.Pipe(I.SOCKET);
    let err: number;
    try { err = h.open(fd); } catch (e) { h.close(); throw e; } // Node throws or returns the uv error
    if (err < 0) { h.close(); throw Object.assign(new Error(`bell: open(${fd}): ${util.getSystemErrorName(err)}`), { code: util.getSystemErrorName(err) }); }
    this.h = h;
    // Called with a fresh ArrayBuffer (or none at EOF/error); nread and offset are in streamBaseState.
    h.onread = (ab?: ArrayBuffer) => this.onRead(ab);
    const r = h.readStart();
    if (r < 0) this.fail(`bell: readStart: ${util.getSystemErrorName(r)}`);
  }

  private onRead(ab?: ArrayBuffer): void {
    const n = this.I.state[this.I.kNread];
    if (this.closed) return;
    if (n > 0 && ab) { this.ev.data(Buffer.from(ab, this.I.state[this.I.kOffset], n)); return; }
    if (n === 0) return;
    this.die(n === UV_EOF ? 'bell: EOF' : `bell: ${util.getSystemErrorName(n)}`);
  }

  write(b: Buffer): void {
    if (this.closed || this.closing) return;
    const req = new this.I.WriteWrap();
    req.handle = this.h;
    req.oncomplete = (status: number) => this.onWritten(status);
    req.async = false;
    req.bytes = 0;
    req.buffer = b; // keep the bytes alive while libuv may still hold them
    const err = this.h.writeBuffer(req, b);
    if (err < 0) { this.fail(`bell: ${util.getSystemErrorName(err)}`); return; }
    if (this.I.state[this.I.kAsync]) this.pending++; // libuv queued the rest: oncomplete follows
  }

  private onWritten(status: number): void {
    this.pending--;
    if (status < 0 && !this.closed) this.die(`bell: ${util.getSystemErrorName(status)}`);
    if (this.closing && this.pending === 0) this.destroy();
  }

  end(): void {
    if (this.closed) return;
    this.closing = true;
    this.h.readStop();
    if (this.pending === 0) this.destroy();
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true; // onRead ignores anything after this (onread must stay a function: Node CHECKs it)
    this.h.close();
  }

  ref(): void { if (!this.closed) this.h.ref(); }
  unref(): void { if (!this.closed) this.h.unref(); }

  /** Synchronous failure inside write()/constructor: report on the next tick like a net.Socket 'error'. */
  private fail(detail: string): void {
    process.nextTick(() => this.die(detail));
  }
  private die(detail: string): void {
    if (this.dead) return;
    this.dead = true;
    this.ev.gone(detail);
    this.destroy();
  }
}

/** The portable bell: a net.Socket on the fd. */
class SocketBell implements Bell {
  private readonly s: net.Socket;
  private dead = false;
  constructor(fd: number, private readonly ev: BellEvents) {
    this.s = new net.Socket({ fd, readable: true, writable: true });
    this.s.on('data', (c: Buffer) => ev.data(c));
    this.s.on('error', (e: NodeJS.ErrnoException) => this.die(`bell: ${e.code ?? e.message}`));
    this.s.on('end', () => this.die('bell: EOF'));
    this.s.on('close', () => this.die('bell closed'));
  }
  private die(detail: string): void {
    if (this.dead) return;
    this.dead = true;
    this.ev.gone(detail);
  }
  write(b: Buffer): void { if (!this.s.destroyed) this.s.write(b); }
  end(): void { this.dead = true; this.s.destroySoon(); }
  destroy(): void { this.dead = true; this.s.destroy(); }
  ref(): void { this.s.ref(); }
  unref(): void { this.s.unref(); }
}
