/*
 * resubmit.c -- operations the kernel drops when the thread that submitted
 * them exits, submitted again.
 *
 * io_uring ties a request to the task that submitted it.  When that thread
 * has exited, a socket operation still waiting for its event (a receive or
 * an accept armed for the next data or connection, a send waiting for
 * room) is completed with -ECANCELED when the event comes, without having
 * done anything; likewise work queued for the thread's io-wq workers.
 * A loop from new_event_loop() may be run from one thread and later from
 * another, as asyncio's may (a thread that ran the loop, then exited), so
 * its ring keeps a copy of every operation in flight and puts a dropped
 * one back.  A SINGLE_ISSUER ring is entered by one thread only and an
 * SQPOLL ring's requests belong to its kernel thread: neither keeps copies.
 *
 * Data flow: just before each submit, ul_resubmit_track copies the SQEs
 * about to go to the kernel into a table keyed by user_data, stamped with
 * the ring's thread generation (bumped by ul_ring_thread_changed, which
 * _ring.py calls on a change of thread, told by a per-thread token since
 * a new thread often reuses an exited one's ident); an
 * ASYNC_CANCEL marks its target instead, since that -ECANCELED is asked
 * for, and a cancel-all (the ring closing) stops all resubmission.  At
 * reap, a final completion (no IORING_CQE_F_MORE) forgets its copy; an
 * -ECANCELED nobody asked for, of a copy from an earlier generation, is
 * swallowed and the copy goes back into the SQ from the thread now
 * running the ring (once per generation: a drop under the current thread
 * is delivered).  (The loop submits no CONNECT, which could not simply go
 * in again: sock_connect calls connect(2) itself and waits with a poll.)
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "compat.h"
#include "uring.h"
#include "resubmit.h"

enum { SLOT_EMPTY, SLOT_LIVE, SLOT_CANCEL_ASKED, SLOT_TOMBSTONE };

struct ul_saved_sqe {
    uint64_t user_data;
    unsigned generation;
    unsigned char state;
    struct io_uring_sqe sqe;
};

#define UL_RESUBMIT_FIRST_CAPACITY 64

static unsigned slot_of(uint64_t user_data, unsigned capacity)
{
    /* user_data is a counter or a tagged pointer: mix the bits. */
    return (unsigned)((user_data * 0x9E3779B97F4A7C15ULL) >> 32) & (capacity - 1);
}

/* The live or cancel-asked slot of user_data, or NULL. */
static struct ul_saved_sqe *find(struct ul_resubmit *t, uint64_t user_data)
{
    if (t->slots == NULL)
        return NULL;
    for (unsigned i = slot_of(user_data, t->capacity);; i = (i + 1) & (t->capacity - 1)) {
        struct ul_saved_sqe *s = &t->slots[i];
        if (s->state == SLOT_EMPTY)
            return NULL;
        if (s->state != SLOT_TOMBSTONE && s->user_data == user_data)
            return s;
    }
}

static int rehash(struct ul_resubmit *t, unsigned capacity)
{
    struct ul_saved_sqe *slots = calloc(capacity, sizeof(*slots));
    if (slots == NULL)
        return -ENOMEM;
    unsigned used = 0;
    for (unsigned i = 0; t->slots != NULL && i < t->capacity; i++) {
        struct ul_saved_sqe *s = &t->slots[i];
        if (s->state != SLOT_LIVE && s->state != SLOT_CANCEL_ASKED)
            continue;
        unsigned j = slot_of(s->user_data, capacity);
        while (slots[j].state != SLOT_EMPTY)
            j = (j + 1) & (capacity - 1);
        slots[j] = *s;
        used++;
    }
    free(t->slots);
    t->slots = slots;
    t->capacity = capacity;
    t->used = used;
    return 0;
}

/* A free slot for user_data, which has no copy yet, or NULL when memory
 * ran out: that operation then simply is not resubmitted. */
static struct ul_saved_sqe *slot_for(struct ul_resubmit *t, uint64_t user_data)
{
    /* At most three quarters full, tombstones included. */
    if (t->slots == NULL || (t->used + 1) * 4 > t->capacity * 3) {
        unsigned live = 0;
        for (unsigned i = 0; t->slots != NULL && i < t->capacity; i++)
            live += t->slots[i].state == SLOT_LIVE || t->slots[i].state == SLOT_CANCEL_ASKED;
        unsigned capacity = t->slots == NULL ? UL_RESUBMIT_FIRST_CAPACITY : t->capacity;
        while ((live + 1) * 2 > capacity)
            capacity *= 2;
        if (rehash(t, capacity) < 0)
            return NULL;
    }
    unsigned i = slot_of(user_data, t->capacity);
    while (t->slots[i].state == SLOT_LIVE || t->slots[i].state == SLOT_CANCEL_ASKED)
        i = (i + 1) & (t->capacity - 1);
    if (t->slots[i].state == SLOT_EMPTY)
        t->used++;
    return &t->slots[i];
}

static void forget(struct ul_saved_sqe *s)
{
    s->state = SLOT_TOMBSTONE;
}

void ul_resubmit_track(struct ul_resubmit *t, const struct io_uring_sq *sq)
{
    if (!t->enabled)
        return;
    for (unsigned head = sq->sqe_head; head != sq->sqe_tail; head++) {
        const struct io_uring_sqe *sqe = &sq->sqes[head & sq->ring_mask];
        if (sqe->opcode == IORING_OP_ASYNC_CANCEL) {
            if (sqe->cancel_flags & (IORING_ASYNC_CANCEL_ALL | IORING_ASYNC_CANCEL_ANY |
                                     IORING_ASYNC_CANCEL_FD)) {
                t->cancelling_all = 1;
            } else {
                struct ul_saved_sqe *target = find(t, sqe->addr);
                if (target != NULL)
                    target->state = SLOT_CANCEL_ASKED;
            }
            continue;
        }
        if (sqe->user_data == 0)
            continue;
        struct ul_saved_sqe *s = find(t, sqe->user_data);
        if (s != NULL && memcmp(&s->sqe, sqe, sizeof(*sqe)) == 0)
            continue;   /* a copy put back by ul_resubmit_reaped */
        s = s != NULL ? s : slot_for(t, sqe->user_data);
        if (s == NULL)
            continue;
        s->user_data = sqe->user_data;
        s->generation = t->generation;
        s->state = SLOT_LIVE;
        s->sqe = *sqe;
    }
}

int ul_resubmit_reaped(struct ul_resubmit *t, uint64_t user_data, int32_t res,
                       uint32_t cqe_flags, struct io_uring_sqe *copy)
{
    if (!t->enabled || (cqe_flags & IORING_CQE_F_MORE))
        return 0;
    struct ul_saved_sqe *s = find(t, user_data);
    if (s == NULL)
        return 0;
    if (res == -ECANCELED && s->state == SLOT_LIVE && s->generation != t->generation &&
            !t->cancelling_all) {
        s->generation = t->generation;
        *copy = s->sqe;
        return 1;
    }
    forget(s);
    return 0;
}

void ul_resubmit_forget(struct ul_resubmit *t, uint64_t user_data)
{
    struct ul_saved_sqe *s = find(t, user_data);
    if (s != NULL)
        forget(s);
}

void ul_resubmit_free(struct ul_resubmit *t)
{
    free(t->slots);
    t->slots = NULL;
    t->capacity = t->used = 0;
}
