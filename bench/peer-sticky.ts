// Peer "Node cluster + @socket.io/sticky": the primary accepts, reads the first chunk, picks a
// worker and hands the socket over with child.send({type:'sticky:connection', data}, socket),
// exactly as @socket.io/sticky's setupMaster does; the worker re-injects it into its HTTP server
// (server.emit('connection'); socket.unshift(data)) as setupWorker does. We reimplement those ~20
// lines instead of calling setupMaster because its routing is by socket.io session id or
// least-connection, and the benchmark needs the same room-sticky placement for every subject.
// Each worker proxies with http-proxy (peer-httpproxy). Usage: node peer-sticky.js P1,P2
import cluster from 'node:cluster';
import * as net from 'node:net';
import { fnv1a, roomOf } from './key';
import { createProxyServer } from './peer-httpproxy';

const WORKERS = 2;

function primary(ports: string): void {
  cluster.setupPrimary({ serialization: 'advanced', args: [ports] }); // advanced: Buffers survive IPC
  const workers = Array.from({ length: WORKERS }, () => cluster.fork());
  let online = 0, rr = 0;
  const server = net.createServer((socket) => {
    socket.on('error', () => socket.destroy());
    socket.once('data', (chunk) => {
      socket.pause();
      const line = chunk.subarray(0, Math.max(0, chunk.indexOf('\r\n'))).toString('latin1');
      const room = roomOf(line.split(' ')[1]);
      const w = workers[room ? fnv1a(room) % WORKERS : rr++ % WORKERS];
      w.send({ type: 'sticky:connection', data: chunk }, socket, (err: Error | null) => { if (err) socket.destroy(); });
    });
  });
  const listen = () => server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, () => {
    const port = (server.address() as net.AddressInfo).port;
    process.stdout.write(JSON.stringify({ event: 'ready', port, pid: process.pid, workers: workers.map((w) => w.process.pid) }) + '\n');
  });
  for (const w of workers) w.on('message', (m: any) => { if (m?.type === 'online' && ++online === WORKERS) listen(); });
  process.on('SIGTERM', () => { for (const w of workers) w.process.kill('SIGTERM'); process.exit(0); });
}

function worker(): void {
  const ports = (process.argv[2] ?? '').split(',').map(Number).filter(Boolean);
  const server = createProxyServer(ports);
  process.on('message', (m: any, socket: net.Socket | undefined) => {
    if (m?.type !== 'sticky:connection' || !socket) return;
    server.emit('connection', socket);
    socket.unshift(Buffer.from(m.data));
    socket.resume();
  });
  process.on('SIGTERM', () => process.exit(0));
  process.send!({ type: 'online' });
}

if (require.main === module) { if (cluster.isPrimary) primary(process.argv[2] ?? ''); else worker(); }
