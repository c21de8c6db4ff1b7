/*
 * loadgen.c — the WebSocket load generator of fdproxy's benchmark (bench/).
 *
 * Why C: a Node client with one `ws` object per connection saturates a core long before the
 * proxies do. This is one epoll loop on non-blocking sockets with prebuilt masked frames; it
 * validates every answer (101 + Sec-WebSocket-Accept, echoed payload byte-equal, close frame)
 * and prints its own CPU so a run can show that the generator was not the bottleneck.
 *
 * In echo mode no message is sent before every connection is open (the open phase is handshakes
 * only); --interval MS paces each connection (its next message MS after the previous one, once
 * that echo is back) — tests/reliability/load10k keeps 10,000 connections under traffic with it.
 *
 * Build (bench/run does it): gcc -O2 -o bench/.work/loadgen bench/loadgen.c -lcrypto
 *
 * Modes (every mode prints JSON lines on stdout; the last one is {"event":"result",...}):
 *   handshake  --conns C: C connections in flight; each: connect, upgrade, validate 101, send a
 *              close frame, wait for the close frame back, close; then the slot starts again.
 *   echo       --conns C --size B: open C connections, then each keeps one binary message of B
 *              bytes in flight: send, wait for the byte-equal echo, record latency, send again.
 *              --until-stdin 1: instead of --duration, run until stdin says anything or closes; then
 *              send no more, wait (up to --timeout) for the echoes still owed, and report
 *              ("owed" in the result: echoes that never came, each also a timeout error).
 *              --rooms R in echo mode: connection i joins room i % R (default: its own room).
 *   idle       --conns C: open C connections (at most --inflight handshakes at once), print
 *              {"event":"holding"}, hold them until stdin says anything or closes (or --hold s).
 * Common: --host 127.0.0.1 --ports P1[,P2...] (the port is chosen by FNV-1a(room) % nports, so
 * "direct" routes by the same key the proxies use), --warmup s, --duration s, --rooms R.
 * The measurement window is announced by {"event":"measure-start"} / {"event":"measure-end"}
 * so the caller can read the subject's CPU from /proc at the same moments.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { M_HANDSHAKE, M_ECHO, M_IDLE };
enum { S_FREE, S_CONNECTING, S_HEAD, S_OPEN, S_CLOSING };
enum { E_CONNECT, E_HANDSHAKE, E_MISMATCH, E_CLOSED, E_TIMEOUT, E_COUNT };
static const char *ERR_NAMES[E_COUNT] = {"connect", "handshake", "mismatch", "closed", "timeout"};

#define RBUF 16384
#define HIST_US 200000 /* 1 µs buckets up to 200 ms, then one overflow bucket */

typedef struct {
  int fd, state, room;
  uint32_t id, seq;
  char accept[32];
  uint8_t *frame; size_t frame_len;   /* masked frame as sent (prebuilt, seq patched in place) */
  uint8_t *plain;                      /* the payload the echo must equal */
  const uint8_t *wptr; size_t wleft;   /* pending write */
  uint8_t rbuf[RBUF]; size_t rlen;
  double t0, deadline, next_send;
  int want_out, waiting, owed;        /* owed: an echo is on its way back */
} conn_t;

static int mode = M_ECHO, nports = 0, ports[8], conns = 100, rooms = 1000, inflight_max = 200;
static double warmup = 1, duration = 3, hold = 120, op_timeout = 10, interval = 0;
static int all_open = 0, rooms_set = 0, until_stdin = 0, stopping = 0;
static size_t size = 64;
static const char *host = "127.0.0.1";
static int ep;
static conn_t *cs;
static uint64_t ops, errs[E_COUNT], errs_total, opened, inflight, room_counter;
static uint32_t *hist; static uint64_t hist_over, lat_max;
static int measuring;
static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static double cpu_self(void) { struct rusage r; getrusage(RUSAGE_SELF, &r);
  return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6; }
static uint64_t xrand(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }
static uint32_t fnv1a(const char *s) { uint32_t h = 2166136261u; for (; *s; s++) { h ^= (uint8_t)*s; h *= 16777619u; } return h; }
static void say(const char *s) { fputs(s, stdout); fputc('\n', stdout); fflush(stdout); }

