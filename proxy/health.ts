// Active health checks, run by the supervisor (once, not once per worker): GET <path> on each
// server of a backend with `health:`; 2xx/3xx is up. Changes are broadcast to the workers; a
// worker that starts later gets the current down-set (`down()`) with its config.
import * as http from 'node:http';
import type { Config, Server } from '../conf/types';

export class HealthChecker {
  private timers: NodeJS.Timeout[] = [];
  readonly state = new Map<string, boolean>();

  constructor(private readonly onChange: (server: string, up: boolean) => void) {}

  start(config: Config): void {
    this.stop();
    // A server no longer checked is up again, as one never checked is (workers forget it too).
    const checked = this.checked(config);
    for (const [id, up] of this.state) if (!checked.has(id)) { this.state.delete(id); if (!up) this.onChange(id, true); }
    for (const b of Object.values(config.backends)) {
      if (!b.health) continue;
      const h = b.health;
      for (const s of b.servers) {
        const check = () => this.check(s, h.path, h.timeout);
        check();
        this.timers.push(setInterval(check, h.interval).unref());
      }
    }
  }

  /** The servers `config` checks that are down now: what a new worker starts with. */
  down(config: Config): string[] {
    const checked = this.checked(config);
    return [...this.state].filter(([id, up]) => !up && checked.has(id)).map(([id]) => id);
  }

  private checked(config: Config): Set<string> {
    const ids = new Set<string>();
    for (const b of Object.values(config.backends)) if (b.health) for (const s of b.servers) ids.add(s.id);
    return ids;
  }

  stop(): void { for (const t of this.timers) clearInterval(t); this.timers = []; }

  private check(s: Server, path: string, timeout: number): void {
    const a = s.address;
    const opts: http.RequestOptions = a.kind === 'unix' ? { socketPath: a.path, path, timeout } : { host: a.host || '127.0.0.1', port: a.port, path, timeout };
    opts.agent = false;
    opts.headers = { 'user-agent': 'fdproxy-health' };
    const req = http.get(opts, res => {
      res.resume();
      this.set(s.id, (res.statusCode ?? 500) < 400);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => this.set(s.id, false));
  }

  private set(id: string, up: boolean): void {
    if (this.state.get(id) === up) return;
    const first = !this.state.has(id);
    this.state.set(id, up);
    if (!first || !up) this.onChange(id, up);
  }
}
