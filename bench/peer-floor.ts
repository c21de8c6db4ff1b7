// Peer "node floor": the least a Node proxy can do per connection. Not a product: a measuring
// stick for what the targets against nginx mean in Node. Two processes share one listening socket
// (as nginx's two workers do) and serve each connection on libuv's handles directly (tcp_wrap, no
// net.Socket, no streams, nothing per connection but the handles and two closures):
//   WebSocket (/ws/{room}): read the head, connect to the room's server (FNV-1a, as every
//     subject), write the head, copy bytes both ways, FIN after FIN, close.
//   HTTP: read a head, take a keep-alive backend connection from the pool (round robin), write
//     the head (without `Connection: close`), copy the response back until its Content-Length is
//     through; the connection goes back to the pool and the client is closed if it asked.
// No routing table, no config, no validation but finding a head's end, no timeouts, no
// back-pressure, no handoff, no metrics. Whatever this cannot reach, no Node design that touches
// each connection in user space can. Usage: node peer-floor.js P1,P2
import { spawn } from 'node:child_process';
import { nodeBinding, streamBase } from '../fdpass';
import { makePicker } from './key';

interface H {
  fd: number;
  onread: (ab?: ArrayBuffer) => void;
  onconnection?: (err: number, h: H) => void;
  readStart(): number; readStop(): number;
  writeBuffer(req: unknown, b: Buffer): number;
  shutdown(req: unknown): number;
  close(): void;
  open(fd: number): number;
  bind(ip: string, port: number): number;
  listen(backlog: number): number;
  connect(req: unknown, ip: string, port: number): number;
  setNoDelay(on: boolean): number;
  getsockname(out: { port?: number }): number;
}

const tcp = nodeBinding('tcp_wrap');
const sb = streamBase();
if (!tcp || !sb) throw new Error('this Node does not expose tcp_wrap / stream_wrap');
const TCP = tcp.TCP as new (t: number) => H;
const { SOCKET, SERVER } = tcp.constants as { SOCKET: number; SERVER: number };
const st = sb.state, kN = sb.kNread, kO = sb.kOffset;
const noop = () => {};
const CRLF2 = Buffer.from('\r\n\r\n');

function write(h: H, b: Buffer): void {
  const req = new sb!.WriteWrap();
  req.handle = h; req.oncomplete = noop; req.async = false; req.buffer = b;
  h.writeBuffer(req, b);
}
function shutdownThen(h: H, then: () => void): void {
  const req = new sb!.ShutdownWrap();
  req.handle = h; req.oncomplete = then;
  if (h.shutdown(req) !== 0) then();
}
function connect(port: number, done: (h: H | null) => void): void {
  const h = new TCP(SOCKET);
  const req = new tcp.TCPConnectWrap();
  req.oncomplete = (status: number) => {
    if (status !== 0) { h.close(); done(null); return; }
    h.setNoDelay(true); done(h);
  };
  if (h.connect(req, '127.0.0.1', port) !== 0) { h.close(); done(null); }
}
/** Bytes of one read, or null at EOF / error. */
function chunk(ab?: ArrayBuffer): Buffer | null | undefined {
  const n = st[kN];
  if (n < 0 || ab === undefined) return null;
  return n > 0 ? Buffer.from(ab, st[kO], n) : undefined;
}

