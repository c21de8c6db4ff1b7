// Packaging: the npm tarball holds what `npx fdproxy` needs and nothing else, every module the
// CLI loads is in it, and the systemd unit and --help are what operators expect.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { ROOT, BIN } from '../helpers/procs';

test('npm pack: bin, compiled proxy/conf/routing/fdpass, proxy.yaml, README; no tests, bench, sources or demo; every require resolves inside', t => {
  const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8' });
  const files = (JSON.parse(out)[0].files as { path: string }[]).map(f => f.path);
  const set = new Set(files);
  for (const f of ['bin/fdproxy.js', 'package.json', 'proxy.yaml', 'README.md', 'dist/proxy/cli.js', 'dist/proxy/supervisor.js', 'dist/proxy/acceptor.js', 'dist/proxy/worker.js', 'dist/fdpass/index.js', 'dist/conf/index.js', 'dist/routing/index.js']) {
    t.true(set.has(f), `has ${f}`);
  }
  for (const f of files) {
    t.false(/^(dist\/)?(tests|bench|demo|examples|deploy)\//.test(f), `no ${f}`);
    t.false(f.endsWith('.ts'), `no source ${f}`);
  }
  // Every relative require of a packed JS file points to a packed file.
  for (const f of files.filter(x => x.endsWith('.js'))) {
    const src = fs.readFileSync(path.join(ROOT, f), 'utf8');
    for (const m of src.matchAll(/require\("(\.[^"]+)"\)|require\('(\.[^']+)'\)/g)) {
      const rel = path.posix.normalize(path.posix.join(path.posix.dirname(f), m[1] ?? m[2]));
      t.true(set.has(rel) || set.has(`${rel}.js`) || set.has(`${rel}/index.js`), `${f} requires ${m[1] ?? m[2]}`);
    }
  }
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  t.true(set.has(pkg.main), 'main is packed');
  t.deepEqual(Object.keys(pkg.dependencies).sort(), ['ffi-rs', 'http-parser-js', 'ws', 'yaml']);
});

test('fdproxy --help reads like a man page summary; -t checks the config', t => {
  const help = execFileSync(process.execPath, [BIN, '--help'], { encoding: 'utf8' });
  for (const h of ['NAME', 'SYNOPSIS', 'DESCRIPTION', 'OPTIONS', 'SIGNALS', 'EXIT STATUS', 'EXAMPLES']) t.regex(help, new RegExp(`^${h}`, 'm'));
  t.regex(help, /SIGHUP/); t.regex(help, /--log-level/);
  t.true(help.split('\n').every(l => l.length <= 100), 'fits a terminal');
  t.regex(execFileSync(process.execPath, [BIN, '-t', '-c', path.join(ROOT, 'proxy.yaml')], { encoding: 'utf8' }), /proxy\.yaml: ok/);
});

test('deploy/fdproxy.service: reload is SIGHUP to the main pid, stop is graceful', t => {
  const unit = fs.readFileSync(path.join(ROOT, 'deploy', 'fdproxy.service'), 'utf8');
  t.regex(unit, /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
  t.regex(unit, /^ExecStart=.*fdproxy -c \/etc\/fdproxy\/proxy\.yaml$/m);
  t.regex(unit, /^KillSignal=SIGTERM$/m);
  t.regex(unit, /^\[Install\]$/m);
});
