/*
 * fastgen: the closed-loop lookup generator of bench/loadgen.py ("lookups"
 * mode) in C, so that the generator is not what limits the figure.
 *
 * The benchmark compiles it with `cc -O2` into its work directory and
 * falls back to the Python generator when there is no C compiler.  Same
 * command line and JSON-lines interface as `python -m bench.loadgen
 * lookups`: prints {"event":"ready",...}; each "go T0 T1" line on stdin
 * (CLOCK_MONOTONIC seconds, as Python's time.monotonic()) runs one window
 * and prints {"event":"result",...}; "quit" or EOF ends it.  Every session
 * answers the tracker's heartbeat pings, during windows and between them.
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
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_TARGETS 8
#define MAX_WATCH 8
/* Latency histogram: 1 us buckets up to 1 s, then 1 ms buckets up to 100 s. */
#define FINE_US 1000000
#define HIST_US (FINE_US + 99000)

enum { READY, FETCH };

struct conn {
    int fd;
    int state;
    int fetcher;
    unsigned long long ids;
    double sent;
    char *buf;
    size_t len, cap;
    char *out;
    size_t outlen;
};

static struct sockaddr_in targets[MAX_TARGETS];
static int ntargets;
static int watch[MAX_WATCH];
static int nwatch;
static const char *fname = "bench-lookup.bin";
static const char *prefix = "bench";
static int nsessions = 100;
static int publish;
static struct conn *conns;
static int nconns;
static int ep;

static unsigned *hist;
static unsigned long long answers, errors, lost;
static long long in_flight;
static int looping;
static double w0, w1;
static char examples[3][301];
static int nexamples;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    printf("{\"event\":\"error\",\"message\":\"fastgen: %s: %s\"}\n", what, strerror(errno));
    fflush(stdout);
    exit(1);
}

static void fail_msg(const char *text) {
    printf("{\"event\":\"error\",\"message\":\"fastgen: %s\"}\n", text);
    fflush(stdout);
    exit(1);
}

static double self_cpu(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6;
}

static double pid_cpu(int pid) {
    char path[64], data[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(data, 1, sizeof data - 1, f);
    fclose(f);
    data[n] = 0;
    char *p = strrchr(data, ')');
    if (!p) return 0;
    p += 2;
    unsigned long long ut = 0, st = 0;
    /* fields after ')' : state is field 3; utime 14, stime 15 */
    int field = 3;
    char *tok = strtok(p, " ");
    while (tok) {
        if (field == 14) ut = strtoull(tok, NULL, 10);
        if (field == 15) { st = strtoull(tok, NULL, 10); break; }
        field++;
        tok = strtok(NULL, " ");
    }
    return (double)(ut + st) / sysconf(_SC_CLK_TCK);
}

static double watched_cpu(void) {
    double t = 0;
    for (int i = 0; i < nwatch; i++) t += pid_cpu(watch[i]);
    return t;
}

static size_t frame(char *dst, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static size_t frame(char *dst, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst + 4, cap - 4, fmt, ap);
    va_end(ap);
    uint32_t be = htonl((uint32_t)n);
    memcpy(dst, &be, 4);
    return (size_t)n + 4;
}

static void send_all_blocking(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR) continue;
            die("send");
        }
        p += k;
        n -= (size_t)k;
    }
}

