// Config errors: one class, one table of codes. Every issue points at the YAML (file:line:col)
// and names the key path, so `fdproxy check` output can be acted on without reading the docs.

export interface ConfigIssue {
  file: string;     // as passed by the caller (usually relative), for messages
  line: number;     // 1-based; 0 when there is no position (file unreadable)
  col: number;      // 1-based
  path: string;     // "routes[1].backend"; "" for the document itself
  message: string;  // 'unknown backend "caht" (did you mean "chat"?)'
  code: string;     // one of CONF_ERRORS
}

/** code → description. README's error table is generated from / checked against this. */
export const CONF_ERRORS: Readonly<Record<string, string>> = Object.freeze({
  FDP_CONF_READ: 'the config file could not be read',
  FDP_CONF_INVALID: 'the config has one or more issues (the error lists them all)',
  FDP_CONF_YAML: 'the file is not valid YAML (syntax error)',
  FDP_CONF_UNKNOWN_KEY: 'a key that the schema does not know (a suggestion is given when one is close)',
  FDP_CONF_TYPE: 'a value of the wrong type (e.g. a list where a string is expected)',
  FDP_CONF_VALUE: 'a value of the right type that is out of bounds or malformed (duration, size, address, pattern, template)',
  FDP_CONF_MISSING: 'a required key is missing',
  FDP_CONF_UNKNOWN_BACKEND: 'a route names a backend that is not defined',
  FDP_CONF_UNKNOWN_VARIABLE: 'a key or tenant template uses a variable that does not exist for that route',
  FDP_CONF_DUPLICATE: 'the same name, key, capture or server is given twice',
  FDP_CONF_CLASH: 'two listeners (or a listener and admin) bind the same address',
  FDP_CONF_UNREACHABLE: 'a route can never match because an earlier route matches every request',
  FDP_CONF_UNUSED: 'an option that has no effect where it is given (relay options on a tunnel route)',
});

export class ConfigError extends Error {
  readonly code: 'FDP_CONF_INVALID' | 'FDP_CONF_READ';
  readonly source = 'conf' as const;
  readonly retryable = false as const;
  readonly issues: readonly ConfigIssue[];

  constructor(code: 'FDP_CONF_INVALID' | 'FDP_CONF_READ', issues: readonly ConfigIssue[]) {
    const n = issues.length;
    super(`${n} issue${n === 1 ? '' : 's'} in config:\n${issues.map(formatIssue).join('\n')}`);
    this.name = 'ConfigError';
    this.code = code;
    this.issues = Object.freeze(issues.map((i) => Object.freeze({ ...i })));
  }

  /** One line per issue: `proxy.yaml:12:9 routes[1].backend: unknown backend "caht" (...)`. */
  report(): string {
    return this.issues.map(formatIssue).join('\n');
  }
}

export function formatIssue(i: ConfigIssue): string {
  const where = i.line > 0 ? `${i.file}:${i.line}:${i.col}` : i.file;
  return i.path ? `${where} ${i.path}: ${i.message}` : `${where} ${i.message}`;
}
