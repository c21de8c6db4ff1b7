// The acceptor's placement table: key → worker slot for keys with live connections. New keys go
// to their rendezvous slot unless it already holds more than its bounded share of connections;
// an entry lives as long as its key has connections, so a key's connections stay together.
import { hashKey, slotScore } from './hash';

interface Entry { slot: number; count: number }

export interface KeyPlacement { key: string; slot: number; connections: number }

export class Placement {
  private slots: number[] = [];
  private readonly epsilon: number;
  private readonly entries_ = new Map<string, Entry>();
  private readonly loads = new Map<number, number>();   // live connections per slot (keyed + keyless)
  private readonly keyless = new Map<number, number>(); // of which keyless
  /** Keyless connections counted in the total that live on no slot of this table: on a retiring
   *  worker of an earlier generation (by its id), until they land on a slot here or close there. */
  private readonly away_ = new Map<string, number>();
  private total_ = 0;

  constructor(slots: readonly number[], opts: { epsilon?: number } = {}) {
    this.epsilon = opts.epsilon ?? 0.25;
    if (!(this.epsilon >= 0)) throw new RangeError('epsilon must be ≥ 0');
    this.setSlots(slots);
  }

  /**
   * The slot for a new connection: the key's entry if it has one; else the first slot in the
   * key's rendezvous order whose load is below ceil((1+ε)·(total+1)/n); keyless → least loaded.
   * -1 when there are no slots. Does not record anything: call opened() once the fd is handed.
   */
  place(key: string | null): number {
    const n = this.slots.length;
    if (n === 0) return -1;
    if (key === null) return this.leastLoaded();
    const e = this.entries_.get(key);
    if (e !== undefined) return e.slot;
    const bound = Math.ceil(((1 + this.epsilon) * (this.total_ + 1)) / n);
    const h = hashKey(key);
    // Usual case without allocation: the top slot is under its bound.
    let best = -1, bestScore = -1;
    for (const s of this.slots) {
      const sc = slotScore(h, s);
      if (sc > bestScore) { bestScore = sc; best = s; }
    }
    if (this.load(best) < bound) return best;
    const ranked = this.slots.map((slot) => ({ slot, score: slotScore(h, slot) })).sort((a, b) => b.score - a.score);
    for (const r of ranked) if (this.load(r.slot) < bound) return r.slot;
    return this.leastLoaded();   // unreachable: some slot is always below the bound
  }

  opened(key: string | null, slot: number): void {
    this.total_++;
    if (key === null) {
      this.loads.set(slot, this.load(slot) + 1);
      this.keyless.set(slot, this.keylessOn(slot) + 1);
      return;
    }
    const e = this.entries_.get(key);
    if (e === undefined) this.entries_.set(key, { slot, count: 1 });
    else e.count++;
    const s = e?.slot ?? slot;   // a key's connections count where its entry is
    this.loads.set(s, this.load(s) + 1);
  }

  /** A connection closed: keyless, on `slot`; keyed, wherever its key's entry is. A close this
   *  table does not count (its slot was forgotten) changes nothing: never another's count. */
  closed(key: string | null, slot: number): void {
    if (key === null) {
      const k = this.keylessOn(slot);
      if (k <= 0) return;
      this.keyless.set(slot, k - 1);
      this.loads.set(slot, this.load(slot) - 1);
      this.total_--;
      return;
    }
    const e = this.entries_.get(key);
    if (e === undefined) return;
    if (--e.count <= 0) this.entries_.delete(key);
    this.loads.set(e.slot, Math.max(0, this.load(e.slot) - 1));
    this.total_--;
  }

  /** Keyless connections a slot holds. */
  keylessOn(slot: number): number { return this.keyless.get(slot) ?? 0; }

  /** Reload: `n` keyless connections stay counted while the retiring worker `from` holds them. */
  holdAway(from: string, n: number): void {
    if (n <= 0) return;
    this.away_.set(from, (this.away_.get(from) ?? 0) + n);
    this.total_ += n;
  }

