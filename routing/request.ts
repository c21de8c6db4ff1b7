// A lazy view of one request head for routing: every derived value (host, path, cookies, query)
// is computed on first use and cached for this request only. One instance per Router is reused
// for every request (routing is synchronous), so a decision allocates little beyond its result.

export interface Head {
  method: string;
  url: string;
  /** Flat [name, value, name, value, ...] as http-parser-js gives them; names in any case. */
  headers: readonly string[];
  clientIp: string;
}

export class RequestView {
  method = '';
  url = '';
  headers: readonly string[] = [];
  clientIp = '';
  pathStart = 0;
  pathEnd = 0;
  private host_: string | undefined;
  private path_: string | undefined;
  private queryStart = -1;   // index after "?", or -1; -2 = not looked up yet
  private tenant_: string | null | undefined;
  private authority: string | null = null;

  reset(h: Head): void {
    this.method = h.method;
    this.url = h.url;
    this.headers = h.headers;
    this.clientIp = h.clientIp;
    this.host_ = this.path_ = this.tenant_ = undefined;
    this.queryStart = -2;
    this.authority = null;
    const url = h.url;
    let start = 0;
    if (url.charCodeAt(0) !== 47 /* / */) {
      // absolute-form ("http://host/path", RFC 9112 §3.2.2): its authority overrides Host.
      const scheme = url.indexOf('://');
      if (scheme > 0 && scheme < 6) {
        const a = scheme + 3;
        let e = a;
        while (e < url.length && url.charCodeAt(e) !== 47 && url.charCodeAt(e) !== 63) e++;
        this.authority = url.slice(a, e);
        start = e;
      }
    }
    this.pathStart = start;
    const q = url.indexOf('?', start);
    const hash = url.indexOf('#', start);
    this.pathEnd = q >= 0 ? q : hash >= 0 ? hash : url.length;
  }

  /** First value of a header (name lower-case), or undefined. */
  header(name: string): string | undefined {
    const hs = this.headers;
    for (let i = 0; i < hs.length - 1; i += 2) if (eqLower(hs[i], name)) return hs[i + 1];
    return undefined;
  }

  /** Lower-case host without port or trailing dot; '' when absent. */
  host(): string {
    if (this.host_ !== undefined) return this.host_;
    let h = this.authority ?? this.header('host') ?? '';
    const at = h.lastIndexOf('@');
    if (at >= 0) h = h.slice(at + 1);
    if (h.charCodeAt(0) === 91 /* [ */) {
      const e = h.indexOf(']');
      h = e > 0 ? h.slice(0, e + 1) : h;
    } else {
      const c = h.indexOf(':');
      if (c >= 0) h = h.slice(0, c);
    }
    if (h.endsWith('.')) h = h.slice(0, -1);
    for (let i = 0; i < h.length; i++) {
      const c = h.charCodeAt(i);
      if (c >= 65 && c <= 90) { h = h.toLowerCase(); break; }
    }
    return (this.host_ = h);
  }

  /** The n-th label of the host, 1-based from the left ("acme" is label 1 of acme.example.com). */
  hostLabel(n: number): string | undefined {
    const h = this.host();
    if (h === '') return undefined;
    let start = 0;
    for (let i = 1; i < n; i++) {
      const dot = h.indexOf('.', start);
      if (dot < 0) return undefined;
      start = dot + 1;
    }
    let end = h.indexOf('.', start);
    if (end < 0) end = h.length;
    return end > start ? h.slice(start, end) : undefined;
  }

  /** Raw path (not decoded), without query string. */
  path(): string {
    if (this.path_ === undefined) this.path_ = this.pathStart === 0 && this.pathEnd === this.url.length ? this.url : this.url.slice(this.pathStart, this.pathEnd) || '/';
    return this.path_;
  }

  /** A cookie's value from the Cookie header(s): first occurrence wins; raw, quotes stripped. */
  cookie(name: string): string | undefined {
    const hs = this.headers;
    for (let i = 0; i < hs.length - 1; i += 2) {
      if (!eqLower(hs[i], 'cookie')) continue;
      const v = findCookie(hs[i + 1], name);
      if (v !== undefined) return v;
    }
    return undefined;
  }

  /** A query parameter (form-decoded: "+" is a space, %XX decoded); first occurrence wins. */
  query(name: string): string | undefined {
    if (this.queryStart === -2) {
      const q = this.url.indexOf('?', this.pathStart);
      this.queryStart = q < 0 ? -1 : q + 1;
    }
    return this.queryStart < 0 ? undefined : findQuery(this.url, this.queryStart, name);
  }

  /** Top-level tenant, resolved once per request by the router's resolver. */
  tenant(resolve: (v: RequestView) => string | null): string | null {
    if (this.tenant_ === undefined) this.tenant_ = resolve(this);
    return this.tenant_;
  }
}

/** ASCII case-insensitive `a` equals lower-case `lower`, without allocating. */
function eqLower(a: string, lower: string): boolean {
  if (a.length !== lower.length) return false;
  for (let i = 0; i < a.length; i++) {
    let c = a.charCodeAt(i);
    if (c >= 65 && c <= 90) c += 32;
    if (c !== lower.charCodeAt(i)) return false;
  }
  return true;
}

// Scanners look up one name without building a map: routes ask for one or two names, and a
// map per request would cost more than the scan.
function findCookie(h: string, name: string): string | undefined {
  let i = 0;
  const n = h.length;
  while (i < n) {
    while (i < n && (h.charCodeAt(i) === 32 || h.charCodeAt(i) === 59)) i++;   // spaces and ";"
    let semi = h.indexOf(';', i);
    if (semi < 0) semi = n;
    const eq = h.indexOf('=', i);
    if (eq > 0 && eq < semi) {
      let ke = eq;
      while (ke > i && h.charCodeAt(ke - 1) === 32) ke--;
      if (ke - i === name.length && h.startsWith(name, i)) {
        let vs = eq + 1, ve = semi;
        while (vs < ve && h.charCodeAt(vs) === 32) vs++;
        while (ve > vs && h.charCodeAt(ve - 1) === 32) ve--;
        if (ve - vs >= 2 && h.charCodeAt(vs) === 34 && h.charCodeAt(ve - 1) === 34) { vs++; ve--; }
        return h.slice(vs, ve);
      }
    }
    i = semi + 1;
  }
  return undefined;
}

function findQuery(url: string, from: number, name: string): string | undefined {
  let end = url.indexOf('#', from);
  if (end < 0) end = url.length;
  let i = from;
  while (i < end) {
    let amp = url.indexOf('&', i);
    if (amp < 0 || amp > end) amp = end;
    let eq = url.indexOf('=', i);
    if (eq < 0 || eq > amp) eq = amp;
    const plain = eq - i === name.length && url.startsWith(name, i);
    if (plain || (eq > i && needsDecode(url, i, eq) && decode(url.slice(i, eq), true) === name)) {
      return eq === amp ? '' : decode(url.slice(eq + 1, amp), true);
    }
    i = amp + 1;
  }
  return undefined;
}

function needsDecode(s: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) { const c = s.charCodeAt(i); if (c === 37 || c === 43) return true; }
  return false;
}

/** Percent-decode; malformed escapes leave the text as it was (never throws on client input). */
export function decode(s: string, plus = false): string {
  if (plus && s.includes('+')) s = s.replace(/\+/g, ' ');
  if (!s.includes('%')) return s;
  try { return decodeURIComponent(s); } catch { return s; }
}
