// socket.io v4: 3 backend processes behind fdproxy, 200 clients doing the default polling →
// websocket upgrade. Sticky by client address (examples/socketio.yaml explains why): each client
// uses its own loopback source address (127.0.0.x), like distinct hosts would.
import test from 'ava';
import * as http from 'node:http';
import * as path from 'node:path';
import * as fs from 'node:fs';
import { io as connect, type Socket } from 'socket.io-client';
import { startProxy, type ProxyHandle } from '../helpers/proxy';
import { ROOT, startReady, type Started } from '../helpers/procs';

let backends: Started<{ port: number; name: string }>[] = [];
let px: ProxyHandle;
const clients: Socket[] = [];
test.after.always(async () => {
  for (const c of clients) c.disconnect();
  await px?.stop();
  for (const b of backends) await b.stop();
});

test('200 socket.io clients, polling then websocket upgrade, over 3 backends: every client stays on its server', async t => {
  backends = await Promise.all(['io1', 'io2', 'io3'].map(n => startReady<{ port: number; name: string }>([path.join(ROOT, 'dist', 'tests', 'fixtures', 'sio-backend.js'), n])));
  // The shipped example, pointed at this test's backends and ports.
  let yaml = fs.readFileSync(path.join(ROOT, 'examples', 'socketio.yaml'), 'utf8')
    .replace('127.0.0.1:8080', '127.0.0.1:0').replace('127.0.0.1:9090', '127.0.0.1:0').replace(/log_level:.*\n/, '');
  ['3001', '3002', '3003'].forEach((p, i) => { yaml = yaml.replace(`127.0.0.1:${p}`, `127.0.0.1:${backends[i].ready.port}`); });
  px = await startProxy(yaml + 'log_level: warn\n');
  const errors: string[] = [];
  const results = await Promise.all(Array.from({ length: 200 }, (_, i) => new Promise<{ backend: string; transport: string }>((resolve, reject) => {
    const agent = new http.Agent({ keepAlive: true, localAddress: `127.0.0.${2 + i}` } as http.AgentOptions);
    const c = connect(`http://127.0.0.1:${px.port}`, { agent: agent as unknown as string, transports: ['polling', 'websocket'], reconnection: false, timeout: 20000 });
    clients.push(c);
    c.on('connect_error', e => { errors.push(e.message); reject(e); });
    c.on('connect', () => {
      const done = () => c.emit('echo', `hi ${i}`, (r: { msg: string; backend: string; transport: string }) => {
        if (r.msg !== `hi ${i}`) reject(new Error('bad echo'));
        resolve({ backend: r.backend, transport: r.transport });
      });
      if (c.io.engine.transport.name === 'websocket') done();
      else c.io.engine.once('upgrade', done);
    });
  })));
  t.deepEqual(errors, []);
  t.is(results.length, 200);
  t.true(results.every(r => r.transport === 'websocket'), 'every client upgraded to websocket');
  t.is(new Set(results.map(r => r.backend)).size, 3, 'clients spread over the 3 servers');
  // A second exchange over the websocket, then the servers' own view: no "Session ID unknown".
  const again = await Promise.all(clients.map(c => new Promise<string>(r => c.emit('echo', 'again', (x: { backend: string }) => r(x.backend)))));
  t.deepEqual(again, results.map(r => r.backend));
  const stats = await Promise.all(backends.map(b => new Promise<{ handshakes: number; upgrades: number; unknownSid: number }>(r => {
    const c = clients[results.findIndex(x => x.backend === b.ready.name)];
    c.emit('stats', r);
  })));
  t.is(stats.reduce((a, s) => a + s.handshakes, 0), 200);
  t.is(stats.reduce((a, s) => a + s.upgrades, 0), 200);
  t.is(stats.reduce((a, s) => a + s.unknownSid, 0), 0);
});
