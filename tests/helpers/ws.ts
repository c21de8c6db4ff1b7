// WebSocket client helpers shared by the end-to-end tests.
import type * as net from 'node:net';
import WebSocket from 'ws';

/** The client-side port of a WebSocket's TCP connection (to find its owner in /proc). */
export const localPort = (ws: WebSocket): number => (ws as unknown as { _socket: net.Socket })._socket.localPort!;

export function openWs(port: number, path: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => { const w = new WebSocket(`ws://127.0.0.1:${port}${path}`); w.once('open', () => resolve(w)); w.once('error', reject); });
}

/** Send `msg` and resolve with the next message; rejects if the connection closes first. */
export function echo(ws: WebSocket, msg: string): Promise<string> {
  return new Promise((resolve, reject) => { ws.once('message', d => resolve(d.toString())); ws.once('close', () => reject(new Error('closed'))); ws.send(msg); });
}
