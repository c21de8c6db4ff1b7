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

export interface ResponseHead {
  status: number;
  versionMinor: number;
  headers: string[];
  headEnd: number;
  reason: string;
}

/** Parse a backend's response head buf[0, end). Lenient on reason text, strict on framing headers. */
export function parseResponseHead(buf: Buffer, end: number): ResponseHead {
  const text = buf.toString('latin1', 0, end - 4);
  const lines = text.split('\r\n');
  const m = /^HTTP\/1\.([01]) (\d{3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?$/.exec(lines[0]);
  if (!m) throw new ProxyError('FDP_PROXY_BACKEND_BAD_RESPONSE', 'invalid status line from backend', 'upstream');
  const headers: string[] = [];
  for (let i = 1; i < lines.length; i++) {
    const l = lines[i];
    const c = l.indexOf(':');
    if (c <= 0 || /[\s\x00-\x1f]/.test(l.slice(0, c)) || /[\0\n\r]/.test(l)) {
      throw new ProxyError('FDP_PROXY_BACKEND_BAD_RESPONSE', 'invalid header line from backend', 'upstream');
    }
    headers.push(l.slice(0, c), l.slice(c + 1).trim());
  }
  return { status: Number(m[2]), versionMinor: Number(m[1]), headers, headEnd: end, reason: m[3] ?? '' };
}

/** How a response body is delimited (RFC 9112 6.3). */
export function responseBody(res: ResponseHead, requestMethod: string): { kind: BodyKind; length: number } {
  if (requestMethod === 'HEAD' || res.status < 200 || res.status === 204 || res.status === 304) return { kind: 'none', length: 0 };
  let te: string | null = null, cl = -1;
  const h = res.headers;
  for (let i = 0; i < h.length; i += 2) {
    const n = h[i].toLowerCase();
    if (n === 'transfer-encoding') te = te === null ? h[i + 1] : `${te},${h[i + 1]}`;
    else if (n === 'content-length') {
      const v = h[i + 1];
      if (!/^\d{1,15}$/.test(v) || (cl !== -1 && cl !== Number(v))) {
        throw new ProxyError('FDP_PROXY_BACKEND_BAD_RESPONSE', 'invalid Content-Length from backend', 'upstream');
      }
      cl = Number(v);
    }
  }
  if (te !== null) {
    const last = te.split(',').pop()!.trim().toLowerCase();
    return last === 'chunked' ? { kind: 'chunked', length: 0 } : { kind: 'close', length: 0 };
  }
  if (cl >= 0) return { kind: cl === 0 ? 'none' : 'length', length: cl };
  return { kind: 'close', length: 0 };
}
