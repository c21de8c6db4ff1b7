// Peer "node http-proxy": one Node process with http-proxy in front of the backends,
// WebSocket support on, sticky by room (/ws/{room}); HTTP keyless round-robin with a keep-alive
// pool. Also the proxy logic of each worker of peer-sticky. Usage: node peer-httpproxy.js P1,P2
import * as http from 'node:http';
import { makePicker } from './key';

// http-proxy ships no types; this is the small surface we use
// eslint-disable-next-line @typescript-eslint/no-require-imports
const httpProxy: any = require('http-proxy');

export function createProxyServer(backendPorts: number[]): http.Server {
  const targets = backendPorts.map((p) => `http://127.0.0.1:${p}`);
  const pick = makePicker(targets.length);
  // keep-alive pool for HTTP; upgrades get their own connection (agent false) as in http-proxy's docs
  const web = httpProxy.createProxyServer({ agent: new http.Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 256 }) });
  const ws = httpProxy.createProxyServer({ ws: true, agent: false });
  const onErr = (_e: Error, _req: http.IncomingMessage, res: any) => {
    if (res && typeof res.writeHead === 'function') { if (!res.headersSent) res.writeHead(502); res.end(); }
    else if (res && typeof res.destroy === 'function') res.destroy();
  };
  web.on('error', onErr); ws.on('error', onErr);
  const server = http.createServer((req, res) => web.web(req, res, { target: targets[pick(req.url)] }));
  server.on('upgrade', (req, socket, head) => {
    socket.on('error', () => socket.destroy());
    ws.ws(req, socket, head, { target: targets[pick(req.url)] });
  });
  server.keepAliveTimeout = 75_000;
  server.on('clientError', (_e, s) => s.destroy());
  return server;
}

function main(): void {
  const ports = (process.argv[2] ?? '').split(',').map(Number).filter(Boolean);
  const server = createProxyServer(ports);
  server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, () => {
    const port = (server.address() as { port: number }).port;
    process.stdout.write(JSON.stringify({ event: 'ready', port, pid: process.pid }) + '\n');
  });
  process.on('SIGTERM', () => process.exit(0));
}

if (require.main === module) main();
