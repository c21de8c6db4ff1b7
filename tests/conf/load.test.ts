// Valid configs load to the expected, deep-frozen object; several mistakes are reported at once.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { ConfigError, CONF_ERRORS, loadConfig, parseConfig, type Config } from '../../conf';

const root = path.resolve(__dirname, '../../..');

function deepFrozen(o: unknown, at = 'config'): string | null {
  if (o === null || typeof o !== 'object') return null;
  if (!Object.isFrozen(o)) return at;
  for (const [k, v] of Object.entries(o)) { const r = deepFrozen(v, `${at}.${k}`); if (r) return r; }
  return null;
}

const MINIMAL = 'listen: 127.0.0.1:8080\nbackends: { web: { servers: [127.0.0.1:9001] } }\nroutes: [{ backend: web }]\n';
const RELAY_DEFAULTS = { max_message: 1 << 20, messages_per_second_per_key: 0, bytes_per_second_per_key: 0, on_limit: 'throttle', heartbeat: 30_000, deflate: false, deflate_client: false, deflate_backend: false };
const NO_MATCH = { path: null, host: null, method: null, header: null, cookie: null, query: null, tenant: null };

test('minimal config: every default filled in, deep-frozen', (t) => {
  const c = parseConfig(MINIMAL, 'proxy.yaml');
  const expected: Config = {
    file: path.resolve('proxy.yaml'),
    listen: [{ address: { kind: 'tcp', host: '127.0.0.1', port: 8080, text: '127.0.0.1:8080' }, proxy_protocol: false }],
    workers: os.availableParallelism(),
    acceptors: 1,
    standby: true,
    admin: null,
    tenant: null,
    limits: { head_bytes: 16384, head_timeout: 10_000, max_connections: 100_000, idle_timeout: 75_000, drain_timeout: 30_000 },
    rebalance: { auto: true, threshold: 1.5, interval: 5000, min_connections: 100 },
    backends: {
      web: {
        name: 'web',
        servers: [{ address: { kind: 'tcp', host: '127.0.0.1', port: 9001, text: '127.0.0.1:9001' }, weight: 1, id: '127.0.0.1:9001' }],
        health: null, passive: { fail_timeout: 10_000 }, connect_timeout: 5000, response_timeout: 60_000,
      },
    },
    routes: [{ name: 'route0', index: 0, match: NO_MATCH, key: null, backend: 'web', websocket: 'tunnel', relay: RELAY_DEFAULTS as Config['routes'][0]['relay'], connections_per_key: 0 }],
    log_level: 'info',
  };
  t.deepEqual(c, expected);
  t.is(deepFrozen(c), null);
  t.throws(() => { (c.routes as Config['routes'][0][]).push(c.routes[0]); });
});

test('the root proxy.yaml is valid and says what the docs say', (t) => {
  const c = loadConfig(path.join(root, 'proxy.yaml'));
  t.is(deepFrozen(c), null);
  t.is(c.workers, 2);
  t.is(c.listen[0].address.text, '127.0.0.1:8080');
  t.is(c.admin?.text, '127.0.0.1:9090');
  t.deepEqual(c.routes.map((r) => r.name), ['chat', 'app', 'tenants', 'default']);
  t.deepEqual(c.backends.chat.servers.map((s) => s.id), ['127.0.0.1:9001', '127.0.0.1:9002']);
  t.deepEqual(c.backends.chat.health, { path: '/healthz', interval: 5000, timeout: 2000 });
  t.deepEqual(c.routes[0].key?.alternatives, [[{ lit: 'room-' }, { var: 'capture', name: 'room' }]]);
  t.deepEqual(c.routes[1].match.cookie, { session: { kind: 'capture', name: 'sid' } });
  t.is(c.routes[0].websocket, 'relay');
  t.is(c.routes[0].relay.messages_per_second_per_key, 200);
  t.is(c.routes[0].connections_per_key, 5000);
});

test('full forms: listen list, admin without host is loopback, weights, match kinds, templates', (t) => {
  const c = parseConfig(`
listen:
  - :8080
  - { address: "[::1]:8443", proxy_protocol: true }
  - unix:/tmp/fdproxy.sock
workers: auto
acceptors: 1
admin: :9090
tenant: "{header.X-Tenant}"
log_level: debug
backends:
  api:
    servers: [{ address: 10.0.0.1:80, weight: 3 }, 10.0.0.2:80]
    health: /ready
    passive: { fail_timeout: 300ms }
    connect_timeout: 250ms
  ws:
    servers: 10.0.0.3:80
    passive: { fail_timeout: 0 }
routes:
  - name: files
    match: { path: "/files/{rest*}", host: "{tenant}.example.com", method: [get, HEAD] }
    key: "{tenant}/{rest}"
    backend: api
  - match:
      header: { X-Debug: true, x-env: [prod, staging] }
      query: { v: 2 }
    key: ["{header.x-user}", "{cookie.uid}", "{query.user}", "{host.2}-{method}{path}"]
    backend: api
`, 'x.yaml', { workers: 3 });
  t.is(c.workers, 3, 'override wins over "auto"');
  t.deepEqual(c.listen.map((l) => [l.address.text, l.proxy_protocol]), [[':8080', false], ['[::1]:8443', true], ['unix:/tmp/fdproxy.sock', false]]);
  t.is(c.admin?.text, '127.0.0.1:9090');
  t.deepEqual(c.tenant?.alternatives, [[{ var: 'header', name: 'x-tenant' }]]);
  t.deepEqual(c.backends.api.servers.map((s) => [s.id, s.weight]), [['10.0.0.1:80', 3], ['10.0.0.2:80', 1]]);
  t.deepEqual(c.backends.api.health, { path: '/ready', interval: 5000, timeout: 2000 });
  t.is(c.backends.api.connect_timeout, 250);
  t.deepEqual(c.backends.api.passive, { fail_timeout: 300 });
  t.deepEqual(c.backends.ws.passive, { fail_timeout: 0 }, '0 (no unit) turns passive health off');
  t.deepEqual(c.routes[0].match.method, ['GET', 'HEAD']);
  t.is(c.routes[1].name, 'route1');
  t.deepEqual(c.routes[1].match.header, { 'x-debug': { kind: 'present' }, 'x-env': { kind: 'exact', values: ['prod', 'staging'] } });
  t.deepEqual(c.routes[1].match.query, { v: { kind: 'exact', values: ['2'] } });
  t.deepEqual(c.routes[1].key?.alternatives[3], [{ var: 'host.N', n: 2 }, { lit: '-' }, { var: 'method' }, { var: 'path' }]);
  t.is(deepFrozen(c), null);
});

