/*
 * uring_echo.c -- the ceiling of the echo benchmark: a plain C echo server
 * on io_uring (system liburing), single thread, no Python.  bench/bench.py
 * compiles it with gcc into bench/build/ and runs it exactly like the Python
 * servers in bench/echo_server.py (same flags, same ready line, same
 * SIGTERM shutdown), so the numbers are directly comparable.
 *
 * Owns: one ring; one accept in flight on the listener; per connection one
 * 64 KiB buffer and exactly one op in flight, cycling
 *   recv -> send (resubmitting the rest after a short send) -> recv ...
 * Each loop turn is one io_uring_submit_and_wait() followed by a batched
 * walk of the completion queue.  The ring is set up with SINGLE_ISSUER +
 * DEFER_TASKRUN when the kernel has them, else COOP_TASKRUN, else plain;
 * the ready line says which.
 *
 * Ready line on stdout (one JSON object): backend, pid, address.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif

#define BUF_SIZE (64 * 1024)
#define ACCEPT_TAG ((uint64_t)1)   /* user_data of the accept; conns are pointers */

enum state { RECV, SEND };

struct conn {
    int fd;
    enum state state;
    unsigned len, off;   /* bytes received into buf, bytes of them sent */
    char buf[BUF_SIZE];
};

static volatile sig_atomic_t stopping;
static int is_tcp;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static void die(const char *what, int err)
{
    fprintf(stderr, "uring_echo: %s: %s\n", what, strerror(err));
    exit(1);
}

static struct io_uring_sqe *get_sqe(struct io_uring *ring)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) {   /* SQ full: hand what is queued to the kernel first */
        io_uring_submit(ring);
        sqe = io_uring_get_sqe(ring);
        if (!sqe)
            die("io_uring_get_sqe", EBUSY);
    }
    return sqe;
}

static void queue_accept(struct io_uring *ring, int listener)
{
    struct io_uring_sqe *sqe = get_sqe(ring);
    io_uring_prep_accept(sqe, listener, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, ACCEPT_TAG);
}

static void queue_recv(struct io_uring *ring, struct conn *c)
{
    struct io_uring_sqe *sqe = get_sqe(ring);
    c->state = RECV;
    io_uring_prep_recv(sqe, c->fd, c->buf, BUF_SIZE, 0);
    io_uring_sqe_set_data(sqe, c);
}

static void queue_send(struct io_uring *ring, struct conn *c)
{
    struct io_uring_sqe *sqe = get_sqe(ring);
    c->state = SEND;
    io_uring_prep_send(sqe, c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
    io_uring_sqe_set_data(sqe, c);
}

static int listen_on(const char *unix_path, char *address, size_t address_len)
{
    int fd, one = 1;
    if (unix_path) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        if (strlen(unix_path) >= sizeof sun.sun_path)
            die("unix path", ENAMETOOLONG);
        strcpy(sun.sun_path, unix_path);
        unlink(unix_path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0)
            die("bind unix", errno);
        snprintf(address, address_len, "%s", unix_path);
    } else {
        struct sockaddr_in sin = {.sin_family = AF_INET,
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t sin_len = sizeof sin;
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            die("socket", errno);
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0
            || getsockname(fd, (struct sockaddr *)&sin, &sin_len) < 0)
            die("bind tcp", errno);
        snprintf(address, address_len, "127.0.0.1:%u", ntohs(sin.sin_port));
    }
    if (listen(fd, 1024) < 0)
        die("listen", errno);
    return fd;
}

static const char *setup_ring(struct io_uring *ring)
{
    static const struct { unsigned flags; const char *name; } tries[] = {
        {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, "SINGLE_ISSUER+DEFER_TASKRUN"},
        {IORING_SETUP_COOP_TASKRUN, "COOP_TASKRUN"},
        {0, "no setup flags"},
    };
    int err = 0;
    for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
        struct io_uring_params p = {.flags = tries[i].flags};
        err = io_uring_queue_init_params(4096, ring, &p);
        if (err == 0)
            return tries[i].name;
    }
    die("io_uring_queue_init_params", -err);
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: uring_echo (--tcp | --unix PATH)\n");
    exit(1);
}

int main(int argc, char **argv)
{
    const char *unix_path = NULL;
    if (argc == 2 && !strcmp(argv[1], "--tcp"))
        is_tcp = 1;
    else if (argc == 3 && !strcmp(argv[1], "--unix"))
        unix_path = argv[2];
    else
        usage();

    struct sigaction sa = {.sa_handler = on_signal};   /* no SA_RESTART: wake the wait */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    char address[200];
    int listener = listen_on(unix_path, address, sizeof address);
    struct io_uring ring;
    const char *flags = setup_ring(&ring);
    queue_accept(&ring, listener);

    printf("{\"backend\": \"C io_uring (liburing, %s)\", \"pid\": %d, \"address\": \"%s\"}\n",
           flags, (int)getpid(), address);
    fflush(stdout);

    while (!stopping) {
        int ret = io_uring_submit_and_wait(&ring, 1);
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
            die("io_uring_submit_and_wait", -ret);
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            int res = cqe->res;
            if (cqe->user_data == ACCEPT_TAG) {
                if (res >= 0) {
                    struct conn *c = malloc(sizeof *c);
                    if (!c)
                        die("malloc", ENOMEM);
                    int one = 1;
                    if (is_tcp)
                        setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c->fd = res;
                    queue_recv(&ring, c);
                } else if (res != -EINTR && res != -ECONNABORTED) {
                    die("accept", -res);
                }
                queue_accept(&ring, listener);
                continue;
            }
            struct conn *c = io_uring_cqe_get_data(cqe);
            if (res <= 0) {   /* EOF, reset or other error: drop the connection */
                close(c->fd);
                free(c);
                continue;
            }
            if (c->state == RECV) {
                c->len = (unsigned)res;
                c->off = 0;
                queue_send(&ring, c);
            } else {
                c->off += (unsigned)res;
                if (c->off < c->len)
                    queue_send(&ring, c);
                else
                    queue_recv(&ring, c);
            }
        }
        io_uring_cq_advance(&ring, seen);
    }

    io_uring_queue_exit(&ring);   /* the kernel cancels what is still in flight */
    close(listener);
    if (unix_path)
        unlink(unix_path);
    return 0;
}
