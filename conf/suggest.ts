// "did you mean" suggestions: the closest candidate by edit distance, if close enough to be a typo.

/** Damerau-Levenshtein (optimal string alignment) distance; small strings only. */
export function editDistance(a: string, b: string): number {
  const n = a.length, m = b.length;
  const d: number[][] = [];
  for (let i = 0; i <= n; i++) d.push([i, ...new Array<number>(m).fill(0)]);
  for (let j = 0; j <= m; j++) d[0][j] = j;
  for (let i = 1; i <= n; i++) {
    for (let j = 1; j <= m; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2][j - 2] + 1);
      d[i][j] = v;
    }
  }
  return d[n][m];
}

/** The candidate closest to `word` (case-insensitive), or null when nothing is plausibly meant. */
export function closest(word: string, candidates: Iterable<string>): string | null {
  const w = word.toLowerCase();
  let best: string | null = null;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(w, c.toLowerCase());
    if (d < bestD) { bestD = d; best = c; }
  }
  // A third of the length (at least 1, at most 3) separates typos from different words.
  const limit = Math.min(3, Math.max(1, Math.floor(w.length / 3)));
  return best !== null && bestD <= limit ? best : null;
}

export function didYouMean(word: string, candidates: Iterable<string>): string {
  const c = closest(word, candidates);
  return c === null ? '' : ` (did you mean "${c}"?)`;
}
