// The net.Socket side of a handoff: release a live socket's fd (plus what Node read but nobody
// consumed) without shutting the connection down, and wrap a received fd into a net.Socket.
import * as net from 'node:net';
import { FdpassError } from './errors';
import { nodeBinding } from './binding';

// tcp_wrap lets socketFromFd skip net's guessHandleType (fstat + getsockname per socket); the
// public `new net.Socket({ fd })` path is the fallback. Looked up once.
interface TcpWrap { open(fd: number): number }
let TCP: (new (type: number) => TcpWrap) | null | undefined;
let TCP_SOCKET = 0;
function tcpWrap(): typeof TCP {
  if (TCP === undefined) {
    const b = nodeBinding('tcp_wrap');
    TCP = typeof b?.TCP === 'function' && typeof b.constants?.SOCKET === 'number' ? b.TCP : null;
    if (TCP) TCP_SOCKET = b.constants.SOCKET;
  }
  return TCP;
}

/** A received stream-socket fd (TCP, or unix stream with kind 'unix') → working net.Socket
 *  (readable + writable). The socket now owns the fd: destroy() closes it. */
export function socketFromFd(fd: number, kind: 'tcp' | 'unix' = 'tcp'): net.Socket {
  const Tcp = kind === 'tcp' ? tcpWrap() : null;
  if (Tcp) {
    const handle = new Tcp(TCP_SOCKET);
    if (handle.open(fd) === 0) return new net.Socket({ handle, readable: true, writable: true } as net.SocketConstructorOpts);
  }
  return new net.Socket({ fd, readable: true, writable: true });
}

interface Handle { fd?: number; reading?: boolean; readStop(): number; readStart(): number }
interface ReadState { buffer: unknown; length: number; bufferIndex?: number; encoding?: BufferEncoding | null; objectMode?: boolean }
const released = new WeakSet<net.Socket>();

/** Stop libuv reading and hand back the fd and the bytes Node already read that nobody consumed.
 *  Shuts nothing down. Keep `socket` until the handoff is acked, then socket.destroy(). */
export function releaseSocket(socket: net.Socket): { fd: number; unread: Buffer } {
  const s = socket as unknown as { _handle?: Handle; _readableState: ReadState; writableLength: number };
  const h = s._handle;
  if (!h || typeof h.fd !== 'number' || h.fd < 0 || released.has(socket)) {
    throw new FdpassError('FDP_FDPASS_NOT_RELEASABLE', 'socket has no fd (closed, TLS or already released)');
  }
  if (s.writableLength > 0) throw new FdpassError('FDP_FDPASS_NOT_RELEASABLE', `${s.writableLength} bytes still queued for writing`);
  h.readStop();
  // net restarts libuv reading whenever the stream wants data and handle.reading is false.
  h.reading = true;
  released.add(socket);
  return { fd: h.fd, unread: takeBuffered(s._readableState) };
}

/** Undo releaseSocket (rollback after onReturn): put `unread` back in front and read again. */
export function resumeSocket(socket: net.Socket, unread?: Buffer): void {
  const h = (socket as unknown as { _handle?: Handle })._handle;
  if (!h || !released.delete(socket)) return;
  if (unread && unread.length > 0) socket.unshift(unread);
  h.reading = true;
  h.readStart();
}

// Node 20 keeps the readable buffer in a BufferList (head/next); Node ≥ 22 in an array with
// bufferIndex. Take the chunks out without read() (read() would emit 'data' in flowing mode).
function takeBuffered(st: ReadState): Buffer {
  if (st.length === 0 || st.objectMode) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  const toBuf = (c: Buffer | string): Buffer => (typeof c === 'string' ? Buffer.from(c, st.encoding ?? 'utf8') : c);
  const buf = st.buffer as { head?: { data: Buffer | string; next: unknown } | null; clear?: () => void } | (Buffer | string)[];
  if (Array.isArray(buf)) {
    for (let i = st.bufferIndex ?? 0; i < buf.length; i++) chunks.push(toBuf(buf[i]));
    buf.length = 0;
    st.bufferIndex = 0;
  } else if (buf && 'head' in buf) {
    for (let n = buf.head; n; n = n.next as typeof n) chunks.push(toBuf(n.data));
    buf.clear?.();
  }
  st.length = 0;
  return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
}
