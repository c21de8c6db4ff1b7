// THE schema of proxy.yaml: types, defaults and bounds in one declarative table. validate.ts
// interprets it (checks + defaults); build.ts only derives what the schema cannot say
// (names, ids, cross-references). The config reference (README.md, "Configuration reference") follows this table.

export type Spec =
  | { type: 'int'; min: number; max: number; default?: number; words?: readonly string[] }
  | { type: 'number'; min: number; max: number; default?: number }     // min is exclusive when > 0 is meant: use min = Number.MIN_VALUE
  | { type: 'duration'; min: number; max: number; default?: number }   // ms
  | { type: 'size'; min: number; max: number; default?: number }       // bytes
  | { type: 'bool'; default?: boolean }
  | { type: 'string'; default?: string; enum?: readonly string[]; pattern?: RegExp; hint?: string; coerce?: boolean }
  | { type: 'address'; fixedPort?: boolean; default?: null }
  | { type: 'object'; fields: Readonly<Record<string, Spec>>; required?: readonly string[]; shorthand?: string; default?: null | 'fill' }
  | { type: 'map'; of: Spec; keyPattern: RegExp; hint: string; minEntries?: number }
  | { type: 'list'; of: Spec; single?: boolean; minItems?: number; default?: null }
  | { type: 'valuematch' }   // exact string, list of strings, "{capture}", or true (present)
  | { type: 'template'; default?: null };  // "{var}" or a list of them; parsed in build.ts

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const NAME_HINT = 'letters, digits, "_", "-", "." (starting with a letter or digit)';
const SEC = 1000, MIN = 60 * SEC, HOUR = 60 * MIN, DAY = 24 * HOUR;
const KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;

const valueMatchMap: Spec = { type: 'map', of: { type: 'valuematch' }, keyPattern: /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, hint: 'a header, cookie or query parameter name', minEntries: 1 };

export const LISTENER: Spec = {
  type: 'object', shorthand: 'address', required: ['address'],
  fields: {
    address: { type: 'address' },
    proxy_protocol: { type: 'bool', default: false },
  },
};

export const SERVER: Spec = {
  type: 'object', shorthand: 'address', required: ['address'],
  fields: {
    address: { type: 'address', fixedPort: true },
    weight: { type: 'number', min: Number.MIN_VALUE, max: 1000, default: 1 },
  },
};

export const BACKEND: Spec = {
  type: 'object', required: ['servers'],
  fields: {
    servers: { type: 'list', of: SERVER, single: true, minItems: 1 },
    health: {
      type: 'object', default: null, shorthand: 'path',
      fields: {
        path: { type: 'string', default: '/healthz', pattern: /^\/\S*$/, hint: 'an absolute path such as /healthz' },
        interval: { type: 'duration', min: 100, max: HOUR, default: 5 * SEC },
        timeout: { type: 'duration', min: 10, max: HOUR },   // default min(interval, 2s), set in build.ts
      },
    },
    // Passive health (always on unless 0): how long a worker skips a server a connect failed on.
    passive: {
      type: 'object', default: 'fill',
      fields: { fail_timeout: { type: 'duration', min: 0, max: HOUR, default: 10 * SEC } },
    },
    connect_timeout: { type: 'duration', min: 1, max: 10 * MIN, default: 5 * SEC },
    response_timeout: { type: 'duration', min: 1, max: DAY, default: 60 * SEC },
  },
};

export const RELAY: Spec = {
  type: 'object', default: 'fill',
  fields: {
    max_message: { type: 'size', min: 1, max: GiB, default: MiB },
    messages_per_second_per_key: { type: 'number', min: 0, max: 1e9, default: 0 },
    bytes_per_second_per_key: { type: 'size', min: 0, max: 1024 * GiB, default: 0 },
    on_limit: { type: 'string', enum: ['throttle', 'close'], default: 'throttle' },
    heartbeat: { type: 'duration', min: 0, max: HOUR, default: 30 * SEC },
    deflate: { type: 'bool', default: false },
    deflate_client: { type: 'bool' },    // per side; each defaults to `deflate`
    deflate_backend: { type: 'bool' },
  },
};

export const MATCH: Spec = {
  type: 'object', default: 'fill',
  fields: {
    path: { type: 'string', pattern: /^\/\S*$/, hint: 'a path starting with "/", e.g. /chat/{room}' },
    host: { type: 'string', pattern: /^[A-Za-z0-9*{][A-Za-z0-9.{}*_:-]*$/, hint: 'a host pattern, e.g. {tenant}.example.com or *.example.com' },
    method: { type: 'list', of: { type: 'string', pattern: /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, hint: 'an HTTP method such as GET' }, single: true, minItems: 1 },
    header: valueMatchMap,
    cookie: valueMatchMap,
    query: valueMatchMap,
    tenant: { type: 'list', of: { type: 'string', coerce: true }, single: true, minItems: 1 },
  },
};

export const ROUTE: Spec = {
  type: 'object', required: ['backend'],
  fields: {
    name: { type: 'string', pattern: NAME, hint: NAME_HINT },          // default route<i>, 0-based (as in routes[i]; build.ts)
    match: MATCH,
    key: { type: 'template', default: null },
    backend: { type: 'string' },
    websocket: { type: 'string', enum: ['tunnel', 'relay'], default: 'tunnel' },
    limits: {
      type: 'object', default: 'fill',
      fields: { connections_per_key: { type: 'int', min: 0, max: 1e9, default: 0 } },
    },
    relay: RELAY,
  },
};

export const LIMITS: Spec = {
  type: 'object', default: 'fill',
  fields: {
    // At most 32 KiB: the acceptor hands a connection over with everything it has read, the head
    // plus the rest of the 64 KiB read that completed it, in one fdpass handoff (≤ 114,668 bytes).
    head_bytes: { type: 'size', min: 1 * KiB, max: 32 * KiB, default: 16 * KiB },
    head_timeout: { type: 'duration', min: 100, max: 10 * MIN, default: 10 * SEC },
    max_connections: { type: 'int', min: 1, max: 1e8, default: 100_000 },
    idle_timeout: { type: 'duration', min: 0, max: DAY, default: 75 * SEC },
    drain_timeout: { type: 'duration', min: 0, max: DAY, default: 30 * SEC },
  },
};

export const REBALANCE: Spec = {
  type: 'object', default: 'fill',
  fields: {
    auto: { type: 'bool', default: true },
    threshold: { type: 'number', min: 1, max: 100, default: 1.5 },
    interval: { type: 'duration', min: 100, max: HOUR, default: 5 * SEC },
    min_connections: { type: 'int', min: 0, max: 1e8, default: 100 },
  },
};

export const CONFIG: Spec = {
  type: 'object', required: ['listen', 'backends', 'routes'],
  fields: {
    listen: { type: 'list', of: LISTENER, single: true, minItems: 1 },
    workers: { type: 'int', min: 1, max: 1024, default: 'auto' as unknown as number, words: ['auto'] },
    acceptors: { type: 'int', min: 1, max: 64, default: 1 },
    standby: { type: 'bool', default: true },
    admin: { type: 'address', default: null },
    tenant: { type: 'template', default: null },
    limits: LIMITS,
    rebalance: REBALANCE,
    backends: { type: 'map', of: BACKEND, keyPattern: NAME, hint: NAME_HINT, minEntries: 1 },
    routes: { type: 'list', of: ROUTE, minItems: 1 },
    log_level: { type: 'string', enum: ['debug', 'info', 'warn', 'error'], default: 'info' },
  },
};
