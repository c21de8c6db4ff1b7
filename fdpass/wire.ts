// Layout of one channel endpoint's malloc'd block (LP64 Linux: x86_64/arm64) and of the
// messages. The block holds msghdr, one iovec, the SCM_RIGHTS cmsg and the payload; pointers in
// it are written once (initBlock), the hot path only writes lengths with writeUInt32LE.
//
// Message: u32 firstSeq | u16 count | u16 VERSION | count × (u8 nfds | u8 hasMeta | u16 flags |
//          u32 metaLen | u32 bytesLen | meta JSON | bytes). The fds of all handoffs travel in one
// SCM_RIGHTS cmsg, in handoff order. Several queued handoffs may share a message (batching); a
// handoff never spans two messages. flags: 0, except in the first handoff of a message where bit
// 0 (RING_FOLLOWS) says "the sender writes a RING right after this message" (senders before it
// wrote 0 there and receivers before it ignore the field, so both mix with this version).
import type { Block } from './native';
import type { Fifo } from './fifo';
import type { Handoff } from './channel';

export const PAYLOAD_CAP = 128 * 1024; // < SO_SNDBUF default (212992) so one message always fits
const HDR = 8, HHDR = 12;
/** Per handoff: fds, meta JSON, bytes. A handoff never spans two messages, so the largest one
 *  (all of MAX_META and MAX_BYTES) fills a message: 114,668 bytes, room for a request head of up
 *  to 32 KiB plus the one 64 KiB read that completed it (conf's head_bytes maximum). */
export const MAX_FDS = 4, MAX_META = 16384, MAX_BYTES = PAYLOAD_CAP - HDR - HHDR - MAX_META;
export const MSG_MAX_FDS = 64, MSG_MAX_HANDOFFS = 64;
export const VERSION = 1;
const RING_FOLLOWS = 1;

export const OFF_NAME = 0, OFF_IOV_PTR = 16, OFF_IOVLEN = 24, OFF_CTL_PTR = 32, OFF_CTL_LEN = 40, OFF_FLAGS = 48;
export const OFF_IOV = 56; // iov_base, iov_len
export const OFF_CMSG = 72; // cmsg_len u64, level i32, type i32, data
export const OFF_CMSG_DATA = OFF_CMSG + 16;
export const OFF_PAYLOAD = OFF_CMSG + 16 + MSG_MAX_FDS * 4; // 344, 8-aligned
export const BLOCK_SIZE = OFF_PAYLOAD + PAYLOAD_CAP + 64;

export const cmsgSpace = (nfds: number): number => 16 + ((nfds * 4 + 7) & ~7);

function writePtr(b: Buffer, off: number, addr: number): void {
  b.writeUInt32LE(addr % 4294967296, off);
  b.writeUInt32LE(Math.floor(addr / 4294967296), off + 4);
}

export function initBlock(bl: Block): void {
  const b = bl.buf;
  writePtr(b, OFF_NAME, 0);
  writePtr(b, OFF_IOV_PTR, bl.addr + OFF_IOV);
  writePtr(b, OFF_IOVLEN, 1);
  writePtr(b, OFF_CTL_PTR, bl.addr + OFF_CMSG);
  writePtr(b, OFF_IOV, bl.addr + OFF_PAYLOAD);
  writePtr(b, OFF_IOV + 8, PAYLOAD_CAP);
  b.writeUInt32LE(1, OFF_CMSG + 8);  // SOL_SOCKET
  b.writeUInt32LE(1, OFF_CMSG + 12); // SCM_RIGHTS
}

interface Packable { h: Handoff; meta?: string; metaLen: number }

/** Encode handoffs from the queue head into the block; returns how many were packed (≥ 1). */
export function pack(bl: Block, q: Fifo<Packable>, seq: number): number {
  const b = bl.buf;
  let off = OFF_PAYLOAD + HDR, nf = 0, count = 0;
  const n = Math.min(q.length, MSG_MAX_HANDOFFS);
  for (; count < n; count++) {
    const e = q.at(count)!;
    const fds = e.h.fds, bytes = e.h.bytes, ml = e.meta !== undefined ? e.metaLen : 0;
    const need = HHDR + ml + bytes.length;
    if (count > 0 && (off + need - OFF_PAYLOAD > PAYLOAD_CAP || nf + fds.length > MSG_MAX_FDS)) break;
    b[off] = fds.length; b[off + 1] = e.meta !== undefined ? 1 : 0; b.writeUInt16LE(0, off + 2);
    b.writeUInt32LE(ml, off + 4); b.writeUInt32LE(bytes.length, off + 8);
    off += HHDR;
    if (e.meta !== undefined) off += b.write(e.meta, off, ml, 'utf8');
    if (bytes.length) off += bytes.copy(b, off);
    for (let i = 0; i < fds.length; i++) b.writeInt32LE(fds[i], OFF_CMSG_DATA + 4 * nf++);
  }
  b.writeUInt32LE(seq % 4294967296, OFF_PAYLOAD);
  b.writeUInt16LE(count, OFF_PAYLOAD + 4);
  b.writeUInt16LE(VERSION, OFF_PAYLOAD + 6);
  b.writeUInt32LE(off - OFF_PAYLOAD, OFF_IOV + 8);
  if (nf > 0) {
    writePtr(b, OFF_CTL_PTR, bl.addr + OFF_CMSG);
    b.writeUInt32LE(cmsgSpace(nf), OFF_CTL_LEN); b.writeUInt32LE(0, OFF_CTL_LEN + 4);
    b.writeUInt32LE(16 + 4 * nf, OFF_CMSG); b.writeUInt32LE(0, OFF_CMSG + 4);
  } else {
    writePtr(b, OFF_CTL_PTR, 0);
    writePtr(b, OFF_CTL_LEN, 0);
  }
  return count;
}

