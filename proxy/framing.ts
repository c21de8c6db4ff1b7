// Message framing for bodies passed through unchanged: we never decode a body, we only find
// where it ends (Content-Length, chunked, or connection close) and reject malformed chunking.
import { ProxyError } from './errors';

const enum S { Size, Ext, SizeLF, Data, DataCR, DataLF, Trailer, TrailerLF, TrailerLineStart, Done }

export type BodyKind = 'none' | 'length' | 'chunked' | 'close';

export class BodyFramer {
  done: boolean;
  private remaining: number;
  private state = S.Size;
  private digits = 0;
  private lineLen = 0;
  constructor(readonly kind: BodyKind, length = 0, private readonly errorCode = 'FDP_PROXY_BAD_BODY') {
    this.remaining = kind === 'length' ? length : 0;
    this.done = kind === 'none' || (kind === 'length' && length === 0);
  }

  /** Consume body bytes from buf[start..]; returns how many belong to this body. */
  feed(buf: Buffer, start: number): number {
    const end = buf.length;
    if (this.done) return 0;
    switch (this.kind) {
      case 'close': return end - start;
      case 'length': {
        const n = Math.min(end - start, this.remaining);
        this.remaining -= n;
        if (this.remaining === 0) this.done = true;
        return n;
      }
      case 'chunked': return this.chunked(buf, start, end);
      default: return 0;
    }
  }

  private fail(why: string): never {
    throw new ProxyError(this.errorCode, `bad chunked body: ${why}`, this.errorCode === 'FDP_PROXY_BAD_BODY' ? 'downstream' : 'upstream');
  }

  private chunked(buf: Buffer, start: number, end: number): number {
    let i = start;
    while (i < end) {
      const c = buf[i];
      switch (this.state) {
        case S.Size: {
          const v = c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 87 : c >= 0x41 && c <= 0x46 ? c - 55 : -1;
          if (v >= 0) {
            if (++this.digits > 12) this.fail('chunk size too long');
            this.remaining = this.remaining * 16 + v;
            i++;
          } else if (this.digits === 0) this.fail('missing chunk size');
          else if (c === 0x3b) { this.state = S.Ext; this.lineLen = 0; i++; }
          else if (c === 0x0d) { this.state = S.SizeLF; i++; }
          else this.fail('invalid chunk size');
          break;
        }
        case S.Ext:
          if (c === 0x0d) { this.state = S.SizeLF; i++; break; }
          if ((c < 0x20 && c !== 0x09) || c === 0x7f || ++this.lineLen > 4096) this.fail('invalid chunk extension');
          i++;
          break;
        case S.SizeLF:
          if (c !== 0x0a) this.fail('bare CR after chunk size');
          i++;
          this.digits = 0;
          if (this.remaining === 0) { this.state = S.TrailerLineStart; this.lineLen = 0; }
          else this.state = S.Data;
          break;
        case S.Data: {
          const n = Math.min(end - i, this.remaining);
          i += n;
          this.remaining -= n;
          if (this.remaining === 0) this.state = S.DataCR;
          break;
        }
        case S.DataCR:
          if (c !== 0x0d) this.fail('chunk data longer than its size');
          this.state = S.DataLF; i++;
          break;
        case S.DataLF:
          if (c !== 0x0a) this.fail('bare CR after chunk data');
          this.state = S.Size; i++;
          break;
        case S.TrailerLineStart:
          if (c === 0x0d) { this.state = S.TrailerLF; this.lineLen = -1; i++; break; }
          this.state = S.Trailer; this.lineLen = 0;
          break;
        case S.Trailer:
          if (c === 0x0d) { this.state = S.TrailerLF; i++; break; }
          if ((c < 0x20 && c !== 0x09) || ++this.lineLen > 8192) this.fail('invalid trailer');
          i++;
          break;
        case S.TrailerLF:
          if (c !== 0x0a) this.fail('bare CR in trailer');
          i++;
          if (this.lineLen === -1) { this.state = S.Done; this.done = true; return i - start; }
          this.state = S.TrailerLineStart;
          break;
        default:
          return i - start;
      }
    }
    return i - start;
  }
}