static void conn_send(struct conn *c, const char *p, size_t n) {
    if (c->outlen) {
        c->out = realloc(c->out, c->outlen + n);
        memcpy(c->out + c->outlen, p, n);
        c->outlen += n;
        return;
    }
    ssize_t k = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k < 0) {
        if (errno != EAGAIN) { lost++; return; }
        k = 0;
    }
    if ((size_t)k < n) {
        c->out = malloc(n - k);
        memcpy(c->out, p + k, n - k);
        c->outlen = n - k;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

/* Blocking read of the next answer frame (pings answered) during setup. */
static void read_answer_blocking(struct conn *c, char *out, size_t cap) {
    for (;;) {
        while (c->len >= 4) {
            uint32_t n;
            memcpy(&n, c->buf, 4);
            n = ntohl(n);
            if (c->len < 4 + n) break;
            int is_request = memmem(c->buf + 4, n, "\"action\"", 8) != NULL;
            size_t m = n < cap - 1 ? n : cap - 1;
            memcpy(out, c->buf + 4, m);
            out[m] = 0;
            memmove(c->buf, c->buf + 4 + n, c->len - 4 - n);
            c->len -= 4 + n;
            if (!is_request) return;
            /* a ping before we are ready: answer it */
            char *id = strstr(out, "\"id\":");
            char reply[128];
            size_t k = frame(reply, sizeof reply, "{\"status\":\"success\",\"message\":\"pong\",\"id\":%llu}",
                             id ? strtoull(id + 5, NULL, 10) : 0ULL);
            send_all_blocking(c->fd, reply, k);
        }
        if (c->cap - c->len < 65536) {
            c->cap = c->cap * 2 + 65536;
            c->buf = realloc(c->buf, c->cap);
        }
        ssize_t k = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (k <= 0) die("recv during setup");
        c->len += (size_t)k;
    }
}

static void open_session(struct conn *c, int index, int target, int is_publisher) {
    char msg[1024], answer[4096];
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&targets[target % ntargets], sizeof targets[0]) < 0) die("connect");
    c->cap = 65536;
    c->buf = malloc(c->cap);
    size_t n = frame(msg, sizeof msg,
                     "{\"action\":\"hello\",\"hostname\":\"%s-%s%d\",\"p2p_port\":%d,\"version\":1,\"id\":%llu}",
                     prefix, is_publisher ? "src-" : "", index, 1 + index % 65535, ++c->ids);
    send_all_blocking(c->fd, msg, n);
    read_answer_blocking(c, answer, sizeof answer);
    if (!strstr(answer, "\"status\":\"success\"")) {
        char text[512];
        snprintf(text, sizeof text, "hello refused: %.200s", answer);
        for (char *p = text; *p; p++) if (*p == '"' || *p == '\\') *p = '\'';
        fail_msg(text);
    }
    if (is_publisher) {
        n = frame(msg, sizeof msg,
                  "{\"action\":\"publish\",\"fname\":\"%s\",\"lname\":\"%s\",\"file_size\":4096,"
                  "\"last_modified\":1764000000.0,\"sha256\":\"ad7facb2586fc6e966c004d7d1d16b024f5805ff7cb47c7a85dabd8b48892ca7\","
                  "\"id\":%llu}",
                  fname, fname, ++c->ids);
        send_all_blocking(c->fd, msg, n);
        read_answer_blocking(c, answer, sizeof answer);
        if (!strstr(answer, "\"status\":\"created\"") && !strstr(answer, "\"status\":\"unchanged\"")) {
            char text[512];
            snprintf(text, sizeof text, "publish refused: %.200s", answer);
            for (char *p = text; *p; p++) if (*p == '"' || *p == '\\') *p = '\'';
            fail_msg(text);
        }
    }
    int nonblocking = 1;
    if (ioctl(c->fd, FIONBIO, &nonblocking) < 0) die("FIONBIO");
    c->fetcher = !is_publisher;
    c->state = READY;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
}

static void send_fetch(struct conn *c, double t) {
    char msg[512];
    size_t n = frame(msg, sizeof msg, "{\"action\":\"fetch\",\"fname\":\"%s\",\"id\":%llu}", fname, ++c->ids);
    c->state = FETCH;
    c->sent = t;
    in_flight++;
    conn_send(c, msg, n);
}

static void note_error(const char *body, size_t n) {
    errors++;
    if (nexamples < 3) {
        size_t m = n < 300 ? n : 300;
        memcpy(examples[nexamples], body, m);
        examples[nexamples][m] = 0;
        for (char *p = examples[nexamples]; *p; p++) if (*p == '"' || *p == '\\' || (unsigned char)*p < 32) *p = '\'';
        nexamples++;
    }
}

