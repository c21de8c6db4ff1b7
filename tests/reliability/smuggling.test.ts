// Request smuggling: every ambiguous framing gets 400 + close, on the first request of a
// connection (acceptor's head reader) and on a later request of a keep-alive connection (the
// worker's HeadReader and BodyFramer), and nothing of it reaches the backend, which records
// every request it received (GET /received).
import test from 'ava';
import { startBackend, startProxy, twoBackendConfig, type ProxyHandle, type BackendReady } from '../helpers/proxy';
import type { Started } from '../helpers/procs';
import { raw, sleep } from '../fixtures/rawclient';

let b: Started<BackendReady>;
let px: ProxyHandle;
test.before(async () => {
  b = await startBackend('rec');
  px = await startProxy(twoBackendConfig(b.ready.port, b.ready.port));
});
test.after.always(async () => { await px?.stop(); await b?.stop(); });

const SMUGGLED = 'GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n';
const H = 'Host: x\r\n';
/** [name, request bytes]; each path carries the marker /v so the backend must never see it complete. */
const VECTORS: [string, string][] = [
  ['CL + TE', `POST /v HTTP/1.1\r\n${H}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`],
  ['TE + CL', `POST /v HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n${SMUGGLED}`],
  ['duplicate CL, same value', `POST /v HTTP/1.1\r\n${H}Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc`],
  ['conflicting CL', `POST /v HTTP/1.1\r\n${H}Content-Length: 3\r\nContent-Length: 40\r\n\r\nabc${SMUGGLED}`],
  ['CL list "3, 3"', `POST /v HTTP/1.1\r\n${H}Content-Length: 3, 3\r\n\r\nabc`],
  ['CL "+3"', `POST /v HTTP/1.1\r\n${H}Content-Length: +3\r\n\r\nabc`],
  ['CL "-1"', `POST /v HTTP/1.1\r\n${H}Content-Length: -1\r\n\r\n${SMUGGLED}`],
  ['CL "0x3"', `POST /v HTTP/1.1\r\n${H}Content-Length: 0x3\r\n\r\nabc`],
  ['CL "3 3"', `POST /v HTTP/1.1\r\n${H}Content-Length: 3 3\r\n\r\nabc`],
  ['CL overflow', `POST /v HTTP/1.1\r\n${H}Content-Length: 18446744073709551621\r\n\r\nabcde`],
  ['TE "chunked, gzip" (chunked not final)', `POST /v HTTP/1.1\r\n${H}Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n${SMUGGLED}`],
  ['TE "gzip, chunked"', `POST /v HTTP/1.1\r\n${H}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`],
  ['TE "identity"', `POST /v HTTP/1.1\r\n${H}Transfer-Encoding: identity\r\n\r\n${SMUGGLED}`],
  ['TE "xchunked"', `POST /v HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`],
  ['TE twice', `POST /v HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`],
  ['TE in HTTP/1.0', `POST /v HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`],
  ['TE with whitespace before colon', `POST /v HTTP/1.1\r\n${H}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n`],
  ['CL with tab before colon', `POST /v HTTP/1.1\r\n${H}Content-Length\t: 3\r\n\r\nabc`],
  ['TE obs-fold', `POST /v HTTP/1.1\r\n${H}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n`],
  ['obs-fold in any header', `GET /v HTTP/1.1\r\n${H}X-A: a\r\n\tb\r\n\r\n`],
  ['bare LF line endings', `GET /v HTTP/1.1\n${H.replace('\r', '')}\n`],
  ['bare LF hides TE', `POST /v HTTP/1.1\r\n${H}X-A: a\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`],
  ['bare CR hides TE', `POST /v HTTP/1.1\r\n${H}X-A: a\rTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`],
  ['CR in a value', `GET /v HTTP/1.1\r\n${H}X-A: a\rb\r\n\r\n`],
  ['NUL in a value', `GET /v HTTP/1.1\r\n${H}X-A: a\0b\r\n\r\n`],
  ['NUL in the target', `GET /v\0/x HTTP/1.1\r\n${H}\r\n`],
  ['multiple Host', `GET /v HTTP/1.1\r\n${H}Host: y\r\n\r\n`],
  ['absolute-form vs Host mismatch', `GET http://evil.example/v HTTP/1.1\r\n${H}\r\n`],
  ['missing Host (1.1)', `GET /v HTTP/1.1\r\nX-A: a\r\n\r\n`],
  ['chunk size "0x5"', `POST /v HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n`],
  ['chunk size "-5"', `POST /v HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n`],
  ['chunk size hex overflow', `POST /v HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n${SMUGGLED}`],
  ['chunk size with leading space', `POST /v HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n`],
  ['chunk size bare LF', `POST /v HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n`],
  ['chunk data longer than size', `POST /v HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n`],
  ['chunk-ext with bare LF', `POST /v HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5;a=b\nhello\r\n0\r\n\r\n`],
  ['chunk-ext with NUL', `POST /v HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5;a=\0\r\nhello\r\n0\r\n\r\n`],
  ['chunk-ext longer than 4 KiB', `POST /v HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5;${'a'.repeat(5000)}\r\nhello\r\n0\r\n\r\n`],
  ['trailer with bare LF', `POST /v HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\nX-T: a\nTransfer-Encoding: chunked\r\n\r\n`],
  ['invalid header name', `POST /v HTTP/1.1\r\n${H}Content\x0bLength: 3\r\n\r\nabc`],
];