const badResponse = (why: string) => new ProxyError('FDP_PROXY_BACKEND_BAD_RESPONSE', why, 'upstream');

/** What String.prototype.trim removes from a latin1 header value (CR and LF never get that far). */
const isTrimmed = (c: number) => c === 0x20 || c === 0x09 || c === 0x0b || c === 0x0c || c === 0xa0;

/** `buf[s, e)` equals the lower-case ASCII `lower`, ignoring ASCII case. */
export function eqLower(buf: Buffer, s: number, e: number, lower: string): boolean {
  if (e - s !== lower.length) return false;
  for (let i = 0; i < lower.length; i++) if ((buf[s + i] | 0x20) !== lower.charCodeAt(i)) return false;
  return true;
}

/**
 * A backend's response head, parsed in place: header strings are made only when asked for
 * (`headers`); the HTTP path works on the offsets (`spans`) and copies kept lines as they are.
 */
export class ResponseHead {
  private hs: string[] | null = null;
  constructor(readonly buf: Buffer, readonly status: number, readonly versionMinor: number, readonly headEnd: number,
              /** Index of the CR ending the status line; the reason is `buf[reasonStart, statusEnd)`. */
              readonly statusEnd: number, private readonly reasonStart: number,
              /** Five numbers per header: line start, colon, value start, value end (trimmed), line end (its CR). */
              readonly spans: readonly number[]) {}

  get reason(): string { return this.reasonStart < this.statusEnd ? this.buf.toString('latin1', this.reasonStart, this.statusEnd) : ''; }

  /** The first value of header `lower` (a lower-case name), trimmed; null when absent. No string
   *  per header is built (the upgrade path looks up two headers of every 101). */
  get(lower: string): string | null {
    const b = this.buf, sp = this.spans;
    for (let i = 0; i < sp.length; i += 5) {
      if (eqLower(b, sp[i], sp[i + 1], lower)) return b.toString('latin1', sp[i + 2], sp[i + 3]);
    }
    return null;
  }

  /** Flat [name, value, ...] as received (values trimmed). */
  get headers(): string[] {
    if (this.hs === null) {
      const b = this.buf, sp = this.spans, h: string[] = [];
      for (let i = 0; i < sp.length; i += 5) h.push(b.toString('latin1', sp[i], sp[i + 1]), b.toString('latin1', sp[i + 2], sp[i + 3]));
      this.hs = h;
    }
    return this.hs;
  }
}

/** Parse a backend's response head buf[0, end). Lenient on reason text, strict on framing headers. */
export function parseResponseHead(buf: Buffer, end: number): ResponseHead {
  const e = end - 4;  // the head text without its final CRLFCRLF
  // Status line: HTTP/1.x SP 3DIGIT [SP reason], the reason without control characters but HTAB.
  if (e < 12 || buf[0] !== 0x48 || buf[1] !== 0x54 || buf[2] !== 0x54 || buf[3] !== 0x50 || buf[4] !== 0x2f || buf[5] !== 0x31 ||
      buf[6] !== 0x2e || (buf[7] !== 0x30 && buf[7] !== 0x31) || buf[8] !== 0x20) throw badResponse('invalid status line from backend');
  let status = 0;
  for (let i = 9; i < 12; i++) {
    const d = buf[i] - 0x30;
    if (d < 0 || d > 9) throw badResponse('invalid status line from backend');
    status = status * 10 + d;
  }
  let i = 12, reasonStart = 12;
  if (i < e && buf[i] !== 0x0d) {
    if (buf[i] !== 0x20) throw badResponse('invalid status line from backend');
    reasonStart = ++i;
    for (; i < e; i++) {
      const c = buf[i];
      if (c === 0x0d && buf[i + 1] === 0x0a) break;
      if ((c < 0x20 && c !== 0x09) || c === 0x7f) throw badResponse('invalid status line from backend');
    }
  }
  const statusEnd = i;
  const spans: number[] = [];
  // Header lines, each `name:value` between CRLFs: a name without whitespace or control
  // characters, no NUL, bare CR or LF anywhere in the line.
  while (i < e) {
    const ls = i += 2;
    let c = 0;
    while (i < e && (c = buf[i]) !== 0x3a) {
      if (c <= 0x20 || c === 0xa0) throw badResponse('invalid header line from backend');
      i++;
    }
    if (i === ls || i >= e) throw badResponse('invalid header line from backend');
    const colon = i++;
    let vs = -1, ve = i;
    for (; i < e; i++) {
      c = buf[i];
      if (c === 0x0d) { if (buf[i + 1] === 0x0a) break; throw badResponse('invalid header line from backend'); }
      if (c === 0x00 || c === 0x0a) throw badResponse('invalid header line from backend');
      if (!isTrimmed(c)) { if (vs < 0) vs = i; ve = i + 1; }
    }
    if (vs < 0) vs = ve = i;
    spans.push(ls, colon, vs, ve, i);
  }
  return new ResponseHead(buf, status, buf[7] - 0x30, end, statusEnd, reasonStart, spans);
}