static void handle_frame(struct conn *c, const char *body, size_t n, double t) {
    if (memmem(body, n, "\"action\"", 8)) {
        const char *id = memmem(body, n, "\"id\":", 5);
        char reply[128];
        size_t k = frame(reply, sizeof reply, "{\"status\":\"success\",\"message\":\"pong\",\"id\":%llu}",
                         id ? strtoull(id + 5, NULL, 10) : 0ULL);
        conn_send(c, reply, k);
        return;
    }
    if (c->state != FETCH) return;
    in_flight--;
    c->state = READY;
    if (t >= w0 && t <= w1) {
        int ok = memmem(body, n < 40 ? n : 40, "\"status\":\"success\"", 18) != NULL &&
                 memmem(body, n, "\"peer_list\":[{", 14) != NULL;
        if (ok) {
            answers++;
            long us = (long)((t - c->sent) * 1e6);
            long slot = us < 0 ? 0 : us < FINE_US ? us : FINE_US + (us - FINE_US) / 1000;
            if (slot >= HIST_US) slot = HIST_US - 1;
            hist[slot]++;
        } else {
            note_error(body, n);
        }
    }
    if (looping && t < w1) send_fetch(c, t);
}

static void on_readable(struct conn *c) {
    for (;;) {
        if (c->cap - c->len < 65536) {
            c->cap = c->cap * 2 + 65536;
            c->buf = realloc(c->buf, c->cap);
        }
        ssize_t k = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (k < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            lost++;
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            if (c->state == FETCH) in_flight--;
            c->state = -1;
            return;
        }
        if (k == 0) {
            lost++;
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            if (c->state == FETCH) in_flight--;
            c->state = -1;
            return;
        }
        c->len += (size_t)k;
        if ((size_t)k < 65536) break;
    }
    double t = now();
    size_t off = 0;
    while (c->len - off >= 4) {
        uint32_t n;
        memcpy(&n, c->buf + off, 4);
        n = ntohl(n);
        if (c->len - off < 4 + n) break;
        handle_frame(c, c->buf + off + 4, n, t);
        off += 4 + n;
    }
    if (off) {
        memmove(c->buf, c->buf + off, c->len - off);
        c->len -= off;
    }
}

