// Channel: handoffs (fds + bytes + meta) over an AF_UNIX SOCK_SEQPACKET socketpair, with a
// SOCK_STREAM "bell" socketpair watched by libuv for wake-ups and acks.
//
// Why two sockets: libuv cannot watch a SEQPACKET fd (wrapping it would make libuv read() it and
// the kernel would discard the fds), so the receiver sleeps on the bell stream and drains the data
// socket with recvmsg(MSG_DONTWAIT) until EAGAIN when a RING frame arrives. No polling: idle = 0 CPU.
//
// Security: a channel is a socketpair, so only processes that inherited or were handed one of its
// fds (fdproxy's own processes) can send into it; there is no path in the filesystem.
//
// Bell frames (both directions): RING(1) | ACK(2) u32 next-seq | NACK(3) u32 seq u16 count u8 code
// | BYE(4). ACK is cumulative ("every handoff with seq < n was taken"); NACK precedes the ACK that
// covers the handoffs it rejects. BYE = "closed on purpose, I returned my pending handoffs: do not
// deliver what is still queued from me". Without BYE (crash, SIGKILL) the orphaned messages
// still queued are delivered: the receiver then holds the only live copies.
import { EventEmitter } from 'node:events';
import { openBell, type Bell } from './bell';
import { E, FdpassError, WIRE_CODES, errnoName, errorFromErrno, type FdpassCode } from './errors';
import { Fifo } from './fifo';
import * as wire from './wire';
import { allocBlock, closeFd, errno, freeBlock, msgCall, SOCK_SEQPACKET, SOCK_STREAM, socketpair, type Block, type MsgCall } from './native';

export interface Handoff { fds: number[]; bytes: Buffer; meta: unknown }
export interface ChannelFds { data: number; bell: number }
export interface SendCallbacks { onAck?: () => void; onReturn?: (h: Handoff, err: FdpassError) => void }
export interface ChannelOptions {
  name?: string;
  /** Bound of the not-yet-sent queue (back-pressure); beyond it send() returns FDP_FDPASS_QUEUE_FULL. */
  maxQueue?: number;
  /** Test hook: fd slots in the receive control buffer (default wire.MSG_MAX_FDS). */
  recvFdSlots?: number;
}

interface Entry { h: Handoff; cb?: SendCallbacks; meta?: string; metaLen: number; seq: number; done: boolean }

const RING = Buffer.from([wire.F_RING]);
const BYE = Buffer.from([wire.F_BYE]);
const MSG_DONTWAIT = 0x40, MSG_NOSIGNAL = 0x4000, MSG_CMSG_CLOEXEC = 0x40000000;
const MSG_TRUNC = 0x20, MSG_CTRUNC = 0x08;
const U32 = 4294967296;
const RING_EVERY = 8; // ring during a long flush so the receiver overlaps with the sender
let markRings = true;
/** Test hook: send like fdpass before RING_FOLLOWS (no message marked), as an older peer would. */
export function _setRingMarksForTest(on: boolean): void { markRings = on; }

export function channelPair(): { a: ChannelFds; b: ChannelFds } {
  const [da, db] = socketpair(SOCK_SEQPACKET);
  let bell: [number, number];
  try { bell = socketpair(SOCK_STREAM); } catch (e) { closeFd(da); closeFd(db); throw e; }
  return { a: { data: da, bell: bell[0] }, b: { data: db, bell: bell[1] } };
}

export class Channel extends EventEmitter {
  readonly name: string;
  readonly stats = { sent: 0, received: 0, acked: 0, returned: 0, errors: 0, msgsSent: 0, msgsReceived: 0, rings: 0, eagain: 0, wakeups: 0 };
  private readonly dataFd: number;
  private readonly bell: Bell;
  private readonly maxQueue: number;
  private readonly ctrlSpace: number;
  private sendBlock: Block;
  private recvBlock: Block;
  private sendCall: MsgCall;
  private recvCall: MsgCall;
  private queue = new Fifo<Entry>();
  private inflight = new Fifo<Entry>();
  private nackedInflight = 0;
  private packed = 0;       // entries at the queue head currently encoded in sendBlock
  private nextSeq = 0;      // seq of the next handoff to leave
  private ackedSeq = 0;     // every seq below it is acked or returned
  private recvNext = 0;     // u32: seq after the last handoff received
  // RINGs read minus RING_FOLLOWS messages received: while > 0 a message announced by a RING we
  // read may still be in the socket. Never below the true figure (reset to 0 only at EAGAIN, when
  // the socket is empty; unmarked messages and RINGs with no marked message only raise it, and an
  // old sender that marks nothing keeps it > 0: drain to EAGAIN as before), so stopping at <= 0
  // never leaves an announced message behind.
  private owed = 0;
  private flushScheduled = false;
  private blocked = false;  // last sendmsg got EAGAIN: wait for the peer's ACK (credit)
  private retryTimer: NodeJS.Timeout | undefined;
  private bellRest: Buffer | undefined;
  private closed = false;

