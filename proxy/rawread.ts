// Client reads for the HTTP path without Readable.push/'data': while an HttpConn owns a client
// socket, the libuv handle's onread goes to it directly (what net's onStreamRead does for a read:
// refresh the socket's timeout, then hand over the bytes). EOF and errors still take net's path
// ('end', 'error', 'close'). Pausing must stop the handle too (net stops reading only when its
// Readable buffer is full, and nothing is buffered here): see ClientReads.pause/resume. On
// detach the socket is net's again, as it was.
import type * as net from 'node:net';
import { streamBase } from '../fdpass';

interface Handle { onread: (ab?: ArrayBuffer) => unknown; reading?: boolean; readStart(): number; readStop(): number }
type Sock = net.Socket & { _handle?: Handle | null; _unrefTimer?: () => void; _readableState: { reading: boolean } };

const sb = streamBase();
const state: Int32Array | null = sb?.state ?? null;
const kNread = sb?.kNread ?? 0, kOffset = sb?.kOffset ?? 0;
const usable = state !== null;

export class ClientReads {
  private h: Handle | null = null;
  private orig: Handle['onread'] | null = null;

  constructor(private readonly sock: net.Socket, private readonly onData: (d: Buffer) => void) {
    const h = (sock as Sock)._handle;
    if (!usable || !h || typeof h.onread !== 'function' || typeof h.readStop !== 'function') return;
    this.h = h; this.orig = h.onread;
    h.onread = this.onRead;
  }

  private readonly onRead = (ab?: ArrayBuffer): unknown => {
    const n = state![kNread];
    const s = this.sock as Sock;
    // No ArrayBuffer: a socket reading into a user buffer (net's `onread` option): net's path.
    if (n <= 0 || !ab || this.h === null) return this.orig!.call(this.h ?? s._handle, ab);
    if (s.destroyed) return undefined;
    s._unrefTimer?.();
    this.onData(Buffer.from(ab, state![kOffset], n));
    return undefined;
  };

  pause(): void {
    this.sock.pause();
    const h = this.h;
    if (h && h.reading && !this.sock.destroyed) { h.reading = false; h.readStop(); }
  }

  resume(): void {
    this.sock.resume();
    const h = this.h;
    if (h && !h.reading && !this.sock.destroyed && (this.sock as Sock)._handle === h) { h.reading = true; h.readStart(); }
  }

  /** Give the socket back to net's read path (upgrade, reroute, migration, close). */
  release(): void {
    const h = this.h;
    if (!h) return;
    this.h = null;
    if (h.onread === this.onRead) h.onread = this.orig!;
    // Nothing was pushed while we read: let net's next read() start the handle again if stopped.
    (this.sock as Sock)._readableState.reading = false;
  }
}