function statuses(data: string): number[] {
  return [...data.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map(m => Number(m[1]));
}

async function received(): Promise<{ url: string; method: string }[]> {
  const res = await fetch(`http://127.0.0.1:${px.port}/received`);
  return ((await res.json()) as { url: string; method: string }[]).filter(e => e.url !== '/received');
}

test.serial(`${VECTORS.length} smuggling vectors on the first request of a connection: 400 + close, nothing reaches the backend`, async t => {
  t.true(VECTORS.length >= 20);
  await received();
  const results = await Promise.all(VECTORS.map(([, req]) => raw(px.port, req, 4000)));
  const wrong = VECTORS.map(([name], i) => ({ name, got: statuses(results[i].data), closed: results[i].closed }))
    .filter(r => r.got.join() !== '400' || !r.closed);
  t.deepEqual(wrong, [], 'every vector: one 400, then close');
  await sleep(200);
  const got = await received();
  t.deepEqual(got.map(e => e.url), [], 'the backend received none of them');
});

test.serial(`${VECTORS.length} smuggling vectors on a later request of a keep-alive connection (worker path): 400 + close`, async t => {
  await received();
  const results = await Promise.all(VECTORS.map(([, req], i) =>
    raw(px.port, [`GET /first/${i} HTTP/1.1\r\n${H}\r\n`, req], 4000, 300)));
  const wrong = VECTORS.map(([name], i) => ({ name, got: statuses(results[i].data), closed: results[i].closed }))
    .filter(r => r.got.join() !== '200,400' || !r.closed);
  t.deepEqual(wrong, [], 'every vector after a good request: 200, one 400, then close');
  await sleep(200);
  const got = (await received()).map(e => e.url).sort();
  t.deepEqual(got, VECTORS.map((_, i) => `/first/${i}`).sort(), 'the backend received only the valid first requests');
});

test.serial('control: the same framing done right is forwarded (chunked, Content-Length, pipelined)', async t => {
  await received();
  const ok = `POST /c1 HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: a\r\n\r\n` +
    `POST /c2 HTTP/1.1\r\n${H}Content-Length: 3\r\n\r\nabc` + `GET /c3 HTTP/1.1\r\n${H}Connection: close\r\n\r\n`;
  const r = await raw(px.port, ok, 4000);
  t.deepEqual(statuses(r.data), [200, 200, 200]);
  const got = await received();
  t.deepEqual(got.map(e => `${e.method} ${e.url} ${(e as unknown as { body: string }).body}`), ['POST /c1 hello', 'POST /c2 abc', 'GET /c3 ']);
});
