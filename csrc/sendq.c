/*
 * sendq.c -- C-owned send queues: the write side of a stream transport,
 * kept out of Python on the per-message path.
 *
 * Data flow: ul_sendq_write copies the caller's bytes into the queue.  With
 * no send in flight they go into `sending`, and the queue waits on the
 * ring's start list: its SEND is prepared just before the ring next
 * submits, so everything written until then (a turn's worth of callbacks)
 * leaves in one send, as asyncio's back-to-back writes reach the peer
 * together.  With a send in flight they are appended to `queued`.  The send's completion comes back through ul_ring_turn, which
 * hands it to ul_sendq_complete here instead of to Python: a partial send
 * resubmits the rest of `sending`; a full one swaps in `queued` as the
 * next send.  Python only gets an event when it asked to (DRAINED), when a
 * send failed (FAILED), or when a released queue is finally freed
 * (RELEASED).
 *
 * Buffer lifetime: the kernel reads `sending` between the SEND's
 * preparation and its completion, so that buffer is never written,
 * reallocated or freed meanwhile: appends go to `queued`, and a queue is
 * freed only when no send of it is in flight (ul_sendq_release defers to
 * the completion; ring destruction frees only queues the kernel let go).
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "compat.h"
#include "uring.h"
#include "sendq.h"
#include "fixed.h"

#define NO_THRESHOLD SIZE_MAX
/* A drained buffer up to this size is kept for the next writes. */
#define KEEP_CAPACITY (256 * 1024)

struct ul_sendbuf {
    char *data;
    size_t len, cap;
};

struct ul_sendq {
    struct ul_ring *ring;
    struct ul_sendq_list *list;
    struct ul_sendq *prev, *next;   /* list->all */
    struct ul_sendq *start_next;    /* list->to_start, while waiting_start */
    int fd;
    uint64_t owner;                 /* user_data of the owner's events */
    struct ul_sendbuf sending;      /* the kernel reads [sent, len) */
    size_t sent;
    struct ul_sendbuf queued;       /* written while `sending` is busy */
    size_t notify_threshold;
    int error;                      /* first failure (negative errno) */
    unsigned in_flight : 1;
    unsigned waiting_start : 1;
    unsigned aborted : 1;
    unsigned released : 1;
};

/* What the owner still has to wait for: after an abort, nothing (the send
 * the kernel may still hold is the queue's business, not the owner's). */
static size_t unconfirmed(const struct ul_sendq *q)
{
    return q->aborted ? 0 : (q->sending.len - q->sent) + q->queued.len;
}

static int append(struct ul_sendbuf *b, const void *data, size_t len)
{
    if (len == 0)
        return 0;   /* memcpy may not be handed a NULL buffer, even empty */
    if (b->cap - b->len < len) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < len) {
            if (cap > SIZE_MAX / 2)
                return -ENOMEM;
            cap *= 2;
        }
        char *grown = realloc(b->data, cap);
        if (grown == NULL)
            return -ENOMEM;
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

static void wait_start(struct ul_sendq *q)
{
    if (!q->waiting_start) {
        q->waiting_start = 1;
        q->start_next = q->list->to_start;
        q->list->to_start = q;
    }
}

/* Prepare the SEND of what `sending` still holds; with the SQ full even
 * after submitting, wait on the start list for the next turn. */
static void start_send(struct ul_sendq *q)
{
    int error = 0;
    struct io_uring_sqe *sqe = ul_ring_sqe(q->ring, &error);
    if (sqe == NULL) {
        wait_start(q);
        return;
    }
    /* Cap a single send at INT_MAX: its result must fit the CQE's res. */
    size_t left = q->sending.len - q->sent;
    io_uring_prep_send(sqe, q->fd, q->sending.data + q->sent, left > INT_MAX ? INT_MAX : left,
                       MSG_NOSIGNAL);
    ul_sqe_target(sqe, q->fd);
    io_uring_sqe_set_data64(sqe, UL_SENDQ_TAG | (uint64_t)(uintptr_t)q);
    q->in_flight = 1;
    q->list->in_flight++;
}

static void unlink_waiting(struct ul_sendq *q)
{
    if (!q->waiting_start)
        return;
    for (struct ul_sendq **p = &q->list->to_start; *p != NULL; p = &(*p)->start_next) {
        if (*p == q) {
            *p = q->start_next;
            break;
        }
    }
    q->waiting_start = 0;
}

static void destroy(struct ul_sendq *q)
{
    unlink_waiting(q);
    if (q->prev != NULL)
        q->prev->next = q->next;
    else
        q->list->all = q->next;
    if (q->next != NULL)
        q->next->prev = q->prev;
    free(q->sending.data);
    free(q->queued.data);
    free(q);
}

