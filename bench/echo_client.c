/*
 * echo_client.c -- the load generator of the echo benchmark (bench/bench.py
 * compiles it with gcc into bench/build/ and runs it pinned to its own core).
 *
 * Owns: N connections to one echo server, each doing strict ping-pong:
 * write an M-byte message, read until M bytes came back, repeat.  One thread,
 * level-triggered epoll, non-blocking sockets, TCP_NODELAY.
 *
 * Data flow and the protocol with bench.py (stdout, one line each):
 *   connect all N -> warm-up (not counted) -> "START" -> measured window of
 *   T seconds -> "STOP" (no new requests after this) -> drain the in-flight
 *   ones -> one JSON line with the window's requests/s, latency percentiles
 *   (send of the first byte to receipt of the last, microseconds) and this
 *   process's CPU use.  bench.py samples the server's /proc/PID/stat (or
 *   attaches strace) exactly between START and STOP, so the server's work
 *   and the counted requests cover the same window.
 *
 * With --requests N (bench/instructions.py, the server under callgrind) the
 * phases are counts instead of times: every connection makes W warm-up
 * requests (--warmup-requests), then, with nothing in flight, "START" ->
 * the client waits for one line on stdin (the driver's go, sent once it
 * has switched the server's instrumentation on; EOF also means go) ->
 * exactly N requests per connection -> "STOP" as the last one completes,
 * nothing in flight -> the JSON line -> the connections stay open until
 * stdin reaches EOF (the driver closes it once the window is shut), so the
 * server's work on the closes stays out of the window too.
 *
 * Every echoed byte is compared with what was sent; each message carries its
 * connection's index and its sequence number, so bytes of another connection
 * or of an earlier request are caught too.
 *
 * Exit status: 0 on success, 1 on a usage or connection error (message on
 * stderr), 2 if the server closed a connection or echoed wrong bytes.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum phase { WARMUP, MEASURE, DRAIN };

struct conn {
    int fd;
    char *msg;          /* this connection's message: sequence number, index, pattern */
    uint64_t seq;       /* number of the current request on this connection */
    size_t sent;        /* bytes of the current message written so far */
    size_t received;    /* bytes of the current echo read so far */
    int in_flight;      /* a request is outstanding */
    int want_out;       /* EPOLLOUT is registered (a write was partial) */
    uint64_t started;   /* ns timestamp of the current request's first write */
    long left;          /* --requests mode: requests still to start in this phase */
};

struct samples {        /* latencies of requests completed in the window */
    uint32_t *ns;       /* capped at ~4.29 s; a longer one is an outlier anyway */
    size_t len, cap;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec
         + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: echo_client (--tcp HOST:PORT | --unix PATH) [--conns N] [--size BYTES]\n"
            "                   [--warmup SECONDS] [--seconds SECONDS]\n"
            "                   [--requests N [--warmup-requests W]]   (per connection)\n");
    exit(1);
}

static int connect_one(const char *tcp, const char *unix_path)
{
    int fd;
    if (unix_path) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        if (strlen(unix_path) >= sizeof sun.sun_path) {
            fprintf(stderr, "unix path too long\n");
            exit(1);
        }
        strcpy(sun.sun_path, unix_path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0)
            die("connect unix");
    } else {
        char host[256];
        const char *colon = strrchr(tcp, ':');
        if (!colon || (size_t)(colon - tcp) >= sizeof host)
            usage();
        memcpy(host, tcp, (size_t)(colon - tcp));
        host[colon - tcp] = '\0';
        struct sockaddr_in sin = {.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)atoi(colon + 1))};
        if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
            usage();
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0)
            die("connect tcp");
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
        die("fcntl O_NONBLOCK");
    return fd;
}

