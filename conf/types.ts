// The validated, deep-frozen shape of proxy.yaml. Produced by conf/ (loadConfig), read by
// routing/ and proxy/. Durations are milliseconds, sizes are bytes.

/** A place to listen on or connect to. */
export type Address =
  | { kind: 'tcp'; host: string; port: number; text: string }   // host '' means all interfaces (":8080")
  | { kind: 'unix'; path: string; text: string };                // "unix:/run/x.sock"

export interface Listener {
  address: Address;
  /** Expect a PROXY protocol v1/v2 header first (from an L4 load balancer). */
  proxy_protocol: boolean;
}

export interface Limits {
  head_bytes: number;        // default 16 KiB → 431 beyond
  head_timeout: number;      // default 10 s → 408
  max_connections: number;   // default 100000 → 503
  idle_timeout: number;      // default 75 s, idle keep-alive HTTP connection
  drain_timeout: number;     // default 30 s
}

/** Automatic rebalancing: when one worker holds more than `threshold`× the average of
 *  connections (and at least `min_connections`), whole keys move to the least-loaded worker. */
export interface Rebalance {
  auto: boolean;             // default true
  threshold: number;         // default 1.5
  interval: number;          // ms, default 5 s
  min_connections: number;   // default 100
}

export interface Server {
  address: Address;
  weight: number;            // default 1
  /** Stable identity used for hashing: the address text ("127.0.0.1:9001", "unix:/run/a.sock"). */
  id: string;
}

export interface Health {
  path: string;
  interval: number;          // ms
  timeout: number;           // ms, default min(interval, 2s)
}

/** Passive health: a server a connect fails on (refused, reset, unreachable, timed out) is
 *  skipped by that worker for `fail_timeout` (nginx's fail_timeout, with max_fails 1). */
export interface Passive {
  fail_timeout: number;      // ms, default 10 s; 0 = off (a failed server is never skipped)
}

export interface Backend {
  name: string;
  servers: readonly Server[];
  health: Health | null;
  passive: Passive;
  connect_timeout: number;   // ms, default 5 s → 502 when exceeded
  response_timeout: number;  // ms, default 60 s → 504 when the backend sends no response head in time
}

/** A key template: a list of alternatives, the first that resolves wins. */
export interface KeyTemplate {
  /** The source text(s) as written, for messages. */
  source: readonly string[];
  /** Each alternative as parts: literal text, or a variable reference. */
  alternatives: readonly (readonly KeyPart[])[];
}
export type KeyPart =
  | { lit: string }
  | { var: 'capture'; name: string }
  | { var: 'tenant' | 'host' | 'path' | 'client_ip' | 'method' }
  | { var: 'host.N'; n: number }
  | { var: 'cookie' | 'header' | 'query'; name: string };   // header names lower-cased

/** A string condition: exact value, one of a list, or a capture ("{sid}") of any non-empty value. */
export type ValueMatch =
  | { kind: 'exact'; values: readonly string[] }
  | { kind: 'capture'; name: string }
  | { kind: 'present' };

export interface Match {
  /** "/chat/{room}", "/files/{rest*}", or a prefix "/app/" (no braces → prefix match on segment boundary). */
  path: string | null;
  host: string | null;         // "{tenant}.example.com", "api.example.com", "*.example.com"
  method: readonly string[] | null;
  header: Readonly<Record<string, ValueMatch>> | null;   // names lower-cased
  cookie: Readonly<Record<string, ValueMatch>> | null;
  query: Readonly<Record<string, ValueMatch>> | null;
  tenant: readonly string[] | null;
}

export interface RelayOptions {
  max_message: number;                    // bytes, default 1 MiB → close 1009
  messages_per_second_per_key: number;    // 0 = unlimited
  bytes_per_second_per_key: number;       // 0 = unlimited
  on_limit: 'throttle' | 'close';         // default throttle (pause reads); close → 1008
  heartbeat: number;                      // ms, default 30 s; 0 = off
  deflate: boolean;                       // default false; when on, no context takeover
  deflate_client: boolean;                // client side (default: deflate)
  deflate_backend: boolean;               // backend side (default: deflate)
}

export interface Route {
  name: string;
  index: number;
  match: Match;
  key: KeyTemplate | null;     // null → keyless (least-loaded worker and server)
  backend: string;             // name of an entry in Config.backends
  websocket: 'tunnel' | 'relay';
  relay: RelayOptions;
  connections_per_key: number; // 0 = unlimited → 503 beyond
}

export interface Config {
  /** Absolute path of the file it came from. */
  file: string;
  listen: readonly Listener[];
  workers: number;             // "auto" resolved to the CPU count
  acceptors: number;           // default 1
  /** Keep one warm spare worker and one spare acceptor, so a crashed process is replaced in
   *  milliseconds instead of a process start. Default true. */
  standby: boolean;
  admin: Address | null;
  tenant: KeyTemplate | null;  // how a request names its tenant
  limits: Limits;
  rebalance: Rebalance;
  backends: Readonly<Record<string, Backend>>;
  routes: readonly Route[];
  log_level: 'debug' | 'info' | 'warn' | 'error';
}
