// The only file that talks to ffi-rs. Every call uses a param object built once and reused
// (measured: rebuilding costs more than the call), pointers as DataType.External, and errno
// read from the calling thread's errno slot (__errno_location) instead of `errno: true`
// (saves ~1.5 µs a call). Misused ffi-rs types abort the process, so the surface is tiny.
// Calls go to the platform binding's own `load` when it can be identified (see bindingLoad).
import { FdpassError } from './errors';

// Loaded lazily so that importing fdpass off Linux does not load a native binding.
type Ffi = typeof import('ffi-rs');
let ffi: Ffi | undefined;
let T: Ffi['DataType'];
const LIB = 'fdpass_libc';

let platformOverride: { platform: string; arch: string } | undefined;
/** Test hook: pretend to run on another platform (assertSupported only). */
export function _setPlatformForTest(p?: { platform: string; arch: string }): void {
  platformOverride = p;
}

let glibc: boolean | undefined;
let report: { header?: { glibcVersionRuntime?: string } } | undefined;   // kept for ffi-rs's loader (requireFfi)
export function assertSupported(): void {
  const platform = platformOverride?.platform ?? process.platform;
  const arch = platformOverride?.arch ?? process.arch;
  if (platform !== 'linux' || (arch !== 'x64' && arch !== 'arm64')) {
    throw new FdpassError('FDP_FDPASS_UNSUPPORTED', `fd passing needs Linux x64/arm64 (glibc); this is ${platform}/${arch}`);
  }
  if (glibc === undefined) {
    report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
    glibc = !!report?.header?.glibcVersionRuntime;
  }
  if (!glibc) throw new FdpassError('FDP_FDPASS_UNSUPPORTED', 'fd passing needs glibc (musl is not supported)');
}

interface Call { library: string; funcName: string; retType: number; paramsType: number[]; paramsValue: unknown[]; freeResultMemory: false }
type Load = (c: Call) => unknown;
let load: Load;
let errnoBuf: Buffer;
let cClose: Call, cSocketpair: Call, cFcntl: Call, cMalloc: Call, cMemset: Call, cFree: Call, cShutdown: Call, cAccept4: Call;

function init(): Ffi {
  if (ffi) return ffi;
  assertSupported();
  const f = requireFfi();
  T = f.DataType;
  f.open({ library: LIB, path: 'libc.so.6' });
  const mk = (funcName: string, retType: number, paramsType: number[]): Call =>
    ({ library: LIB, funcName, retType, paramsType, paramsValue: new Array(paramsType.length).fill(0), freeResultMemory: false });
  cClose = mk('close', T.I32, [T.I32]);
  cSocketpair = mk('socketpair', T.I32, [T.I32, T.I32, T.I32, T.External]);
  cFcntl = mk('fcntl', T.I32, [T.I32, T.I32, T.I32]);
  cMalloc = mk('calloc', T.External, [T.I64, T.I64]);
  cMemset = mk('memset', T.BigInt, [T.External, T.I32, T.I64]);
  cFree = mk('free', T.Void, [T.External]);
  cShutdown = mk('shutdown', T.I32, [T.I32, T.I32]);
  cAccept4 = mk('accept4', T.I32, [T.I32, T.External, T.External, T.I32]);
  load = bindingLoad(f);
  const loc = load(mk('__errno_location', T.External, []));
  errnoBuf = f.createExternalBuffer(loc as never, 4);
  ffi = f;
  return f;
}

/** ffi-rs's loader calls process.report.getReport() to tell glibc from musl (which binding to
 *  load): a whole diagnostic report, 5–8 ms of CPU in every process, which assertSupported has
 *  just made. It gets that same report instead, for the length of the require. */
function requireFfi(): Ffi {
  const rep = process.report, own = rep?.getReport, made = report;
  report = undefined;
  if (!rep || typeof own !== 'function' || !made) return require('ffi-rs');
  rep.getReport = (() => made) as typeof own;
  try { return require('ffi-rs'); } finally { rep.getReport = own; }
}

// ffi-rs's public `load` is a JS wrapper around its native binding's `load` that rebuilds the
// params' type list on every call (to expand array types, which we never use) and sets
// freeResultMemory (our Call objects carry it). On a cold cache — every handoff of a paced
// stream — the wrapper was ~9 µs of a ~19 µs call (getppid, 600 samples one per ms, this VM).
// So call the binding directly, but only when it is provably the binding ffi-rs itself loaded
// (its `open` and `createExternalBuffer` are the very functions ffi-rs re-exports); otherwise
// (other layout, bundler) use the public `load`.
function bindingLoad(f: Ffi): Load {
  try {
    const m = require.cache[require.resolve('ffi-rs')];
    for (const c of m?.children ?? []) {
      const b = c.exports as { load?: unknown; open?: unknown; createExternalBuffer?: unknown } | undefined;
      if (b && typeof b.load === 'function' && b.open === f.open && b.createExternalBuffer === f.createExternalBuffer) return b.load as Load;
    }
  } catch { /* fall through to the public API */ }
  return f.load as unknown as Load;
}
/** Test hook: true when calls bypass ffi-rs's JS wrapper. */
export function _usesBindingLoad(): boolean {
  const f = init();
  return load !== (f.load as unknown);
}

