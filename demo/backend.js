#!/usr/bin/env node
// Demo backend: a chat room page at / and a WebSocket chat at /chat/<room> that broadcasts to
// everyone in the room *on this backend*. With fdproxy in front, a room sticks to one backend, so
// no pub/sub is needed between backends. Every second it tells each client which backend serves
// it and which fdproxy worker process holds its connection (found in /proc: the worker owning the
// other end of our socket), so a drain, a reload or a rebalance shows the worker change live
// while the WebSocket stays open.
'use strict';
const http = require('node:http');
const fs = require('node:fs');
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 9001);
const name = process.argv[3] || `backend-${port}`;
const admin = process.env.DEMO_ADMIN || '127.0.0.1:9090';

const page = fs.readFileSync(require('node:path').join(__dirname, 'chat.html'), 'utf8');
const server = http.createServer((req, res) => {
  if (req.url === '/healthz') { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('ok\n'); return; }
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'x-backend': name });
  res.end(page.replaceAll('{{BACKEND}}', `${name} (:${port})`).replaceAll('{{ADMIN}}', admin));
});

/** pid → { slot, gen } of the proxy's workers, from the admin endpoint. */
let workers = new Map();
function refreshWorkers() {
  http.get(`http://${admin}/status`, res => {
    let s = ''; res.on('data', d => s += d);
    res.on('end', () => { try { const st = JSON.parse(s); workers = new Map([...st.workers, ...st.retiring].map(w => [w.pid, { slot: w.slot, gen: w.gen }])); } catch { /* not yet */ } });
  }).on('error', () => {});
}
setInterval(refreshWorkers, 1000).unref();
refreshWorkers();

const hex = p => p.toString(16).toUpperCase().padStart(4, '0');
/** Which proxy worker holds the other end of the connection from `peerPort` to us. */
function workerOf(peerPort) {
  let inode = null;
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = ''; try { text = fs.readFileSync(f, 'utf8'); } catch { continue; }
    for (const line of text.split('\n')) {
      const c = line.trim().split(/\s+/);
      if (c.length > 9 && c[1].endsWith(`:${hex(peerPort)}`) && c[2].endsWith(`:${hex(port)}`)) { inode = c[9]; break; }
    }
    if (inode) break;
  }
  if (!inode) return null;
  for (const [pid, w] of workers) {
    let fds = []; try { fds = fs.readdirSync(`/proc/${pid}/fd`); } catch { continue; }
    for (const fd of fds) { try { if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === `socket:[${inode}]`) return { pid, ...w }; } catch { /* gone */ } }
  }
  return null;
}

const rooms = new Map();   // room → Set<ws>
const wss = new WebSocketServer({ noServer: true });
server.on('upgrade', (req, socket, head) => {
  const m = /^\/chat\/([^/?]+)/.exec(req.url || '');
  if (!m) { socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n'); return; }
  wss.handleUpgrade(req, socket, head, ws => {
    const room = decodeURIComponent(m[1]);
    const peers = rooms.get(room) || rooms.set(room, new Set()).get(room);
    peers.add(ws);
    const peerPort = req.socket.remotePort;
    const who = () => ({ t: 'who', backend: name, port, pid: process.pid, room, people: peers.size, worker: workerOf(peerPort),
      client: req.headers['x-forwarded-for'] || null });
    const tell = () => { if (ws.readyState === 1) ws.send(JSON.stringify(who())); };
    setTimeout(tell, 300);
    const timer = setInterval(tell, 1000);
    for (const p of peers) if (p !== ws && p.readyState === 1) p.send(JSON.stringify({ t: 'joined', people: peers.size }));
    ws.on('message', data => {
      const text = data.toString().slice(0, 500);
      if (text === 'whoami') { ws.send(JSON.stringify(who())); return; }
      for (const p of peers) if (p.readyState === 1) p.send(JSON.stringify({ t: 'msg', text, backend: name }));
    });
    ws.on('close', () => { clearInterval(timer); peers.delete(ws); if (!peers.size) rooms.delete(room); });
  });
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ event: 'ready', name, port, pid: process.pid }) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