static void record(double secs) {
  uint64_t us = (uint64_t)(secs * 1e6);
  if (us > lat_max) lat_max = us;
  if (us < HIST_US) hist[us]++; else hist_over++;
}
static uint64_t pct(double p) {
  uint64_t total = hist_over, seen = 0; for (int i = 0; i < HIST_US; i++) total += hist[i];
  if (!total) return 0;
  uint64_t want = (uint64_t)(p * total); if (want >= total) want = total - 1;
  for (int i = 0; i < HIST_US; i++) { seen += hist[i]; if (seen > want) return i; }
  return lat_max;
}

static void ws_accept_for(const char *key, char *out) {
  static const char *GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  char buf[128]; unsigned char md[EVP_MAX_MD_SIZE]; unsigned int mdlen = 0;
  int n = snprintf(buf, sizeof buf, "%s%s", key, GUID);
  EVP_Digest(buf, n, md, &mdlen, EVP_sha1(), NULL);
  EVP_EncodeBlock((unsigned char *)out, md, mdlen);
}

static void set_events(conn_t *c, int out) {
  struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
  c->want_out = out;
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_open(conn_t *c);

static void conn_close(conn_t *c, int err) {
  if (c->fd >= 0) { epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL); close(c->fd); }
  c->owed = 0;
  if (c->state == S_CONNECTING || c->state == S_HEAD) inflight--;
  c->fd = -1; c->state = S_FREE; c->rlen = 0; c->wleft = 0;
  if (err >= 0) { errs[err]++; errs_total++; }
}

/* Write what is pending; returns -1 on a fatal error. */
static int flush_out(conn_t *c) {
  while (c->wleft) {
    ssize_t n = write(c->fd, c->wptr, c->wleft);
    if (n < 0) { if (errno == EAGAIN) { if (!c->want_out) set_events(c, 1); return 0; } if (errno == EINTR) continue; return -1; }
    c->wptr += n; c->wleft -= n;
  }
  if (c->want_out) set_events(c, 0);
  return 0;
}
static int send_bytes(conn_t *c, const uint8_t *p, size_t n) { c->wptr = p; c->wleft = n; return flush_out(c); }

static uint8_t CLOSE_FRAME[8];
static void build_close(void) { /* FIN|close, masked, 2-byte payload: status 1000 */
  CLOSE_FRAME[0] = 0x88; CLOSE_FRAME[1] = 0x80 | 2; memcpy(CLOSE_FRAME + 2, MASK, 4);
  CLOSE_FRAME[6] = 0x03 ^ MASK[0]; CLOSE_FRAME[7] = 0xe8 ^ MASK[1];
}

static void build_frame(conn_t *c) {
  size_t hdr = size < 126 ? 2 : size < 65536 ? 4 : 10;
  c->frame_len = hdr + 4 + size;
  c->frame = malloc(c->frame_len); c->plain = malloc(size ? size : 1);
  uint8_t *f = c->frame; f[0] = 0x82;
  if (hdr == 2) f[1] = 0x80 | size;
  else if (hdr == 4) { f[1] = 0x80 | 126; f[2] = size >> 8; f[3] = size & 0xff; }
  else { f[1] = 0x80 | 127; for (int i = 0; i < 8; i++) f[2 + i] = (uint64_t)size >> (56 - 8 * i); }
  memcpy(f + hdr, MASK, 4);
  for (size_t i = 0; i < size; i++) c->plain[i] = (uint8_t)(xrand() >> 24);
  for (size_t i = 0; i < size; i++) f[hdr + 4 + i] = c->plain[i] ^ MASK[i & 3];
}

/* Stamp connection id + sequence number into the first 8 payload bytes (so a stale or
   misrouted echo cannot pass), re-mask them, send. */