static void sample_add(struct samples *s, uint64_t ns)
{
    if (s->len == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1 << 16;
        s->ns = realloc(s->ns, s->cap * sizeof *s->ns);
        if (!s->ns)
            die("realloc");
    }
    s->ns[s->len++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of the sorted samples, in microseconds. */
static double percentile_us(const struct samples *s, double p)
{
    if (!s->len)
        return 0.0;
    size_t rank = (size_t)(p * (double)s->len + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > s->len)
        rank = s->len;
    return s->ns[rank - 1] / 1000.0;
}

static void set_events(int ep, struct conn *c, int want_out)
{
    if (want_out == c->want_out)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0u),
                             .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl");
    c->want_out = want_out;
}

/* Write what the socket takes of the current message; wait for EPOLLOUT
 * only while part of it is left (large messages). */
static void pump_write(int ep, struct conn *c, size_t size)
{
    while (c->sent < size) {
        ssize_t n = write(c->fd, c->msg + c->sent, size - c->sent);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            die("write");
        }
        c->sent += (size_t)n;
    }
    set_events(ep, c, c->sent < size);
}

/* Each request's bytes are unique to its connection and sequence number,
 * so an echo of another connection's or an older request's bytes is caught. */
static void start_request(int ep, struct conn *c, size_t size)
{
    c->seq++;
    c->left--;
    memcpy(c->msg, &c->seq, size < sizeof c->seq ? size : sizeof c->seq);
    c->sent = c->received = 0;
    c->in_flight = 1;
    c->started = now_ns();
    pump_write(ep, c, size);
}

