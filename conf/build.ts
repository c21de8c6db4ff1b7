// From the schema-checked plain value to the Config of types.ts: names, ids, derived defaults and
// the cross-checks the schema cannot express (references between sections, templates, clashes).
import os from 'node:os';
import type { Address, Backend, Config, KeyPart, KeyTemplate, Listener, Match, RelayOptions, Route, Server, ValueMatch } from './types';
import { Ctx, INVALID, fmtDuration, valid } from './validate';
import { didYouMean } from './suggest';
import { parseHostPattern, parsePathPattern, parseTemplate, UnknownVariable } from './patterns';
import { tcp } from './values';

type Raw = Record<string, any>;   // shape guaranteed by schema.ts

/**
 * Parts that failed the schema are INVALID (already reported): each check here runs only on the
 * valid parts it needs, so one run reports everything. The result is only used when no issue.
 */
export function build(raw: Raw, file: string, ctx: Ctx, overrides: { workers?: number }): Config {
  const listen: Listener[] = Array.isArray(raw.listen) ? raw.listen.filter(valid) : [];
  let admin: Address | null = valid(raw.admin) ? raw.admin : null;
  // Admin exposes /status and a dashboard: loopback unless a host is named explicitly.
  if (admin && admin.kind === 'tcp' && admin.host === '') admin = tcp('127.0.0.1', admin.port);
  checkClashes(listen, admin, ctx);

  let workers: number = raw.workers === 'auto' ? os.availableParallelism() : raw.workers;
  if (overrides.workers !== undefined) {
    if (!Number.isInteger(overrides.workers) || overrides.workers < 1) ctx.issue('workers', [0, 0], 'FDP_CONF_VALUE', `override workers=${overrides.workers} must be a whole number ≥ 1`);
    else workers = overrides.workers;
  }

  const backends: Record<string, Backend> = {};
  const rawBackends: Record<string, Raw> = raw.backends !== INVALID && typeof raw.backends === 'object' && raw.backends !== null ? raw.backends : {};
  for (const [name, b] of Object.entries<Raw>(rawBackends)) if ((b as unknown) !== INVALID) backends[name] = backend(name, b, ctx);

  const tenant = raw.tenant && valid(raw.tenant) ? template(raw.tenant, 'tenant', ctx, tenantVar) : null;
  const routes: Route[] = [];
  const names = new Map<string, number>();
  (Array.isArray(raw.routes) ? raw.routes : []).forEach((r: Raw, i: number) => {
    if ((r as unknown) === INVALID) return;
    const route = buildRoute(r, i, ctx, raw.tenant !== null, Object.keys(rawBackends), raw.backends === INVALID);
    const prev = names.get(route.name);
    if (prev !== undefined) ctx.issueAt(`routes[${i}].name`, 'FDP_CONF_DUPLICATE', `duplicate route name "${route.name}" (also routes[${prev}])`);
    else names.set(route.name, i);
    routes.push(route);
  });
  const catchAll = routes.findIndex(isCatchAll);
  if (catchAll >= 0 && catchAll < routes.length - 1) {
    for (let i = catchAll + 1; i < routes.length; i++) {
      ctx.issueAt(`routes[${i}]`, 'FDP_CONF_UNREACHABLE', `route "${routes[i].name}" is never used: route "${routes[catchAll].name}" (routes[${catchAll}]) before it matches every request`);
    }
  }

  return {
    file, listen, workers, acceptors: raw.acceptors, standby: raw.standby, admin, tenant, limits: raw.limits, rebalance: raw.rebalance,
    backends, routes, log_level: raw.log_level,
  };
}

function checkClashes(listen: Listener[], admin: Address | null, ctx: Ctx): void {
  const seen: { a: Address; path: string }[] = [];
  const all = listen.map((l, i) => ({ a: l.address, path: listen.length > 1 || ctx.pos.has('listen[0]') ? `listen[${i}]` : 'listen' }));
  if (admin) all.push({ a: admin, path: 'admin' });
  for (const cur of all) {
    const other = seen.find((s) => sameBind(s.a, cur.a));
    if (other) ctx.issueAt(cur.path, 'FDP_CONF_CLASH', `${cur.a.text} clashes with ${other.path} (${other.a.text}): both would bind the same address`);
    seen.push(cur);
  }
}

