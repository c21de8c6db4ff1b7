// Interprets schema.ts over a YAML document: type checks, bounds, defaults, unknown keys. Every
// issue is collected (never stops at the first) with the position of the offending node.
import { isAlias, isMap, isPair, isScalar, isSeq, type Document, type LineCounter, type Node } from 'yaml';
import type { ConfigIssue } from './errors';
import type { Spec } from './schema';
import { didYouMean } from './suggest';
import { parseAddress, parseDuration, parseSize } from './values';
import { capName } from './patterns';

export const INVALID: unique symbol = Symbol('invalid');

export class Ctx {
  readonly issues: ConfigIssue[] = [];
  /** path → [line, col] of every value visited, for issues found later (cross-checks). */
  readonly pos = new Map<string, [number, number]>();
  constructor(readonly file: string, readonly lc: LineCounter, readonly doc: Document) {}

  at(node: Node | null | undefined): [number, number] {
    const off = node?.range?.[0];
    if (off === undefined) return [1, 1];
    const p = this.lc.linePos(off);
    return [p.line, p.col];
  }
  issue(path: string, where: Node | null | undefined | [number, number], code: string, message: string): void {
    const [line, col] = Array.isArray(where) ? where : this.at(where);
    this.issues.push({ file: this.file, line, col, path, message, code });
  }
  /** Issue at a path recorded during validation (falls back to its parents, then 1:1). */
  issueAt(path: string, code: string, message: string): void {
    let p = path;
    while (p && !this.pos.has(p)) {
      const up = p.replace(/(\.[^.[\]]+|\[[^\]]*\])$/, '');
      p = up === p ? '' : up;
    }
    this.issue(path, this.pos.get(p) ?? [1, 1], code, message);
  }
}

function describe(node: Node | null): string {
  if (node === null || (isScalar(node) && node.value === null)) return 'nothing';
  if (isMap(node)) return 'a mapping';
  if (isSeq(node)) return 'a list';
  if (isScalar(node)) {
    const v = node.value;
    if (typeof v === 'string') return `"${v}"`;
    return typeof v === 'boolean' ? `${v}` : `${typeof v} ${String(v)}`;
  }
  return 'an unsupported value';
}

const EXPECT: Record<Spec['type'], string> = {
  int: 'a whole number', number: 'a number', duration: 'a duration (e.g. 500ms, 10s, 5m)',
  size: 'a size (e.g. 512, 16KiB, 1MiB)', bool: 'true or false', string: 'a string',
  address: 'an address (host:port, [::1]:port, :port or unix:/path)', object: 'a mapping',
  map: 'a mapping', list: 'a list', valuematch: 'a string, a list of strings, "{capture}" or true',
  template: 'a key template string such as "{room}", or a list of them',
};

function child(path: string, key: string): string {
  const k = /^[A-Za-z_][A-Za-z0-9_-]*$/.test(key) ? key : JSON.stringify(key);
  return path === '' ? k : /^[A-Za-z_]/.test(k) ? `${path}.${k}` : `${path}[${k}]`;
}

function isNull(node: Node | null): boolean {
  return node === null || (isScalar(node) && node.value === null);
}

