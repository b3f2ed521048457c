/*
 * sendq.c -- C-owned send queues: the write side of a stream transport,
 * kept out of Python on the per-message path.
 *
 * Data flow: ul_sendq_write copies the caller's bytes into the queue.  With
 * no send in flight they go into `sending`, and the queue waits on the
 * ring's start list: its SEND is prepared just before the ring next
 * submits, so everything written until then (a turn's worth of callbacks)
 * leaves in one send, as asyncio's back-to-back writes reach the peer
 * together.  With a send in flight they are appended to `queued`.  The
 * send's completion comes back through ul_ring_turn, which hands it to
 * ul_sendq_complete here instead of to Python: a partial send resubmits
 * the rest of `sending`; a full one swaps in `queued` as the
 * next send.  Python only gets an event when it asked to (DRAINED), when a
 * send failed (FAILED), or when a released queue is finally freed
 * (RELEASED).
 *
 * Buffer lifetime: the kernel reads `sending` between the SEND's
 * preparation and its completion, so that buffer is never written,
 * reallocated or freed meanwhile: appends go to `queued`, and a queue is
 * freed only when no send of it is in flight (ul_sendq_release defers to
 * the completion; ring destruction frees only queues the kernel let go).
 *
 * Big writes by reference (ul_sendq_by_reference): an idle queue sends a
 * big write from the caller's buffer in place of `sending` (`ref`),
 * without copying it; what is written meanwhile goes to `queued`, so wire
 * order holds.  The caller keeps that buffer alive and unchanged while
 * ul_sendq_holds_ref says so.  Such a send may be zero-copy (SEND_ZC):
 * the kernel then reads the buffer until the notification CQE
 * (IORING_CQE_F_NOTIF) that follows the send's own completion, which
 * counts as in flight until then, and the buffer stays held.
 *
 * Sends at once (ul_sendq_send_first): a write to an idle queue is first
 * offered to the socket with a non-blocking send(2), as asyncio's and
 * uvloop's write() do, so what the socket takes is in the kernel when
 * write() returns (code that writes and then blocks its thread, or exits,
 * loses or stalls nothing); only the rest goes through the ring.
 *
 * Write pressure (ul_sendq_check_pressure): whether a write above the
 * high-water mark must pause the writer is decided at the next send
 * completion, in C: an event only if the kernel left more than the mark
 * unsent, none when the send took everything (asyncio's write sends at
 * once and counts only what the socket refused).
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
    int first_fd;                   /* the socket's fd for sends at once, or -1 */
    uint64_t owner;                 /* user_data of the owner's events */
    struct ul_sendbuf sending;      /* the kernel reads [sent, len) */
    size_t sent;
    struct ul_sendbuf queued;       /* written while `sending` is busy */
    const char *ref;                /* a caller's buffer sent instead of `sending`: */
    size_t ref_len;                 /*   the kernel reads [sent, ref_len); `sending` is empty */
    size_t ref_min, zc_min;         /* writes this big go by reference / zero-copy */
    unsigned zc_notifs;             /* SEND_ZC notifications still to come */
    unsigned ref_zc : 1;            /* `ref` goes out with SEND_ZC */
    unsigned ref_done_event : 1;    /* tell the owner when `ref` is let go */
    size_t notify_threshold;
    size_t pressure_at;             /* NO_THRESHOLD, or a high-water mark to check */
    int error;                      /* first failure (negative errno) */
    unsigned in_flight : 1;
    unsigned waiting_start : 1;
    unsigned aborted : 1;
    unsigned released : 1;
};

/* The buffer of the send in flight (or about to start). */
static const char *send_data(const struct ul_sendq *q)
{
    return q->ref != NULL ? q->ref : q->sending.data;
}

static size_t send_len(const struct ul_sendq *q)
{
    return q->ref != NULL ? q->ref_len : q->sending.len;
}

/* What the owner still has to wait for: after an abort, nothing (the send
 * the kernel may still hold is the queue's business, not the owner's). */
static size_t unconfirmed(const struct ul_sendq *q)
{
    return q->aborted ? 0 : (send_len(q) - q->sent) + q->queued.len;
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
    size_t left = send_len(q) - q->sent;
    if (q->ref != NULL && q->ref_zc)
        io_uring_prep_send_zc(sqe, q->fd, send_data(q) + q->sent,
                              left > INT_MAX ? INT_MAX : left, MSG_NOSIGNAL, 0);
    else
        io_uring_prep_send(sqe, q->fd, send_data(q) + q->sent,
                           left > INT_MAX ? INT_MAX : left, MSG_NOSIGNAL);
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
    q->first_fd = -1;
    q->owner = owner;
    q->notify_threshold = NO_THRESHOLD;
    q->pressure_at = q->ref_min = q->zc_min = NO_THRESHOLD;
    q->next = q->list->all;
    if (q->next != NULL)
        q->next->prev = q;
    q->list->all = q;
    return q;
}

int ul_sendq_holds_ref(struct ul_sendq *q)
{
    return q->ref != NULL || q->zc_notifs != 0;
}

void ul_sendq_send_first(struct ul_sendq *q, int fd)
{
    q->first_fd = fd;
}

/* Nothing sent, being sent, waiting to be or held: a write may go first. */
static int idle(struct ul_sendq *q)
{
    return !q->in_flight && !q->waiting_start && !ul_sendq_holds_ref(q)
        && q->sending.len == q->sent && q->queued.len == 0;
}

