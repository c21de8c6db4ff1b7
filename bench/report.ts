// Medians over rounds, the results table (absolute, ratio to direct, ratio to nginx) and the
// "## proxy vs peers" section of bench/RESULTS.md (other sections of that file are left alone).
import * as fs from 'node:fs';
import type { Measure } from './measure';

export type TestName = 'handshake' | 'echo64' | 'echo4k' | 'idle' | 'httpKa' | 'httpClose';
export interface RoundResult { subject: string; round: number; tests: Partial<Record<TestName, Measure>>; failure?: string; notes?: string[] }

export const median = (xs: number[]): number => {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const m = v.length >> 1; return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};

export interface Row {
  subject: string; rounds: number; errors: number; errNotes: string[]; notes: string[]; note?: string;
  hs: number; e64: number; e64p50: number; e64p99: number; e4k: number; e4kp99: number; idleKib: number;
  ka: number; kap99: number; close: number; cpuHs: number; cpuMsg: number; cpuReq: number; genCpu: number; foreign: number;
}

export function summarize(subject: string, results: RoundResult[], direct: boolean, note?: string): Row {
  const rs = results.filter((r) => r.subject === subject);
  const pick = (t: TestName, f: (m: Measure) => number) => median(rs.map((r) => (r.tests[t] ? f(r.tests[t]!) : NaN)));
  let errors = 0; const errNotes: string[] = [], notes: string[] = [];
  for (const r of rs) {
    if (r.failure) { errors++; errNotes.push(`round ${r.round}: ${r.failure}`); }
    for (const [t, m] of Object.entries(r.tests)) if (m && m.errors > 0) { errors += m.errors; errNotes.push(`round ${r.round} ${t}: ${m.errors} errors (${m.errDetail})`); }
    for (const n of r.notes ?? []) notes.push(`round ${r.round}: ${n}`);
  }
  const perOp = (t: TestName) => pick(t, (m) => (m.ops > 0 ? (m.subjectCpuS * 1e6) / m.ops : NaN));
  return {
    subject, rounds: rs.length, errors, errNotes, notes, note,
    hs: pick('handshake', (m) => m.rate), e64: pick('echo64', (m) => m.rate), e64p50: pick('echo64', (m) => m.p50_us),
    e64p99: pick('echo64', (m) => m.p99_us), e4k: pick('echo4k', (m) => m.rate), e4kp99: pick('echo4k', (m) => m.p99_us),
    idleKib: direct ? NaN : pick('idle', (m) => m.rate), ka: pick('httpKa', (m) => m.rate), kap99: pick('httpKa', (m) => m.p99_us),
    close: pick('httpClose', (m) => m.rate),
    cpuHs: direct ? NaN : perOp('handshake'), cpuMsg: direct ? NaN : perOp('echo64'), cpuReq: direct ? NaN : perOp('httpKa'),
    foreign: median(rs.flatMap((r) => Object.values(r.tests).map((m) => m?.foreignPct ?? NaN))),
    genCpu: Math.max(0, ...rs.flatMap((r) => Object.entries(r.tests).filter(([t]) => !t.startsWith('http') && t !== 'idle').map(([, m]) => m!.genCpuPct))),
  };
}

const int = (x: number) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '—');
const ms = (us: number) => (Number.isFinite(us) ? (us / 1000).toFixed(us < 10_000 ? 2 : 1) : '—');
const one = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '—');

/** Idle memory below 1 KiB per connection is under what an RSS difference resolves (the heap can
 *  shrink while the connections open, giving a negative figure): shown as "< 1". */
const underKib = (v: number): boolean => Number.isFinite(v) && v < 1;
const kib = (v: number): string => (underKib(v) ? '< 1' : one(v));

export function table(rows: Row[]): string {
  const h = '| subject | WS handshakes/s (50 conc.) | WS echo 64 B msg/s (p50 / p99 ms) | echo 4 KiB msg/s (p99 ms) | idle KiB per WS conn | HTTP keep-alive req/s (p99 ms) | HTTP conn-per-request/s | proxy CPU µs per handshake | per 64 B msg | per HTTP req | loadgen CPU % (max) | other load % (median) | status |\n'
    + '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n';
  return h + rows.map((r) => {
    if (r.note) return `| ${r.subject} | ${Array(10).fill('—').join(' | ')} | — | — | ${r.note} |`;
    return `| ${r.subject} | ${int(r.hs)} | ${int(r.e64)} (${ms(r.e64p50)} / ${ms(r.e64p99)}) | ${int(r.e4k)} (${ms(r.e4kp99)}) | ${kib(r.idleKib)} | ${int(r.ka)} (${ms(r.kap99)}) | ${int(r.close)} | ${int(r.cpuHs)} | ${one(r.cpuMsg)} | ${one(r.cpuReq)} | ${Math.round(r.genCpu)} | ${Math.round(r.foreign)} | ${r.errors ? `**FAILED** (${r.errors} errors)` : `ok (${r.rounds} rounds)`} |`;
  }).join('\n') + '\n';
}

export function ratioTable(rows: Row[], ref: Row | undefined, refName: string): string {
  if (!ref || ref.note) return `(no ${refName} figures in this run)\n`;
  const q = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}×` : '—');
  const h = `| subject ÷ ${refName} | handshakes/s | echo 64 B msg/s | echo 64 B p99 | echo 4 KiB msg/s | echo 4 KiB p99 | idle KiB/conn | HTTP keep-alive req/s | HTTP keep-alive p99 | conn-per-request/s | CPU per handshake | CPU per 64 B msg |\n`
    + '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n';
  return h + rows.filter((r) => !r.note).map((r) => `| ${r.subject} | ${q(r.hs, ref.hs)} | ${q(r.e64, ref.e64)} | ${q(r.e64p99, ref.e64p99)} | ${q(r.e4k, ref.e4k)} | ${q(r.e4kp99, ref.e4kp99)} | ${underKib(r.idleKib) ? '—' : q(r.idleKib, ref.idleKib)} | ${q(r.ka, ref.ka)} | ${q(r.kap99, ref.kap99)} | ${q(r.close, ref.close)} | ${q(r.cpuHs, ref.cpuHs)} | ${q(r.cpuMsg, ref.cpuMsg)} |`).join('\n') + '\n';
}

export const NOTES_MARKER = '<!-- findings below this line are kept when bench/run.ts rewrites the section -->';

/** Replace (or append) the "## proxy vs peers" section, re-reading the file just before writing. */
export function writeResults(file: string, body: string): void {
  const HEAD = '## proxy vs peers';
  let text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '# Benchmark results\n';
  const start = text.indexOf(`\n${HEAD}\n`) >= 0 ? text.indexOf(`\n${HEAD}\n`) + 1 : text.startsWith(`${HEAD}\n`) ? 0 : -1;
  const next = start < 0 ? -1 : text.indexOf('\n## ', start + HEAD.length);
  const old = start < 0 ? '' : text.slice(start, next >= 0 ? next + 1 : undefined);
  // hand-written findings (profiling notes) below the marker survive every new run
  const kept = old.includes(NOTES_MARKER) ? old.slice(old.indexOf(NOTES_MARKER)).trim() : `${NOTES_MARKER}\n`;
  const section = `${HEAD}\n\n${body.trim()}\n\n${kept}\n`;
  if (start < 0) text = text.replace(/\s*$/, '\n\n') + section;
  else text = text.slice(0, start) + section + (next >= 0 ? '\n' + text.slice(next + 1) : '');
  fs.writeFileSync(file, text);
}
