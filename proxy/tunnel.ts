// tunnel: bytes both ways, untouched, with back-pressure and half-close; a tunnel can stop
// (for migration), resume (rollback), or be closed by the proxy at a frame boundary.
import type * as net from 'node:net';
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

  constructor(readonly client: net.Socket, readonly backend: net.Socket, readonly info: TunnelInfo,
              private readonly onEnd: (t: Tunnel, why: TunnelEnd) => void, frames?: FrameState) {
    this.s2c = new FrameTracker(frames);
    client.on('data', this.onClientData);
    backend.on('data', this.onBackendData);
    client.on('drain', this.resumeBackend);
    backend.on('drain', this.resumeClient);
    client.on('end', this.onClientEnd);
    backend.on('end', this.onBackendEnd);
    client.on('error', this.onError);
    backend.on('error', this.onBackendError);
    client.on('close', this.onClientClose);
    backend.on('close', this.onBackendClose);
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
  private readonly resumeClient = () => { if (!this.stopped) this.client.resume(); };
  private readonly resumeBackend = () => { if (!this.stopped) this.backend.resume(); };
  private readonly onClientEnd = () => { this.clientEnded = true; this.backend.end(); this.maybeDone('client'); };
  private readonly onBackendEnd = () => {
    this.backendEnded = true;
    // A backend that stops without a close frame went away (crash, restart): say so with 1011.
    if (!this.s2c.sawClose && this.s2c.atBoundary && !this.clientEnded) this.client.end(closeFrame(1011, 'backend went away'));
    else this.client.end();
    this.maybeDone('backend');
  };
  private readonly onError = () => this.finish('error');
  // A backend reset (ECONNRESET) is a backend gone: the client gets close 1011, not a bare RST.
  private readonly onBackendError = () => this.onBackendClose();
  private readonly onClientClose = () => this.finish('client');
  private readonly onBackendClose = () => {
    // Backend gone while the client still talks: tell the client with 1011 when we can.
    if (!this.client.destroyed && !this.backendEnded && this.s2c.atBoundary) {
      this.client.end(closeFrame(1011, 'backend went away'));
      this.closed = true;
      this.detach();
      this.onEnd(this, 'backend');
      return;
    }
    this.finish('backend');
  };

  private maybeDone(why: TunnelEnd): void {
    if (this.clientEnded && this.backendEnded) this.finish(why);
  }

  private finish(why: TunnelEnd): void {
    if (this.closed) return;
    this.closed = true;
    this.detach();
    this.client.destroy();
    this.backend.destroy();
    this.onEnd(this, why);
  }

  private detach(): void {
    const c = this.client, b = this.backend;
    c.removeListener('data', this.onClientData); b.removeListener('data', this.onBackendData);
    c.removeListener('drain', this.resumeBackend); b.removeListener('drain', this.resumeClient);
    c.removeListener('end', this.onClientEnd); b.removeListener('end', this.onBackendEnd);
    c.removeListener('close', this.onClientClose); b.removeListener('close', this.onBackendClose);
    // Keep a no-op error listener: a late EPIPE must not crash the worker.
    c.removeListener('error', this.onError); b.removeListener('error', this.onBackendError);
    c.on('error', noop); b.on('error', noop);
  }

  get isClosed(): boolean { return this.closed; }
  get halfClosed(): boolean { return this.clientEnded || this.backendEnded; }

  /** Stop moving bytes (migration phase 1). Resolves when both write queues are empty. */
  stop(timeoutMs: number): Promise<boolean> {
    this.stopped = true;
    this.client.pause();
    this.backend.pause();
    const flushed = () => this.client.writableLength === 0 && this.backend.writableLength === 0;
    if (flushed()) return Promise.resolve(true);
    return new Promise(resolve => {
      const t = setTimeout(() => { cleanup(); resolve(flushed()); }, timeoutMs);
      const check = () => { if (flushed()) { cleanup(); resolve(true); } };
      const cleanup = () => { clearTimeout(t); this.client.removeListener('drain', check); this.backend.removeListener('drain', check); };
      this.client.on('drain', check);
      this.backend.on('drain', check);
    });
  }

  /** Give up the sockets after a successful handoff: listeners off, no close frames, no shutdown. */
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

function noop(): void {}