static int send_echo(conn_t *c) {
  size_t off = c->frame_len - size;
  uint32_t v[2] = {c->id, ++c->seq};
  size_t n = size < 8 ? size : 8;
  memcpy(c->plain, v, n);
  for (size_t i = 0; i < n; i++) c->frame[off + i] = c->plain[i] ^ MASK[i & 3];
  c->t0 = now(); c->deadline = c->t0 + op_timeout; c->owed = 1;
  return send_bytes(c, c->frame, c->frame_len);
}

static void conn_open(conn_t *c) {
  c->room = mode == M_ECHO ? (int)(rooms_set ? c->id % (uint32_t)rooms : c->id) : (int)(room_counter++ % rooms);
  char room[32]; snprintf(room, sizeof room, "room-%d", c->room);
  int port = ports[fnv1a(room) % nports];
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) { errs[E_CONNECT]++; errs_total++; return; }
  int one = 1; setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, host, &a.sin_addr);
  c->fd = fd; c->state = S_CONNECTING; c->rlen = 0; c->wleft = 0; c->seq = 0; c->waiting = 0;
  c->t0 = now(); c->deadline = c->t0 + op_timeout; inflight++; opened++;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
  c->want_out = 1;
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) conn_close(c, E_CONNECT);
}

static void on_connected(conn_t *c) {
  int err = 0; socklen_t l = sizeof err;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
  if (err) { conn_close(c, E_CONNECT); return; }
  uint8_t raw[16]; char key[32];
  for (int i = 0; i < 16; i++) raw[i] = (uint8_t)(xrand() >> 32);
  EVP_EncodeBlock((unsigned char *)key, raw, 16);
  ws_accept_for(key, c->accept);
  static __thread char req[512];
  char room[32]; snprintf(room, sizeof room, "room-%d", c->room);
  int n = snprintf(req, sizeof req,
    "GET /ws/%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", room, host, key);
  c->state = S_HEAD;
  /* the request is small; copy it into rbuf's tail is not needed: loopback takes it at once */
  ssize_t w = write(c->fd, req, n);
  if (w != n) { conn_close(c, E_CONNECT); return; }
  set_events(c, 0);
}

/* Validate the 101 head: status, Upgrade, Sec-WebSocket-Accept. Returns head length, 0 if
   incomplete, -1 if invalid. */
static int check_head(conn_t *c) {
  uint8_t *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
  if (!end) return c->rlen >= RBUF ? -1 : 0;
  size_t hl = end - c->rbuf + 4;
  char *h = (char *)c->rbuf; char save = h[hl - 1]; h[hl - 1] = 0;
  int ok = strncmp(h, "HTTP/1.1 101 ", 13) == 0, acc = 0, upg = 0;
  for (char *line = strstr(h, "\r\n"); ok && line && line + 2 < h + hl; line = strstr(line + 2, "\r\n")) {
    char *l = line + 2;
    if (!strncasecmp(l, "sec-websocket-accept:", 21)) {
      char *v = l + 21; while (*v == ' ') v++;
      acc = strncmp(v, c->accept, 28) == 0 && (v[28] == '\r' || v[28] == ' ');
    } else if (!strncasecmp(l, "upgrade:", 8)) {
      char *v = l + 8; while (*v == ' ') v++;
      upg = strncasecmp(v, "websocket", 9) == 0;
    }
  }
  h[hl - 1] = save;
  return ok && acc && upg ? (int)hl : -1;
}

static void after_open(conn_t *c) {
  inflight--;
  if (mode == M_HANDSHAKE) {
    if (measuring) record(now() - c->t0);
    c->state = S_CLOSING; c->deadline = now() + op_timeout;
    if (send_bytes(c, CLOSE_FRAME, sizeof CLOSE_FRAME) < 0) conn_close(c, E_CLOSED);
  } else {
    c->state = S_OPEN;
    /* echo starts for everyone at once when the last connection is open (or right away for a
       connection re-opened later) */
    if (mode == M_ECHO && all_open && !stopping && send_echo(c) < 0) conn_close(c, E_CLOSED);
    if (mode == M_ECHO && !all_open) c->deadline = 1e18;
    if (mode == M_IDLE) c->deadline = 1e18;
  }
}

