// The fdproxy command: run, check, reload. Exit codes: 0 ok, 1 invalid config, 2 usage,
// 3 could not start (bind, spawn, fdpass unsupported), 4 reload refused.
import * as http from 'node:http';
import { loadConfig, ConfigError } from '../conf';
import { assertSupported } from '../fdpass';
import { Supervisor } from './supervisor';
import { startAdmin } from './admin';
import { VERSION } from './version';

export const HELP = `fdproxy ${VERSION} — sticky HTTP/WebSocket reverse proxy that moves live connections between processes

Usage:
  fdproxy [run] -c proxy.yaml [--workers N] [--log-level L]   run the proxy (foreground)
  fdproxy check -c proxy.yaml                                 validate the config and exit
  fdproxy reload -c proxy.yaml                                ask the running proxy (via its admin address) to reload
  fdproxy --help | --version

Options:
  -c, --config FILE    configuration file (default: ./proxy.yaml)
  -w, --workers N      number of worker processes (overrides "workers:")
  --log-level L        debug | info | warn | error (overrides "log_level:")

Signals (to the supervisor's pid, printed in the ready line):
  SIGHUP    reload: validate the file, start new workers, move every live connection to them
  SIGTERM   graceful stop: stop accepting, let requests finish, close WebSockets with 1001 after drain_timeout
  SIGINT    fast stop

On start, one JSON line {"event":"ready",...} on stdout gives the bound addresses and pids.
Logs are JSON lines on stdout. Exit codes: 0 ok, 1 invalid config, 2 usage, 3 could not start, 4 reload refused.
`;

interface Args { cmd: string; config: string; workers?: number; logLevel?: string }

function parseArgs(argv: string[]): Args | string {
  const a: Args = { cmd: 'run', config: 'proxy.yaml' };
  let i = 0;
  if (argv[0] && !argv[0].startsWith('-')) { a.cmd = argv[0]; i = 1; }
  for (; i < argv.length; i++) {
    const v = argv[i];
    const next = () => { const x = argv[++i]; if (x === undefined) throw new Error(`${v} needs a value`); return x; };
    try {
      if (v === '-c' || v === '--config') a.config = next();
      else if (v === '-w' || v === '--workers') { const n = Number(next()); if (!Number.isInteger(n) || n < 1) return '--workers needs an integer ≥ 1'; a.workers = n; }
      else if (v === '--log-level') { a.logLevel = next(); if (!['debug', 'info', 'warn', 'error'].includes(a.logLevel)) return `unknown log level "${a.logLevel}"`; }
      else if (v === '-h' || v === '--help') a.cmd = 'help';
      else if (v === '-v' || v === '--version') a.cmd = 'version';
      else return `unknown option "${v}"`;
    } catch (e) { return (e as Error).message; }
  }
  if (!['run', 'check', 'reload', 'help', 'version'].includes(a.cmd)) return `unknown command "${a.cmd}"`;
  return a;
}

export function main(argv: string[]): void {
  const a = parseArgs(argv);
  if (typeof a === 'string') { process.stderr.write(`fdproxy: ${a}\n\n${HELP}`); process.exit(2); }
  if (a.cmd === 'help') { process.stdout.write(HELP); return; }
  if (a.cmd === 'version') { process.stdout.write(`fdproxy ${VERSION}\n`); return; }
  if (a.cmd === 'check') return check(a);
  if (a.cmd === 'reload') return reload(a);
  run(a);
}

function configOrExit(a: Args) {
  try { return loadConfig(a.config, a.workers ? { workers: a.workers } : undefined); }
  catch (e) {
    if (e instanceof ConfigError) { process.stderr.write(e.report() + '\n'); process.exit(1); }
    throw e;
  }
}

function check(a: Args): void {
  const c = configOrExit(a);
  process.stdout.write(`${a.config}: ok (${c.routes.length} routes, ${Object.keys(c.backends).length} backends, ${c.workers} workers)\n`);
}

function reload(a: Args): void {
  const c = configOrExit(a);
  if (!c.admin) { process.stderr.write('fdproxy reload needs "admin:" in the config (or send SIGHUP to the supervisor pid)\n'); process.exit(2); }
  const ad = c.admin;
  const req = http.request(ad.kind === 'unix' ? { socketPath: ad.path, path: '/reload', method: 'POST' } : { host: ad.host || '127.0.0.1', port: ad.port, path: '/reload', method: 'POST' }, res => {
    let s = '';
    res.on('data', d => s += d);
    res.on('end', () => {
      const r = JSON.parse(s || '{}');
      if (res.statusCode === 200) { process.stdout.write(`reloaded: generation ${r.gen}\n`); process.exit(0); }
      process.stderr.write(`reload refused: ${r.error ?? res.statusCode}\n`); process.exit(4);
    });
  });
  req.on('error', e => { process.stderr.write(`cannot reach the admin endpoint ${ad.text}: ${e.message}\n`); process.exit(3); });
  req.end();
}

function run(a: Args): void {
  try { assertSupported(); } catch (e) { process.stderr.write(`${(e as Error).message}\n`); process.exit(3); }
  configOrExit(a);
  const sup = new Supervisor({ configFile: a.config, workers: a.workers, logLevel: a.logLevel });
  sup.start().then(() => {
    startAdmin(sup, (err, admin) => {
      if (err) { sup.log.error('admin_failed', { err: err.message }); sup.stop('fast').then(() => process.exit(3)); return; }
      process.stdout.write(JSON.stringify(sup.readyLine(admin)) + '\n');
    });
  }, e => {
    process.stderr.write(`fdproxy: could not start: ${(e as Error).message}\n`);
    sup.stop('fast').then(() => process.exit(3));
  });
  process.on('SIGHUP', () => { sup.reload().then(r => { if (!r.ok) process.stderr.write(`reload failed, still running the previous config:\n${r.error}\n`); }); });
  process.on('SIGTERM', () => { sup.stop('graceful').then(() => process.exit(0)); });
  process.on('SIGINT', () => { sup.stop('fast').then(() => process.exit(0)); });
}
