// Receiver for bench/fdpass.ts. argv[2] = 'fdpass' | 'node'. Keeps received sockets until told
// to drop them (so no client sees EOF during a timed phase); reports JSON lines on stdout.
import * as net from 'node:net';
import { channelFromStdio, socketFromFd, type Handoff } from '../fdpass';

const mode = process.argv[2];
const out = (o: object): void => { process.stdout.write(JSON.stringify(o) + '\n'); };
let held: net.Socket[] = [];
let lat: number[] = [];
let expect = 0;
const now = (): number => Number(process.hrtime.bigint() / 1000n); // µs, CLOCK_MONOTONIC: same clock as the parent

function control(m: { cmd: string; n?: number }): void {
  if (m.cmd === 'mark') { expect = m.n!; lat = []; out({ ev: 'mark', cpu: process.cpuUsage() }); }
  else if (m.cmd === 'drop') { for (const s of held) s.destroy(); held = []; out({ ev: 'dropped' }); }
}
function got(s: net.Socket, t0: number): void {
  lat.push(now() - t0);
  held.push(s);
  if (lat.length === expect) {
    const cpu = process.cpuUsage();
    out({ ev: 'done', cpu, lat }); // percentiles in the parent (paced rounds are pooled)
  }
}

if (mode === 'fdpass') {
  const ch = channelFromStdio();
  ch.on('handoff', (h: Handoff) => {
    const m = h.meta as { cmd?: string; n?: number; t0?: number };
    if (m.cmd) return control(m as { cmd: string });
    const s = socketFromFd(h.fds[0]);
    s.on('error', () => {});
    // Same end point as Node's 'message': a usable net.Socket. The head bytes are already in hand
    // (h.bytes; the proxy's worker uses them from there); putting them back into the socket is
    // work Node's side is not asked to do (it does not carry them), so it comes after the stamp
    // (~16 µs p50 on a cold cache here; still counted in receiver CPU).
    got(s, m.t0!);
    if (h.bytes.length) s.unshift(h.bytes);
  });
} else {
  process.on('message', (m: { cmd?: string; n?: number; t0?: number }, s?: net.Socket) => {
    if (m.cmd) return control(m as { cmd: string });
    s!.on('error', () => {});
    got(s!, m.t0!);
  });
}
out({ ev: 'ready' });
