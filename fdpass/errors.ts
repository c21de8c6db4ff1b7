// Coded errors of fdpass. Every failure that reaches a caller is an FdpassError with a stable
// `code`; proxy/errors.ts maps codes to client-facing statuses.
import * as os from 'node:os';

export const FDPASS_ERRORS = {
  FDP_FDPASS_UNSUPPORTED: 'fd passing needs Linux (x64/arm64, glibc) with SCM_RIGHTS; this platform is not supported',
  FDP_FDPASS_CTRUNC: 'recvmsg returned MSG_CTRUNC/MSG_TRUNC: fds or bytes of a message were dropped; the handoffs of that message were closed on the receiver and returned to the sender',
  FDP_FDPASS_EMFILE: 'receiver out of file descriptors (EMFILE/ENFILE): the handoffs were closed on the receiver and returned to the sender',
  FDP_FDPASS_TOOMANYREFS: 'sendmsg ETOOMANYREFS: too many fds in flight for this user (RLIMIT_NOFILE); the handoffs were returned',
  FDP_FDPASS_PEER_GONE: 'the peer process closed or died (EOF, EPIPE, ECONNRESET, ECONNREFUSED); unacknowledged handoffs were returned',
  FDP_FDPASS_TOO_BIG: 'handoff exceeds the limits (at most 4 fds, 114,668 bytes, 16 KiB meta JSON)',
  FDP_FDPASS_QUEUE_FULL: 'the channel send queue is full (receiver not draining); the handoff was returned',
  FDP_FDPASS_CLOSED: 'the channel was closed locally; pending handoffs were returned',
  FDP_FDPASS_NO_LISTENER: "the receiving channel had no 'handoff' listener; the handoffs were closed there and returned",
  FDP_FDPASS_NOT_RELEASABLE: 'socket cannot be released for handoff (no fd, already released, or writes still pending)',
  FDP_FDPASS_PROTOCOL: 'malformed message on the channel (version mismatch or corruption)',
  FDP_FDPASS_SYSCALL: 'a system call failed with an unexpected errno (named in the message)',
} as const;

export type FdpassCode = keyof typeof FDPASS_ERRORS;
// Index order is part of the wire protocol (NACK frames carry the index): append only.
export const WIRE_CODES: FdpassCode[] = Object.keys(FDPASS_ERRORS) as FdpassCode[];

const RETRYABLE: ReadonlySet<string> = new Set([
  'FDP_FDPASS_CTRUNC', 'FDP_FDPASS_EMFILE', 'FDP_FDPASS_TOOMANYREFS', 'FDP_FDPASS_PEER_GONE',
  'FDP_FDPASS_QUEUE_FULL', 'FDP_FDPASS_CLOSED', 'FDP_FDPASS_NO_LISTENER',
]);

export class FdpassError extends Error {
  readonly code: FdpassCode;
  readonly source = 'fdpass' as const;
  readonly retryable: boolean;
  readonly errno?: number;
  constructor(code: FdpassCode, detail?: string, errno?: number) {
    super(`${code}: ${detail ?? FDPASS_ERRORS[code]}`);
    this.name = 'FdpassError';
    this.code = code;
    this.retryable = RETRYABLE.has(code);
    if (errno !== undefined) this.errno = errno;
  }
}

// errno number → name (EPIPE, ...), from Node's own table so it matches the platform.
const ERRNO_NAMES = new Map<number, string>();
for (const [name, num] of Object.entries(os.constants.errno)) ERRNO_NAMES.set(num as number, name);
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
}

export const E = os.constants.errno;
const ETOOMANYREFS = 109; // Linux; missing from Node's errno constants
ERRNO_NAMES.set(ETOOMANYREFS, 'ETOOMANYREFS');

/** Map an errno from sendmsg/recvmsg to a coded error. */
export function errorFromErrno(errno: number, call: string): FdpassError {
  const name = errnoName(errno);
  switch (errno) {
    case E.EMFILE: case E.ENFILE:
      return new FdpassError('FDP_FDPASS_EMFILE', `${call}: ${name}`, errno);
    case ETOOMANYREFS:
      return new FdpassError('FDP_FDPASS_TOOMANYREFS', `${call}: ${name}`, errno);
    case E.EPIPE: case E.ECONNREFUSED: case E.ECONNRESET: case E.ENOTCONN:
      return new FdpassError('FDP_FDPASS_PEER_GONE', `${call}: ${name}`, errno);
    default:
      return new FdpassError('FDP_FDPASS_SYSCALL', `${call} failed: ${name}`, errno);
  }
}