/** How a response body is delimited (RFC 9112 6.3). */
export function responseBody(res: ResponseHead, requestMethod: string): { kind: BodyKind; length: number } {
  if (requestMethod === 'HEAD' || res.status < 200 || res.status === 204 || res.status === 304) return NONE;
  let te = -1, cl = -1;
  const b = res.buf, sp = res.spans;
  for (let i = 0; i < sp.length; i += 5) {
    const n = sp[i + 1] - sp[i];
    if (n === 17 && eqLower(b, sp[i], sp[i + 1], 'transfer-encoding')) te = i;
    else if (n === 14 && eqLower(b, sp[i], sp[i + 1], 'content-length')) {
      const vs = sp[i + 2], ve = sp[i + 3];
      let v = 0;
      if (ve - vs < 1 || ve - vs > 15) throw badResponse('invalid Content-Length from backend');
      for (let j = vs; j < ve; j++) {
        const d = b[j] - 0x30;
        if (d < 0 || d > 9) throw badResponse('invalid Content-Length from backend');
        v = v * 10 + d;
      }
      if (cl !== -1 && cl !== v) throw badResponse('invalid Content-Length from backend');
      cl = v;
    }
  }
  if (te >= 0) {
    // The last coding of the last Transfer-Encoding header decides.
    const last = b.toString('latin1', sp[te + 2], sp[te + 3]).split(',').pop()!.trim().toLowerCase();
    return last === 'chunked' ? { kind: 'chunked', length: 0 } : { kind: 'close', length: 0 };
  }
  if (cl >= 0) return { kind: cl === 0 ? 'none' : 'length', length: cl };
  return { kind: 'close', length: 0 };
}
/** The backend's connection ends after this response (`Connection: close`; HTTP/1.0 without keep-alive). */
export function responseSaysClose(res: ResponseHead): boolean {
  const b = res.buf, sp = res.spans;
  let keepAlive = false;
  for (let i = 0; i < sp.length; i += 5) {
    if (sp[i + 1] - sp[i] === 10 && eqLower(b, sp[i], sp[i + 1], 'connection')) {
      if (eqLower(b, sp[i + 2], sp[i + 3], 'keep-alive')) { keepAlive = true; continue; }  // the usual one
      for (const t of b.toString('latin1', sp[i + 2], sp[i + 3]).split(',')) {
        const v = t.trim().toLowerCase();
        if (v === 'close') return true;
        if (v === 'keep-alive') keepAlive = true;
      }
    }
  }
  return res.versionMinor === 0 && !keepAlive;
}
const NONE: { kind: BodyKind; length: number } = { kind: 'none', length: 0 };