/** Validate `node` against `spec`; returns the plain value with defaults, or INVALID. */
export function check(spec: Spec, node: Node | null, path: string, ctx: Ctx): unknown {
  if (node !== null && isAlias(node)) node = (node.resolve(ctx.doc) as Node | undefined) ?? null;
  if (node !== null) ctx.pos.set(path, ctx.at(node));
  const bad = (msg?: string): typeof INVALID => {
    ctx.issue(path, node, 'FDP_CONF_TYPE', msg ?? `expected ${EXPECT[spec.type]}, got ${describe(node)}`);
    return INVALID;
  };
  const value = (msg: string): typeof INVALID => { ctx.issue(path, node, 'FDP_CONF_VALUE', msg); return INVALID; };
  const scalar = node !== null && isScalar(node) ? node.value : undefined;

  switch (spec.type) {
    case 'int': case 'number': {
      if (typeof scalar === 'string' && spec.type === 'int' && spec.words?.includes(scalar)) return scalar;
      if (typeof scalar !== 'number' || !Number.isFinite(scalar)) {
        const words = spec.type === 'int' && spec.words ? ` or ${spec.words.map((w) => `"${w}"`).join(', ')}` : '';
        return bad(`expected ${EXPECT[spec.type]}${words}, got ${describe(node)}`);
      }
      if (spec.type === 'int' && !Number.isInteger(scalar)) return bad(`expected a whole number, got ${scalar}`);
      return bounds(scalar, spec.min, spec.max, String, value);
    }
    case 'duration': case 'size': {
      if (typeof scalar !== 'string' && typeof scalar !== 'number') return bad();
      let v: number;
      try {
        v = spec.type === 'duration'
          ? (typeof scalar === 'number' ? parseDuration(String(scalar)) : parseDuration(scalar))
          : parseSize(scalar);
      } catch (e) { return value((e as Error).message); }
      return bounds(v, spec.min, spec.max, spec.type === 'duration' ? fmtDuration : fmtSize, value);
    }
    case 'bool':
      if (typeof scalar === 'boolean') return scalar;
      if (typeof scalar === 'string' && /^(yes|no|on|off|y|n)$/i.test(scalar)) return bad(`expected true or false, got "${scalar}" (YAML 1.2: write true or false)`);
      return bad();
    case 'string': {
      let s: string;
      if (typeof scalar === 'string') s = scalar;
      else if (spec.coerce && (typeof scalar === 'number' || typeof scalar === 'boolean') && isScalar(node)) s = node.source ?? String(scalar);
      else return bad();
      if (spec.enum && !spec.enum.includes(s)) return value(`"${s}" is not one of ${spec.enum.map((e) => `"${e}"`).join(', ')}${didYouMean(s, spec.enum)}`);
      if (spec.pattern && !spec.pattern.test(s)) return value(`invalid value "${s}": expected ${spec.hint ?? spec.pattern.source}`);
      if (s === '') return value('must not be empty');
      return s;
    }
    case 'address': {
      if (typeof scalar !== 'string' && typeof scalar !== 'number') return bad();
      try {
        const a = parseAddress(scalar);
        if (spec.fixedPort && a.kind === 'tcp' && (a.host === '' || a.port === 0)) return value(`invalid server address "${a.text}": a server needs a host and a non-zero port`);
        return a;
      } catch (e) { return value((e as Error).message); }
    }
    case 'valuematch': {
      if (scalar === true) return { kind: 'present' };
      if (scalar === false) return value('false is not a condition: use true (present), a value, a list of values or "{capture}"');
      if (typeof scalar === 'string') {
        const m = /^\{([^{}]*)\}$/.exec(scalar);
        if (m) {
          try { return { kind: 'capture', name: capName(m[1], scalar) }; } catch (e) { return value((e as Error).message); }
        }
        if (scalar.includes('{') || scalar.includes('}')) return value(`"${scalar}": a capture must be the whole value, e.g. "{sid}"`);
        return { kind: 'exact', values: [scalar] };
      }
      if (typeof scalar === 'number' && isScalar(node)) return { kind: 'exact', values: [node.source ?? String(scalar)] };
      if (node !== null && isSeq(node)) {
        if (node.items.length === 0) return value('an empty list matches nothing');
        const vals: string[] = [];
        let ok = true;
        node.items.forEach((it, i) => {
          const v = check({ type: 'string', coerce: true }, it as Node, `${path}[${i}]`, ctx);
          if (v === INVALID) ok = false; else vals.push(v as string);
        });
        return ok ? { kind: 'exact', values: vals } : INVALID;
      }
      return bad();
    }
    case 'template': {
      if (typeof scalar === 'string') return scalar === '' ? value('an empty key template') : [scalar];
      if (node !== null && isSeq(node)) {
        if (node.items.length === 0) return value('an empty list of key templates');
        const out: string[] = [];
        let ok = true;
        node.items.forEach((it, i) => {
          const v = check({ type: 'string' }, it as Node, `${path}[${i}]`, ctx);
          if (v === INVALID) ok = false; else out.push(v as string);
        });
        return ok ? out : INVALID;
      }
      return bad();
    }
    case 'list': {
      const items: (Node | null)[] = node !== null && isSeq(node) ? (node.items as (Node | null)[])
        : spec.single && !isNull(node) && !(node !== null && isMap(node) && spec.of.type !== 'object') ? [node] : [];
      if (items.length === 0 && !(node !== null && isSeq(node))) return bad(`expected ${spec.single ? `${EXPECT[spec.of.type]} or a list of them` : 'a list'}, got ${describe(node)}`);
      if (spec.minItems && items.length < spec.minItems) return value('must not be empty');
      // Containers are returned even when parts are INVALID, so cross-checks can still run on
      // the valid parts and report everything at once.
      return items.map((it, i) => check(spec.of, it, node !== null && isSeq(node) ? `${path}[${i}]` : path, ctx));
    }
    case 'map': case 'object': {
      if (spec.type === 'object' && spec.shorthand && node !== null && isScalar(node) && node.value !== null) {
        const v = check(spec.fields[spec.shorthand], node, path, ctx);
        if (v === INVALID) return INVALID;
        return withDefaults(spec, { [spec.shorthand]: v }, path, node, ctx);
      }
      if (node === null || !isMap(node)) {
        if (spec.type === 'object' && spec.shorthand) return bad(`expected ${EXPECT[spec.fields[spec.shorthand].type]} or a mapping, got ${describe(node)}`);
        return bad();
      }
      const out: Record<string, unknown> = {};
      for (const pair of node.items) {
        if (!isPair(pair)) continue;
        const keyNode = pair.key as Node | null;
        const key = keyNode !== null && isScalar(keyNode) ? String(keyNode.value) : null;
        if (key === null) { ctx.issue(path, keyNode, 'FDP_CONF_TYPE', 'keys must be plain strings'); continue; }
        const p = child(path, key);
        const valNode = pair.value as Node | null;
        if (spec.type === 'map') {
          if (!spec.keyPattern.test(key)) { ctx.issue(p, keyNode, 'FDP_CONF_VALUE', `invalid name "${key}": expected ${spec.hint}`); continue; }
          out[key] = check(spec.of, valNode, p, ctx);
          if (valNode === null) ctx.pos.set(p, ctx.at(keyNode));
          continue;
        }
        const f = spec.fields[key];
        if (f === undefined) {
          ctx.issue(p, keyNode, 'FDP_CONF_UNKNOWN_KEY', `unknown key "${key}"${didYouMean(key, Object.keys(spec.fields))}`);
          continue;
        }
        if (isNull(valNode) && (f.type !== 'address' || 'default' in f) && (f.type === 'template' || 'default' in f || !(spec.required ?? []).includes(key))) {
          ctx.pos.set(p, ctx.at(keyNode));
          continue;  // "key:" with no value = not given (defaults apply)
        }
        out[key] = check(f, valNode, p, ctx);
        if (!ctx.pos.has(p)) ctx.pos.set(p, ctx.at(keyNode));
      }
      if (spec.type === 'map') {
        if (spec.minEntries && node.items.length < spec.minEntries) return value('must not be empty');
        return out;
      }
      return withDefaults(spec, out, path, node, ctx);
    }
  }
}