/** Mark the message packed in the block as followed by a RING (or not); before each sendmsg. */
export function setRingFollows(bl: Block, on: boolean): void {
  bl.buf.writeUInt16LE(on ? RING_FOLLOWS : 0, OFF_PAYLOAD + HDR + 2);
}

export function resetRecv(b: Buffer, ctrlSpace: number): void {
  b.writeUInt32LE(ctrlSpace, OFF_CTL_LEN); // upper half stays 0; the kernel rewrites the lower
  b.writeUInt32LE(0, OFF_CMSG);
  b.writeInt32LE(0, OFF_FLAGS);
}

/** fds of the SCM_RIGHTS cmsg(s) the kernel wrote. */
export function readFds(b: Buffer): number[] {
  const ctl = b.readUInt32LE(OFF_CTL_LEN);
  const fds: number[] = [];
  let off = OFF_CMSG;
  while (off + 16 <= OFF_CMSG + ctl) {
    const len = b.readUInt32LE(off);
    if (len < 16) break;
    if (b.readInt32LE(off + 8) === 1 && b.readInt32LE(off + 12) === 1) {
      for (let p = off + 16; p + 4 <= off + len; p += 4) fds.push(b.readInt32LE(p));
    }
    off += (len + 7) & ~7;
  }
  return fds;
}

export interface Parsed { firstSeq: number; count: number; nfds: number; offs: number[]; ringFollows: boolean }
/** Validate a received message of n bytes; null when malformed (or truncated past its headers). */
export function parse(b: Buffer, n: number): Parsed | null {
  if (n < HDR || b.readUInt16LE(OFF_PAYLOAD + 6) !== VERSION) return null;
  const count = b.readUInt16LE(OFF_PAYLOAD + 4);
  const end = OFF_PAYLOAD + Math.min(n, PAYLOAD_CAP);
  const offs: number[] = new Array(count);
  let off = OFF_PAYLOAD + HDR, nfds = 0;
  for (let k = 0; k < count; k++) {
    if (off + HHDR > end) return null;
    offs[k] = off;
    nfds += b[off];
    off += HHDR + b.readUInt32LE(off + 4) + b.readUInt32LE(off + 8);
    if (off > end) return null;
  }
  const ringFollows = count > 0 && (b.readUInt16LE(OFF_PAYLOAD + HDR + 2) & RING_FOLLOWS) !== 0;
  return { firstSeq: b.readUInt32LE(OFF_PAYLOAD), count, nfds, offs, ringFollows };
}

const EMPTY = Buffer.alloc(0);
/** Copy handoff k out of the receive block (the next recvmsg overwrites it). */
export function handoffAt(b: Buffer, m: Parsed, k: number, fds: number[], fi: number): Handoff {
  const off = m.offs[k];
  const nf = b[off], hasMeta = b[off + 1], ml = b.readUInt32LE(off + 4), bl = b.readUInt32LE(off + 8);
  const p = off + HHDR;
  const meta = hasMeta ? JSON.parse(b.toString('utf8', p, p + ml)) : undefined;
  let bytes = EMPTY;
  if (bl > 0) { bytes = Buffer.allocUnsafe(bl); b.copy(bytes, 0, p + ml, p + ml + bl); }
  return { fds: nf === 0 ? [] : fds.slice(fi, fi + nf), bytes, meta };
}

export const F_RING = 1, F_ACK = 2, F_NACK = 3, F_BYE = 4;
const FRAME_LEN = [0, 1, 5, 8, 1];
export const frameLen = (t: number): number => FRAME_LEN[t] ?? 0;
export function ackFrame(seq: number): Buffer {
  const f = Buffer.allocUnsafe(5);
  f[0] = F_ACK; f.writeUInt32LE(seq % 4294967296, 1);
  return f;
}
export function nackFrame(seq: number, count: number, code: number): Buffer {
  const f = Buffer.allocUnsafe(8);
  f[0] = F_NACK; f.writeUInt32LE(seq % 4294967296, 1); f.writeUInt16LE(count, 5); f[7] = code;
  return f;
}