  constructor(fds: ChannelFds, opts: ChannelOptions = {}) {
    super();
    this.name = opts.name ?? `fdpass:${fds.data}`;
    this.maxQueue = opts.maxQueue ?? 65536;
    this.dataFd = fds.data;
    this.ctrlSpace = wire.cmsgSpace(Math.max(1, Math.min(opts.recvFdSlots ?? wire.MSG_MAX_FDS, wire.MSG_MAX_FDS)));
    this.sendBlock = allocBlock(wire.BLOCK_SIZE);
    this.recvBlock = allocBlock(wire.BLOCK_SIZE);
    wire.initBlock(this.sendBlock);
    wire.initBlock(this.recvBlock);
    this.sendCall = msgCall('sendmsg', fds.data, this.sendBlock);
    this.recvCall = msgCall('recvmsg', fds.data, this.recvBlock);
    this.bell = openBell(fds.bell, {
      data: (c) => this.onBell(c),
      gone: (detail) => this.teardown(new FdpassError('FDP_FDPASS_PEER_GONE', detail), true),
    });
  }

  /** Handoffs queued or sent and not yet acked (or returned). */
  get pending(): number { return this.queue.length + this.inflight.length - this.nackedInflight; }
  get isClosed(): boolean { return this.closed; }
  /** Let the process exit while only this channel is open (libuv-watched bell). */
  unref(): this { this.bell.unref(); return this; }
  ref(): this { this.bell.ref(); return this; }

  send(h: Handoff, cb?: SendCallbacks): void {
    // Caller bugs throw at once; peer and back-pressure problems go through onReturn.
    const nf = h.fds.length;
    if (nf > wire.MAX_FDS) throw new FdpassError('FDP_FDPASS_TOO_BIG', `${nf} fds (max ${wire.MAX_FDS})`);
    if (h.bytes.length > wire.MAX_BYTES) throw new FdpassError('FDP_FDPASS_TOO_BIG', `${h.bytes.length} bytes (max ${wire.MAX_BYTES})`);
    // The JSON text is written straight into the send block when packed (no Buffer per handoff:
    // a migration's garbage is what makes the scavenges of a reload).
    let meta: string | undefined, metaLen = 0;
    if (h.meta !== undefined) {
      meta = JSON.stringify(h.meta);
      metaLen = Buffer.byteLength(meta);
      if (metaLen > wire.MAX_META) throw new FdpassError('FDP_FDPASS_TOO_BIG', `meta ${metaLen} bytes (max ${wire.MAX_META})`);
    }
    const e: Entry = { h, cb, meta, metaLen, seq: -1, done: false };
    if (this.closed) return this.returnLater(e, new FdpassError('FDP_FDPASS_CLOSED'));
    if (this.queue.length >= this.maxQueue) return this.returnLater(e, new FdpassError('FDP_FDPASS_QUEUE_FULL', `queue of ${this.name} holds ${this.queue.length}`));
    this.queue.push(e);
    if (this.flushScheduled || this.blocked) return;
    if (this.queue.length === 1 && this.inflight.length === 0) {
      // Nothing in flight: send now, saving a loop turn of latency. Sends that follow while
      // this one is unacked are batched per loop turn as before.
      this.flush();
      return;
    }
    this.flushScheduled = true;
    setImmediate(this.flushCb);
  }

  /** Close our ends. Pending handoffs are returned (FDP_FDPASS_CLOSED) before 'close'. Handoffs the
   *  peer is reading at this very moment may be both returned and delivered: close when pending is 0. */
  close(): void {
    if (this.closed) return;
    try { this.bell.write(BYE); } catch { /* peer already gone */ }
    this.teardown(new FdpassError('FDP_FDPASS_CLOSED'), false, true);
  }

  private readonly flushCb = (): void => { this.flushScheduled = false; this.flush(); };

