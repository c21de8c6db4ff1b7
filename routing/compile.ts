// Compiles a Route's match and key template into closures over a RequestView, once, at Router
// construction. Captures go into a per-route array of slots (index fixed at compile time).
import type { KeyPart, KeyTemplate, Route, ValueMatch } from '../conf/types';
import { parseHostPattern, parsePathPattern } from '../conf/patterns';
import { decode, type RequestView } from './request';

/** Capture values of the route being tried; reused, sized to the largest route. */
export type Caps = (string | undefined)[];
export type Cond = (v: RequestView, caps: Caps, tenant: () => string | null) => boolean;
export type Resolver = (v: RequestView, caps: Caps, tenant: () => string | null) => string | null;

export interface Compiled {
  route: Route;
  conds: Cond[];
  key: Resolver | null;
  tenantCap: number;         // capture slot of a {tenant} capture, or -1
  ncaps: number;
}

export function compileRoute(route: Route): Compiled {
  const capIndex = new Map<string, number>();
  const cap = (name: string) => {
    let i = capIndex.get(name);
    if (i === undefined) { i = capIndex.size; capIndex.set(name, i); }
    return i;
  };
  const m = route.match;
  const conds: Cond[] = [];
  if (m.method !== null) {
    const ms = m.method;
    conds.push(ms.length === 1 ? (v) => v.method === ms[0] : (v) => ms.includes(v.method));
  }
  if (m.path !== null) conds.push(pathCond(m.path, cap));
  if (m.host !== null) conds.push(hostCond(m.host, cap));
  for (const [kind, conds_] of [['header', m.header], ['cookie', m.cookie], ['query', m.query]] as const) {
    if (conds_ === null) continue;
    for (const [name, vm] of Object.entries(conds_)) {
      const get: (v: RequestView) => string | undefined =
        kind === 'header' ? (v) => v.header(name) : kind === 'cookie' ? (v) => v.cookie(name) : (v) => v.query(name);
      conds.push(valueCond(get, vm, cap));
    }
  }
  const tenantCap = capIndex.get('tenant') ?? -1;
  if (m.tenant !== null) {
    const set = new Set(m.tenant);
    // Last: tenant may need the top-level tenant sources (headers, host...) or a capture above.
    conds.push((_v, _caps, tenant) => { const t = tenant(); return t !== null && set.has(t); });
  }
  const key = route.key === null ? null : compileTemplate(route.key, cap);
  return { route, conds, key, tenantCap, ncaps: capIndex.size };
}

function pathCond(pattern: string, cap: (n: string) => number): Cond {
  const p = parsePathPattern(pattern);
  if (p.kind === 'prefix') {
    const pre = p.prefix;
    if (pre === '') return () => true;
    // Prefix on a segment boundary: "/app" matches /app, /app/, /app/x — not /apple.
    return (v) => {
      const u = v.url, s = v.pathStart, e = v.pathEnd;
      if (e - s < pre.length || !u.startsWith(pre, s)) return false;
      return e - s === pre.length || u.charCodeAt(s + pre.length) === 47;
    };
  }
  const segs = p.segs.map((g) => ('lit' in g ? { lit: g.lit, c: -1, rest: false } : 'cap' in g ? { lit: '', c: cap(g.cap), rest: false } : { lit: '', c: cap(g.rest), rest: true }));
  return (v, caps) => {
    const u = v.url, end = v.pathEnd;
    let pos = v.pathStart + 1;                    // after the leading "/"
    if (u.charCodeAt(v.pathStart) !== 47) return false;
    for (let i = 0; i < segs.length; i++) {
      const g = segs[i];
      if (g.rest) {
        // {rest*}: zero or more segments; with a preceding segment, "/files" also matches ("").
        caps[g.c] = pos <= end ? decode(u.slice(pos, end)) : '';
        return true;
      }
      if (pos > end) return false;
      let se = u.indexOf('/', pos);
      if (se < 0 || se > end) se = end;
      if (g.c < 0) {
        if (se - pos !== g.lit.length || !u.startsWith(g.lit, pos)) return false;
      } else {
        if (se === pos) return false;             // a capture is never empty
        caps[g.c] = decode(u.slice(pos, se));
      }
      pos = se + 1;
    }
    return pos >= end;                            // whole path consumed (one trailing "/" allowed)
  };
}

function hostCond(pattern: string, cap: (n: string) => number): Cond {
  const p = parseHostPattern(pattern);
  if (!p.wildcard && p.labels.every((l) => 'lit' in l)) {
    const exact = pattern.toLowerCase();
    return (v) => v.host() === exact;
  }
  const labels = p.labels.map((l) => ('lit' in l ? { lit: l.lit, c: -1 } : { lit: '', c: cap(l.cap) }));
  const n = labels.length, wildcard = p.wildcard;
  // Right to left, label by label, without splitting the host.
  return (v, caps) => {
    const h = v.host();
    let end = h.length;
    for (let i = n - 1; i >= 0; i--) {
      if (end <= 0) return false;
      const dot = h.lastIndexOf('.', end - 1);
      const start = dot + 1;
      const l = labels[i];
      if (end === start) return false;                       // empty label
      if (l.c < 0) {
        if (end - start !== l.lit.length || !h.startsWith(l.lit, start)) return false;
      } else caps[l.c] = h.slice(start, end);
      end = dot;                                             // -1 when the host is used up
    }
    return wildcard ? end > 0 : end === -1;
  };
}

function valueCond(get: (v: RequestView) => string | undefined, vm: ValueMatch, cap: (n: string) => number): Cond {
  switch (vm.kind) {
    case 'present': return (v) => get(v) !== undefined;
    case 'capture': {
      const c = cap(vm.name);
      return (v, caps) => { const x = get(v); if (x === undefined || x === '') return false; caps[c] = x; return true; };
    }
    case 'exact': {
      const vals = vm.values;
      if (vals.length === 1) { const only = vals[0]; return (v) => get(v) === only; }
      return (v) => { const x = get(v); return x !== undefined && vals.includes(x); };
    }
  }
}

/** A template as a resolver: the first alternative whose variables all resolve non-empty. */
export function compileTemplate(t: KeyTemplate, cap: (n: string) => number): Resolver {
  const alts = t.alternatives.map((parts) => parts.map((p) => partResolver(p, cap)));
  if (alts.length === 1 && alts[0].length === 1) {
    const only = alts[0][0];
    return (v, caps, tenant) => { const x = only(v, caps, tenant); return x === null || x === '' ? null : x; };
  }
  return (v, caps, tenant) => {
    outer: for (const alt of alts) {
      let s = '';
      for (const r of alt) {
        const x = r(v, caps, tenant);
        if (x === null || x === '') continue outer;
        s += x;
      }
      return s;
    }
    return null;
  };
}

function partResolver(p: KeyPart, cap: (n: string) => number): Resolver {
  if ('lit' in p) { const lit = p.lit; return () => lit; }
  switch (p.var) {
    case 'capture': { const c = cap(p.name); return (_v, caps) => caps[c] ?? null; }
    case 'tenant': return (_v, _c, tenant) => tenant();
    case 'host': return (v) => v.host() || null;
    case 'host.N': { const n = p.n; return (v) => v.hostLabel(n) ?? null; }
    case 'path': return (v) => v.path();
    case 'client_ip': return (v) => v.clientIp || null;
    case 'method': return (v) => v.method || null;
    case 'header': { const name = p.name; return (v) => v.header(name) ?? null; }
    case 'cookie': { const name = p.name; return (v) => v.cookie(name) ?? null; }
    case 'query': { const name = p.name; return (v) => v.query(name) ?? null; }
  }
}
