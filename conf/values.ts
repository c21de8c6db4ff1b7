// Scalar value syntaxes of proxy.yaml: durations, sizes, addresses. Each parser throws a
// RangeError whose message is written for the user; the validator turns it into an issue.
import type { Address } from './types';

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * "500ms" "10s" "1.5s" "5m" "1h" → milliseconds (rounded). A number is taken as milliseconds
 * here (programmatic use); in proxy.yaml a bare number other than 0 is rejected by the schema,
 * because "30" meaning 30 ms or 30 s is the classic config mistake.
 */
export function parseDuration(s: string | number): number {
  if (typeof s === 'number') {
    if (!Number.isFinite(s) || s < 0) throw new RangeError(`invalid duration ${s}: must be a non-negative number of ms`);
    return Math.round(s);
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(s);
  if (!m) throw new RangeError(`invalid duration "${s}": use a number and a unit, e.g. 500ms, 10s, 5m, 1h`);
  const unit = m[2];
  if (unit === '') {
    if (Number(m[1]) === 0) return 0;
    throw new RangeError(`duration "${s}" needs a unit: ${m[1]}ms or ${m[1]}s?`);
  }
  const mult = DURATION_UNITS[unit];
  if (mult === undefined) throw new RangeError(`invalid duration unit "${unit}" in "${s}": use ms, s, m or h`);
  return Math.round(Number(m[1]) * mult);
}

const SIZE_UNITS: Record<string, number> = { '': 1, B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 };
const AMBIGUOUS_SIZE: Record<string, string> = { k: 'KiB', K: 'KiB', KB: 'KiB', kB: 'KiB', kb: 'KiB', M: 'MiB', MB: 'MiB', mb: 'MiB', G: 'GiB', GB: 'GiB', gb: 'GiB' };

/**
 * 512, "512", "512B", "16KiB", "1MiB", "1.5MiB", "1GiB" → bytes (binary units only). "KB"/"MB"
 * are rejected with a hint: whether they mean 1000 or 1024 differs between tools.
 */
export function parseSize(s: string | number): number {
  if (typeof s === 'number') {
    if (!Number.isInteger(s) || s < 0) throw new RangeError(`invalid size ${s}: must be a whole number of bytes`);
    return s;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(s);
  if (!m) throw new RangeError(`invalid size "${s}": use bytes or a unit, e.g. 512, 16KiB, 1MiB`);
  const unit = m[2];
  const mult = SIZE_UNITS[unit];
  if (mult === undefined) {
    const hint = AMBIGUOUS_SIZE[unit];
    if (hint) throw new RangeError(`ambiguous size unit "${unit}" in "${s}": write ${m[1]}${hint} (×1024) or the number of bytes`);
    throw new RangeError(`invalid size unit "${unit}" in "${s}": use B, KiB, MiB or GiB`);
  }
  const v = Number(m[1]) * mult;
  if (!Number.isInteger(v)) throw new RangeError(`size "${s}" is not a whole number of bytes`);
  return v;
}

const HOSTNAME = /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;
const IPV6 = /^[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?$/;

/**
 * "host:port", "[::1]:8080", ":8080" (all interfaces, host ''), "unix:/abs/path". A number is
 * taken as ":port". Port 0 is accepted (ephemeral; tests use it) — callers reject it where a
 * fixed port is needed (backend servers).
 */
export function parseAddress(s: string | number): Address {
  if (typeof s === 'number') return tcp('', portOf(String(s), String(s)));
  const t = s.trim();
  if (t.startsWith('unix:')) {
    const p = t.slice(5);
    if (p === '') throw new RangeError(`invalid address "${s}": unix: needs a path, e.g. unix:/run/fdproxy.sock`);
    if (!p.startsWith('/')) throw new RangeError(`invalid address "${s}": the unix socket path must be absolute`);
    if (Buffer.byteLength(p) > 107) throw new RangeError(`invalid address "${s}": unix socket path longer than 107 bytes`);
    return { kind: 'unix', path: p, text: `unix:${p}` };
  }
  if (/^[a-z]+:\/\//i.test(t)) throw new RangeError(`invalid address "${s}": write host:port without a scheme`);
  if (t.startsWith('[')) {
    const end = t.indexOf(']');
    if (end < 0 || t[end + 1] !== ':') throw new RangeError(`invalid address "${s}": use [ipv6]:port, e.g. [::1]:8080`);
    const host = t.slice(1, end);
    if (!IPV6.test(host) || !host.includes(':')) throw new RangeError(`invalid address "${s}": "${host}" is not an IPv6 address`);
    return tcp(host.toLowerCase(), portOf(t.slice(end + 2), s));
  }
  const colon = t.lastIndexOf(':');
  if (colon < 0) throw new RangeError(`invalid address "${s}": missing port, e.g. ${t || '127.0.0.1'}:8080`);
  const host = t.slice(0, colon);
  if (host.includes(':')) throw new RangeError(`invalid address "${s}": put IPv6 addresses in brackets, e.g. [${host}]:${t.slice(colon + 1)}`);
  if (host !== '' && !HOSTNAME.test(host)) throw new RangeError(`invalid address "${s}": "${host}" is not a host name or IP address`);
  return tcp(host.toLowerCase(), portOf(t.slice(colon + 1), s));
}

function portOf(p: string, whole: string): number {
  if (!/^\d{1,5}$/.test(p) || Number(p) > 65535) throw new RangeError(`invalid address "${whole}": port must be 0..65535`);
  return Number(p);
}

export function tcp(host: string, port: number): Address {
  const text = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  return { kind: 'tcp', host, port, text };
}
