// Table of config mistakes: each gives exactly the expected issues (line:col, key path, message,
// code). Messages are the product here: a change to one is a deliberate, reviewed change.
import test from 'ava';
import { ConfigError, CONF_ERRORS, parseConfig } from '../../conf';

interface Case { title: string; yaml: string; expect: string[]; codes: string[] }

const cases: Case[] = [
  {
    title: "unknown top-level key",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'workrs: 2\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["2:1 workrs: unknown key \"workrs\" (did you mean \"workers\"?)"],
    codes: ["FDP_CONF_UNKNOWN_KEY"],
  },
  {
    title: "unknown nested key",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends:\n' +
      '  web:\n' +
      '    servers: [127.0.0.1:9001]\n' +
      '    helth: { path: /h }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["5:5 backends.web.helth: unknown key \"helth\" (did you mean \"health\"?)"],
    codes: ["FDP_CONF_UNKNOWN_KEY"],
  },
  {
    title: "unknown route key",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - backend: web\n' +
      '    mach: { path: / }\n',
    expect: ["5:5 routes[0].mach: unknown key \"mach\" (did you mean \"match\"?)"],
    codes: ["FDP_CONF_UNKNOWN_KEY"],
  },
  {
    title: "unknown match key",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - backend: web\n' +
      '    match: { paht: /x }\n',
    expect: ["5:14 routes[0].match.paht: unknown key \"paht\" (did you mean \"path\"?)"],
    codes: ["FDP_CONF_UNKNOWN_KEY"],
  },
  {
    title: "unknown backend",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { chat: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - name: chat\n' +
      '    backend: caht\n',
    expect: ["5:14 routes[0].backend: unknown backend \"caht\" (did you mean \"chat\"?)"],
    codes: ["FDP_CONF_UNKNOWN_BACKEND"],
  },
  {
    title: "missing backend key",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - name: chat\n',
    expect: ["4:5 routes[0]: missing required key \"backend\""],
    codes: ["FDP_CONF_MISSING"],
  },
  {
    title: "missing listen",
    yaml: 'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["1:1 missing required key \"listen\""],
    codes: ["FDP_CONF_MISSING"],
  },
  {
    title: "duration without unit",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'limits:\n' +
      '  head_timeout: 10\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["3:17 limits.head_timeout: duration \"10\" needs a unit: 10ms or 10s?"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "bad duration unit",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'limits:\n' +
      '  idle_timeout: 10sec\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["3:17 limits.idle_timeout: invalid duration unit \"sec\" in \"10sec\": use ms, s, m or h"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "ambiguous size unit",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'limits:\n' +
      '  head_bytes: 16KB\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["3:15 limits.head_bytes: ambiguous size unit \"KB\" in \"16KB\": write 16KiB (×1024) or the number of bytes"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "size out of bounds",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'limits:\n' +
      '  head_bytes: 100\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["3:15 limits.head_bytes: must be at least 1KiB, got 100"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "address without port",
    yaml: 'listen: 127.0.0.1\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["1:9 listen: invalid address \"127.0.0.1\": missing port, e.g. 127.0.0.1:8080"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "ipv6 without brackets",
    yaml: 'listen: ::1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["1:9 listen: invalid address \"::1:8080\": put IPv6 addresses in brackets, e.g. [::1]:8080"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "port out of range",
    yaml: 'listen: 127.0.0.1:70000\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["1:9 listen: invalid address \"127.0.0.1:70000\": port must be 0..65535"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "relative unix path",
    yaml: 'listen: unix:run/x.sock\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["1:9 listen: invalid address \"unix:run/x.sock\": the unix socket path must be absolute"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "server with port 0",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:0] } }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["2:30 backends.web.servers[0]: invalid server address \"127.0.0.1:0\": a server needs a host and a non-zero port"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "workers zero",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'workers: 0\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["2:10 workers: must be at least 1, got 0"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "workers word",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'workers: many\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["2:10 workers: expected a whole number or \"auto\", got \"many\""],
    codes: ["FDP_CONF_TYPE"],
  },
  {
    title: "listen admin clash",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'admin: :8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["2:8 admin: 127.0.0.1:8080 clashes with listen (127.0.0.1:8080): both would bind the same address"],
    codes: ["FDP_CONF_CLASH"],
  },
  {
    title: "listen clash with all interfaces",
    yaml: 'listen: [\":8080\", \"127.0.0.1:8080\"]\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["1:19 listen[1]: 127.0.0.1:8080 clashes with listen[0] (:8080): both would bind the same address"],
    codes: ["FDP_CONF_CLASH"],
  },
  {
    title: "backend without servers",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends:\n' +
      '  web:\n' +
      '    servers: []\n' +
      'routes: [{ backend: web }]\n',
    expect: ["4:14 backends.web.servers: must not be empty"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "duplicate server",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends:\n' +
      '  web:\n' +
      '    servers: [127.0.0.1:9001, 127.0.0.1:9001]\n' +
      'routes: [{ backend: web }]\n',
    expect: ["4:31 backends.web.servers[1]: server 127.0.0.1:9001 is listed twice"],
    codes: ["FDP_CONF_DUPLICATE"],
  },
  {
    title: "duplicate route name",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - { name: a, match: { path: /a }, backend: web }\n' +
      '  - { name: a, match: { path: /b }, backend: web }\n',
    expect: ["5:13 routes[1].name: duplicate route name \"a\" (also routes[0])"],
    codes: ["FDP_CONF_DUPLICATE"],
  },
  {
    title: "unknown key variable",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - match: { path: \"/chat/{room}\" }\n' +
      '    key: \"{rom}\"\n' +
      '    backend: web\n',
    expect: ["5:10 routes[0].key: unknown variable {rom}: not captured by this route's match (did you mean \"room\"?)"],
    codes: ["FDP_CONF_UNKNOWN_VARIABLE"],
  },
  {
    title: "tenant variable without tenant source",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - key: \"{tenant}\"\n' +
      '    backend: web\n',
    expect: ["4:10 routes[0].key: variable {tenant} needs a top-level \"tenant:\" (or a {tenant} capture in this route's match)"],
    codes: ["FDP_CONF_UNKNOWN_VARIABLE"],
  },
  {
    title: "match.tenant without tenant source",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - match: { tenant: [acme] }\n' +
      '    backend: web\n',
    expect: ["4:22 routes[0].match.tenant: match.tenant needs a tenant: add a top-level \"tenant:\" or capture {tenant} in match.host/path"],
    codes: ["FDP_CONF_UNKNOWN_VARIABLE"],
  },
  {
    title: "unbalanced template brace",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - key: \"room-{room\"\n' +
      '    backend: web\n',
    expect: ["4:10 routes[0].key: unmatched \"{\" in key template \"room-{room\""],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "capture not a whole segment",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - match: { path: \"/chat/room-{id}\" }\n' +
      '    backend: web\n',
    expect: ["4:20 routes[0].match.path: invalid path pattern \"/chat/room-{id}\": a capture must be a whole segment, e.g. /chat/{room}"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "rest capture not last",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - match: { path: \"/f/{rest*}/x\" }\n' +
      '    backend: web\n',
    expect: ["4:20 routes[0].match.path: \"{rest*}\" in \"/f/{rest*}/x\" must be the last segment"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "path without leading slash",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - match: { path: chat }\n' +
      '    backend: web\n',
    expect: ["4:20 routes[0].match.path: invalid value \"chat\": expected a path starting with \"/\", e.g. /chat/{room}"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "duplicate capture",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - match: { path: \"/a/{id}\", cookie: { s: \"{id}\" } }\n' +
      '    backend: web\n',
    expect: ["4:44 routes[0].match.cookie.s: capture {id} is defined twice in this route"],
    codes: ["FDP_CONF_DUPLICATE"],
  },
  {
    title: "capture hides builtin",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - match: { path: \"/a/{host}\" }\n' +
      '    backend: web\n',
    expect: ["4:20 routes[0].match.path: capture name \"host\" in \"/a/{host}\" hides the built-in variable {host}: choose another name"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "header capture hides builtin",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - match: { path: /a/, header: { x-user: \"{path}\" } }\n' +
      '    backend: web\n',
    expect: ["4:43 routes[0].match.header.x-user: capture name \"path\" in \"{path}\" hides the built-in variable {path}: choose another name"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "cookie capture hides builtin",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - match: { path: /a/, cookie: { s: \"{path}\" } }\n' +
      '    backend: web\n',
    expect: ["4:38 routes[0].match.cookie.s: capture name \"path\" in \"{path}\" hides the built-in variable {path}: choose another name"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "query capture hides builtin",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - match: { query: { m: \"{method}\" } }\n' +
      '    backend: web\n',
    expect: ["4:26 routes[0].match.query.m: capture name \"method\" in \"{method}\" hides the built-in variable {method}: choose another name"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "host pattern with port",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - match: { host: \"api.example.com:8080\" }\n' +
      '    backend: web\n',
    expect: ["4:20 routes[0].match.host: host pattern \"api.example.com:8080\" must not have a port (the port is ignored when matching)"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "bad enum",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - backend: web\n' +
      '    websocket: relya\n',
    expect: ["5:16 routes[0].websocket: \"relya\" is not one of \"tunnel\", \"relay\" (did you mean \"relay\"?)"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "relay options on tunnel",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - backend: web\n' +
      '    relay: { max_message: 64KiB }\n',
    expect: ["5:12 routes[0].relay: relay options have no effect with websocket: tunnel (set websocket: relay, or remove relay)"],
    codes: ["FDP_CONF_UNUSED"],
  },
  {
    title: "wrong type list for string",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - backend: [web]\n',
    expect: ["4:14 routes[0].backend: expected a string, got a list"],
    codes: ["FDP_CONF_TYPE"],
  },
  {
    title: "yes is not a boolean",
    yaml: 'listen: { address: 127.0.0.1:8080, proxy_protocol: yes }\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["1:52 listen.proxy_protocol: expected true or false, got \"yes\" (YAML 1.2: write true or false)"],
    codes: ["FDP_CONF_TYPE"],
  },
  {
    title: "unreachable route",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - { name: all, backend: web }\n' +
      '  - { name: chat, match: { path: /chat }, backend: web }\n',
    expect: ["5:5 routes[1]: route \"chat\" is never used: route \"all\" (routes[0]) before it matches every request"],
    codes: ["FDP_CONF_UNREACHABLE"],
  },
  {
    title: "health timeout above interval",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends:\n' +
      '  web:\n' +
      '    servers: [127.0.0.1:9001]\n' +
      '    health: { path: /h, interval: 1s, timeout: 2s }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["5:48 backends.web.health.timeout: timeout (2s) must not exceed interval (1s)"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "passive fail_timeout without unit",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends:\n' +
      '  web:\n' +
      '    servers: [127.0.0.1:9001]\n' +
      '    passive: { fail_timeout: 30 }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["5:30 backends.web.passive.fail_timeout: duration \"30\" needs a unit: 30ms or 30s?"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "passive fail_timeout out of bounds",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends:\n' +
      '  web:\n' +
      '    servers: [127.0.0.1:9001]\n' +
      '    passive:\n' +
      '      fail_timeout: 2h\n' +
      'routes: [{ backend: web }]\n',
    expect: ["6:21 backends.web.passive.fail_timeout: must be at most 1h, got 2h"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "passive unknown key",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends:\n' +
      '  web:\n' +
      '    servers: [127.0.0.1:9001]\n' +
      '    passive: { fail_timout: 1s, max_fails: 3 }\n' +
      'routes: [{ backend: web }]\n',
    expect: [
      "5:16 backends.web.passive.fail_timout: unknown key \"fail_timout\" (did you mean \"fail_timeout\"?)",
      "5:33 backends.web.passive.max_fails: unknown key \"max_fails\"",
    ],
    codes: ["FDP_CONF_UNKNOWN_KEY", "FDP_CONF_UNKNOWN_KEY"],
  },
  {
    title: "passive not a mapping",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends:\n' +
      '  web:\n' +
      '    servers: [127.0.0.1:9001]\n' +
      '    passive: 10s\n' +
      'routes: [{ backend: web }]\n',
    expect: ["5:14 backends.web.passive: expected a mapping, got \"10s\""],
    codes: ["FDP_CONF_TYPE"],
  },
  {
    title: "negative weight",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends:\n' +
      '  web:\n' +
      '    servers: [{ address: 127.0.0.1:9001, weight: -1 }]\n' +
      'routes: [{ backend: web }]\n',
    expect: ["4:50 backends.web.servers[0].weight: must be greater than 0, got -1"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "invalid backend name",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends:\n' +
      '  \"my backend\": { servers: [127.0.0.1:9001] }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["3:3 backends[\"my backend\"]: invalid name \"my backend\": expected letters, digits, \"_\", \"-\", \".\" (starting with a letter or digit)","4:21 routes[0].backend: unknown backend \"web\""],
    codes: ["FDP_CONF_VALUE","FDP_CONF_UNKNOWN_BACKEND"],
  },
  {
    title: "tenant template uses capture",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'tenant: \"{room}\"\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["2:9 tenant: variable {room} cannot be used in the top-level tenant (route captures are not known yet)"],
    codes: ["FDP_CONF_UNKNOWN_VARIABLE"],
  },
  {
    title: "yaml syntax error",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["3:1 YAML syntax: Flow map in block collection must be sufficiently indented and end with a }"],
    codes: ["FDP_CONF_YAML"],
  },
  {
    title: "yaml duplicate key",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'listen: 127.0.0.1:8081\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes: [{ backend: web }]\n',
    expect: ["2:1 duplicate key \"listen\" (a key may appear once in a mapping)"],
    codes: ["FDP_CONF_DUPLICATE"],
  },
  {
    title: "not a mapping",
    yaml: '- listen\n',
    expect: ["1:1 the config must be a mapping of keys (listen:, backends:, routes: ...)"],
    codes: ["FDP_CONF_TYPE"],
  },
  {
    title: "empty file",
    yaml: '\n',
    expect: ["1:1 the config is empty: it needs listen, backends and routes"],
    codes: ["FDP_CONF_MISSING"],
  },
  {
    title: "false as header condition",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes:\n' +
      '  - match: { header: { x-debug: false } }\n' +
      '    backend: web\n',
    expect: ["4:33 routes[0].match.header.x-debug: false is not a condition: use true (present), a value, a list of values or \"{capture}\""],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "empty routes",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes: []\n',
    expect: ["3:9 routes: must not be empty"],
    codes: ["FDP_CONF_VALUE"],
  },
  {
    title: "bad log level",
    yaml: 'listen: 127.0.0.1:8080\n' +
      'log_level: verbose\n' +
      'backends: { web: { servers: [127.0.0.1:9001] } }\n' +
      'routes: [{ backend: web }]\n' +
      '\n',
    expect: ["2:12 log_level: \"verbose\" is not one of \"debug\", \"info\", \"warn\", \"error\""],
    codes: ["FDP_CONF_VALUE"],
  },
];

for (const c of cases) {
  test(`mistake: ${c.title}`, (t) => {
    const err = t.throws(() => parseConfig(c.yaml, 'proxy.yaml'), { instanceOf: ConfigError }) as ConfigError;
    t.is(err.code, 'FDP_CONF_INVALID');
    t.is(err.source, 'conf');
    t.false(err.retryable);
    t.deepEqual(err.issues.map((i) => `${i.line}:${i.col} ${i.path}${i.path ? ': ' : ''}${i.message}`), c.expect);
    t.deepEqual(err.issues.map((i) => i.code), c.codes);
    for (const i of err.issues) t.truthy(CONF_ERRORS[i.code], `code ${i.code} is documented`);
    t.is(err.report(), err.issues.map((i) => `proxy.yaml:${i.line}:${i.col} ${i.path}${i.path ? ': ' : ''}${i.message}`).join('\n'));
  });
}

test('at least 25 kinds of mistakes are covered', (t) => {
  t.true(new Set(cases.map((c) => c.title)).size >= 25);
});
