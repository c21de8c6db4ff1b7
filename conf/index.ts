// Public API of conf/: load proxy.yaml, validate it against schema.ts, return a deep-frozen Config
// or throw one ConfigError listing every issue. A reload runs the same path.
import fs from 'node:fs';
import path from 'node:path';
import { LineCounter, isMap, parseDocument, type Node } from 'yaml';
import { ConfigError, type ConfigIssue } from './errors';
import { CONFIG } from './schema';
import { Ctx, INVALID, check } from './validate';
import { build } from './build';
import type { Config } from './types';

export type * from './types';
export { ConfigError, CONF_ERRORS, formatIssue, type ConfigIssue } from './errors';
export { parseAddress, parseDuration, parseSize } from './values';
export { parsePathPattern, parseHostPattern, parseTemplate, type PathPattern, type PathSeg, type HostPattern, type HostLabel } from './patterns';

export interface Overrides { workers?: number }

/** Read and validate `file`. Messages name the file as passed; Config.file is absolute. */
export function loadConfig(file: string, overrides: Overrides = {}): Config {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const issue: ConfigIssue = { file, line: 0, col: 0, path: '', code: 'FDP_CONF_READ', message: `cannot read config: ${err.code ?? ''} ${err.message}`.trim() };
    throw new ConfigError('FDP_CONF_READ', [issue]);
  }
  return parseConfig(text, file, overrides);
}

export function parseConfig(text: string, file: string, overrides: Overrides = {}): Config {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: true, uniqueKeys: true });
  const ctx = new Ctx(file, lc, doc);
  for (const e of doc.errors) {
    const pos = e.linePos?.[0] ?? { line: 1, col: 1 };
    // The yaml message repeats the position and a source excerpt after " at line": keep the gist.
    const msg = e.message.split(' at line ')[0].split('\n')[0];
    if (e.code === 'DUPLICATE_KEY') {
      const key = /^["']?([^"':\n]*)/.exec(text.slice(e.pos[0]))?.[1].trim() ?? '';
      ctx.issue('', [pos.line, pos.col], 'FDP_CONF_DUPLICATE', `duplicate key "${key}" (a key may appear once in a mapping)`);
    } else ctx.issue('', [pos.line, pos.col], 'FDP_CONF_YAML', `YAML syntax: ${msg}`);
  }
  if (ctx.issues.length) throw new ConfigError('FDP_CONF_INVALID', ctx.issues);
  const root = doc.contents as Node | null;
  if (root === null || !isMap(root)) {
    ctx.issue('', root, root === null ? 'FDP_CONF_MISSING' : 'FDP_CONF_TYPE', root === null ? 'the config is empty: it needs listen, backends and routes' : 'the config must be a mapping of keys (listen:, backends:, routes: ...)');
    throw new ConfigError('FDP_CONF_INVALID', ctx.issues);
  }
  const raw = check(CONFIG, root, '', ctx);
  // Cross-checks run even if some sections failed, as long as the pieces they need are valid.
  let config: Config | null = null;
  try {
    config = raw === INVALID ? null : build(raw as Record<string, any>, path.resolve(file), ctx, overrides);
  } catch (e) {
    if (ctx.issues.length === 0) throw e;   // a cross-check tripped on a part already reported
  }
  if (ctx.issues.length || config === null) throw new ConfigError('FDP_CONF_INVALID', sortIssues(ctx.issues));
  return deepFreeze(config);
}

function sortIssues(issues: ConfigIssue[]): ConfigIssue[] {
  return issues.map((x, i) => [x, i] as const).sort((a, b) => a[0].line - b[0].line || a[0].col - b[0].col || a[1] - b[1]).map((x) => x[0]);
}

export function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as object)) deepFreeze(v);
  }
  return o;
}