/* Consume complete server frames in rbuf. */
static void on_frames(conn_t *c) {
  size_t pos = 0;
  while (c->fd >= 0 && c->rlen - pos >= 2) {
    uint8_t *f = c->rbuf + pos; int op = f[0] & 0x0f; uint64_t len = f[1] & 0x7f; size_t hdr = 2;
    if (f[1] & 0x80) { conn_close(c, E_MISMATCH); return; } /* servers never mask */
    if (len == 126) { if (c->rlen - pos < 4) break; len = (f[2] << 8) | f[3]; hdr = 4; }
    else if (len == 127) { if (c->rlen - pos < 10) break; len = 0; for (int i = 0; i < 8; i++) len = (len << 8) | f[2 + i]; hdr = 10; }
    if (hdr + len > RBUF) { conn_close(c, E_MISMATCH); return; }
    if (c->rlen - pos < hdr + len) break;
    uint8_t *p = f + hdr;
    if (op == 0x8) { /* close: only expected after ours, in handshake mode */
      if (c->state == S_CLOSING && len >= 2 && p[0] == 0x03 && p[1] == 0xe8) {
        if (measuring) ops++;
        conn_close(c, -1);
        if (mode == M_HANDSHAKE) conn_open(c);
      } else conn_close(c, E_CLOSED);
      return;
    }
    if (op == 0x9 || op == 0xa) { pos += hdr + len; continue; } /* ping/pong: not expected, ignored */
    if (mode != M_ECHO || c->state != S_OPEN || op != 0x2 || !(f[0] & 0x80) || len != size || memcmp(p, c->plain, size)) {
      conn_close(c, E_MISMATCH); return;
    }
    pos += hdr + len;
    c->owed = 0;
    if (measuring) { ops++; record(now() - c->t0); }
    if (stopping) { c->waiting = 0; c->deadline = 1e18; continue; }
    if (interval > 0) { c->waiting = 1; c->next_send = c->t0 + interval; c->deadline = 1e18; continue; }
    if (send_echo(c) < 0) { conn_close(c, E_CLOSED); return; }
  }
  if (pos) { memmove(c->rbuf, c->rbuf + pos, c->rlen - pos); c->rlen -= pos; }
}

static void on_readable(conn_t *c) {
  for (;;) {
    ssize_t n = read(c->fd, c->rbuf + c->rlen, RBUF - c->rlen);
    if (n < 0) { if (errno == EAGAIN) return; if (errno == EINTR) continue; conn_close(c, E_CLOSED); return; }
    if (n == 0) { conn_close(c, c->state == S_HEAD ? E_HANDSHAKE : E_CLOSED); return; }
    size_t room_left = RBUF - c->rlen;
    c->rlen += n;
    if (c->state == S_HEAD) {
      int hl = check_head(c);
      if (hl < 0) { conn_close(c, E_HANDSHAKE); return; }
      if (hl == 0) continue;
      memmove(c->rbuf, c->rbuf + hl, c->rlen - hl); c->rlen -= hl;
      after_open(c);
      if (c->fd < 0) return;
    }
    if (c->state == S_OPEN || c->state == S_CLOSING) on_frames(c);
    if (c->fd < 0) return;
    if (c->rlen == RBUF) { conn_close(c, E_MISMATCH); return; }
    /* a short read drained the socket: skip the extra read() that would only say EAGAIN
       (epoll is level-triggered and reports what arrives later) */
    if ((size_t)n < room_left) return;
  }
}