  private flush(): void {
    if (this.closed || this.blocked) return;
    let unrung = 0;
    while (this.queue.length > 0) {
      if (this.packed === 0) this.packed = wire.pack(this.sendBlock, this.queue, this.nextSeq);
      // Ring after this message if it empties the queue or RING_EVERY is reached; say so in it.
      const ringAfter = this.packed === this.queue.length || unrung + 1 >= RING_EVERY;
      wire.setRingFollows(this.sendBlock, ringAfter && markRings);
      const r = this.sendCall.run(MSG_DONTWAIT | MSG_NOSIGNAL);
      if (r < 0) {
        const en = errno();
        if (en === E.EINTR) continue;
        if (en === E.EAGAIN || en === E.ENOBUFS) { this.block(); break; }
        const err = errorFromErrno(en, 'sendmsg');
        if (err.code === 'FDP_FDPASS_PEER_GONE') { this.teardown(err, true); return; }
        // ETOOMANYREFS or an unexpected errno: return this message's handoffs, go on with the rest.
        this.stats.errors++;
        for (let i = this.packed; i > 0; i--) this.giveBack(this.queue.shift()!, err);
        this.packed = 0;
        continue;
      }
      for (let i = this.packed; i > 0; i--) {
        const e = this.queue.shift()!;
        e.seq = this.nextSeq++;
        this.inflight.push(e);
      }
      this.stats.sent += this.packed;
      this.stats.msgsSent++;
      this.packed = 0;
      if (ringAfter) { this.ring(); unrung = 0; } else unrung++;
    }
    if (unrung > 0) this.ring(); // stopped early (EAGAIN, error): unmarked, the receiver drains to EAGAIN
  }

  private block(): void {
    this.blocked = true;
    this.stats.eagain++;
    // The peer's next ACK is the credit that unblocks us; the timer only covers a lost race.
    this.retryTimer ??= setTimeout(() => { this.retryTimer = undefined; this.unblock(); }, 50);
  }
  private unblock(): void {
    if (!this.blocked) return;
    this.blocked = false;
    if (this.retryTimer) { clearTimeout(this.retryTimer); this.retryTimer = undefined; }
    this.flush();
  }

  private ring(): void {
    this.stats.rings++;
    this.bell.write(RING);
  }

  private onBell(chunk: Buffer): void {
    if (this.closed) return;
    let buf = chunk;
    if (this.bellRest) { buf = Buffer.concat([this.bellRest, chunk]); this.bellRest = undefined; }
    let rings = 0, acked = false, bye = false;
    let i = 0;
    while (i < buf.length) {
      const t = buf[i];
      const len = wire.frameLen(t);
      if (len === 0) { this.protocolError(`bad bell frame type ${t}`); return; }
      if (i + len > buf.length) break;
      if (t === wire.F_RING) rings++;
      else if (t === wire.F_ACK) { this.onAck(buf.readUInt32LE(i + 1)); acked = true; }
      else if (t === wire.F_NACK) this.onNack(buf.readUInt32LE(i + 1), buf.readUInt16LE(i + 5), buf[i + 7]);
      else if (t === wire.F_BYE) bye = true;
      i += len;
    }
    if (i < buf.length) this.bellRest = buf.subarray(i);
    if (bye) { this.teardown(new FdpassError('FDP_FDPASS_PEER_GONE', 'peer closed the channel'), false); return; }
    if (rings > 0) { this.stats.wakeups++; this.owed += rings; this.drain(true); }
    if (acked && this.blocked) this.unblock();
  }

  private onAck(n: number): void {
    const target = this.ackedSeq + ((n - (this.ackedSeq % U32) + U32) % U32);
    let e: Entry | undefined;
    while ((e = this.inflight.peek()) !== undefined && e.seq < target) {
      this.inflight.shift();
      if (e.done) { this.nackedInflight--; continue; }
      this.stats.acked++;
      e.cb?.onAck?.();
    }
    this.ackedSeq = target;
  }

  private onNack(seq32: number, count: number, codeIdx: number): void {
    const first = this.ackedSeq + ((seq32 - (this.ackedSeq % U32) + U32) % U32);
    const head = this.inflight.peek();
    if (!head) return;
    const code: FdpassCode = WIRE_CODES[codeIdx] ?? 'FDP_FDPASS_PROTOCOL';
    const err = new FdpassError(code, `${code}: rejected by the receiver ${this.name}`);
    for (let k = 0; k < count; k++) {
      const e = this.inflight.at(first - head.seq + k);
      if (!e || e.done) continue;
      e.done = true;
      this.nackedInflight++;
      this.giveBack(e, err);
    }
  }

