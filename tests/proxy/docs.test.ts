// The README's errors table and proxy/errors.ts (the one place that maps codes to answers) agree.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLIENT_ERRORS } from '../../proxy/errors';

const readme = fs.readFileSync(path.join(__dirname, '..', '..', '..', 'README.md'), 'utf8');

test('every client-facing error code is in the README errors table with its status', t => {
  for (const [code, a] of Object.entries(CLIENT_ERRORS)) {
    const row = readme.split('\n').find(l => l.startsWith('|') && l.includes(`\`${code}\``));
    t.truthy(row, `${code} missing from README`);
    // A row gives the HTTP status, or (after a 101) the WebSocket close code.
    t.true(row!.includes(String(a.status)) || (a.ws !== undefined && row!.includes(`close ${a.ws}`)), `${code}: README row gives neither ${a.status} nor close ${a.ws}`);
  }
});

test('every code in the README errors table exists', t => {
  const section = readme.slice(readme.indexOf('## Errors a client can get'), readme.indexOf('## Configuration reference'));
  for (const m of section.matchAll(/`(FDP_(?:PROXY|ROUTE)_[A-Z_]+)`/g)) t.truthy(CLIENT_ERRORS[m[1]], `${m[1]} is documented but unknown`);
});
