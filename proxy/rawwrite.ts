// Writes for the HTTP path that skip net.Socket's Writable machinery when the socket has nothing
// queued: straight to the libuv handle (what net.Socket does underneath), one reusable write
// request while writes complete at once. Per request that was two writes' worth of
// writeOrBuffer/onwrite/afterWrite ticks and a WriteWrap each (bench/httpcpu.ts). A write the
// kernel does not take whole stays in libuv's queue (in order before any later write of the
// socket); until it completes `rawPending(sock)` > 0, the call returned false, and 'drain' is
// emitted on the socket when it is done, as net.Socket would.
import type * as net from 'node:net';
import * as util from 'node:util';
import { streamBase } from '../fdpass';

interface Handle {
  writeBuffer(req: Req, b: Buffer): number;
  writeLatin1String(req: Req, s: string): number;
}
interface Req { handle: Handle | null; oncomplete: (this: Req, status: number) => void; async: boolean; bytes: number; buffer: Buffer | string | null; sock: net.Socket | null }

const sb = streamBase();
const state: Int32Array | null = sb?.state ?? null;
const kAsync = sb?.kAsync ?? 0;
const WriteWrap: (new () => Req) | null = sb?.WriteWrap ?? null;
const kPending = Symbol('fdproxy.rawPending');
let spare: Req | null = null;

type Sock = net.Socket & { _handle?: Handle | null; connecting: boolean; [kPending]?: number; _unrefTimer?: () => void };

/** Writes of `sock` still in libuv's queue from writeFast. */
export function rawPending(sock: net.Socket): number { return (sock as Sock)[kPending] ?? 0; }

function onComplete(this: Req, status: number): void {
  const sock = this.sock as Sock;
  this.sock = null; this.buffer = null; this.handle = null;
  if (!sock) return;
  sock[kPending] = (sock[kPending] ?? 1) - 1;
  if (sock.destroyed) return;
  if (status < 0) { sock.destroy(errnoError(status)); return; }
  if (sock[kPending] === 0) sock.emit('drain');
}

function errnoError(err: number): Error {
  const code = util.getSystemErrorName(err);
  return Object.assign(new Error(`write ${code}`), { code, errno: err, syscall: 'write' });
}

/** socket.write(data) (latin1 for a string), the same promise: false → wait for 'drain'. */
export function writeFast(sock: net.Socket, data: Buffer | string): boolean {
  const s = sock as Sock;
  const h = s._handle;
  if (WriteWrap === null || !h || s.destroyed || s.connecting || s.writableLength > 0 || s.writableCorked > 0 || s.writableEnded || (s[kPending] ?? 0) > 0) {
    return typeof data === 'string' ? sock.write(data, 'latin1') : sock.write(data);
  }
  const req = spare ?? new WriteWrap();
  spare = null;
  req.handle = h; req.oncomplete = onComplete; req.async = false; req.bytes = 0; req.buffer = null; req.sock = null;
  const err = typeof data === 'string' ? h.writeLatin1String(req, data) : h.writeBuffer(req, data);
  // The socket's timeout counts writes as activity (net.Socket refreshes it on every write).
  s._unrefTimer?.();
  if (err !== 0) { req.handle = null; spare = req; sock.destroy(errnoError(err)); return false; }
  if (state![kAsync] === 0) { req.handle = null; spare = req; return true; }
  // The rest waits in libuv's queue: this request belongs to it until oncomplete.
  req.async = true; req.buffer = data; req.sock = sock;
  s[kPending] = (s[kPending] ?? 0) + 1;
  return false;
}