  /** recvmsg until every RING read has its message (ack) or until EAGAIN (!ack: the peer died,
   *  take everything); deliver; then one bell write with NACKs and the cumulative ACK. */
  private drain(ack: boolean): void {
    const b = this.recvBlock.buf;
    const frames: Buffer[] = [];
    let got = 0, eof = false;
    while (!this.closed) {
      if (ack && this.owed <= 0) break; // nothing announced is left: no recvmsg just to see EAGAIN
      wire.resetRecv(b, this.ctrlSpace);
      const n = this.recvCall.run(MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
      if (n < 0) {
        const en = errno();
        if (en === E.EINTR) continue;
        if (en === E.EAGAIN) { this.owed = 0; break; }
        const err = errorFromErrno(en, 'recvmsg');
        if (err.code === 'FDP_FDPASS_PEER_GONE') { eof = true; break; }
        this.reportError(err); // EMFILE here or an unexpected errno: message state unknown, stop this round
        break;
      }
      if (n === 0) { eof = true; break; }
      got++;
      this.stats.msgsReceived++;
      const fds = wire.readFds(b);
      const flags = b.readInt32LE(wire.OFF_FLAGS);
      const msg = wire.parse(b, n);
      if (!msg) { fds.forEach(closeFd); this.reportError(new FdpassError('FDP_FDPASS_PROTOCOL', `short or bad message (${n} bytes)`)); continue; }
      if (msg.ringFollows) this.owed--;
      this.recvNext = (msg.firstSeq + msg.count) % U32;
      let code: FdpassCode | undefined;
      if (flags & (MSG_TRUNC | MSG_CTRUNC) || fds.length !== msg.nfds) {
        // Fewer fds than announced with room in the control buffer: the kernel could not install them.
        code = (flags & MSG_TRUNC) === 0 && msg.nfds <= (this.ctrlSpace - 16) / 4 ? 'FDP_FDPASS_EMFILE' : 'FDP_FDPASS_CTRUNC';
      } else if (this.listenerCount('handoff') === 0) code = 'FDP_FDPASS_NO_LISTENER';
      if (code) {
        fds.forEach(closeFd);
        frames.push(wire.nackFrame(msg.firstSeq, msg.count, WIRE_CODES.indexOf(code)));
        this.reportError(new FdpassError(code, `${code}: message of ${msg.count} handoffs (${fds.length}/${msg.nfds} fds, flags 0x${flags.toString(16)}) dropped on ${this.name}; returned to the sender`));
        continue;
      }
      // Copy every handoff out first: a listener may close the channel (and free the block).
      const hs: Handoff[] = new Array(msg.count);
      try {
        for (let k = 0, fi = 0; k < msg.count; k++) { hs[k] = wire.handoffAt(b, msg, k, fds, fi); fi += hs[k].fds.length; }
      } catch (e) { // bad meta JSON: reject the whole message like a truncated one
        fds.forEach(closeFd);
        frames.push(wire.nackFrame(msg.firstSeq, msg.count, WIRE_CODES.indexOf('FDP_FDPASS_PROTOCOL')));
        this.reportError(new FdpassError('FDP_FDPASS_PROTOCOL', `bad meta: ${(e as Error).message}`));
        continue;
      }
      for (const h of hs) {
        if (this.closed) { h.fds.forEach(closeFd); continue; } // closed by a listener: the sender returns them
        this.stats.received++;
        try { this.emit('handoff', h); } catch (e) { process.nextTick(() => { throw e; }); }
      }
    }
    if (got > 0 && ack && !this.closed) {
      frames.push(wire.ackFrame(this.recvNext));
      this.bell.write(frames.length === 1 ? frames[0] : Buffer.concat(frames));
    }
    if (eof && !this.closed) this.teardown(new FdpassError('FDP_FDPASS_PEER_GONE', 'data socket EOF'), false);
  }

  private protocolError(detail: string): void {
    this.reportError(new FdpassError('FDP_FDPASS_PROTOCOL', detail));
    this.teardown(new FdpassError('FDP_FDPASS_PROTOCOL', detail), false);
  }

  private reportError(err: FdpassError): void {
    this.stats.errors++;
    if (this.listenerCount('error') > 0) this.emit('error', err);
    else process.emitWarning(`${this.name}: ${err.message}`, { code: err.code });
  }

  private giveBack(e: Entry, err: FdpassError): void {
    this.stats.returned++;
    const f = e.cb?.onReturn;
    if (f) f(e.h, err);
    else this.reportError(new FdpassError(err.code, `handoff returned with no onReturn (fds ${e.h.fds.join(',')} still owned by the sender): ${err.message}`));
  }
  private returnLater(e: Entry, err: FdpassError): void {
    process.nextTick(() => this.giveBack(e, err));
  }

  private teardown(err: FdpassError, peerDied: boolean, local = false): void {
    if (this.closed) return;
    // A dead peer cannot take back what it queued to us: deliver those orphans (no ack possible).
    if (peerDied) { try { this.drain(false); } catch { /* keep tearing down */ } }
    if (this.closed) return;
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    closeFd(this.dataFd);
    if (local) this.bell.end(); else this.bell.destroy();
    const back: Entry[] = [];
    for (const e of this.inflight.drain()) if (!e.done) back.push(e);
    for (const e of this.queue.drain()) back.push(e);
    this.nackedInflight = 0;
    this.packed = 0;
    for (const e of back) this.giveBack(e, err);
    freeBlock(this.sendBlock);
    freeBlock(this.recvBlock);
    this.emit('close', local ? undefined : err);
  }
}

export { errnoName };
