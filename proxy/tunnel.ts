// tunnel: bytes both ways, untouched, with back-pressure and half-close; a tunnel can stop
// (for migration), resume (rollback), or be closed by the proxy at a frame boundary.
import type { Endpoint } from './endpoint';
import { closeFrame } from './errors';
import { FrameTracker, type FrameState } from './wsframes';

export interface TunnelInfo {
  route: string;
  key: string | null;
  server: string;        // server id
  clientIp: string;
  opened: number;        // epoch ms
  bytesIn: number;       // client → backend
  bytesOut: number;      // backend → client
}

export type TunnelEnd = 'client' | 'backend' | 'error' | 'proxy';

export class Tunnel {
  readonly s2c: FrameTracker;
  private stopped = false;
  private closed = false;
  private clientEnded = false;
  private backendEnded = false;
  private flushWaiter: (() => void) | null = null;

  constructor(readonly client: Endpoint, readonly backend: Endpoint, readonly info: TunnelInfo,
              private readonly onEnd: (t: Tunnel, why: TunnelEnd) => void, frames?: FrameState) {
    this.s2c = new FrameTracker(frames);
    client.setEvents({ data: this.onClientData, end: this.onClientEnd, error: this.onClientError, drain: this.onClientDrain });
    backend.setEvents({ data: this.onBackendData, end: this.onBackendEnd, error: this.onBackendError, drain: this.onBackendDrain });
  }

  private readonly onClientData = (d: Buffer) => {
    this.info.bytesIn += d.length;
    if (!this.backend.write(d)) this.client.pause();
  };
  private readonly onBackendData = (d: Buffer) => {
    this.info.bytesOut += d.length;
    this.s2c.feed(d);
    if (!this.client.write(d)) this.backend.pause();
  };
  // A write queue emptied: the side feeding it may read again (unless stopped for a migration).
  private readonly onClientDrain = () => { if (!this.stopped) this.backend.resume(); else this.flushWaiter?.(); };
  private readonly onBackendDrain = () => { if (!this.stopped) this.client.resume(); else this.flushWaiter?.(); };
  private readonly onClientEnd = () => { this.clientEnded = true; this.backend.end(); this.maybeDone('client'); };
  private readonly onBackendEnd = () => {
    this.backendEnded = true;
    // A backend that stops without a close frame went away (crash, restart): say so with 1011.
    if (!this.s2c.sawClose && this.s2c.atBoundary && !this.clientEnded) this.client.end(closeFrame(1011, 'backend went away'));
    else this.client.end();
    this.maybeDone('backend');
  };
  private readonly onClientError = () => this.finish('error');
  // A backend reset (ECONNRESET) is a backend gone: the client gets close 1011, not a bare RST.
  private readonly onBackendError = () => {
    if (!this.closed && !this.client.closed && !this.backendEnded && this.s2c.atBoundary) {
      this.closed = true;
      this.detach();
      this.client.end(closeFrame(1011, 'backend went away'));   // lingers for the client's answer, then closes
      this.backend.close();
      this.onEnd(this, 'backend');
      return;
    }
    this.finish('backend');
  };

  /** Both sides sent FIN and got ours: each endpoint closes once its FIN is out. */
  private maybeDone(why: TunnelEnd): void {
    if (!this.clientEnded || !this.backendEnded || this.closed) return;
    this.closed = true;
    this.detach();
    this.onEnd(this, why);
  }

  /** Close both sides now. */
  private finish(why: TunnelEnd): void {
    if (this.closed) return;
    this.closed = true;
    this.detach();
    this.client.close();
    this.backend.close();
    this.onEnd(this, why);
  }

  private detach(): void {
    this.client.setEvents(null);
    this.backend.setEvents(null);
  }

  get isClosed(): boolean { return this.closed; }
  get halfClosed(): boolean { return this.clientEnded || this.backendEnded; }

  /** Stop moving bytes (migration phase 1): true at once when both write queues are empty (the
   *  usual case: the caller hands over in the same turn), else a promise of whether they emptied. */
  stop(timeoutMs: number): true | Promise<boolean> {
    this.stopped = true;
    this.client.pause();
    this.backend.pause();
    const flushed = () => this.client.queued === 0 && this.backend.queued === 0;
    if (flushed()) return true;
    return new Promise(resolve => {
      const t = setTimeout(() => { this.flushWaiter = null; resolve(flushed()); }, timeoutMs);
      this.flushWaiter = () => { if (flushed()) { clearTimeout(t); this.flushWaiter = null; resolve(true); } };
    });
  }

  /** Give up the endpoints after a successful handoff: nobody listens, no close frames, no FIN. */
  relinquish(): void {
    this.closed = true;
    this.detach();
  }

  /** Undo stop() (migration rolled back). */
  resume(): void {
    this.stopped = false;
    if (this.closed) return;
    this.client.resume();
    this.backend.resume();
  }

  /** Proxy-initiated close (stop/drain): a close frame to the client at a frame boundary. */
  closeWith(code: number, reason: string): void {
    if (this.closed) return;
    if (this.s2c.atBoundary) {
      this.client.write(closeFrame(code, reason));
      this.backend.pause();
      // The client answers with its own close frame, which reaches the backend through the tunnel.
      setTimeout(() => this.finish('proxy'), 2000).unref();
    } else this.finish('proxy');
  }
}