struct ul_sendq *ul_sendq_new(struct ul_ring *ring, int fd, uint64_t owner)
{
    struct ul_sendq *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    q->ring = ring;
    q->list = ul_ring_sendq_list(ring);
    q->fd = fd;
    q->owner = owner;
    q->notify_threshold = NO_THRESHOLD;
    q->next = q->list->all;
    if (q->next != NULL)
        q->next->prev = q;
    q->list->all = q;
    return q;
}

long long ul_sendq_write(struct ul_sendq *q, const void *data, size_t len)
{
    if (q->error)
        return q->error;
    if (q->released || q->aborted)
        return -EPIPE;
    int ret;
    if (!q->in_flight) {
        /* No SQE points into `sending` until the queue's send starts. */
        if (q->sending.len == q->sent)
            q->sending.len = q->sent = 0;
        ret = append(&q->sending, data, len);
        if (ret == 0 && len > 0)
            wait_start(q);
    } else {
        ret = append(&q->queued, data, len);
    }
    return ret < 0 ? ret : (long long)unconfirmed(q);
}

long long ul_sendq_size(struct ul_sendq *q)
{
    return (long long)unconfirmed(q);
}

void ul_sendq_notify_at(struct ul_sendq *q, size_t threshold)
{
    q->notify_threshold = threshold;
}

int ul_sendq_abort(struct ul_sendq *q)
{
    q->aborted = 1;
    q->notify_threshold = NO_THRESHOLD;
    q->queued.len = 0;
    unlink_waiting(q);
    if (!q->in_flight) {
        q->sending.len = q->sent = 0;
        return 0;
    }
    int error = 0;
    struct io_uring_sqe *sqe = ul_ring_sqe(q->ring, &error);
    if (sqe == NULL)
        return error;   /* the send still completes on its own */
    io_uring_prep_cancel64(sqe, UL_SENDQ_TAG | (uint64_t)(uintptr_t)q, 0);
    io_uring_sqe_set_data64(sqe, 0);
    return 0;
}

int ul_sendq_release(struct ul_sendq *q)
{
    q->released = 1;
    if (q->in_flight || q->waiting_start)
        return 1;
    destroy(q);
    return 0;
}

unsigned ul_ring_sends_in_flight(struct ul_ring *ring)
{
    return ul_ring_sendq_list(ring)->in_flight;
}

static int event(const struct ul_sendq *q, int kind, int res, struct ul_completion *out)
{
    out->user_data = q->owner;
    out->res = res;
    out->flags = ((uint32_t)kind << UL_SENDQ_EVENT_SHIFT)
                 | (kind == UL_SENDQ_RELEASED ? 0 : IORING_CQE_F_MORE);
    return 1;
}

int ul_sendq_complete(uint64_t user_data, int res, struct ul_completion *out)
{
    struct ul_sendq *q = (struct ul_sendq *)(uintptr_t)(user_data & ~UL_SENDQ_TAG);
    int failed = 0;
    q->in_flight = 0;
    q->list->in_flight--;
    if (res < 0 || q->aborted) {
        q->sending.len = q->sent = q->queued.len = 0;
        q->notify_threshold = NO_THRESHOLD;
        if (res < 0 && !q->aborted && !q->error) {
            q->error = res;
            failed = 1;
        }
    } else {
        q->sent += (size_t)res;
        if (q->sent == q->sending.len) {
            struct ul_sendbuf done = q->sending;
            q->sending = q->queued;
            q->sent = 0;
            if (done.cap > KEEP_CAPACITY) {
                /* One big write must not pin its size for the life of
                 * the connection. */
                free(done.data);
                done.data = NULL;
                done.cap = 0;
            }
            done.len = 0;
            q->queued = done;
        }
        if (q->sending.len > q->sent)
            start_send(q);   /* the rest, or what was queued meanwhile */
    }
    if (q->released) {
        /* Even a released queue finishes sending what it holds: close()
         * loses nothing.  Its owner only waits for the end. */
        if (q->in_flight || q->waiting_start)
            return 0;
        event(q, UL_SENDQ_RELEASED, 0, out);
        destroy(q);
        return 1;
    }
    if (failed)
        return event(q, UL_SENDQ_FAILED, res, out);
    size_t left = unconfirmed(q);
    if (q->notify_threshold != NO_THRESHOLD && left <= q->notify_threshold) {
        q->notify_threshold = NO_THRESHOLD;
        return event(q, UL_SENDQ_DRAINED, left > INT_MAX ? INT_MAX : (int)left, out);
    }
    return 0;
}

void ul_sendq_start_waiting(struct ul_sendq_list *list)
{
    struct ul_sendq *q = list->to_start;
    list->to_start = NULL;
    while (q != NULL) {
        struct ul_sendq *next = q->start_next;
        q->waiting_start = 0;
        start_send(q);
        q = next;
    }
}

void ul_sendq_free_all(struct ul_sendq_list *list)
{
    while (list->all != NULL)
        destroy(list->all);
}
