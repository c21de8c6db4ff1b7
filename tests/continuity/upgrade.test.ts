// Deploying a new fdproxy version without dropping connections: a reload starts new worker
// processes from the code on disk, and live WebSockets migrate to them.
import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startBackend, twoBackendConfig, adminGet, adminPost, type BackendReady, type ProxyHandle, type ProxyReady } from '../helpers/proxy';
import { ROOT, startReady, until, type Started } from '../helpers/procs';
import { Traffic } from '../helpers/traffic';

let b1: Started<BackendReady>;
test.before(async () => { b1 = await startBackend('b1'); });
test.after.always(async () => { await b1?.stop(); });

test.serial('a reload runs the new worker code from disk; live WebSockets move to it without a drop', async t => {
  // An installed copy of fdproxy (bin/, dist/, package.json; node_modules shared).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fdproxy-upgrade-'));
  fs.cpSync(path.join(ROOT, 'bin'), path.join(dir, 'bin'), { recursive: true });
  fs.cpSync(path.join(ROOT, 'dist'), path.join(dir, 'dist'), { recursive: true });
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(dir, 'package.json'));
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  const file = path.join(dir, 'proxy.yaml');
  fs.writeFileSync(file, twoBackendConfig(b1.ready.port, b1.ready.port).replace('log_level: warn', 'log_level: info'));
  const s = await startReady<ProxyReady>([path.join(dir, 'bin', 'fdproxy.js'), '-c', file], { cwd: dir });
  const px: ProxyHandle = Object.assign(s, { port: Number(s.ready.listen[0].split(':').pop()), file, adminPort: Number(s.ready.admin!.split(':').pop()) });
  const traffic = new Traffic();
  try {
    await traffic.open(px.port, Array.from({ length: 20 }, (_, i) => `u${i}`), 3);
    // "Deploy" version 2 of the worker: same code plus a line it logs when it starts.
    const worker = path.join(dir, 'dist', 'proxy', 'worker.js');
    fs.writeFileSync(worker, fs.readFileSync(worker, 'utf8') + '\nprocess.stdout.write(JSON.stringify({ event: "worker_code", version: 2, pid: process.pid }) + "\\n");\n');
    const r = await adminPost(px, '/reload');
    t.is(r.status, 200);
    t.true(await until(async () => (await adminGet(px, '/status')).retiring.length === 0, 20000));
    const v2 = px.lines.filter(l => l.includes('"event":"worker_code"')).map(l => JSON.parse(l).pid as number);
    const st = await adminGet(px, '/status');
    t.deepEqual([...new Set(v2)].sort(), st.workers.map((w: { pid: number }) => w.pid).sort(), 'every current worker runs the new code');
    await traffic.stop();
    const sum = traffic.summary();
    t.is(sum.closed, 0); t.is(sum.errors, 0); t.is(sum.lost, 0);
  } finally {
    traffic.closeAll();
    await px.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