function sameBind(a: Address, b: Address): boolean {
  if (a.kind === 'unix' || b.kind === 'unix') return a.kind === b.kind && a.text === b.text;
  if (b.kind !== 'tcp' || a.port === 0 || a.port !== b.port) return false;   // port 0: each gets its own
  return a.host === b.host || a.host === '' || b.host === '';             // "" = all interfaces
}

function backend(name: string, b: Raw, ctx: Ctx): Backend {
  const path = `backends.${name}`;
  const servers: Server[] = [];
  const ids = new Set<string>();
  (Array.isArray(b.servers) ? b.servers : []).forEach((s: Raw, i: number) => {
    if (!valid(s)) return;
    const id = s.address.text;
    const p = ctx.pos.has(`${path}.servers[${i}]`) ? `${path}.servers[${i}]` : `${path}.servers`;
    if (ids.has(id)) ctx.issueAt(p, 'FDP_CONF_DUPLICATE', `server ${id} is listed twice`);
    ids.add(id);
    servers.push({ address: s.address, weight: s.weight, id });
  });
  let health = null;
  if (b.health && valid(b.health)) {
    const interval: number = b.health.interval;
    const timeout: number = b.health.timeout ?? Math.min(interval, 2000);
    if (timeout > interval) ctx.issueAt(`${path}.health.timeout`, 'FDP_CONF_VALUE', `timeout (${fmtDuration(timeout)}) must not exceed interval (${fmtDuration(interval)})`);
    health = { path: b.health.path, interval, timeout };
  }
  return { name, servers, health, passive: b.passive, connect_timeout: b.connect_timeout, response_timeout: b.response_timeout };
}

function buildRoute(r: Raw, i: number, ctx: Ctx, hasTenant: boolean, backendNames: string[], backendsBroken: boolean): Route {
  const p = `routes[${i}]`;
  const name: string = typeof r.name === 'string' ? r.name : `route${i}`;
  if (typeof r.backend === 'string' && !backendsBroken && !backendNames.includes(r.backend)) {
    ctx.issueAt(`${p}.backend`, 'FDP_CONF_UNKNOWN_BACKEND', `unknown backend "${r.backend}"${didYouMean(r.backend, backendNames)}`);
  }
  const matchOk = valid(r.match);
  const m: Raw = matchOk ? r.match : { path: null, host: null, method: null, header: null, cookie: null, query: null, tenant: null };
  const captures = new Set<string>();
  const addCap = (c: string, where: string) => {
    if (captures.has(c)) ctx.issueAt(where, 'FDP_CONF_DUPLICATE', `capture {${c}} is defined twice in this route`);
    captures.add(c);
  };
  if (m.path !== null) {
    try {
      const pp = parsePathPattern(m.path);
      if (pp.kind === 'segments') for (const s of pp.segs) if (!('lit' in s)) addCap('cap' in s ? s.cap : s.rest, `${p}.match.path`);
    } catch (e) { ctx.issueAt(`${p}.match.path`, 'FDP_CONF_VALUE', (e as Error).message); }
  }
  if (m.host !== null) {
    try {
      for (const l of parseHostPattern(m.host).labels) if ('cap' in l) addCap(l.cap, `${p}.match.host`);
    } catch (e) { ctx.issueAt(`${p}.match.host`, 'FDP_CONF_VALUE', (e as Error).message); }
  }
  const lowerHeaders: Record<string, ValueMatch> | null = m.header === null ? null : {};
  for (const kind of ['header', 'cookie', 'query'] as const) {
    if (m[kind] === null) continue;
    for (const [n, vm] of Object.entries<ValueMatch>(m[kind])) {
      if (vm.kind === 'capture') addCap(vm.name, `${p}.match.${kind}.${n}`);
      if (kind === 'header') {
        if (lowerHeaders![n.toLowerCase()]) ctx.issueAt(`${p}.match.header.${n}`, 'FDP_CONF_DUPLICATE', `header "${n}" is given twice (header names are case-insensitive)`);
        lowerHeaders![n.toLowerCase()] = vm;
      }
    }
  }
  const tenantAvail = hasTenant || captures.has('tenant');
  if (m.tenant !== null && !tenantAvail) {
    ctx.issueAt(`${p}.match.tenant`, 'FDP_CONF_UNKNOWN_VARIABLE', 'match.tenant needs a tenant: add a top-level "tenant:" or capture {tenant} in match.host/path');
  }
  const match: Match = {
    path: m.path, host: m.host === null ? null : m.host.toLowerCase(),
    method: m.method === null ? null : m.method.map((x: string) => x.toUpperCase()),
    header: lowerHeaders, cookie: m.cookie, query: m.query, tenant: m.tenant,
  };
  const key = r.key === null || !matchOk || !valid(r.key) ? null : template(r.key, `${p}.key`, ctx, (v) => routeVar(v, captures, tenantAvail));

  const relayGiven = [...ctx.pos.keys()].some((k) => k === `${p}.relay` || k.startsWith(`${p}.relay.`));
  if (relayGiven && typeof r.websocket === 'string' && r.websocket !== 'relay') {
    ctx.issueAt(`${p}.relay`, 'FDP_CONF_UNUSED', `relay options have no effect with websocket: ${r.websocket} (set websocket: relay, or remove relay)`);
  }
  // deflate per side defaults to `deflate`: resolved here so readers see two booleans.
  const relay: RelayOptions = r.relay && { ...r.relay, deflate_client: r.relay.deflate_client ?? r.relay.deflate, deflate_backend: r.relay.deflate_backend ?? r.relay.deflate };
  return { name, index: i, match, key, backend: r.backend, websocket: r.websocket, relay, connections_per_key: r.limits.connections_per_key };
}

