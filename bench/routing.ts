// Routing micro-benchmark: decisions/s of Router.route (+ key → slot placement lookup) for a
// realistic 20-route config over a mixed request stream. Bounded: ~1 s per round, 7 rounds.
// Baseline measured in the same run: a bare loop that only touches each head (the floor).
import { parseConfig } from '../conf';
import { Placement, Router, type Head } from '../routing';

const ROUTES = `
listen: 127.0.0.1:8080
tenant: ["{header.x-tenant-id}", "{host.1}"]
backends:
  chat: { servers: [127.0.0.1:9001, 127.0.0.1:9002] }
  web: { servers: [127.0.0.1:9101, 127.0.0.1:9102, 127.0.0.1:9103] }
  api: { servers: [127.0.0.1:9201] }
routes:
  - { name: health, match: { path: /healthz, method: GET }, backend: web }
  - { name: metrics, match: { path: /metrics, header: { authorization: true } }, backend: web }
  - { name: chat, match: { path: "/chat/{room}" }, key: "room-{room}", backend: chat, websocket: relay }
  - { name: chat-dm, match: { path: "/dm/{a}/{b}" }, key: "{a}:{b}", backend: chat }
  - { name: game, match: { path: "/game/{match}/ws" }, key: "{match}", backend: chat }
  - { name: doc, match: { path: "/doc/{id}", query: { mode: [edit, view] } }, key: "doc-{id}", backend: chat }
  - { name: files, match: { path: "/files/{rest*}", method: [GET, HEAD] }, key: "{rest}", backend: web }
  - { name: upload, match: { path: /upload, method: [POST, PUT] }, key: ["{cookie.session}", "{client_ip}"], backend: web }
  - { name: tenant-api, match: { host: "{tenant}.api.example.com", path: /v2/ }, key: "{tenant}:{header.x-user-id}", backend: api }
  - { name: legacy-api, match: { host: "{tenant}.api.example.com" }, key: "{tenant}", backend: api }
  - { name: admin, match: { host: admin.example.com, cookie: { admin_session: "{s}" } }, key: "{s}", backend: web }
  - { name: beta, match: { header: { x-beta: ["1", "true"] } }, key: "{header.x-user-id}", backend: web }
  - { name: mobile, match: { header: { x-app-version: "{ver}" }, path: /m/ }, key: ["{cookie.sid}", "{client_ip}"], backend: web }
  - { name: tenants, match: { tenant: [acme, globex, initech, umbrella] }, key: "{tenant}", backend: web }
  - { name: static, match: { path: /static/ }, backend: web }
  - { name: assets, match: { host: "*.cdn.example.com" }, backend: web }
  - { name: app, match: { path: /app/, cookie: { session: "{sid}" } }, key: ["{sid}", "{client_ip}"], backend: web }
  - { name: app-anon, match: { path: /app/ }, key: "{client_ip}", backend: web }
  - { name: search, match: { path: /search, query: { q: true } }, key: "{query.q}", backend: api }
  - { name: default, match: { path: / }, backend: web }
`;

const UA = ['User-Agent', 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36', 'Accept', '*/*', 'Accept-Encoding', 'gzip, deflate, br'];
function heads(): Head[] {
  const out: Head[] = [];
  for (let i = 0; i < 1000; i++) {
    const ip = `10.0.${i & 255}.${(i * 7) & 255}`;
    const mix: Head[] = [
      { method: 'GET', url: `/chat/room-${i % 97}`, headers: ['Host', 'chat.example.com', 'Upgrade', 'websocket', 'Connection', 'Upgrade', 'Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ==', ...UA], clientIp: ip },
      { method: 'GET', url: `/app/dashboard?tab=${i % 5}`, headers: ['Host', 'www.example.com', ...UA, 'Cookie', `theme=dark; session=s${i}; _ga=GA1.2.3`], clientIp: ip },
      { method: 'GET', url: `/v2/orders/${i}`, headers: ['Host', `t${i % 50}.api.example.com`, 'X-User-Id', `u${i}`, ...UA], clientIp: ip },
      { method: 'GET', url: `/game/m${i % 31}/ws`, headers: ['Host', 'play.example.com', ...UA], clientIp: ip },
      { method: 'GET', url: `/static/js/app.${i % 9}.js`, headers: ['Host', 'www.example.com', ...UA], clientIp: ip },
      { method: 'GET', url: `/doc/${i % 13}?mode=edit`, headers: ['Host', 'docs.example.com', ...UA], clientIp: ip },
      { method: 'GET', url: '/some/page', headers: ['Host', 'acme.example.com', ...UA], clientIp: ip },
      { method: 'POST', url: '/upload', headers: ['Host', 'www.example.com', 'Content-Length', '100', ...UA, 'Cookie', `session=s${i}`], clientIp: ip },
      { method: 'GET', url: `/search?q=term${i % 17}&page=2`, headers: ['Host', 'www.example.com', ...UA], clientIp: ip },
      { method: 'GET', url: '/unknown/path', headers: ['Host', 'www.example.com', ...UA], clientIp: ip },
    ];
    out.push(mix[i % mix.length]);
  }
  return out;
}

function round(fn: (h: Head) => unknown, hs: Head[], ms: number): number {
  let n = 0;
  const t0 = process.hrtime.bigint();
  const end = t0 + BigInt(ms) * 1_000_000n;
  let now = t0;
  let sink = 0;
  while (now < end) {
    for (let i = 0; i < hs.length; i++) if (fn(hs[i]) !== null) sink++;
    n += hs.length;
    now = process.hrtime.bigint();
  }
  if (sink < 0) console.log(sink);
  return n / (Number(now - t0) / 1e9);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function main(): void {
  const config = parseConfig(ROUTES, 'bench-routing.yaml');
  const router = new Router(config);
  const placement = new Placement([0, 1, 2, 3]);
  const hs = heads();
  const rounds = Number(process.env.ROUNDS ?? 7), ms = Number(process.env.ROUND_MS ?? 1000);
  const matched = hs.filter((h) => router.route(h) !== null).length;
  const keyed = hs.filter((h) => router.route(h)?.key != null).length;
  const baseline: number[] = [], route: number[] = [], routePlace: number[] = [];
  round((h) => router.route(h), hs, 300);   // warm-up (JIT)
  for (let r = 0; r < rounds; r++) {
    baseline.push(round((h) => h.url.length, hs, ms / 4));
    route.push(round((h) => router.route(h), hs, ms));
    routePlace.push(round((h) => { const d = router.route(h); return d === null ? null : placement.place(d.key); }, hs, ms));
  }
  const res = {
    routes: config.routes.length, heads: hs.length, matched, keyed, rounds,
    baseline_per_s: Math.round(median(baseline)),
    route_per_s: Math.round(median(route)),
    route_place_per_s: Math.round(median(routePlace)),
    route_ns: Math.round(1e9 / median(route)),
  };
  console.log(JSON.stringify(res));
  console.log(`routing: ${(res.route_per_s / 1e6).toFixed(2)} M decisions/s (${res.route_ns} ns each), with placement ${(res.route_place_per_s / 1e6).toFixed(2)} M/s; target ≥ 0.5 M/s: ${res.route_place_per_s >= 500_000 ? 'met' : 'NOT met'}`);
}

main();
