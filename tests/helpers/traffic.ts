// Continuous numbered echo traffic over WebSockets: every connection keeps one message in flight
// ("<conn>:<seq>") and checks each echo is exactly the next one expected.
import WebSocket from 'ws';

export interface Flow { ws: WebSocket; id: number; key: string; sent: number; got: number; errors: string[]; closed: boolean; closeCode?: number }

export class Traffic {
  readonly flows: Flow[] = [];
  running = true;

  async open(port: number, keys: string[], perKey: number, path = (k: string) => `/chat/${k}`): Promise<void> {
    const jobs: Promise<void>[] = [];
    let id = 0;
    for (const key of keys) for (let i = 0; i < perKey; i++) {
      const f: Flow = { ws: null as unknown as WebSocket, id: id++, key, sent: 0, got: 0, errors: [], closed: false };
      this.flows.push(f);
      jobs.push(new Promise((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}${path(key)}`);
        f.ws = ws;
        ws.once('open', () => { this.pump(f); resolve(); });
        ws.once('error', reject);
        ws.on('message', d => {
          const [cid, seq] = d.toString().split(':').map(Number);
          if (cid !== f.id || seq !== f.got + 1) f.errors.push(`expected ${f.id}:${f.got + 1}, got ${d}`);
          f.got = seq;
          if (this.running) this.pump(f);
        });
        ws.on('close', code => { f.closed = true; f.closeCode = code; });
      }));
    }
    await Promise.all(jobs);
  }

  private pump(f: Flow): void {
    if (f.ws.readyState !== WebSocket.OPEN) return;
    f.sent++;
    f.ws.send(`${f.id}:${f.sent}`);
  }

  /** Stop sending; resolves when every flow has its last echo (or `ms` passed). */
  async stop(ms = 5000): Promise<void> {
    this.running = false;
    const end = Date.now() + ms;
    while (Date.now() < end && this.flows.some(f => !f.closed && f.got < f.sent)) await new Promise(r => setTimeout(r, 20));
  }

  summary(): { flows: number; closed: number; lost: number; errors: number; messages: number } {
    let closed = 0, lost = 0, errors = 0, messages = 0;
    for (const f of this.flows) { if (f.closed) closed++; lost += f.sent - f.got; errors += f.errors.length; messages += f.got; }
    return { flows: this.flows.length, closed, lost, errors, messages };
  }

  closeAll(): void { for (const f of this.flows) f.ws.close(); }
}