test('several mistakes in one file are all reported, in file order, in the documented format', (t) => {
  const yaml = [
    'listen: 127.0.0.1:8080',      // 1
    'admin: 127.0.0.1:8080',       // 2  clash
    'workers: 0',                  // 3  bound
    'limits: { head_timeout: 5 }', // 4  unit
    'backends:',                   // 5
    '  chat:',                     // 6
    '    servers: [127.0.0.1:9001]',
    '    conect_timeout: 1s',      // 8  unknown key
    'routes:',                     // 9
    '  - name: chat',              // 10
    '    match: { path: "/chat/{room}" }',
    '    key: "{rom}"',            // 12 unknown variable
    '  - name: chat',              // 13 duplicate
    '    backend: caht',           // 14 unknown backend
    '',
  ].join('\n');
  const err = t.throws(() => parseConfig(yaml, 'proxy.yaml'), { instanceOf: ConfigError }) as ConfigError;
  t.is(err.report(), [
    'proxy.yaml:2:8 admin: 127.0.0.1:8080 clashes with listen (127.0.0.1:8080): both would bind the same address',
    'proxy.yaml:3:10 workers: must be at least 1, got 0',
    'proxy.yaml:4:25 limits.head_timeout: duration "5" needs a unit: 5ms or 5s?',
    'proxy.yaml:8:5 backends.chat.conect_timeout: unknown key "conect_timeout" (did you mean "connect_timeout"?)',
    'proxy.yaml:10:5 routes[0]: missing required key "backend"',
    'proxy.yaml:12:10 routes[0].key: unknown variable {rom}: not captured by this route\'s match (did you mean "room"?)',
    'proxy.yaml:13:11 routes[1].name: duplicate route name "chat" (also routes[0])',
    'proxy.yaml:14:14 routes[1].backend: unknown backend "caht" (did you mean "chat"?)',
  ].join('\n'));
  t.regex(err.message, /^8 issues in config:\n/);
});

test('loadConfig: unreadable file is FDP_CONF_READ naming the file as given', (t) => {
  const err = t.throws(() => loadConfig('does-not-exist.yaml'), { instanceOf: ConfigError }) as ConfigError;
  t.is(err.code, 'FDP_CONF_READ');
  t.regex(err.report(), /^does-not-exist\.yaml cannot read config: ENOENT/);
});

test('loadConfig: messages name the file as passed, Config.file is absolute', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fdp-conf-'));
  try {
    const f = path.join(dir, 'p.yaml');
    fs.writeFileSync(f, MINIMAL);
    t.is(loadConfig(f).file, f);
    fs.writeFileSync(f, MINIMAL.replace('routes', 'rutes'));
    const rel = path.relative(process.cwd(), f);
    const err = t.throws(() => loadConfig(rel)) as ConfigError;
    t.true(err.report().includes(`${rel}:3:1 rutes: unknown key "rutes" (did you mean "routes"?)`), err.report());
  } finally { fs.rmSync(dir, { recursive: true, force: true }); }
});

test('bad workers override is an issue, not a crash', (t) => {
  const err = t.throws(() => parseConfig(MINIMAL, 'p.yaml', { workers: 0 })) as ConfigError;
  t.is(err.issues[0].code, 'FDP_CONF_VALUE');
});

test('every code in CONF_ERRORS has a description and the FDP_CONF_ prefix', (t) => {
  for (const [code, desc] of Object.entries(CONF_ERRORS)) { t.regex(code, /^FDP_CONF_[A-Z_]+$/); t.true(desc.length > 10); }
});

test('README.md documents every config error code', (t) => {
  const doc = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
  for (const code of Object.keys(CONF_ERRORS)) t.true(doc.includes(`\`${code}\``), code);
});

test('admin: null (or empty) turns the admin endpoint off', (t) => {
  for (const v of ['null', '', '~']) {
    const c = parseConfig(`listen: 127.0.0.1:8080\nadmin: ${v}\nbackends: { web: { servers: [127.0.0.1:9001] } }\nroutes: [{ backend: web }]\n`, 'proxy.yaml');
    t.is(c.admin, null);
  }
});