  /** One keyless connection held away by `from` closed there. */
  closedAway(from: string): void {
    const n = this.away_.get(from) ?? 0;
    if (n <= 0) return;
    if (n === 1) this.away_.delete(from); else this.away_.set(from, n - 1);
    this.total_--;
  }

  /** One keyless connection migrated: from/to a slot of this table (a number) or a retiring
   *  worker (its id). Where its origin no longer counts it (forgotten: that worker is gone) it is
   *  counted anew. */
  landed(from: number | string, to: number | string): void {
    if (typeof from === 'string') {
      const n = this.away_.get(from) ?? 0;
      if (n <= 0) { this.total_++; return this.arrive(to); }
      if (n === 1) this.away_.delete(from); else this.away_.set(from, n - 1);
    } else {
      const k = this.keylessOn(from);
      if (k <= 0) { this.total_++; return this.arrive(to); }
      this.keyless.set(from, k - 1);
      this.loads.set(from, this.load(from) - 1);
    }
    this.arrive(to);
  }

  private arrive(to: number | string): void {
    if (typeof to === 'string') { this.away_.set(to, (this.away_.get(to) ?? 0) + 1); return; }
    this.loads.set(to, this.load(to) + 1);
    this.keyless.set(to, this.keylessOn(to) + 1);
  }

  /** The retiring worker `from` is gone: what it still held is gone with it. */
  dropAway(from: string): void {
    this.total_ -= this.away_.get(from) ?? 0;
    this.away_.delete(from);
  }

  /** Keyless connections held away, by retiring worker. */
  away(): [string, number][] { return [...this.away_]; }

  /** Rebalance: the key's entry and its connection count now belong to `slot`. No-op for unknown keys. */
  move(key: string, slot: number): void {
    const e = this.entries_.get(key);
    if (e === undefined || e.slot === slot) return;
    const from = this.loads.get(e.slot) ?? 0;
    this.loads.set(e.slot, Math.max(0, from - e.count));
    this.loads.set(slot, (this.loads.get(slot) ?? 0) + e.count);
    e.slot = slot;
  }

  /** Workers added or removed. Entries and loads on removed slots are dropped. */
  setSlots(slots: readonly number[]): void {
    const uniq = [...new Set(slots)];
    if (uniq.length !== slots.length || !uniq.every((s) => Number.isInteger(s) && s >= 0)) {
      throw new RangeError(`slots must be distinct non-negative integers: ${slots.join(',')}`);
    }
    this.slots = uniq;
    for (const s of [...this.loads.keys()]) if (!uniq.includes(s)) this.forgetSlot(s);
    for (const s of uniq) if (!this.loads.has(s)) { this.loads.set(s, 0); this.keyless.set(s, 0); }
  }

  /** A worker died: its connections are gone. The slot stays (it restarts into the same slot). */
  forgetSlot(slot: number): void {
    for (const [k, e] of this.entries_) if (e.slot === slot) this.entries_.delete(k);
    this.total_ -= this.loads.get(slot) ?? 0;
    if (this.slots.includes(slot)) { this.loads.set(slot, 0); this.keyless.set(slot, 0); }
    else { this.loads.delete(slot); this.keyless.delete(slot); }
  }

  slotOf(key: string): number | undefined { return this.entries_.get(key)?.slot; }
  keyCount(key: string): number { return this.entries_.get(key)?.count ?? 0; }
  load(slot: number): number { return this.loads.get(slot) ?? 0; }
  total(): number { return this.total_; }
  size(): number { return this.entries_.size; }
  keysOn(slot: number): string[] {
    const out: string[] = [];
    for (const [k, e] of this.entries_) if (e.slot === slot) out.push(k);
    return out;
  }
  *entries(): IterableIterator<KeyPlacement> {
    for (const [key, e] of this.entries_) yield { key, slot: e.slot, connections: e.count };
  }
  topKeys(n: number): KeyPlacement[] {
    return [...this.entries()].sort((a, b) => b.connections - a.connections || (a.key < b.key ? -1 : 1)).slice(0, n);
  }

  private leastLoaded(): number {
    let best = this.slots[0], bl = this.load(best);
    for (const s of this.slots) { const l = this.load(s); if (l < bl) { bl = l; best = s; } }
    return best;
  }
}