static void on_writable(struct conn *c) {
    ssize_t k = send(c->fd, c->out, c->outlen, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k < 0) {
        if (errno == EAGAIN) return;
        lost++;
        return;
    }
    memmove(c->out, c->out + k, c->outlen - k);
    c->outlen -= k;
    if (!c->outlen) {
        free(c->out);
        c->out = NULL;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

static char stdin_buf[4096];
static size_t stdin_len;
static int stdin_eof;

/* One complete stdin line into `line`, or 0. */
static int stdin_line(char *line, size_t cap) {
    char *nl = memchr(stdin_buf, '\n', stdin_len);
    if (!nl) return 0;
    size_t n = nl - stdin_buf;
    size_t m = n < cap - 1 ? n : cap - 1;
    memcpy(line, stdin_buf, m);
    line[m] = 0;
    memmove(stdin_buf, nl + 1, stdin_len - n - 1);
    stdin_len -= n + 1;
    return 1;
}

static void poll_once(int timeout_ms) {
    struct epoll_event evs[1024];
    int n = epoll_wait(ep, evs, 1024, timeout_ms);
    if (n < 0) {
        if (errno == EINTR) return;
        die("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
        if (evs[i].data.ptr == NULL) {
            ssize_t k = read(0, stdin_buf + stdin_len, sizeof stdin_buf - stdin_len);
            if (k <= 0) {
                stdin_eof = 1;
                epoll_ctl(ep, EPOLL_CTL_DEL, 0, NULL);
            } else {
                stdin_len += (size_t)k;
            }
            continue;
        }
        struct conn *c = evs[i].data.ptr;
        if (c->state < 0) continue;
        if (evs[i].events & EPOLLOUT) on_writable(c);
        if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
    }
}

static void run_window(double t0, double t1) {
    memset(hist, 0, sizeof(unsigned) * HIST_US);
    answers = errors = 0;
    nexamples = 0;
    unsigned long long lost0 = lost;
    w0 = t0;
    w1 = t1;
    looping = 1;
    double t = now();
    for (int i = 0; i < nconns; i++)
        if (conns[i].fetcher && conns[i].state == READY) send_fetch(&conns[i], t);
    int started = 0;
    double cpu0 = 0, sut0 = 0, wall0 = 0;
    for (;;) {
        t = now();
        if (!started && t >= t0) {
            started = 1;
            cpu0 = self_cpu();
            sut0 = watched_cpu();
            wall0 = t;
        }
        if (t >= t1) break;
        int ms = (int)((t1 - t) * 1000);
        poll_once(ms > 50 ? 50 : ms);
    }
    double cpu1 = self_cpu(), sut1 = watched_cpu();
    double wall = now() - wall0;
    looping = 0;
    double deadline = now() + 3.0;
    while (in_flight > 0 && now() < deadline) poll_once(50);
    printf("{\"event\":\"result\",\"answers\":%llu,\"rate\":%.3f,\"errors\":%llu,\"lost\":%llu,"
           "\"still_in_flight\":%lld,\"failures\":{},",
           answers, answers / (t1 - t0), errors, lost - lost0, in_flight);
    if (started)
        printf("\"gen_cpu\":%.2f,\"sut_cpu\":%s%.2f,", 100.0 * (cpu1 - cpu0) / wall, "", 100.0 * (sut1 - sut0) / wall);
    else
        printf("\"gen_cpu\":null,\"sut_cpu\":null,");
    printf("\"examples\":[");
    for (int i = 0; i < nexamples; i++) printf("%s\"%s\"", i ? "," : "", examples[i]);
    printf("],\"hist_us\":{");
    int first = 1;
    for (long slot = 0; slot < HIST_US; slot++) {
        if (!hist[slot]) continue;
        long us = slot < FINE_US ? slot : FINE_US + (slot - FINE_US) * 1000;
        printf("%s\"%ld\":%u", first ? "" : ",", us, hist[slot]);
        first = 0;
    }
    printf("}}\n");
    fflush(stdout);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "lookups")) continue;
        if (!strcmp(a, "--publish")) { publish = 1; continue; }
        if (!v) fail_msg("missing option value");
        if (!strcmp(a, "--target")) {
            if (ntargets == MAX_TARGETS) fail_msg("too many targets");
            char host[64];
            const char *colon = strrchr(v, ':');
            if (!colon || colon - v >= (long)sizeof host) fail_msg("bad --target");
            memcpy(host, v, colon - v);
            host[colon - v] = 0;
            targets[ntargets].sin_family = AF_INET;
            targets[ntargets].sin_port = htons(atoi(colon + 1));
            if (inet_pton(AF_INET, host, &targets[ntargets].sin_addr) != 1) fail_msg("bad --target address");
            ntargets++;
        } else if (!strcmp(a, "--sessions")) nsessions = atoi(v);
        else if (!strcmp(a, "--fname")) fname = v;
        else if (!strcmp(a, "--prefix")) prefix = v;
        else if (!strcmp(a, "--watch-pid")) { if (nwatch < MAX_WATCH) watch[nwatch++] = atoi(v); }
        else if (!strcmp(a, "--concurrency") || !strcmp(a, "--timeout")) {}
        else fail_msg("unknown option");
        i++;
    }
    if (!ntargets) fail_msg("no --target");
    hist = calloc(HIST_US, sizeof(unsigned));
    ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    nconns = nsessions + (publish ? 1 : 0);
    conns = calloc(nconns, sizeof(struct conn));
    double t = now();
    int k = 0;
    if (publish) open_session(&conns[k++], 0, 0, 1);
    for (int i = 0; i < nsessions; i++) open_session(&conns[k++], i, i, 0);
    printf("{\"event\":\"ready\",\"sessions\":%d,\"failed\":0,\"failures\":{},\"seconds\":%.4f,\"examples\":[],"
           "\"generator\":\"c\"}\n", nconns, now() - t);
    fflush(stdout);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) < 0) die("epoll_ctl stdin");
    char line[256];
    while (!stdin_eof || stdin_len) {
        if (stdin_line(line, sizeof line)) {
            double t0, t1;
            if (sscanf(line, "go %lf %lf", &t0, &t1) == 2) run_window(t0, t1);
            else if (!strncmp(line, "quit", 4)) break;
            continue;
        }
        if (stdin_eof) break;
        poll_once(200);
    }
    return 0;
}