function call(c: Call): number {
  return load(c) as number;
}

/** errno of the last failed call on this thread. */
export function errno(): number {
  return errnoBuf.readInt32LE(0);
}

/** A zeroed malloc'd block seen from JS as a Buffer without copying; `addr` is its address. */
export interface Block { ptr: unknown; buf: Buffer; addr: number }
export function allocBlock(size: number): Block {
  const f = init();
  // calloc, not malloc + memset: a channel block (~128 KiB) comes from mmap, already zero, and its
  // pages are touched only as far as messages reach (memset faulted in all 33 per block at wiring).
  cMalloc.paramsValue[0] = 1; cMalloc.paramsValue[1] = size;
  const ptr = load(cMalloc);
  if (!ptr || f.isNullPointer(ptr as never)) throw new FdpassError('FDP_FDPASS_SYSCALL', 'calloc failed');
  cMemset.paramsValue[0] = ptr; cMemset.paramsValue[1] = 0; cMemset.paramsValue[2] = 0;
  const addr = Number(load(cMemset) as bigint); // memset of 0 bytes: returns its argument, touches nothing
  const buf = f.createExternalBuffer(ptr as never, size);
  return { ptr, buf, addr };
}
export function freeBlock(b: Block): void {
  init();
  cFree.paramsValue[0] = b.ptr;
  load(cFree);
}

/** Bound syscall on a fixed block: params built once, only the flags may vary. */
export interface MsgCall { run(flags: number): number }
export function msgCall(name: 'sendmsg' | 'recvmsg', fd: number, block: Block): MsgCall {
  init();
  const c: Call = { library: LIB, funcName: name, retType: T.I64, paramsType: [T.I32, T.External, T.I32], paramsValue: [fd, block.ptr, 0], freeResultMemory: false };
  const v = c.paramsValue;
  const ld = load;
  return { run(flags: number): number { v[2] = flags; return ld(c) as number; } };
}

export const AF_UNIX = 1, SOCK_STREAM = 1, SOCK_SEQPACKET = 5, SOCK_CLOEXEC = 0o2000000;
export const F_GETFD = 1, F_SETFD = 2, FD_CLOEXEC = 1;

let spBlock: Block | undefined;
export function socketpair(type: number): [number, number] {
  init();
  spBlock ??= allocBlock(8);
  cSocketpair.paramsValue[0] = AF_UNIX; cSocketpair.paramsValue[1] = type | SOCK_CLOEXEC;
  cSocketpair.paramsValue[2] = 0; cSocketpair.paramsValue[3] = spBlock.ptr;
  if (call(cSocketpair) < 0) throw syscallError('socketpair');
  return [spBlock.buf.readInt32LE(0), spBlock.buf.readInt32LE(4)];
}

/** close(2) a raw fd. Never for fds owned by libuv (a net.Socket's fd): destroy the socket instead. */
export function closeFd(fd: number): void {
  init();
  cClose.paramsValue[0] = fd;
  call(cClose); // EBADF/EINTR: nothing useful to do; Linux always releases the fd
}

export const SHUT_RD = 0, SHUT_WR = 1, SHUT_RDWR = 2, SOCK_NONBLOCK = 0o4000;

/** shutdown(2) a socket: 0, or -errno. On a listening TCP socket SHUT_RD stops the listening
 *  itself, for every process holding a copy (what close(2) of one copy does not do). */
export function shutdownFd(fd: number, how: number): number {
  init();
  cShutdown.paramsValue[0] = fd; cShutdown.paramsValue[1] = how;
  return call(cShutdown) < 0 ? -errno() : 0;
}

let acBlock: { addr: Block; len: Block } | undefined;
/** accept4(2) one connection from a non-blocking listening fd: the new fd (non-blocking,
 *  close-on-exec), or -errno (-EAGAIN: nothing queued). */
export function acceptFd(fd: number): number {
  init();
  acBlock ??= { addr: allocBlock(128), len: allocBlock(4) };
  acBlock.len.buf.writeInt32LE(128, 0);
  const v = cAccept4.paramsValue;
  v[0] = fd; v[1] = acBlock.addr.ptr; v[2] = acBlock.len.ptr; v[3] = SOCK_NONBLOCK | SOCK_CLOEXEC;
  const r = call(cAccept4);
  return r < 0 ? -errno() : r;
}

export function setCloexec(fd: number, on = true): void {
  init();
  cFcntl.paramsValue[0] = fd; cFcntl.paramsValue[1] = F_SETFD; cFcntl.paramsValue[2] = on ? FD_CLOEXEC : 0;
  if (call(cFcntl) < 0) throw syscallError('fcntl(F_SETFD)');
}
export function getCloexec(fd: number): boolean {
  init();
  cFcntl.paramsValue[0] = fd; cFcntl.paramsValue[1] = F_GETFD; cFcntl.paramsValue[2] = 0;
  const r = call(cFcntl);
  if (r < 0) throw syscallError('fcntl(F_GETFD)');
  return (r & FD_CLOEXEC) !== 0;
}

function syscallError(what: string): FdpassError {
  const e = errno();
  return new FdpassError('FDP_FDPASS_SYSCALL', `${what} failed: errno ${e}`, e);
}
