/*
 * firstbyte: the time-to-first-byte client of bench/ttfb.py in C, so that
 * the client's own costs (JSON, Python sockets) are not most of what is
 * measured: the reference figure is nginx timed by curl, a C
 * client too.
 *
 * The benchmark compiles it with `cc -O2` into its work directory and
 * falls back to `python -m bench.ttfb` when there is no C compiler.  Same
 * command line and output: one {"event":"result", "lookup":[...],
 * "sut":[...], "baseline":[...], "floor":[...]} line, seconds.
 *
 * A round of the system under test: send `fetch` on the registered
 * tracker connection, read the answer, connect to its first source, send
 * `get`, stop the clock at the first data byte after the header frame (then
 * read the rest and close).  A baseline round: connect to the trivial
 * server of `bench.rawnet first-byte`, send a request, stop at its first
 * byte.  A floor round (with --floor-tracker): the system-under-test round
 * against `bench.rawnet fake-tracker` and its framed first-byte server.
 *
 * Wire format: docs/protocol.md (Int32 big-endian length + JSON object).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF (1 << 20)

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "firstbyte: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void split_hostport(const char *arg, char *host, size_t hostlen, int *port) {
    const char *colon = strrchr(arg, ':');
    if (!colon || (size_t)(colon - arg) >= hostlen)
        die("bad HOST:PORT %s", arg);
    memcpy(host, arg, colon - arg);
    host[colon - arg] = 0;
    *port = atoi(colon + 1);
}

static int dial(const char *host, int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
        die("not an IPv4 address: %s", host);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("connect %s:%d: %s", host, port, strerror(errno));
    return fd;
}

static void send_all(int fd, const char *data, size_t len) {
    while (len) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("send: %s", strerror(errno));
        }
        data += n;
        len -= n;
    }
}

static void send_frame(int fd, const char *body) {
    char out[4096];
    size_t n = strlen(body);
    if (n + 4 > sizeof out)
        die("frame too long");
    uint32_t be = htonl((uint32_t)n);
    memcpy(out, &be, 4);
    memcpy(out + 4, body, n);
    send_all(fd, out, n + 4);
}

/* A connection's read buffer: frames are taken from its front. */
struct reader {
    int fd;
    char *buf;
    size_t have;
    /* The byte that the current frame's terminating NUL covers. */
    char saved;
};

static void fill(struct reader *r) {
    if (r->have == BUF)
        die("frame too long");
    ssize_t n = recv(r->fd, r->buf + r->have, BUF - r->have, 0);
    if (n < 0 && errno == EINTR)
        return;
    if (n <= 0)
        die("the peer closed the connection (%s)", n < 0 ? strerror(errno) : "end of stream");
    r->have += n;
}

/* The next whole frame's body, NUL-terminated in place until drop_frame
 * (which gives back the byte the NUL covers); *len its length. */
static char *next_frame(struct reader *r, size_t *len) {
    for (;;) {
        if (r->have >= 4) {
            uint32_t be;
            memcpy(&be, r->buf, 4);
            size_t n = ntohl(be);
            if (n + 4 >= BUF)
                die("a %zu-byte frame is too long", n);
            if (r->have >= 4 + n) {
                *len = n;
                r->saved = r->buf[4 + n];
                r->buf[4 + n] = 0;
                return r->buf + 4;
            }
        }
        fill(r);
    }
}

static void drop_frame(struct reader *r, size_t len) {
    r->buf[4 + len] = r->saved;
    memmove(r->buf, r->buf + 4 + len, r->have - 4 - len);
    r->have -= 4 + len;
}

/* The integer after "key": in a JSON text, or -1. */
static long long json_int(const char *text, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = strstr(text, pat);
    if (!p)
        return -1;
    p += strlen(pat);
    while (*p == ' ' || *p == ':')
        p++;
    if (*p < '0' || *p > '9')
        return -1;
    return strtoll(p, NULL, 10);
}

/* The string after "key": in a JSON text (no escapes expected), or 0. */
static int json_str(const char *text, const char *key, char *out, size_t outlen) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = strstr(text, pat);
    if (!p)
        return 0;
    p += strlen(pat);
    while (*p == ' ' || *p == ':')
        p++;
    if (*p != '"')
        return 0;
    const char *end = strchr(++p, '"');
    if (!end || (size_t)(end - p) >= outlen)
        return 0;
    memcpy(out, p, end - p);
    out[end - p] = 0;
    return 1;
}

/* Read frames until the answer to our request; answer tracker pings. */
static char *read_answer(struct reader *r, size_t *len) {
    for (;;) {
        char *body = next_frame(r, len);
        if (!strstr(body, "\"action\""))
            return body;
        char pong[128];
        long long id = json_int(body, "id");
        snprintf(pong, sizeof pong, "{\"status\":\"success\",\"message\":\"pong\",\"id\":%lld}", id);
        drop_frame(r, *len);
        send_frame(r->fd, pong);
    }
}

static struct reader tracker_session(const char *hostport, const char *hostname) {
    char host[64];
    int port;
    split_hostport(hostport, host, sizeof host, &port);
    struct reader r = {dial(host, port), malloc(BUF + 1), 0, 0};
    if (!r.buf)
        die("out of memory");
    char hello[256];
    snprintf(hello, sizeof hello,
             "{\"action\":\"hello\",\"hostname\":\"%s\",\"p2p_port\":1,\"version\":1,\"id\":1}", hostname);
    send_frame(r.fd, hello);
    size_t len;
    char *body = read_answer(&r, &len);
    if (!strstr(body, "success"))
        die("hello refused: %s", body);
    drop_frame(&r, len);
    return r;
}

