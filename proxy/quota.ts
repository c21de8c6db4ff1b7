// Per-key message and byte rates for relay mode, over a sliding one-second window. Every
// connection of a key lives in one worker, so one KeyQuota per (route, key) here sees the key's
// whole traffic: the limit is exact (no more than N messages / B bytes in any 1 s window) without
// shared state. Entries are [epoch ms, bytes] so a window can travel with a migrating connection.

const WINDOW_MS = 1000;
const now = () => performance.timeOrigin + performance.now();

export class KeyQuota {
  private t: number[] = [];
  private b: number[] = [];
  private head = 0;
  private bytes = 0;
  /** Relays using this quota (dropped when the last one ends). */
  refs = 0;
  /** Newest entry imported per sending worker, so later snapshots from it add only what is new. */
  private imported = new Map<string, number>();

  constructor(readonly perSec: number, readonly bytesPerSec: number) {}

  get limited(): boolean { return this.perSec > 0 || this.bytesPerSec > 0; }

  private prune(at: number): void {
    const edge = at - WINDOW_MS;
    while (this.head < this.t.length && this.t[this.head] <= edge) { this.bytes -= this.b[this.head]; this.head++; }
    if (this.head > 256 && this.head * 2 > this.t.length) {
      this.t = this.t.slice(this.head); this.b = this.b.slice(this.head); this.head = 0;
    }
  }

  /** 0: the message may pass now (and is counted); otherwise ms to wait before asking again. */
  take(size: number): number {
    if (!this.limited) return 0;
    const at = now();
    this.prune(at);
    const count = this.t.length - this.head;
    const okN = this.perSec === 0 || count < this.perSec;
    // A message larger than the whole byte budget passes alone in an empty window (never stuck).
    const okB = this.bytesPerSec === 0 || count === 0 || this.bytes + size <= this.bytesPerSec;
    if (okN && okB) { this.t.push(at); this.b.push(size); this.bytes += size; return 0; }
    let until = 0;
    if (!okN) until = this.t[this.head + count - this.perSec] + WINDOW_MS;
    if (!okB) {
      let left = this.bytes, i = this.head;
      while (i < this.t.length && left + size > this.bytesPerSec) left -= this.b[i++];
      until = Math.max(until, this.t[Math.min(i, this.t.length) - 1] + WINDOW_MS);
    }
    return Math.max(1, Math.ceil(until - at));
  }

  /** The window as it is now (for a migrating connection). */
  snapshot(): [number, number][] {
    this.prune(now());
    const out: [number, number][] = [];
    for (let i = this.head; i < this.t.length; i++) out.push([this.t[i], this.b[i]]);
    return out;
  }

  /** Merge a window from another worker (entries newer than what we took from it before). */
  merge(from: string, entries: [number, number][]): void {
    const seen = this.imported.get(from) ?? -Infinity;
    const add = entries.filter(e => e[0] > seen);
    if (add.length === 0) return;
    this.imported.set(from, add[add.length - 1][0]);
    const all: [number, number][] = [];
    for (let i = this.head; i < this.t.length; i++) all.push([this.t[i], this.b[i]]);
    all.push(...add);
    all.sort((x, y) => x[0] - y[0]);
    this.t = all.map(e => e[0]); this.b = all.map(e => e[1]); this.head = 0;
    this.bytes = this.b.reduce((a, x) => a + x, 0);
    this.prune(now());
  }
}

/** The quotas of one worker: (route, key) → KeyQuota, shared by the key's relays. */
export class Quotas {
  private readonly m = new Map<string, KeyQuota>();
  acquire(route: string, key: string | null, perSec: number, bytesPerSec: number): KeyQuota | null {
    if (perSec === 0 && bytesPerSec === 0) return null;
    // Keyless connections have no key to share: each is its own "key".
    const id = key === null ? null : `${route}\0${key}`;
    let q = id === null ? undefined : this.m.get(id);
    if (!q || q.perSec !== perSec || q.bytesPerSec !== bytesPerSec) {
      q = new KeyQuota(perSec, bytesPerSec);
      if (id !== null) this.m.set(id, q);
    }
    q.refs++;
    return q;
  }
  release(route: string, key: string | null, q: KeyQuota | null): void {
    if (!q || --q.refs > 0 || key === null) return;
    // Kept one window longer: a key whose last connection just closed and reopens stays limited.
    const id = `${route}\0${key}`;
    setTimeout(() => { if (q.refs === 0 && this.m.get(id) === q) this.m.delete(id); }, WINDOW_MS + 50).unref();
  }
}
