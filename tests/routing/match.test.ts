// Request heads → route name + sticky key + tenant, through the real conf loader and Router.
import test from 'ava';
import { parseConfig } from '../../conf';
import { Router, type Head } from '../../routing';

const config = parseConfig(`
listen: 127.0.0.1:8080
tenant: ["{header.x-tenant-id}", "{host.1}"]
backends: { web: { servers: [127.0.0.1:9001] } }
routes:
  - name: chat
    match: { path: "/chat/{room}" }
    key: "room-{room}"
    backend: web
  - name: files
    match: { path: "/files/{rest*}", method: [GET, HEAD] }
    key: "{rest}"
    backend: web
  - name: app
    match: { path: /app/, cookie: { session: "{sid}" } }
    key: ["{sid}", "{client_ip}"]
    backend: web
  - name: api
    match: { host: "{tenant}.api.example.com", header: { x-api-version: ["1", "2"] } }
    key: "{tenant}:{header.x-user}"
    backend: web
  - name: wild
    match: { host: "*.example.net" }
    key: "{host}"
    backend: web
  - name: debug
    match: { header: { x-debug: true }, query: { trace: "{tid}" } }
    key: ["{query.user}", "{tid}"]
    backend: web
  - name: tenants
    match: { tenant: [acme, globex] }
    key: "{tenant}"
    backend: web
  - name: post
    match: { method: POST, path: /upload }
    key: "{host.2}|{method}|{path}"
    backend: web
  - name: default
    match: { path: / }
    backend: web
`, 'match.yaml');

const router = new Router(config);

type Row = [method: string, url: string, headers: string[], route: string | null, key?: string | null, tenant?: string | null];
const H = 'Host';
const rows: Row[] = [
  ['GET', '/chat/lobby', [H, 'x.io'], 'chat', 'room-lobby', 'x'],
  ['GET', '/chat/lobby?x=1', [], 'chat', 'room-lobby', null],
  ['GET', '/chat/lobby/', [], 'chat', 'room-lobby'],                   // one trailing slash tolerated
  ['GET', '/chat/caf%C3%A9', [], 'chat', 'room-café'],                 // captures are percent-decoded
  ['GET', '/chat/%zz', [], 'chat', 'room-%zz'],                        // malformed escape kept raw
  ['GET', '/chat/a/b', [], 'default', null],                           // {x} is one segment
  ['GET', '/chat/', [], 'default', null],                              // captures are never empty
  ['GET', '/chat', [], 'default', null],
  ['GET', '/files/a/b/c.txt', [], 'files', 'a/b/c.txt'],
  ['HEAD', '/files/x', [], 'files', 'x'],
  ['GET', '/files', [], 'files', null],                                // {rest*} may be empty → keyless
  ['DELETE', '/files/x', [], 'default', null],
  ['GET', '/app/home', ['Cookie', 'theme=dark; session=abc123'], 'app', 'abc123'],
  ['GET', '/app', ['cookie', 'session="q"'], 'app', 'q'],              // prefix matches the bare path, quotes stripped
  ['GET', '/app/home', [], 'default', null],                           // cookie required by the match
  ['GET', '/apple', ['Cookie', 'session=s'], 'default', null],         // prefix on a segment boundary
  ['GET', '/x', ['Host', 'acme.api.example.com:8443', 'X-API-Version', '2', 'x-user', 'u1'], 'api', 'acme:u1', 'acme'],
  ['GET', '/x', ['HOST', 'ACME.Api.Example.com', 'X-API-Version', '1'], 'api', null, 'acme'],  // x-user missing → keyless
  ['GET', '/x', ['Host', 'acme.api.example.com', 'X-API-Version', '3'], 'tenants', 'acme', 'acme'],  // not api (version), but tenant acme
  ['GET', '/', ['Host', 'a.b.example.net'], 'wild', 'a.b.example.net', 'a'],
  ['GET', '/', ['Host', 'example.net'], 'default', null, 'example'],
  ['GET', '/p?trace=t9&user=bob', ['X-Debug', ''], 'debug', 'bob'],
  ['GET', '/p?trace=t9', ['X-Debug', '1'], 'debug', 't9'],
  ['GET', '/p?trace=t%209&user=', ['X-Debug', '1'], 'debug', 't 9'], // empty alternative skipped
  ['GET', '/p?trace=', ['X-Debug', '1'], 'default', null],
  ['GET', '/p?tr%61ce=x+y&trace=second', ['X-Debug', '1'], 'debug', 'x y'],  // encoded name, first occurrence wins
  ['GET', '/app/', ['Cookie', 'a=1', 'Cookie', 'x=2;session = s2 ; b=3'], 'app', 's2'],  // several Cookie headers, spaces             // capture needs a value
  ['GET', '/p', ['X-Tenant-Id', 'globex'], 'tenants', 'globex', 'globex'],
  ['GET', '/p', ['Host', 'acme.example.org'], 'tenants', 'acme', 'acme'],
  ['GET', '/p', ['Host', 'initech.example.org'], 'default', null, 'initech'],
  ['POST', '/upload?x', ['Host', 'www.shop.io'], 'post', 'shop|POST|/upload', 'www'],
  ['POST', 'http://www.shop.io:80/upload', ['Host', 'ignored.io'], 'post', 'shop|POST|/upload', 'www'],  // absolute-form
  ['GET', '/anything', [], 'default', null],
];