function withDefaults(spec: Extract<Spec, { type: 'object' }>, given: Record<string, unknown>, path: string, node: Node, ctx: Ctx): unknown {
  const out: Record<string, unknown> = {};
  for (const [k, f] of Object.entries(spec.fields)) {
    if (k in given) { out[k] = given[k]; continue; }
    if ((spec.required ?? []).includes(k)) {
      ctx.issue(path, node, 'FDP_CONF_MISSING', `missing required key "${k}"`);
      out[k] = INVALID;
      continue;
    }
    if (f.type === 'object' && f.default === 'fill') out[k] = withDefaults(f, {}, child(path, k), node, ctx);
    else out[k] = 'default' in f ? f.default : null;
  }
  return out;
}

/** True when `v` contains no INVALID part (the schema held for all of it). */
export function valid(v: unknown): boolean {
  if (v === INVALID) return false;
  if (v !== null && typeof v === 'object') return Object.values(v).every(valid);
  return true;
}

function bounds(v: number, min: number, max: number, fmt: (n: number) => string, value: (m: string) => typeof INVALID): number | typeof INVALID {
  if (v < min) return value(min === Number.MIN_VALUE ? `must be greater than 0, got ${fmt(v)}` : `must be at least ${fmt(min)}, got ${fmt(v)}`);
  if (v > max) return value(`must be at most ${fmt(max)}, got ${fmt(v)}`);
  return v;
}

export function fmtDuration(ms: number): string {
  for (const [u, m] of [['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) if (ms >= m && ms % m === 0) return `${ms / m}${u}`;
  return `${ms}ms`;
}
export function fmtSize(b: number): string {
  for (const [u, m] of [['GiB', 1024 ** 3], ['MiB', 1024 ** 2], ['KiB', 1024]] as const) if (b >= m && b % m === 0) return `${b / m}${u}`;
  return `${b}`;
}
