// A strict reader of the Prometheus text format (0.0.4), enough to validate /metrics.
export interface Sample { name: string; labels: Record<string, string>; value: number }
export interface Family { name: string; type: string; help: string; samples: Sample[] }

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

export function parseProm(text: string): Map<string, Family> {
  if (!text.endsWith('\n')) throw new Error('must end with a newline');
  const fams = new Map<string, Family>();
  const seen = new Set<string>();
  let current: Family | null = null;
  const closed = new Set<string>();
  for (const [i, line] of text.slice(0, -1).split('\n').entries()) {
    const at = `line ${i + 1}: ${line}`;
    if (line === '') continue;
    let m: RegExpExecArray | null;
    if ((m = /^# HELP (\S+) (.*)$/.exec(line))) {
      if (!NAME.test(m[1])) throw new Error(`bad name ${at}`);
      if (fams.has(m[1])) throw new Error(`family twice ${at}`);
      if (current) closed.add(current.name);
      current = { name: m[1], type: 'untyped', help: m[2], samples: [] };
      fams.set(m[1], current);
      continue;
    }
    if ((m = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line))) {
      if (!current || current.name !== m[1] || current.samples.length) throw new Error(`TYPE out of place ${at}`);
      current.type = m[2];
      continue;
    }
    if (line.startsWith('#')) continue;
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`bad sample ${at}`);
    const labels: Record<string, string> = {};
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/g;
      let pos = 0, x: RegExpExecArray | null;
      while ((x = re.exec(m[3])) && x.index === pos) { if (!LABEL.test(x[1]) || x[1] in labels) throw new Error(`bad label ${at}`); labels[x[1]] = x[2]; pos = re.lastIndex; if (x[3] === '') break; }
      if (pos !== m[3].length) throw new Error(`bad labels ${at}`);
    }
    const value = m[4] === '+Inf' ? Infinity : m[4] === '-Inf' ? -Infinity : Number(m[4]);
    if (Number.isNaN(value) && m[4] !== 'NaN') throw new Error(`bad value ${at}`);
    const base = m[1].replace(/_(bucket|sum|count)$/, '');
    const fam = current && (current.name === m[1] || (current.type === 'histogram' && current.name === base)) ? current : null;
    if (!fam) throw new Error(`sample outside its family ${at}`);
    if (fam.type === 'counter' && !m[1].endsWith('_total')) throw new Error(`counter without _total ${at}`);
    const id = m[1] + JSON.stringify(Object.entries(labels).sort());
    if (seen.has(id)) throw new Error(`duplicate series ${at}`);
    seen.add(id);
    fam.samples.push({ name: m[1], labels, value });
  }
  for (const f of fams.values()) if (f.type === 'histogram') checkHistogram(f);
  return fams;
}

function checkHistogram(f: Family): void {
  const groups = new Map<string, Sample[]>();
  for (const s of f.samples) {
    if (!s.name.endsWith('_bucket')) continue;
    const { le, ...rest } = s.labels;
    if (le === undefined) throw new Error(`bucket without le in ${f.name}`);
    const k = JSON.stringify(Object.entries(rest).sort());
    (groups.get(k) ?? groups.set(k, []).get(k)!).push(s);
  }
  for (const [k, bs] of groups) {
    let prev = -1, prevLe = -Infinity;
    for (const b of bs) {
      const le = b.labels.le === '+Inf' ? Infinity : Number(b.labels.le);
      if (!(le > prevLe) || b.value < prev) throw new Error(`buckets not cumulative in ${f.name} ${k}`);
      prev = b.value; prevLe = le;
    }
    if (prevLe !== Infinity) throw new Error(`no +Inf bucket in ${f.name}`);
    const count = f.samples.find(s => s.name === `${f.name}_count` && JSON.stringify(Object.entries(s.labels).sort()) === k);
    if (!count || count.value !== prev) throw new Error(`_count differs from +Inf bucket in ${f.name}`);
  }
}

export function sum(fams: Map<string, Family>, name: string, where: Record<string, string> = {}): number {
  const f = fams.get(name) ?? fams.get(name.replace(/_(bucket|sum|count)$/, ''));
  if (!f) return 0;
  return f.samples.filter(s => s.name === name && Object.entries(where).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);
}
