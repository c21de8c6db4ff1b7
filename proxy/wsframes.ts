// Tracks WebSocket frame boundaries in one direction of a tunnel without touching the bytes, so
// the proxy knows when it may inject a close frame of its own (1001 on stop, 1011 when the
// backend goes away). State is two numbers, so it travels with a migrated tunnel.

export interface FrameState { left: number; hdr: number[]; sawClose?: boolean }

export class FrameTracker {
  /** Payload bytes left in the current frame. */
  left = 0;
  /** Bytes of a frame header seen so far (a header can straddle reads). */
  hdr: number[] = [];
  /** A close frame went by: the peer closed the WebSocket properly. */
  sawClose = false;

  constructor(state?: FrameState) {
    if (state) { this.left = state.left; this.hdr = state.hdr.slice(); this.sawClose = state.sawClose ?? false; }
  }

  get atBoundary(): boolean { return this.left === 0 && this.hdr.length === 0; }

  state(): FrameState { return { left: this.left, hdr: this.hdr.slice(), sawClose: this.sawClose }; }

  feed(buf: Buffer): void {
    let i = 0;
    const n = buf.length;
    while (i < n) {
      if (this.left > 0) {
        const k = Math.min(this.left, n - i);
        this.left -= k;
        i += k;
        continue;
      }
      // Fast path: a whole header in this buffer.
      if (this.hdr.length === 0 && n - i >= 2) {
        const b1 = buf[i + 1];
        const masked = b1 & 0x80;
        let len = b1 & 0x7f, h = 2;
        if (len === 126) { if (n - i < 4) { this.stash(buf, i, n); return; } len = buf.readUInt16BE(i + 2); h = 4; }
        else if (len === 127) { if (n - i < 10) { this.stash(buf, i, n); return; } len = buf.readUInt32BE(i + 2) * 2 ** 32 + buf.readUInt32BE(i + 6); h = 10; }
        if (masked) { if (n - i < h + 4) { this.stash(buf, i, n); return; } h += 4; }
        if ((buf[i] & 0x0f) === 8) this.sawClose = true;
        i += h;
        this.left = len;
        continue;
      }
      this.hdr.push(buf[i++]);
      const need = this.headerLength();
      if (need > 0 && this.hdr.length === need) {
        if ((this.hdr[0] & 0x0f) === 8) this.sawClose = true;
        this.left = this.payloadLength();
        this.hdr = [];
      }
    }
  }

  private stash(buf: Buffer, from: number, to: number): void {
    for (let j = from; j < to; j++) this.hdr.push(buf[j]);
  }

  private headerLength(): number {
    if (this.hdr.length < 2) return 0;
    const b1 = this.hdr[1];
    const len = b1 & 0x7f;
    return (len === 126 ? 4 : len === 127 ? 10 : 2) + (b1 & 0x80 ? 4 : 0);
  }

  private payloadLength(): number {
    const h = this.hdr, len = h[1] & 0x7f;
    if (len < 126) return len;
    if (len === 126) return h[2] * 256 + h[3];
    let v = 0;
    for (let j = 2; j < 10; j++) v = v * 256 + h[j];
    return v;
  }
}
