// Active health checks, run by the supervisor (once, not once per worker): GET <path> on each
// server of a backend with `health:`; 2xx/3xx is up. Changes are broadcast to the workers.
import * as http from 'node:http';
import type { Config, Server } from '../conf/types';

export class HealthChecker {
  private timers: NodeJS.Timeout[] = [];
  readonly state = new Map<string, boolean>();

  constructor(private readonly onChange: (server: string, up: boolean) => void) {}

  start(config: Config): void {
    this.stop();
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
