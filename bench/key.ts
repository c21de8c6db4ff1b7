// The sticky key of the benchmark and its hash, shared by the Node peers and mirrored by
// loadgen.c (FNV-1a of "room-N" mod number of servers) so "direct" routes exactly like them.
export function roomOf(url: string | undefined): string | null {
  const m = /^\/ws\/([^/?]+)/.exec(url ?? '');
  return m ? m[1] : null;
}

export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i) & 0xff; h = Math.imul(h, 0x01000193) >>> 0; }
  return h >>> 0;
}

/** Server index for a key (sticky); keyless requests go round-robin. */
export function makePicker(n: number): (url: string | undefined) => number {
  let rr = 0;
  return (url) => { const room = roomOf(url); return room ? fnv1a(room) % n : (rr++ % n); };
}