function worker(ports: number[]): void {
  const pick = makePicker(ports.length);
  const pool: H[][] = ports.map(() => []);
  // The backend connection currently serving a client's request → where its response goes.
  const serving = new Map<H, (b: Buffer | null) => void>();

  const srv = new TCP(SERVER);
  if (srv.open(3) !== 0) throw new Error('no listening socket on fd 3');
  srv.setNoDelay(true);                     // inherited by accepted sockets
  if (srv.listen(4096) !== 0) throw new Error('listen failed');
  srv.onconnection = (err, c) => { if (err === 0 && c) serve(c); };
  process.stdout.write('listening\n');

  function serve(c: H): void {
    let acc: Buffer | null = null;
    c.onread = (ab) => {
      const d = chunk(ab);
      if (d === null) { c.readStop(); c.close(); return; }
      if (d === undefined) return;
      acc = acc ? Buffer.concat([acc, d]) : d;
      const end = acc.indexOf(CRLF2);
      if (end < 0) return;
      const head = acc; acc = null;
      if (head.toString('latin1', 0, 8) === 'GET /ws/') return tunnel(c, head);
      exchange(c, head, end + 4);
    };
    c.readStart();
  }

  function tunnel(c: H, head: Buffer): void {
    c.readStop();
    const url = head.toString('latin1', 4, head.indexOf(32, 4));
    connect(ports[pick(url)], (b) => {
      if (b === null) { c.close(); return; }
      let ends = 0;
      const closeBoth = () => { if (++ends === 2) { c.close(); b.close(); } };
      const pipe = (from: H, to: H) => {
        from.onread = (ab) => {
          const d = chunk(ab);
          if (d === null) { from.readStop(); shutdownThen(to, closeBoth); } else if (d) write(to, d);
        };
        from.readStart();
      };
      write(b, head);
      pipe(b, c); pipe(c, b);
    });
  }

  function exchange(c: H, head: Buffer, headLen: number): void {
    c.readStop();
    const text = head.toString('latin1', 0, headLen);
    const close = /\r\nconnection:[ \t]*close\r\n/i.test(text);
    const fwd = close ? Buffer.from(text.replace(/\r\nconnection:[ \t]*close\r\n/i, '\r\n'), 'latin1') : head;
    const i = pick(undefined);
    const go = (b: H) => {
      let left = -1;                    // body bytes still owed; -1 until the response head is read
      let rh: Buffer | null = null;
      serving.set(b, (d) => {
        if (d === null) { serving.delete(b); b.close(); c.close(); return; }
        if (left < 0) {
          rh = rh ? Buffer.concat([rh, d]) : d;
          const e = rh.indexOf(CRLF2);
          if (e < 0) return;
          let t = rh.toString('latin1', 0, e + 2);
          const m = /\r\ncontent-length:[ \t]*(\d+)/i.exec(t);
          left = (m ? Number(m[1]) : 0) - (rh.length - e - 4);
          // The client asked to close: the response says so (the backend's says keep-alive).
          if (close) {
            t = t.replace(/\r\n(connection|keep-alive):[^\r]*/gi, '') + 'Connection: close\r\n\r\n';
            write(c, Buffer.concat([Buffer.from(t, 'latin1'), rh.subarray(e + 4)]));
          } else write(c, rh);
          rh = null;
        } else { write(c, d); left -= d.length; }
        if (left > 0) return;
        serving.delete(b); pool[i].push(b);
        if (close) shutdownThen(c, () => c.close());
        else serve(c);
      });
      write(b, fwd);
    };
    const idle = pool[i].pop();
    if (idle) return go(idle);
    connect(ports[i], (b) => {
      if (b === null) { c.close(); return; }
      b.onread = (ab) => {
        const d = chunk(ab);
        const to = serving.get(b);
        if (d === null) { b.readStop(); if (to) to(null); else { const k = pool[i].indexOf(b); if (k >= 0) pool[i].splice(k, 1); b.close(); } return; }
        if (d && to) to(d);
      };
      b.readStart();
      go(b);
    });
  }
}

function main(): void {
  if (process.env.FLOOR_WORKER) return worker(JSON.parse(process.env.FLOOR_WORKER) as number[]);
  const ports = (process.argv[2] ?? '').split(',').map(Number).filter(Boolean);
  const s = new TCP(SERVER);
  if (s.bind('127.0.0.1', 0) !== 0) throw new Error('bind failed');
  const out: { port?: number } = {};
  s.getsockname(out);
  const kids = [0, 1].map(() => spawn(process.execPath, [__filename], {
    env: { ...process.env, FLOOR_WORKER: JSON.stringify(ports) }, stdio: ['ignore', 'pipe', 'inherit', s.fd],
  }));
  // The workers listen; this process holds the socket and says ready once both do.
  let listening = 0;
  for (const k of kids) {
    k.stdout!.once('data', () => {
      if (++listening === kids.length) process.stdout.write(JSON.stringify({ event: 'ready', port: out.port, pid: process.pid }) + '\n');
    });
    k.on('exit', (code) => { if (!stopping) { process.stderr.write(`floor worker exited (${code})\n`); stop(); } });
  }
  let stopping = false;
  function stop(): void { stopping = true; for (const k of kids) k.kill('SIGTERM'); process.exit(0); }
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
