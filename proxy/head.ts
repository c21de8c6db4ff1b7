// read head: collect bytes until the end of an HTTP/1.x request head, check them strictly
// (the smuggling vectors a lenient parser lets through), then parse with http-parser-js.
import { HTTPParser } from 'http-parser-js';
import { ProxyError } from './errors';

export interface RequestHead {
  method: string;
  url: string;
  versionMinor: number;      // HTTP/1.0 or HTTP/1.1
  headers: string[];         // flat [name, value, ...] as received
  /** Offset in the bytes read where the head ends (just past CRLFCRLF). */
  headEnd: number;
  host: string;
  /** A valid WebSocket upgrade (GET, Upgrade: websocket, Connection: upgrade, key, version 13). */
  websocket: boolean;
  keepAlive: boolean;
  contentLength: number;     // -1 when absent
  chunked: boolean;
}

const bad = (why: string) => new ProxyError('FDP_PROXY_BAD_REQUEST', why, 'downstream');

// tchar per RFC 9110 5.6.2
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") TCHAR[c.charCodeAt(0)] = 1;

/** Index just past the first CRLFCRLF at or after `from`, or -1. */
export function findHeadEnd(buf: Buffer, from: number): number {
  const i = buf.indexOf('\r\n\r\n', Math.max(0, from - 3), 'latin1');
  return i < 0 ? -1 : i + 4;
}

/**
 * Check every byte of a head: CRLF line endings only, no NUL or bare CR, request line
 * `token SP target SP HTTP/1.x`, header names are tokens followed directly by ':', no obs-fold,
 * values without control characters.
 */
export function checkHeadBytes(buf: Buffer, start: number, end: number): void {
  let i = start;
  // request line
  const m0 = i;
  while (i < end && TCHAR[buf[i]]) i++;
  if (i === m0 || buf[i] !== 0x20) throw bad('invalid method');
  i++;
  const t0 = i;
  while (i < end && buf[i] > 0x20 && buf[i] !== 0x7f) i++;
  if (i === t0 || buf[i] !== 0x20) throw bad('invalid request target');
  i++;
  if (end - i < 10 || buf.toString('latin1', i, i + 7) !== 'HTTP/1.' || (buf[i + 7] !== 0x30 && buf[i + 7] !== 0x31) ||
      buf[i + 8] !== 0x0d || buf[i + 9] !== 0x0a) throw bad('invalid HTTP version');
  i += 10;
  // header lines until the empty line
  while (i < end) {
    if (buf[i] === 0x0d) {
      if (buf[i + 1] !== 0x0a || i + 2 !== end) throw bad('bare CR in head');
      return;
    }
    if (buf[i] === 0x20 || buf[i] === 0x09) throw bad('obsolete line folding');
    const n0 = i;
    while (i < end && TCHAR[buf[i]]) i++;
    if (i === n0) throw bad('invalid header name');
    if (buf[i] !== 0x3a) throw bad(buf[i] === 0x20 || buf[i] === 0x09 ? 'whitespace before colon' : 'invalid header name');
    i++;
    for (;;) {
      const c = buf[i];
      if (c === 0x0d) {
        if (buf[i + 1] !== 0x0a) throw bad('bare CR in head');
        i += 2;
        break;
      }
      if ((c < 0x20 && c !== 0x09) || c === 0x7f) throw bad(c === 0x0a ? 'bare LF in head' : 'control character in header value');
      i++;
      if (i >= end) throw bad('unterminated header line');
    }
  }
  throw bad('unterminated head');
}

const kOnHeadersComplete = HTTPParser.kOnHeadersComplete;
let parsed: { method: string; url: string; minor: number; headers: string[] } | null = null;
const parser = new HTTPParser(HTTPParser.REQUEST);
// http-parser-js calls this synchronously inside execute(); returning 1 skips any body.
(parser as any)[kOnHeadersComplete] = (info: any) => {
  parsed = { method: info.method, url: info.url, minor: info.versionMinor, headers: info.headers };
  return 1;
};
(parser as any)._compatMode0_11 = false;
// Method names as strings (compat mode off gives an index into HTTPParser.methods).
const METHODS: readonly string[] = (HTTPParser as any).methods;

function parseWithHttpParser(buf: Buffer, start: number, end: number) {
  parsed = null;
  parser.reinitialize(HTTPParser.REQUEST);
  const r = parser.execute(buf.subarray(start, end));
  if (r instanceof Error || parsed === null) throw bad(`unparsable head${r instanceof Error ? ': ' + r.message : ''}`);
  const p = parsed as { method: any; url: string; minor: number; headers: string[] };
  parsed = null;
  return { method: typeof p.method === 'number' ? METHODS[p.method] : String(p.method), url: p.url, minor: p.minor, headers: p.headers };
}

function hasToken(value: string, token: string): boolean {
  if (value === '') return false;
  for (const part of value.split(',')) if (part.trim().toLowerCase() === token) return true;
  return false;
}