long long ul_sendq_write(struct ul_sendq *q, const void *data, size_t len)
{
    if (q->error)
        return q->error;
    if (q->released || q->aborted)
        return -EPIPE;
    long long sent_first = 0;
    if (q->first_fd >= 0 && len > 0 && len < q->zc_min && idle(q)) {
        ssize_t n = send(q->first_fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            q->error = -errno;   /* the queue is failed, as by a failed SEND */
            return q->error;
        }
        if (n > 0) {
            if ((size_t)n == len)
                return 0;
            data = (const char *)data + n;
            len -= (size_t)n;
        }
        sent_first = UL_SENDQ_SENT_FIRST;
    }
    if (len >= q->ref_min && idle(q)) {
        /* Send from the caller's buffer. */
        q->sending.len = q->sent = 0;
        q->ref = data;
        q->ref_len = len;
        q->ref_zc = len >= q->zc_min;
        /* Holding on to a buffer bigger than a kept one of our own
         * would matter: the owner hears when it may let go. */
        q->ref_done_event = len > KEEP_CAPACITY;
        wait_start(q);
        return (long long)len | UL_SENDQ_BY_REF | sent_first;
    }
    int ret;
    if (!q->in_flight && q->ref == NULL) {
        /* No SQE points into `sending` until the queue's send starts. */
        if (q->sending.len == q->sent)
            q->sending.len = q->sent = 0;
        ret = append(&q->sending, data, len);
        if (ret == 0 && len > 0)
            wait_start(q);
    } else {
        ret = append(&q->queued, data, len);
    }
    return ret < 0 ? ret : (long long)unconfirmed(q) | sent_first;
}

void ul_sendq_by_reference(struct ul_sendq *q, size_t ref_min, size_t zc_min)
{
    q->ref_min = ref_min ? ref_min : NO_THRESHOLD;
    q->zc_min = zc_min ? zc_min : NO_THRESHOLD;
}

void ul_sendq_check_pressure(struct ul_sendq *q, size_t high_water)
{
    q->pressure_at = high_water;
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
    q->notify_threshold = q->pressure_at = NO_THRESHOLD;
    q->queued.len = 0;
    unlink_waiting(q);
    if (!q->in_flight) {
        q->sending.len = q->sent = 0;
        q->ref = NULL;
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

/* Whether the kernel may still use anything of the queue's. */
static int busy(const struct ul_sendq *q)
{
    return q->in_flight || q->waiting_start || q->zc_notifs;
}

int ul_sendq_release(struct ul_sendq *q)
{
    q->released = 1;
    if (busy(q))
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

/* The one event (if any) the owner must hear after a completion. */
static int report(struct ul_sendq *q, int send_completed, int failed_res,
                  struct ul_completion *out)
{
    if (q->released) {
        /* Even a released queue finishes sending what it holds: close()
         * loses nothing.  Its owner only waits for the end. */
        if (busy(q))
            return 0;
        event(q, UL_SENDQ_RELEASED, 0, out);
        destroy(q);
        return 1;
    }
    if (failed_res)
        return event(q, UL_SENDQ_FAILED, failed_res, out);
    size_t left = unconfirmed(q);
    int clipped = left > INT_MAX ? INT_MAX : (int)left;
    int ref_done = q->ref_done_event && !ul_sendq_holds_ref(q);
    if (ref_done)
        q->ref_done_event = 0;
    if (send_completed) {
        size_t pressure_at = q->pressure_at;
        q->pressure_at = NO_THRESHOLD;
        if (pressure_at != NO_THRESHOLD && left > pressure_at)
            return event(q, UL_SENDQ_DRAINED, clipped, out);
    }
    if (q->notify_threshold != NO_THRESHOLD && left <= q->notify_threshold) {
        q->notify_threshold = NO_THRESHOLD;
        return event(q, UL_SENDQ_DRAINED, clipped, out);
    }
    return ref_done ? event(q, UL_SENDQ_DRAINED, clipped, out) : 0;
}

int ul_sendq_complete(uint64_t user_data, int res, uint32_t cqe_flags, struct ul_completion *out)
{
    struct ul_sendq *q = (struct ul_sendq *)(uintptr_t)(user_data & ~UL_SENDQ_TAG);
    if (cqe_flags & IORING_CQE_F_NOTIF) {
        /* A zero-copy send's pages are the kernel's no more. */
        q->zc_notifs--;
        q->list->in_flight--;
        return report(q, 0, 0, out);
    }
    int failed = 0;
    q->in_flight = 0;
    q->list->in_flight--;
    if (cqe_flags & IORING_CQE_F_MORE) {
        /* A SEND_ZC whose notification follows: its buffer stays held. */
        q->zc_notifs++;
        q->list->in_flight++;
    }
    if (res < 0 || q->aborted) {
        q->sending.len = q->sent = q->queued.len = 0;
        q->ref = NULL;
        q->notify_threshold = q->pressure_at = NO_THRESHOLD;
        if (res < 0 && !q->aborted && !q->error) {
            q->error = res;
            failed = 1;
        }
    } else {
        q->sent += (size_t)res;
        if (q->sent == send_len(q)) {
            q->ref = NULL;   /* sent: the next send is `queued`'s */
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
        if (send_len(q) > q->sent)
            start_send(q);   /* the rest, or what was queued meanwhile */
    }
    return report(q, 1, failed ? res : 0, out);
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