static char *scratch;

/* One round: fetch, connect to the first source, get; @return seconds. */
static double sut_round(struct reader *t, const char *fname, long long id, double *lookup) {
    char req[512];
    snprintf(req, sizeof req, "{\"action\":\"fetch\",\"fname\":\"%s\",\"id\":%lld}", fname, id);
    double t0 = now();
    send_frame(t->fd, req);
    size_t len;
    char *body = read_answer(t, &len);
    *lookup = now() - t0;
    const char *list = strstr(body, "\"peer_list\"");
    char ip[64];
    long long port = list ? json_int(list, "port") : -1;
    if (!list || port <= 0 || !json_str(list, "ip", ip, sizeof ip))
        die("no source for %s: %s", fname, body);
    drop_frame(t, len);

    int fd = dial(ip, (int)port);
    snprintf(req, sizeof req, "{\"action\":\"get\",\"fname\":\"%s\",\"offset\":0}", fname);
    send_frame(fd, req);
    size_t have = 0;
    double t1 = 0;
    long long length = -1;
    size_t header = 0;
    while (!t1) {
        ssize_t n = recv(fd, scratch + have, BUF - have, 0);
        if (n <= 0)
            die("the source closed the connection");
        have += n;
        if (have >= 4) {
            uint32_t be;
            memcpy(&be, scratch, 4);
            header = ntohl(be);
            if (have >= 4 + header) {
                char saved = scratch[4 + header];
                scratch[4 + header] = 0;
                if (!strstr(scratch + 4, "success"))
                    die("the source refused: %s", scratch + 4);
                length = json_int(scratch + 4, "length");
                scratch[4 + header] = saved;
                if (have > 4 + header || length == 0)
                    t1 = now();
            }
        }
    }
    long long left = length - (long long)(have - 4 - header);
    while (left > 0) {
        ssize_t n = recv(fd, scratch, BUF, 0);
        if (n <= 0)
            break;
        left -= n;
    }
    close(fd);
    return t1 - t0;
}

static double baseline_round(int port) {
    double t0 = now();
    int fd = dial("127.0.0.1", port);
    send_frame(fd, "{\"action\":\"get\",\"fname\":\"x\",\"offset\":0}");
    ssize_t n = recv(fd, scratch, BUF, 0);
    double t1 = now();
    if (n <= 0)
        die("the baseline server closed without data");
    while (recv(fd, scratch, BUF, 0) > 0)
        ;
    close(fd);
    return t1 - t0;
}

static void print_list(const char *name, const double *v, int n, int last) {
    printf("\"%s\":[", name);
    for (int i = 0; i < n; i++)
        printf(i ? ",%.9f" : "%.9f", v[i]);
    printf("]%s", last ? "" : ",");
}

int main(int argc, char **argv) {
    const char *tracker = NULL, *floor_tracker = NULL, *fname = NULL;
    int baseline_port = 0, rounds = 100, warmup = 10;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            die("%s needs a value", a);
        if (!strcmp(a, "--tracker"))
            tracker = v;
        else if (!strcmp(a, "--floor-tracker"))
            floor_tracker = v;
        else if (!strcmp(a, "--fname"))
            fname = v;
        else if (!strcmp(a, "--baseline-port"))
            baseline_port = atoi(v);
        else if (!strcmp(a, "--rounds"))
            rounds = atoi(v);
        else if (!strcmp(a, "--warmup"))
            warmup = atoi(v);
        else
            die("unknown option %s", a);
        i++;
    }
    if (!tracker || !fname || baseline_port <= 0 || rounds <= 0 || warmup < 0)
        die("usage: firstbyte --tracker HOST:PORT --baseline-port N --fname NAME"
            " [--floor-tracker HOST:PORT] [--rounds N] [--warmup N]");
    if (strlen(fname) > 255 || strpbrk(fname, "\"\\"))
        die("the file name must be plain (no quotes or backslashes)");
    scratch = malloc(BUF + 1);
    double *lookup = calloc(rounds, sizeof *lookup), *sut = calloc(rounds, sizeof *sut);
    double *base = calloc(rounds, sizeof *base), *floors = calloc(rounds, sizeof *floors);
    if (!scratch || !lookup || !sut || !base || !floors)
        die("out of memory");
    struct reader t = tracker_session(tracker, "bench-ttfb-c");
    struct reader f = {-1, NULL, 0, 0};
    if (floor_tracker)
        f = tracker_session(floor_tracker, "bench-ttfb-c-floor");
    long long id = 100;
    for (int i = 0; i < warmup + rounds; i++) {
        double l, ignored;
        id++;
        double s = sut_round(&t, fname, id, &l);
        double b = baseline_round(baseline_port);
        double fl = floor_tracker ? sut_round(&f, fname, id, &ignored) : 0;
        if (i >= warmup) {
            int k = i - warmup;
            lookup[k] = l;
            sut[k] = s;
            base[k] = b;
            floors[k] = fl;
        }
    }
    printf("{\"event\":\"result\",");
    print_list("lookup", lookup, rounds, 0);
    print_list("sut", sut, rounds, 0);
    print_list("baseline", base, rounds, 0);
    print_list("floor", floors, floor_tracker ? rounds : 0, 1);
    printf("}\n");
    fflush(stdout);
    return 0;
}
