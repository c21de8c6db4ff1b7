#!/usr/bin/env node
// npm run demo: two demo backends on 127.0.0.1:9001 and :9002 and fdproxy with the shipped
// proxy.yaml (listen 127.0.0.1:8080, admin 127.0.0.1:9090). Ctrl-C stops everything.
// DEMO_PORTS="listen,admin,b1,b2" runs the same on other ports (the test uses it).
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
let config = path.join(root, 'proxy.yaml');
let [listen, admin, p1, p2] = [8080, 9090, 9001, 9002];
if (process.env.DEMO_PORTS) {
  [listen, admin, p1, p2] = process.env.DEMO_PORTS.split(',').map(Number);
  const text = fs.readFileSync(config, 'utf8').replaceAll('127.0.0.1:8080', `127.0.0.1:${listen}`).replaceAll('127.0.0.1:9090', `127.0.0.1:${admin}`)
    .replaceAll('127.0.0.1:9001', `127.0.0.1:${p1}`).replaceAll('127.0.0.1:9002', `127.0.0.1:${p2}`);
  config = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'fdproxy-demo-')), 'proxy.yaml');
  fs.writeFileSync(config, text);
}

const children = [];
let proxy = null;
function start(args, env, label, onLine) {
  const c = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
  children.push(c);
  let buf = '';
  c.stdout.on('data', d => {
    buf += d; let i;
    while ((i = buf.indexOf('\n')) >= 0) { const l = buf.slice(0, i); buf = buf.slice(i + 1); onLine(l); }
  });
  c.on('exit', code => { if (!stopping) { console.error(`demo: ${label} exited (${code}); stopping`); stop(1); } });
  return c;
}

let stopping = false;
function stop(code = 0) {
  if (stopping) return; stopping = true;
  // fdproxy: SIGINT = fast stop (closes WebSockets with 1001 at once); the backends: SIGTERM.
  for (const c of children) if (c.exitCode === null) c.kill(c === proxy ? 'SIGINT' : 'SIGTERM');
  setTimeout(() => { for (const c of children) if (c.exitCode === null) c.kill('SIGKILL'); process.exit(code); }, 5000).unref();
  Promise.all(children.map(c => c.exitCode !== null ? null : new Promise(r => c.once('exit', r)))).then(() => process.exit(code));
}
process.on('SIGINT', () => stop(0));
process.on('SIGTERM', () => stop(0));

const env = { DEMO_ADMIN: `127.0.0.1:${admin}` };
let ready = 0;
const backendReady = l => { if (l.includes('"event":"ready"') && ++ready === 2) startProxy(); };
start([path.join(__dirname, 'backend.js'), String(p1), 'A'], env, 'backend A', backendReady);
start([path.join(__dirname, 'backend.js'), String(p2), 'B'], env, 'backend B', backendReady);

function startProxy() {
  const quiet = process.argv.includes('--quiet');
  proxy = start([path.join(root, 'bin', 'fdproxy.js'), '-c', config], {}, 'fdproxy', l => {
    if (l.includes('"event":"ready"')) {
      const r = JSON.parse(l);
      process.stdout.write(JSON.stringify({ event: 'ready', demo: true, url: `http://127.0.0.1:${listen}/`, dashboard: `http://127.0.0.1:${admin}/`, proxy: r }) + '\n');
      process.stderr.write(`
  fdproxy demo is running (proxy pid ${r.pid}, workers ${r.workers.map(w => w.pid).join(', ')})

    chat:       http://127.0.0.1:${listen}/?room=lobby      (open it in several tabs, try other rooms)
    dashboard:  http://127.0.0.1:${admin}/
    try:        curl -XPOST 'http://127.0.0.1:${admin}/drain?slot=0'    (connections move, stay open)
                kill -HUP ${r.pid}                                  (reload: new workers, same connections)

  Ctrl-C to stop. Access log lines follow.
`);
    } else if (!quiet) process.stdout.write(l + '\n');
  });
}
