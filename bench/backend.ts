// Benchmark backend: one `ws` echo server + HTTP server on one port (port 0), the same for every
// subject. Prints one JSON ready line {"event":"ready","port":N,"pid":P} on stdout.
// HTTP answers every path with a fixed body (the load generators check it) and `/_stats` with
// the count of open WebSockets, so the runner can wait until a subject's connections are gone.
import * as http from 'node:http';
import { WebSocketServer } from 'ws';

export const HTTP_BODY = 'hello from the fdproxy bench backend\n';

function main(): void {
  const name = process.argv[2] ?? 'backend';
  const body = Buffer.from(HTTP_BODY);
  const server = http.createServer((req, res) => {
    if (req.url === '/_stats') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ ws: wss.clients.size, name }));
      return;
    }
    // drain any request body so keep-alive stays usable
    req.resume();
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length, 'x-backend': name });
    res.end(body);
  });
  // proxies keep pooled connections to us: a long keep-alive avoids races where the pool reuses a
  // socket we are closing (which would show up as a 502 that is not the proxy's fault)
  server.keepAliveTimeout = 120_000;
  server.headersTimeout = 130_000;
  server.maxRequestsPerSocket = 0;
  const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 1 << 20 });
  wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data as Buffer, { binary: isBinary }));
    ws.on('error', () => { /* clients vanish at the end of a run: not our concern */ });
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, () => {
    const addr = server.address() as { port: number };
    process.stdout.write(JSON.stringify({ event: 'ready', port: addr.port, pid: process.pid, name }) + '\n');
  });
  process.on('SIGTERM', () => process.exit(0));
}

if (require.main === module) main();