static int parse_ports(const char *s) {
  char *d = strdup(s), *save = NULL;
  for (char *t = strtok_r(d, ",", &save); t && nports < 8; t = strtok_r(NULL, ",", &save)) ports[nports++] = atoi(t);
  free(d); return nports;
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: loadgen handshake|echo|idle --ports P[,P] [--conns N] [--size B] [--warmup s] [--duration s]\n"); return 2; }
  mode = !strcmp(argv[1], "handshake") ? M_HANDSHAKE : !strcmp(argv[1], "idle") ? M_IDLE : M_ECHO;
  for (int i = 2; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (!strcmp(k, "--ports")) parse_ports(v);
    else if (!strcmp(k, "--host")) host = v;
    else if (!strcmp(k, "--conns")) conns = atoi(v);
    else if (!strcmp(k, "--size")) size = strtoul(v, NULL, 10);
    else if (!strcmp(k, "--warmup")) warmup = atof(v);
    else if (!strcmp(k, "--duration")) duration = atof(v);
    else if (!strcmp(k, "--rooms")) { rooms = atoi(v); rooms_set = 1; }
    else if (!strcmp(k, "--until-stdin")) until_stdin = atoi(v);
    else if (!strcmp(k, "--inflight")) inflight_max = atoi(v);
    else if (!strcmp(k, "--hold")) hold = atof(v);
    else if (!strcmp(k, "--timeout")) op_timeout = atof(v);
    else if (!strcmp(k, "--interval")) interval = atof(v) / 1000;
    else { fprintf(stderr, "unknown option %s\n", k); return 2; }
  }
  if (!nports || conns < 1 || size + 14 > RBUF / 2) { fprintf(stderr, "bad options\n"); return 2; }
  signal(SIGPIPE, SIG_IGN);
  rng ^= (uint64_t)getpid() << 20 ^ (uint64_t)(now() * 1e9);
  build_close();
  hist = calloc(HIST_US, sizeof *hist);
  cs = calloc(conns, sizeof *cs);
  ep = epoll_create1(EPOLL_CLOEXEC);
  for (int i = 0; i < conns; i++) { cs[i].fd = -1; cs[i].id = i; if (mode == M_ECHO) build_frame(&cs[i]); }
  if (mode == M_IDLE || until_stdin) { /* stdin: any input or EOF ends the hold (idle) or the run */
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}; epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
  }

  double start = now(), t_measure = 0, t_end = 0, cpu0 = 0, cpu1 = 0, hold_end = 0, last_sweep = start, stop_end = 0;
  uint64_t owed_at_end = 0;
  int next_open = 0, holding = 0, done = 0, stdin_done = 0;
  struct epoll_event evs[512];
  if (mode == M_HANDSHAKE) { t_measure = start + warmup; for (int i = 0; i < conns; i++) conn_open(&cs[i]); next_open = conns; }

  while (!done) {
    double t = now();
    /* open phase for echo / idle: bounded handshakes in flight */
    while (next_open < conns && mode != M_HANDSHAKE && inflight < (uint64_t)inflight_max) conn_open(&cs[next_open++]);
    if (mode == M_ECHO && !t_measure && next_open == conns && inflight == 0) {
      t_measure = t + warmup; all_open = 1;
      printf("{\"event\":\"opened\",\"secs\":%.3f,\"errors\":%llu}\n", t - start, (unsigned long long)errs_total); fflush(stdout);
      for (int i = 0; i < conns; i++) if (cs[i].state == S_OPEN) {
        if (interval > 0) { cs[i].waiting = 1; cs[i].next_send = t + interval * (double)(xrand() % 1000) / 1000; }
        else if (send_echo(&cs[i]) < 0) conn_close(&cs[i], E_CLOSED);
      }
    }
    if (interval > 0 && all_open && !stopping) for (int i = 0; i < conns; i++) {
      conn_t *c = &cs[i];
      if (c->waiting && c->state == S_OPEN && t >= c->next_send) { c->waiting = 0; if (send_echo(c) < 0) conn_close(c, E_CLOSED); }
    }
    if (mode == M_IDLE && !holding && next_open == conns && inflight == 0) {
      int open_now = 0; for (int i = 0; i < conns; i++) open_now += cs[i].state == S_OPEN;
      printf("{\"event\":\"holding\",\"conns\":%d,\"errors\":%llu,\"secs\":%.3f}\n", open_now, (unsigned long long)errs_total, t - start);
      fflush(stdout); holding = 1; hold_end = t + hold; ops = open_now;
    }
    if (t_measure && !measuring && !t_end && t >= t_measure) { measuring = 1; cpu0 = cpu_self(); t_measure = t; say("{\"event\":\"measure-start\"}"); }
    if (until_stdin && stdin_done && !stopping) { stopping = 1; stop_end = t + op_timeout; }
    if (stopping) {
      uint64_t owed = 0; for (int i = 0; i < conns; i++) owed += cs[i].owed && cs[i].state == S_OPEN;
      if (owed == 0 || t >= stop_end) {
        owed_at_end = owed;
        for (int i = 0; i < conns; i++) if (cs[i].owed && cs[i].state == S_OPEN) { errs[E_TIMEOUT]++; errs_total++; }
        if (measuring) { measuring = 0; t_end = t; cpu1 = cpu_self(); say("{\"event\":\"measure-end\"}"); }
        done = 1; break;
      }
    }
    if (measuring && !until_stdin && t >= t_measure + duration) { measuring = 0; t_end = t; cpu1 = cpu_self(); say("{\"event\":\"measure-end\"}"); done = 1; break; }
    if (holding && (stdin_done || t >= hold_end)) { done = 1; break; }
    if (t - start > 600) { fprintf(stderr, "loadgen: global time limit\n"); done = 1; break; }
    if (t - last_sweep > 0.25) { /* per-operation timeouts */
      last_sweep = t;
      for (int i = 0; i < conns; i++) if (cs[i].state != S_FREE && t > cs[i].deadline) {
        conn_close(&cs[i], E_TIMEOUT);
        if ((mode == M_HANDSHAKE || mode == M_ECHO) && !stopping) conn_open(&cs[i]);
      }
    }
    int n = epoll_wait(ep, evs, 512, interval > 0 ? 2 : 10);
    for (int i = 0; i < n; i++) {
      conn_t *c = evs[i].data.ptr;
      if (!c) { char b[256]; (void)!read(0, b, sizeof b); stdin_done = 1; epoll_ctl(ep, EPOLL_CTL_DEL, 0, NULL); continue; }
      if (c->fd < 0) continue;
      if (c->state == S_CONNECTING) {
        if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c);
        if (c->fd < 0 && mode != M_IDLE) conn_open(c);
        continue;
      }
      if ((evs[i].events & EPOLLOUT) && c->wleft && flush_out(c) < 0) { conn_close(c, E_CLOSED); }
      if (c->fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) on_readable(c);
      if (c->fd < 0 && c->state == S_FREE && mode != M_IDLE && !done && !stopping) {
        /* an errored connection is replaced so the load stays steady (errors stay counted) */
        conn_open(c);
      }
    }
  }
  if (!t_end) { t_end = now(); cpu1 = cpu_self(); if (!cpu0) cpu0 = 0; }
  double secs = mode == M_IDLE ? 0 : t_end - t_measure;
  int open_now = 0; for (int i = 0; i < conns; i++) open_now += cs[i].state == S_OPEN;
  for (int i = 0; i < conns; i++) if (cs[i].fd >= 0) { close(cs[i].fd); cs[i].fd = -1; }
  printf("{\"event\":\"result\",\"mode\":\"%s\",\"conns\":%d,\"size\":%zu,\"secs\":%.3f,\"ops\":%llu,\"rate\":%.1f,"
         "\"p50_us\":%llu,\"p99_us\":%llu,\"max_us\":%llu,\"open\":%d,\"errors\":%llu,\"err\":{",
         argv[1], conns, size, secs, (unsigned long long)ops, secs > 0 ? ops / secs : 0.0,
         (unsigned long long)pct(0.5), (unsigned long long)pct(0.99), (unsigned long long)lat_max, open_now,
         (unsigned long long)errs_total);
  for (int e = 0; e < E_COUNT; e++) printf("%s\"%s\":%llu", e ? "," : "", ERR_NAMES[e], (unsigned long long)errs[e]);
  printf("},\"owed\":%llu,\"cpu_s\":%.3f,\"cpu_pct\":%.1f}\n", (unsigned long long)owed_at_end, cpu1 - cpu0, secs > 0 ? 100 * (cpu1 - cpu0) / secs : 0.0);
  fflush(stdout);
  return 0;
}
