// Syntax of path patterns, host patterns and key templates. Shared by conf/ (to validate and to
// know which captures a route defines) and routing/ (to compile matchers) so the two never
// disagree. Each parser throws RangeError with a message for the user.
import type { KeyPart } from './types';

export type PathSeg = { lit: string } | { cap: string } | { rest: string };
export type PathPattern =
  | { kind: 'prefix'; prefix: string }            // '' for "/" (matches everything)
  | { kind: 'segments'; segs: readonly PathSeg[] };

const CAP_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Variables a capture may not shadow ({tenant} is allowed: a capture named tenant sets the tenant). */
export const BUILTIN_VARS = ['host', 'path', 'client_ip', 'method'] as const;

/** A capture's name, in a path or host pattern or a header, cookie or query value ("{sid}"). */
export function capName(name: string, where: string): string {
  if (!CAP_NAME.test(name)) throw new RangeError(`invalid capture name "${name}" in "${where}": use letters, digits and "_"`);
  if ((BUILTIN_VARS as readonly string[]).includes(name)) throw new RangeError(`capture name "${name}" in "${where}" hides the built-in variable {${name}}: choose another name`);
  return name;
}

/**
 * "/chat/{room}" (one segment), "/files/{rest*}" (zero or more segments, last only), or without
 * braces a prefix on a segment boundary ("/app/" and "/app" both match /app, /app/, /app/x).
 */
export function parsePathPattern(s: string): PathPattern {
  if (!s.startsWith('/')) throw new RangeError(`path pattern "${s}" must start with "/"`);
  if (s.includes('?')) throw new RangeError(`path pattern "${s}" must not contain a query string: use match.query`);
  if (!s.includes('{') && !s.includes('}')) return { kind: 'prefix', prefix: s.replace(/\/+$/, '') };
  const parts = s.slice(1).replace(/\/$/, '').split('/');
  const segs: PathSeg[] = [];
  parts.forEach((p, i) => {
    const m = /^\{([^{}]*)\}$/.exec(p);
    if (m) {
      if (m[1].endsWith('*')) {
        if (i !== parts.length - 1) throw new RangeError(`"{${m[1]}}" in "${s}" must be the last segment`);
        segs.push({ rest: capName(m[1].slice(0, -1), s) });
      } else segs.push({ cap: capName(m[1], s) });
    } else if (p.includes('{') || p.includes('}')) {
      throw new RangeError(`invalid path pattern "${s}": a capture must be a whole segment, e.g. /chat/{room}`);
    } else if (p === '') {
      throw new RangeError(`invalid path pattern "${s}": empty segment`);
    } else segs.push({ lit: p });
  });
  return { kind: 'segments', segs };
}

export type HostLabel = { lit: string } | { cap: string };
export interface HostPattern {
  wildcard: boolean;                 // leading "*." : one or more labels
  labels: readonly HostLabel[];      // the labels after the wildcard, left to right
}

/** "api.example.com", "{tenant}.example.com", "*.example.com"; case-insensitive, no port. */
export function parseHostPattern(s: string): HostPattern {
  const t = s.toLowerCase();
  if (/:\d+$/.test(t)) throw new RangeError(`host pattern "${s}" must not have a port (the port is ignored when matching)`);
  const parts = t.split('.');
  let wildcard = false;
  if (parts[0] === '*') { wildcard = true; parts.shift(); }
  if (parts.length === 0) throw new RangeError(`host pattern "${s}" needs at least one label after "*."`);
  const labels = parts.map((p): HostLabel => {
    const m = /^\{([^{}]*)\}$/.exec(p);
    if (m) return { cap: capName(m[1], s) };
    if (p === '' || /[{}*]/.test(p)) throw new RangeError(`invalid host pattern "${s}": use whole labels, "{name}" or a leading "*."`);
    return { lit: p };
  });
  return { wildcard, labels };
}

/**
 * A key template alternative: literal text and {variables}. `known` returns null when the
 * variable exists, else a message. Variable syntax: {name} {host.N} {cookie.X} {header.X} {query.X}.
 */
export function parseTemplate(s: string, known: (v: KeyPart, raw: string) => string | null): KeyPart[] {
  const parts: KeyPart[] = [];
  let i = 0;
  while (i < s.length) {
    const open = s.indexOf('{', i);
    const close = s.indexOf('}', i);
    if (close >= 0 && (open < 0 || close < open)) throw new RangeError(`unmatched "}" in key template "${s}"`);
    if (open < 0) { parts.push({ lit: s.slice(i) }); break; }
    if (open > i) parts.push({ lit: s.slice(i, open) });
    const end = s.indexOf('}', open);
    if (end < 0) throw new RangeError(`unmatched "{" in key template "${s}"`);
    const raw = s.slice(open + 1, end);
    if (raw.includes('{')) throw new RangeError(`nested "{" in key template "${s}"`);
    const part = varPart(raw);
    if (part === null) throw new RangeError(`invalid variable "{${raw}}" in key template "${s}"`);
    const err = known(part, raw);
    if (err !== null) throw new UnknownVariable(err);
    parts.push(part);
    i = end + 1;
  }
  return parts;
}

export class UnknownVariable extends Error {}

function varPart(raw: string): KeyPart | null {
  if (raw === 'tenant' || raw === 'host' || raw === 'path' || raw === 'client_ip' || raw === 'method') return { var: raw };
  const dot = raw.indexOf('.');
  if (dot < 0) return CAP_NAME.test(raw) ? { var: 'capture', name: raw } : null;
  const ns = raw.slice(0, dot), name = raw.slice(dot + 1);
  if (ns === 'host') return /^[1-9]\d{0,2}$/.test(name) ? { var: 'host.N', n: Number(name) } : null;
  if (name === '' || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) return null;
  if (ns === 'header') return { var: 'header', name: name.toLowerCase() };
  if (ns === 'cookie' || ns === 'query') return { var: ns, name };
  return { var: 'capture', name: raw };   // reported as unknown by `known`
}
