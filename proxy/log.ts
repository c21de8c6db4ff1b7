// Logs: JSON lines on stdout, one per connection/request at completion (kind "access") and one
// per lifecycle event. --log-level / log_level filters.
const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 } as const;
export type Level = keyof typeof LEVELS;

export class Log {
  level: Level = (process.env.FDPROXY_LOG_LEVEL as Level) || 'info';
  constructor(readonly proc: string) {}

  private write(level: Level, event: string, fields?: Record<string, unknown>): void {
    if (LEVELS[level] < LEVELS[this.level]) return;
    process.stdout.write(JSON.stringify({ time: new Date().toISOString(), level, proc: this.proc, event, ...fields }) + '\n');
  }
  debug(e: string, f?: Record<string, unknown>): void { this.write('debug', e, f); }
  info(e: string, f?: Record<string, unknown>): void { this.write('info', e, f); }
  warn(e: string, f?: Record<string, unknown>): void { this.write('warn', e, f); }
  error(e: string, f?: Record<string, unknown>): void { this.write('error', e, f); }
  /** One line per finished request or connection (info level). */
  access(f: Record<string, unknown>): void { this.write('info', 'access', f); }
}
