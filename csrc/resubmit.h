/*
 * resubmit.h -- the ring's copies of the operations it submitted, so that
 * one the kernel drops because its submitting thread exited goes in again
 * (csrc/resubmit.c).  Internal: uring.c embeds the table in its ring; the
 * cffi API is in uring.h.
 */
#ifndef URINGLOOP_RESUBMIT_H
#define URINGLOOP_RESUBMIT_H

#include <stdint.h>

/* compat.h (liburing) and uring.h must be included first. */

struct ul_saved_sqe;

struct ul_resubmit {
    struct ul_saved_sqe *slots;   /* open addressing; NULL until the first copy */
    unsigned capacity;            /* a power of two */
    unsigned used;                /* live copies and tombstones */
    unsigned generation;          /* bumped whenever another thread runs the ring */
    int enabled;                  /* 0: a ring only one thread may ever enter */
    int cancelling_all;           /* a cancel-all was submitted: the ring is closing */
};

/* Copy the SQEs between the SQ's local head and tail (about to be handed
 * to the kernel); a cancellation request marks its target instead. */
void ul_resubmit_track(struct ul_resubmit *table, const struct io_uring_sq *sq);

/* For a reaped CQE: 1 when it is a drop to undo (an -ECANCELED nobody
 * asked for, of an operation submitted under an earlier thread) and
 * *copy is the SQE to submit again (the table keeps its own), else 0 (a
 * final completion forgets its copy); the caller delivers a CQE it gets 0
 * for. */
int ul_resubmit_reaped(struct ul_resubmit *table, uint64_t user_data, int32_t res,
                       uint32_t cqe_flags, struct io_uring_sqe *copy);

/* The copy ul_resubmit_reaped returned could not be queued: forget it. */
void ul_resubmit_forget(struct ul_resubmit *table, uint64_t user_data);

void ul_resubmit_free(struct ul_resubmit *table);

#endif
