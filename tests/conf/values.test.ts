// Scalar syntaxes: durations, sizes, addresses — accepted forms and rejected ones.
import test from 'ava';
import { parseAddress, parseDuration, parseSize } from '../../conf';

test('durations', (t) => {
  const ok: [string | number, number][] = [['500ms', 500], ['10s', 10_000], ['1.5s', 1500], ['5m', 300_000], ['1h', 3_600_000], ['0', 0], [0, 0], [250, 250]];
  for (const [s, v] of ok) t.is(parseDuration(s), v, String(s));
  for (const s of ['10', '10sec', 's', '-1s', '1d', '']) t.throws(() => parseDuration(s), { instanceOf: RangeError }, s);
  t.regex(t.throws(() => parseDuration('30'))!.message, /needs a unit: 30ms or 30s\?/);
});

test('sizes', (t) => {
  const ok: [string | number, number][] = [[512, 512], ['512', 512], ['512B', 512], ['16KiB', 16384], ['1MiB', 1 << 20], ['1.5MiB', 1.5 * (1 << 20)], ['1GiB', 2 ** 30]];
  for (const [s, v] of ok) t.is(parseSize(s), v, String(s));
  t.regex(t.throws(() => parseSize('16KB'))!.message, /ambiguous size unit "KB".*16KiB/);
  for (const s of ['1.5', 'ten', '1TiB', '-1']) t.throws(() => parseSize(s), undefined, s);
});

test('addresses', (t) => {
  t.deepEqual(parseAddress('127.0.0.1:8080'), { kind: 'tcp', host: '127.0.0.1', port: 8080, text: '127.0.0.1:8080' });
  t.deepEqual(parseAddress('[::1]:8080'), { kind: 'tcp', host: '::1', port: 8080, text: '[::1]:8080' });
  t.deepEqual(parseAddress(':8080'), { kind: 'tcp', host: '', port: 8080, text: ':8080' });
  t.deepEqual(parseAddress(8080), { kind: 'tcp', host: '', port: 8080, text: ':8080' });
  t.deepEqual(parseAddress('Backend-1.Local:9001'), { kind: 'tcp', host: 'backend-1.local', port: 9001, text: 'backend-1.local:9001' });
  t.deepEqual(parseAddress('unix:/run/fd.sock'), { kind: 'unix', path: '/run/fd.sock', text: 'unix:/run/fd.sock' });
  t.like(parseAddress('127.0.0.1:0'), { kind: 'tcp', port: 0 });
  for (const s of ['127.0.0.1', '::1:80', '[::1]', 'http://x:80', 'unix:', 'unix:rel.sock', 'a b:80', 'h:99999', `unix:/${'x'.repeat(200)}`]) {
    t.throws(() => parseAddress(s), { instanceOf: RangeError }, s);
  }
});
