/*
 * sendq.h -- the ring's side of the C-owned send queues (csrc/sendq.c).
 * Internal: uring.c includes it to route send completions and to free the
 * queues with the ring; none of it is part of the cffi API (uring.h).
 */
#ifndef URINGLOOP_SENDQ_H
#define URINGLOOP_SENDQ_H

#include <stdint.h>

/* uring.h (which has no include guard: cffi reads it as a cdef) must be
 * included first. */

/* Send completions of a queue carry this bit plus the queue's address;
 * Python's user_data counter never gets near it. */
#define UL_SENDQ_TAG (1ULL << 63)

struct ul_sendq;

/* Per ring: every live queue (freed with the ring), the queues whose next
 * send waits for the ring's next submission (written to since, or the SQ
 * was full), and how many sends the kernel holds. */
struct ul_sendq_list {
    struct ul_sendq *all;
    struct ul_sendq *to_start;
    unsigned in_flight;
};

/* Provided by uring.c. */
struct ul_sendq_list *ul_ring_sendq_list(struct ul_ring *ring);
struct io_uring_sqe *ul_ring_sqe(struct ul_ring *ring, int *error);

/* A completion tagged UL_SENDQ_TAG (a send's, or a SEND_ZC notification):
 * advance its queue.  Returns 1 and fills `event` when the owner must hear
 * about it, else 0. */
int ul_sendq_complete(uint64_t user_data, int res, uint32_t cqe_flags,
                      struct ul_completion *event);
/* Prepare the sends of the queues waiting to start (called just before
 * the ring submits). */
void ul_sendq_start_waiting(struct ul_sendq_list *list);
/* At ring destruction, when the kernel holds none of their buffers. */
void ul_sendq_free_all(struct ul_sendq_list *list);

#endif
