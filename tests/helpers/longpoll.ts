// Keep-alive HTTP clients for the tests: one whole response at a time from a raw socket, and a
// long-polling client that sends its next request on the same connection as soon as an answer
// arrives (as socket.io's polling transport does).
import * as net from 'node:net';

/** Read one whole response (head + content-length body) from a keep-alive socket. */
export function nextResponse(s: net.Socket): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.subarray(0, end).toString('latin1');
      const len = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      if (buf.length < end + 4 + len) return;
      off();
      resolve({ status: Number(head.slice(9, 12)), body: buf.subarray(end + 4, end + 4 + len).toString() });
    };
    const onClose = () => { off(); reject(new Error(`closed; read so far: ${JSON.stringify(buf.toString('latin1'))}`)); };
    const off = () => { s.off('data', onData); s.off('close', onClose); };
    s.on('data', onData); s.on('close', onClose);
  });
}

export function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => { const s = net.connect(port, '127.0.0.1', () => resolve(s)); s.once('error', reject); });
}

/** GET `path(n)` on one keep-alive connection, the next as soon as each answer arrives, until stop(). */
export class LongPoller {
  answers: { status: number; body: string }[] = [];
  errors: string[] = [];
  private running = true;
  private loop: Promise<void> | null = null;
  constructor(readonly sock: net.Socket, private readonly path: (n: number) => string) {}

  start(): this {
    this.loop = (async () => {
      for (let n = 1; this.running; n++) {
        try {
          const r = nextResponse(this.sock);
          this.sock.write(`GET ${this.path(n)} HTTP/1.1\r\nHost: x\r\n\r\n`);
          this.answers.push(await r);
        } catch (e) { this.errors.push(String(e)); return; }
      }
    })();
    return this;
  }

  /** Stop after the poll in flight is answered. */
  async stop(): Promise<void> { this.running = false; await this.loop; }
}