for (const [method, url, headers, route, key, tenant] of rows) {
  test(`${method} ${url} ${headers.join(' ')} → ${route}`, (t) => {
    const head: Head = { method, url, headers, clientIp: '10.1.2.3' };
    const d = router.route(head);
    t.is(d?.route.name ?? null, route);
    if (key !== undefined) t.is(d?.key ?? null, key);
    if (tenant !== undefined) t.is(d?.tenant ?? null, tenant);
  });
}

test('client_ip alternative when there is no session cookie value', (t) => {
  const d = router.route({ method: 'GET', url: '/app/', headers: ['Cookie', 'session=; other=1'], clientIp: '10.9.9.9' });
  t.is(d?.route.name, 'default');   // empty capture does not match
  const r2 = new Router(parseConfig('listen: :0\nbackends: { w: { servers: [1.2.3.4:80] } }\nroutes: [{ key: ["{cookie.s}", "{client_ip}"], backend: w }]\n', 'x.yaml'));
  t.is(r2.route({ method: 'GET', url: '/', headers: [], clientIp: '10.9.9.9' })?.key, '10.9.9.9');
  t.is(r2.route({ method: 'GET', url: '/', headers: ['Cookie', 's=1'], clientIp: '10.9.9.9' })?.key, '1');
});

test('no route → null (404)', (t) => {
  const r = new Router(parseConfig('listen: :0\nbackends: { w: { servers: [1.2.3.4:80] } }\nroutes: [{ match: { path: /only }, backend: w }]\n', 'x.yaml'));
  t.is(r.route({ method: 'GET', url: '/other', headers: [], clientIp: '' }), null);
  t.is(r.route({ method: 'GET', url: '/only/x', headers: [], clientIp: '' })?.route.name, 'route0');
});

test('state does not leak between requests (lazy caches are reset)', (t) => {
  t.is(router.route({ method: 'GET', url: '/app/x', headers: ['Cookie', 'session=one'], clientIp: '' })?.key, 'one');
  t.is(router.route({ method: 'GET', url: '/app/x', headers: ['Cookie', 'session=two'], clientIp: '' })?.key, 'two');
  t.is(router.route({ method: 'GET', url: '/p', headers: ['Host', 'acme.x.io'], clientIp: '' })?.tenant, 'acme');
  t.is(router.route({ method: 'GET', url: '/p', headers: ['Host', 'globex.x.io'], clientIp: '' })?.tenant, 'globex');
});
