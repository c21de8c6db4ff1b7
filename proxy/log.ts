// Logs: JSON lines on stdout, one per connection/request at completion (event "access") and one
// per lifecycle event. Level: --log-level (wins, passed to children as FDPROXY_LOG_LEVEL_CLI),
// else log_level: from the config, else info.
//
// access line fields (same names for HTTP and WebSocket, so one query covers both):
//   time level proc event:"access" kind(http|ws) client route key worker backend status
//   bytes_in bytes_out duration_ms, plus method url (HTTP) or end (WebSocket: who closed).
const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 } as const;
export type Level = keyof typeof LEVELS;

const isLevel = (v: unknown): v is Level => typeof v === 'string' && v in LEVELS;

export class Log {
  private lv: Level = isLevel(process.env.FDPROXY_LOG_LEVEL_CLI) ? process.env.FDPROXY_LOG_LEVEL_CLI
    : isLevel(process.env.FDPROXY_LOG_LEVEL) ? process.env.FDPROXY_LOG_LEVEL : 'info';
  constructor(public proc: string) {}

  /** The config's log_level; a --log-level given on the command line stays in force. */
  get level(): Level { return this.lv; }
  set level(l: Level) {
    const cli = process.env.FDPROXY_LOG_LEVEL_CLI;
    this.lv = isLevel(cli) ? cli : isLevel(l) ? l : 'info';
  }

  enabled(level: Level): boolean { return LEVELS[level] >= LEVELS[this.lv]; }

  private write(level: Level, event: string, fields?: Record<string, unknown>): void {
    if (LEVELS[level] < LEVELS[this.lv]) return;
    process.stdout.write(JSON.stringify({ time: new Date().toISOString(), level, proc: this.proc, event, ...fields }) + '\n');
  }
  debug(e: string, f?: Record<string, unknown>): void { this.write('debug', e, f); }
  info(e: string, f?: Record<string, unknown>): void { this.write('info', e, f); }
  warn(e: string, f?: Record<string, unknown>): void { this.write('warn', e, f); }
  error(e: string, f?: Record<string, unknown>): void { this.write('error', e, f); }
  /** One line per finished request or connection (info level), fields normalised (see top). */
  access(f: Record<string, unknown>): void {
    if (LEVELS.info < LEVELS[this.lv]) return;
    const { server, ms, bytesIn, bytesOut, kind, client, route, key, worker, status, ...rest } = f;
    this.write('info', 'access', {
      kind, client, route: route === '' ? null : route ?? null, key: key ?? null, worker, backend: server ?? null, status: status ?? null,
      bytes_in: bytesIn ?? 0, bytes_out: bytesOut ?? 0, duration_ms: typeof ms === 'number' ? ms : 0, ...rest,
    });
  }
}