function template(sources: string[], path: string, ctx: Ctx, known: (v: KeyPart) => string | null): KeyTemplate | null {
  const alternatives: KeyPart[][] = [];
  let ok = true;
  sources.forEach((s, i) => {
    const p = sources.length > 1 || ctx.pos.has(`${path}[0]`) ? `${path}[${i}]` : path;
    try {
      alternatives.push(parseTemplate(s, known));
    } catch (e) {
      ok = false;
      ctx.issueAt(p, e instanceof UnknownVariable ? 'FDP_CONF_UNKNOWN_VARIABLE' : 'FDP_CONF_VALUE', (e as Error).message);
    }
  });
  return ok ? { source: sources, alternatives } : null;
}

const GENERIC = ['tenant', 'host', 'host.1', 'path', 'client_ip', 'method', 'cookie.NAME', 'header.NAME', 'query.NAME'];

function routeVar(v: KeyPart, captures: Set<string>, tenantAvail: boolean): string | null {
  if ('var' in v && v.var === 'capture' && !captures.has(v.name)) {
    const hint = didYouMean(v.name, [...captures, ...GENERIC]);
    return `unknown variable {${v.name}}: not captured by this route's match${hint}`;
  }
  if ('var' in v && v.var === 'tenant' && !tenantAvail) {
    return 'variable {tenant} needs a top-level "tenant:" (or a {tenant} capture in this route\'s match)';
  }
  return null;
}

function tenantVar(v: KeyPart): string | null {
  if ('var' in v && (v.var === 'capture' || v.var === 'tenant')) {
    const name = v.var === 'capture' ? v.name : 'tenant';
    return `variable {${name}} cannot be used in the top-level tenant (route captures are not known yet)${didYouMean(name, GENERIC.slice(1))}`;
  }
  return null;
}

function isCatchAll(r: Route): boolean {
  const m = r.match;
  return (m.path === null || m.path.replace(/\/+$/, '') === '') && m.host === null && m.method === null
    && m.header === null && m.cookie === null && m.query === null && m.tenant === null;
}