int main(int argc, char **argv)
{
    const char *tcp = NULL, *unix_path = NULL;
    long nconns = 100;
    size_t size = 1024;
    double warmup = 1.0, seconds = 5.0;
    long counted = 0, warmup_requests = 0;   /* --requests mode when counted > 0 */

    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        if (!strcmp(argv[i], "--tcp"))
            tcp = argv[++i];
        else if (!strcmp(argv[i], "--unix"))
            unix_path = argv[++i];
        else if (!strcmp(argv[i], "--conns"))
            nconns = atol(argv[++i]);
        else if (!strcmp(argv[i], "--size"))
            size = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--warmup"))
            warmup = atof(argv[++i]);
        else if (!strcmp(argv[i], "--seconds"))
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--requests"))
            counted = atol(argv[++i]);
        else if (!strcmp(argv[i], "--warmup-requests"))
            warmup_requests = atol(argv[++i]);
        else
            usage();
    }
    if (!tcp == !unix_path || nconns < 1 || size < 1 || seconds <= 0 || warmup < 0
        || counted < 0 || warmup_requests < 0)
        usage();

    size_t scratch_len = 256 * 1024;
    char *scratch = malloc(scratch_len);
    struct conn *conns = calloc((size_t)nconns, sizeof *conns);
    struct epoll_event *events = calloc((size_t)nconns, sizeof *events);
    struct samples samples = {0};
    if (!scratch || !conns || !events)
        die("malloc");

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    for (long i = 0; i < nconns; i++) {
        conns[i].fd = connect_one(tcp, unix_path);
        conns[i].msg = malloc(size);
        if (!conns[i].msg)
            die("malloc");
        for (size_t b = 0; b < size; b++)
            conns[i].msg[b] = (char)('a' + (b + (size_t)i) % 26);
        if (size >= 12) {   /* bytes 0-7 get the sequence number per request */
            uint32_t index = (uint32_t)i;
            memcpy(conns[i].msg + 8, &index, sizeof index);
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0)
            die("epoll_ctl");
    }

    uint64_t t0 = now_ns();
    uint64_t measure_at = t0 + (uint64_t)(warmup * 1e9);
    uint64_t stop_at = measure_at + (uint64_t)(seconds * 1e9);
    uint64_t t_start = 0, t_stop = 0, drain_deadline = 0;
    double cpu_start = 0, cpu_stop = 0;
    enum phase phase = WARMUP;
    long in_flight = 0;
    uint64_t requests = 0;

    for (long i = 0; i < nconns; i++) {
        conns[i].left = counted ? warmup_requests : -1;   /* -1: time-based, no quota */
        if (conns[i].left) {
            start_request(ep, &conns[i], size);
            in_flight++;
        }
    }

    for (;;) {
        if (in_flight == 0 && phase == MEASURE) {   /* --requests: the last one completed */
            phase = DRAIN;
            t_stop = now_ns();
            cpu_stop = cpu_seconds();
            printf("STOP\n");
            fflush(stdout);
        }
        if (in_flight == 0 && phase == DRAIN)
            break;
        if (in_flight == 0) {
            /* --requests mode, warm-up done and nothing in flight: wait for
             * the go, then start the window on every connection at once */
            printf("START\n");
            fflush(stdout);
            for (int ch = getchar(); ch != EOF && ch != '\n'; ch = getchar())
                ;
            phase = MEASURE;
            t_start = now_ns();
            cpu_start = cpu_seconds();
            for (long i = 0; i < nconns; i++) {
                conns[i].left = counted;
                start_request(ep, &conns[i], size);
                in_flight++;
            }
        }
        uint64_t now = now_ns();
        uint64_t next = phase == WARMUP ? measure_at : phase == MEASURE ? stop_at : drain_deadline;
        int timeout_ms = counted ? -1 : now >= next ? 0 : (int)((next - now) / 1000000u) + 1;
        int n = epoll_wait(ep, events, (int)nconns, timeout_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        now = now_ns();
        if (!counted && phase == WARMUP && now >= measure_at) {
            phase = MEASURE;
            t_start = now;
            cpu_start = cpu_seconds();
            printf("START\n");
            fflush(stdout);
        }
        if (!counted && phase == MEASURE && now >= stop_at) {
            phase = DRAIN;
            t_stop = now;
            cpu_stop = cpu_seconds();
            drain_deadline = now + 5000000000u;
            printf("STOP\n");
            fflush(stdout);
        }
        if (phase == DRAIN && now >= drain_deadline)
            break;

        for (int e = 0; e < n; e++) {
            struct conn *c = events[e].data.ptr;
            if (events[e].events & EPOLLOUT)
                pump_write(ep, c, size);
            if (!(events[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                continue;
            ssize_t got = read(c->fd, scratch, scratch_len);
            if (got < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (got <= 0) {
                fprintf(stderr, "echo_client: server closed a connection (%s)\n",
                        got < 0 ? strerror(errno) : "EOF");
                return 2;
            }
            if (c->received + (size_t)got > c->sent
                || memcmp(scratch, c->msg + c->received, (size_t)got) != 0) {
                fprintf(stderr, "echo_client: connection %ld, request %llu: the echo "
                        "differs from what was sent\n", (long)(c - conns),
                        (unsigned long long)c->seq);
                return 2;
            }
            c->received += (size_t)got;
            if (c->received < size)
                continue;
            uint64_t done = now_ns();
            c->in_flight = 0;
            in_flight--;
            if (phase == MEASURE) {
                requests++;
                sample_add(&samples, done - c->started);
            }
            if (phase != DRAIN && c->left != 0) {
                start_request(ep, c, size);
                in_flight++;
            }
        }
    }

    if (phase != DRAIN) {
        fprintf(stderr, "echo_client: ended before the window closed\n");
        return 1;
    }
    qsort(samples.ns, samples.len, sizeof *samples.ns, cmp_u32);
    double window = (double)(t_stop - t_start) / 1e9;
    printf("{\"requests\": %llu, \"seconds\": %.6f, \"rps\": %.1f, "
           "\"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, "
           "\"max_us\": %.1f, \"client_cpu\": %.3f, \"conns\": %ld, \"size\": %zu, "
           "\"undrained\": %ld}\n",
           (unsigned long long)requests, window, requests / window,
           percentile_us(&samples, 0.50), percentile_us(&samples, 0.90),
           percentile_us(&samples, 0.99), percentile_us(&samples, 0.999),
           percentile_us(&samples, 1.0), (cpu_stop - cpu_start) / window,
           nconns, size, in_flight);
    fflush(stdout);
    if (counted)   /* the closes are the server's work too: keep them out of its window */
        while (getchar() != EOF)
            ;
    for (long i = 0; i < nconns; i++)
        close(conns[i].fd);
    return 0;
}
