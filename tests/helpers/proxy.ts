// Start test backends and an fdproxy in front of them.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BIN, ROOT, startReady, tmpFile, until, type Started } from './procs';

export interface BackendReady { event: 'ready'; name: string; port: number; pid: number; path?: string }
export interface ProxyReady { event: 'ready'; pid: number; acceptor: number; workers: { slot: number; pid: number }[]; listen: string[]; admin: string | null }

/** `env`: PORT (a fixed port) or SOCK (a unix socket path to listen on instead). */
export function startBackend(name: string, env?: NodeJS.ProcessEnv): Promise<Started<BackendReady>> {
  return startReady<BackendReady>([path.join(ROOT, 'dist', 'tests', 'fixtures', 'backend.js'), name], { env });
}

export interface ProxyHandle extends Started<ProxyReady> { port: number; file: string; adminPort: number | null }

export async function startProxy(yaml: string, extraArgs: string[] = [], env?: NodeJS.ProcessEnv): Promise<ProxyHandle> {
  const file = tmpFile('proxy.yaml', yaml);
  const s = await startReady<ProxyReady>([BIN, '-c', file, ...extraArgs], { env });
  const port = Number(s.ready.listen[0].split(':').pop());
  const adminPort = s.ready.admin ? Number(s.ready.admin.split(':').pop()) : null;
  return Object.assign(s, { port, file, adminPort });
}

/** A two-backend config; `routes` is YAML for the routes list (indented by 2). */
export function twoBackendConfig(p1: number, p2: number, routes?: string, extra = ''): string {
  return `listen: 127.0.0.1:0
workers: 2
admin: 127.0.0.1:0
log_level: warn
tenant: ["{header.x-tenant-id}"]
${extra}
backends:
  app:
    servers: [${p1 === p2 ? `"127.0.0.1:${p1}"` : `"127.0.0.1:${p1}", "127.0.0.1:${p2}"`}]
routes:
${routes ?? `  - name: chat
    match: { path: "/chat/{room}" }
    key: "{room}"
    backend: app
  - name: session
    match: { path: /app/, cookie: { session: "{sid}" } }
    key: "{sid}"
    backend: app
  - name: header
    match: { path: /h/, header: { x-user: "{user}" } }
    key: "{user}"
    backend: app
  - name: tenant
    match: { path: /t/ }
    key: "{tenant}"
    backend: app
  - name: default
    match: { path: / }
    backend: app`}
`;
}

export async function adminGet(px: ProxyHandle, path: string): Promise<any> {
  const res = await fetch(`http://127.0.0.1:${px.adminPort}${path}`);
  const text = await res.text();
  return res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text;
}

export async function adminPost(px: ProxyHandle, path: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`http://127.0.0.1:${px.adminPort}${path}`, { method: 'POST' });
  return { status: res.status, body: await res.json() };
}

/** Write `text` as the proxy's config, reload, and wait until the old generation has retired. */
export async function reloadWith(px: ProxyHandle, text: string): Promise<void> {
  fs.writeFileSync(px.file, text);
  const r = await adminPost(px, '/reload');
  if (r.status !== 200) throw new Error(`reload refused: ${JSON.stringify(r.body)}`);
  if (!await until(async () => (await adminGet(px, '/status')).retiring.length === 0, 20000)) throw new Error('old generation did not retire');
}
