// The fdproxy command: run, check, reload. Exit codes: 0 ok, 1 invalid config, 2 usage,
// 3 could not start (bind, spawn, fdpass unsupported), 4 reload refused.
import type * as Http from 'node:http';
import { loadConfig, ConfigError } from '../conf';
import { VERSION } from './version';
// check and reload need none of these (~20 ms of CPU at every `fdproxy check`, the service's
// ExecStartPre): run and reload require them when they start.
type Fdpass = typeof import('../fdpass');
type SupervisorModule = typeof import('./supervisor');
type Admin = typeof import('./admin');

export const HELP = `NAME
     fdproxy ${VERSION} — sticky HTTP/WebSocket reverse proxy that moves live connections
     between processes

SYNOPSIS
     fdproxy [run] [-c file] [-w N] [--log-level level]
     fdproxy check [-c file]          (also: fdproxy -t)
     fdproxy reload [-c file]
     fdproxy -h | -v

DESCRIPTION
     fdproxy routes each request or WebSocket by a sticky key (room, session, tenant, client
     address) to one worker process and one backend server, and hands live sockets between
     processes with SCM_RIGHTS, so a reload, a drain or a rebalance moves established
     connections instead of dropping them. It runs in the foreground: a supervisor, an
     acceptor and N workers; put it under systemd (deploy/fdproxy.service) or any supervisor.

OPTIONS
     -c, --config file    configuration file (default: ./proxy.yaml)
     -w, --workers N      number of worker processes (overrides "workers:")
     --log-level level    debug | info | warn | error (overrides "log_level:")
     -t                   test the configuration and exit (same as "check")
     -h, --help           print this help;   -v, --version   print the version

COMMANDS
     run      start the proxy (default). Prints one JSON line {"event":"ready",...} with the
              bound addresses and pids once it serves.
     check    validate the file: every mistake at once, as file:line:col, key and suggestion.
     reload   ask the running proxy to reload, through its admin address (POST /reload).

SIGNALS (to the supervisor pid, given in the ready line)
     SIGHUP   reload: validate the file (on error keep running and say why), start new workers,
              migrate every live connection to them, retire the old ones.
     SIGTERM  graceful stop: stop accepting, finish requests, close WebSockets with 1001 after
              limits.drain_timeout.
     SIGINT   fast stop.

ADMIN ENDPOINT ("admin:" address, loopback by default)
     GET  /  dashboard   /status  JSON   /metrics  Prometheus   /healthz
     POST /reload   /drain?slot=N   /undrain?slot=N   /move?key=K&slot=N

FILES
     proxy.yaml           listen, workers, admin, limits, backends, routes (see the README)

LOGS
     JSON lines on stdout: one "access" line per request or connection at completion, one
     line per lifecycle event.

EXIT STATUS
     0 ok, 1 invalid configuration, 2 usage, 3 could not start, 4 reload refused.

EXAMPLES
     npx fdproxy check -c proxy.yaml && npx fdproxy -c proxy.yaml
     kill -HUP <pid>      or    npx fdproxy reload -c proxy.yaml
     curl -s 127.0.0.1:9090/metrics
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
      else if (v === '-t') a.cmd = 'check';
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
  const http = require('node:http') as typeof Http;
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
  const { assertSupported } = require('../fdpass') as Fdpass;
  const { Supervisor } = require('./supervisor') as SupervisorModule;
  const { startAdmin } = require('./admin') as Admin;
  try { assertSupported(); } catch (e) { process.stderr.write(`${(e as Error).message}\n`); process.exit(3); }
  configOrExit(a);
  // Children inherit it: a --log-level on the command line beats log_level: in every process.
  if (a.logLevel) process.env.FDPROXY_LOG_LEVEL_CLI = a.logLevel;
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
