// PROXY protocol v1 and v2 (HAProxy's spec): an L4 load balancer in front tells us the client's
// address. On a listener with proxy_protocol: true the header is required.
import { ProxyError } from './errors';

const V2_SIG = Buffer.from('\r\n\r\n\0\r\nQUIT\n', 'latin1');
const bad = (why: string) => new ProxyError('FDP_PROXY_BAD_REQUEST', `PROXY protocol: ${why}`, 'downstream');

export interface ProxyHeader { length: number; ip: string | null; port: number }

/** Parse a PROXY header at the start of `buf`; null while incomplete. */
export function readProxyHeader(buf: Buffer): ProxyHeader | null {
  if (buf.length === 0) return null;
  if (buf[0] === 0x0d) {
    const n = Math.min(buf.length, 12);
    if (buf.compare(V2_SIG, 0, n, 0, n) !== 0) throw bad('bad v2 signature');
    if (buf.length < 16) return null;
    const verCmd = buf[12], fam = buf[13], len = buf.readUInt16BE(14);
    if (verCmd >> 4 !== 2) throw bad('bad version');
    if (buf.length < 16 + len) return null;
    const total = 16 + len;
    if ((verCmd & 0xf) === 0) return { length: total, ip: null, port: 0 };       // LOCAL: health check from the LB
    if ((verCmd & 0xf) !== 1) throw bad('bad command');
    if (fam >> 4 === 1 && len >= 12) {
      return { length: total, ip: `${buf[16]}.${buf[17]}.${buf[18]}.${buf[19]}`, port: buf.readUInt16BE(24) };
    }
    if (fam >> 4 === 2 && len >= 36) {
      const parts: string[] = [];
      for (let i = 0; i < 8; i++) parts.push(buf.readUInt16BE(16 + i * 2).toString(16));
      return { length: total, ip: compress6(parts), port: buf.readUInt16BE(48) };
    }
    return { length: total, ip: null, port: 0 };   // UNSPEC or unix: keep the socket's address
  }
  if (buf[0] !== 0x50) throw bad('missing header');
  const nl = buf.indexOf('\r\n', 0, 'latin1');
  if (nl < 0) { if (buf.length > 107) throw bad('v1 line too long'); if (buf.compare(Buffer.from('PROXY '), 0, Math.min(6, buf.length), 0, Math.min(6, buf.length)) !== 0) throw bad('missing header'); return null; }
  if (nl > 105) throw bad('v1 line too long');
  const line = buf.toString('latin1', 0, nl);
  const m = /^PROXY (TCP4|TCP6|UNKNOWN)(?: ([0-9a-fA-F:.]+) ([0-9a-fA-F:.]+) (\d{1,5}) (\d{1,5}))?$/.exec(line);
  if (!m) throw bad('bad v1 line');
  if (m[1] === 'UNKNOWN') return { length: nl + 2, ip: null, port: 0 };
  if (!m[2]) throw bad('bad v1 line');
  return { length: nl + 2, ip: m[2], port: Number(m[4]) };
}

function compress6(parts: string[]): string {
  const s = parts.join(':');
  if (s.startsWith('0:0:0:0:0:ffff:')) {
    const a = parseInt(parts[6], 16), b = parseInt(parts[7], 16);
    return `${a >> 8}.${a & 255}.${b >> 8}.${b & 255}`;
  }
  return s.replace(/(^|:)0(:0)+(:|$)/, '::');
}