/** Parse and check a complete head `buf[start, end)`. Throws FDP_PROXY_BAD_REQUEST. */
export function parseHead(buf: Buffer, start: number, end: number): RequestHead {
  checkHeadBytes(buf, start, end);
  const p = parseWithHttpParser(buf, start, end);
  const h = p.headers;
  let host: string | null = null, cl = -1, te: string | null = null, connection = '', upgrade = '';
  let wsKey: string | null = null, wsVersion: string | null = null;
  for (let i = 0; i < h.length; i += 2) {
    const name = h[i].toLowerCase(), v = h[i + 1];
    switch (name) {
      case 'host':
        if (host !== null) throw bad('duplicate Host');
        host = v; break;
      case 'content-length': {
        if (!/^\d{1,15}$/.test(v)) throw bad('invalid Content-Length');
        if (cl !== -1) throw bad('duplicate Content-Length');
        cl = Number(v); break;
      }
      case 'transfer-encoding': te = te === null ? v : `${te},${v}`; break;
      case 'connection': connection += (connection ? ',' : '') + v; break;
      case 'upgrade': upgrade = v; break;
      case 'sec-websocket-key': if (wsKey !== null) throw bad('duplicate Sec-WebSocket-Key'); wsKey = v; break;
      case 'sec-websocket-version': wsVersion = v; break;
    }
  }
  if (p.minor === 1 && host === null) throw bad('missing Host');
  if (host !== null && !/^[A-Za-z0-9.\-_~%!$&'()*+,;=:\[\]]*$/.test(host)) throw bad('invalid Host');
  // absolute-form: its authority is what a backend (or a cache) would believe; it must be the Host.
  if (p.url[0] !== '/' && p.url !== '*') {
    const m = /^https?:\/\/([^/?#@]*)(?:[/?#]|$)/i.exec(p.url);
    if (!m || host === null || m[1].toLowerCase() !== host.toLowerCase()) throw bad('request target authority does not match Host');
  }
  let chunked = false;
  if (te !== null) {
    if (p.minor === 0) throw bad('Transfer-Encoding in HTTP/1.0');
    if (cl !== -1) throw bad('both Content-Length and Transfer-Encoding');
    if (te.trim().toLowerCase() !== 'chunked') throw bad('unsupported Transfer-Encoding');
    chunked = true;
  }
  const keepAlive = p.minor === 1 ? !hasToken(connection, 'close') : hasToken(connection, 'keep-alive');
  let websocket = false;
  if (upgrade && hasToken(connection, 'upgrade') && upgrade.trim().toLowerCase() === 'websocket') {
    if (p.method !== 'GET' || p.minor !== 1) throw bad('WebSocket upgrade needs GET and HTTP/1.1');
    if (wsVersion?.trim() !== '13') throw bad('Sec-WebSocket-Version must be 13');
    if (wsKey === null || !/^[A-Za-z0-9+/]{22}==$/.test(wsKey.trim())) throw bad('invalid Sec-WebSocket-Key');
    if (chunked || cl > 0) throw bad('body on a WebSocket upgrade');
    websocket = true;
  }
  return { method: p.method, url: p.url, versionMinor: p.minor, headers: h, headEnd: end, host: host ?? '', websocket, keepAlive, contentLength: cl, chunked };
}

/**
 * Accumulates the bytes of one connection until a head is complete. The caller keeps every
 * byte (`bytes`) so it can hand them on unchanged.
 */
export class HeadReader {
  private chunks: Buffer[] = [];
  private size = 0;
  private scanned = 0;
  constructor(private readonly limit: number) {}

  get bytes(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks, this.size)];
    return this.chunks[0] ?? Buffer.alloc(0);
  }

  get length(): number { return this.size; }

  /** Add bytes; returns the parsed head once complete, null while more is needed. */
  push(chunk: Buffer): RequestHead | null {
    this.chunks.push(chunk);
    this.size += chunk.length;
    const buf = this.bytes;
    // Tolerate CRLFs before a request line (RFC 9112 2.2), e.g. after a POST body from old clients.
    let start = 0;
    while (start + 1 < buf.length && buf[start] === 0x0d && buf[start + 1] === 0x0a && start < 8) start += 2;
    const end = findHeadEnd(buf, Math.max(start, this.scanned));
    if (end < 0) {
      if (this.size > this.limit) throw new ProxyError('FDP_PROXY_HEAD_TOO_LARGE', 'request head too large', 'downstream');
      // A line feed without CR before the head ends is never valid: fail early rather than wait.
      const lf = buf.indexOf(10, this.scanned);
      if (lf >= 0 && (lf === 0 || buf[lf - 1] !== 0x0d)) throw bad('bare LF in head');
      this.scanned = buf.length;
      return null;
    }
    if (end - start > this.limit) throw new ProxyError('FDP_PROXY_HEAD_TOO_LARGE', 'request head too large', 'downstream');
    return parseHead(buf, start, end);
  }
}
