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
  private labels_: string[] | undefined;
  private path_: string | undefined;
  private cookies_: Map<string, string> | undefined;
  private query_: Map<string, string> | undefined;
  private tenant_: string | null | undefined;
  private authority: string | null = null;

  reset(h: Head): void {
    this.method = h.method;
    this.url = h.url;
    this.headers = h.headers;
    this.clientIp = h.clientIp;
    this.host_ = this.labels_ = this.path_ = this.cookies_ = this.query_ = this.tenant_ = undefined;
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

  hostLabels(): string[] {
    if (this.labels_ === undefined) { const h = this.host(); this.labels_ = h === '' ? [] : h.split('.'); }
    return this.labels_;
  }

  /** Raw path (not decoded), without query string. */
  path(): string {
    if (this.path_ === undefined) this.path_ = this.pathStart === 0 && this.pathEnd === this.url.length ? this.url : this.url.slice(this.pathStart, this.pathEnd) || '/';
    return this.path_;
  }

  cookie(name: string): string | undefined {
    if (this.cookies_ === undefined) this.cookies_ = parseCookies(this.headers);
    return this.cookies_.get(name);
  }

  query(name: string): string | undefined {
    if (this.query_ === undefined) {
      const q = this.url.indexOf('?', this.pathStart);
      this.query_ = q < 0 ? EMPTY : parseQuery(this.url, q + 1);
    }
    return this.query_.get(name);
  }

  /** Top-level tenant, resolved once per request by the router's resolver. */
  tenant(resolve: (v: RequestView) => string | null): string | null {
    if (this.tenant_ === undefined) this.tenant_ = resolve(this);
    return this.tenant_;
  }
}

const EMPTY: Map<string, string> = new Map();

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

/** All Cookie headers, "a=1; b=2"; the first occurrence of a name wins; values raw. */
function parseCookies(hs: readonly string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i < hs.length - 1; i += 2) {
    if (!eqLower(hs[i], 'cookie')) continue;
    for (const part of hs[i + 1].split(';')) {
      const eq = part.indexOf('=');
      if (eq < 0) continue;
      const k = part.slice(0, eq).trim();
      let v = part.slice(eq + 1).trim();
      if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1);
      if (k !== '' && !m.has(k)) m.set(k, v);
    }
  }
  return m;
}

/** application/x-www-form-urlencoded: "+" is a space, %XX decoded; first occurrence wins. */
function parseQuery(url: string, from: number): Map<string, string> {
  const m = new Map<string, string>();
  let end = url.indexOf('#', from);
  if (end < 0) end = url.length;
  for (const part of url.slice(from, end).split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const k = decode(eq < 0 ? part : part.slice(0, eq), true);
    if (!m.has(k)) m.set(k, eq < 0 ? '' : decode(part.slice(eq + 1), true));
  }
  return m;
}

/** Percent-decode; malformed escapes leave the text as it was (never throws on client input). */
export function decode(s: string, plus = false): string {
  if (plus && s.includes('+')) s = s.replace(/\+/g, ' ');
  if (!s.includes('%')) return s;
  try { return decodeURIComponent(s); } catch { return s; }
}
