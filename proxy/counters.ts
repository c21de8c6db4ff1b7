// Per-process counters and latency histograms, shipped to the supervisor once a second and
// exposed there as Prometheus metrics.
export const BUCKETS_MS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000];

export interface Histogram { buckets: number[]; sum: number; count: number }

export class Counters {
  private readonly c = new Map<string, number>();
  private readonly h = new Map<string, Histogram>();
  /** Something changed since takeChanged(): an idle process sends no stats at all. */
  private changed = true;
  inc(name: string, by = 1): void { this.c.set(name, (this.c.get(name) ?? 0) + by); this.changed = true; }
  dec(name: string): void { this.c.set(name, (this.c.get(name) ?? 0) - 1); this.changed = true; }
  takeChanged(): boolean { const c = this.changed; this.changed = false; return c; }
  get(name: string): number { return this.c.get(name) ?? 0; }
  observe(name: string, ms: number): void {
    let x = this.h.get(name);
    if (!x) this.h.set(name, x = { buckets: BUCKETS_MS.map(() => 0), sum: 0, count: 0 });
    for (let i = 0; i < BUCKETS_MS.length; i++) if (ms <= BUCKETS_MS[i]) { x.buckets[i]++; break; }
    x.sum += ms; x.count++;
    this.changed = true;
  }
  snapshot(): { counters: Record<string, number>; histograms: Record<string, Histogram> } {
    return { counters: Object.fromEntries(this.c), histograms: Object.fromEntries(this.h) };
  }
}
