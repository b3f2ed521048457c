/*
 * fixed.h -- the ring's side of the registered-file table (csrc/fixed.c).
 * Internal: uring.c embeds the table in its ring and frees it with it;
 * uring.c and sendq.c aim their socket SQEs with ul_sqe_target.  The cffi
 * API is in uring.h.
 */
#ifndef URINGLOOP_FIXED_H
#define URINGLOOP_FIXED_H

#include <stdint.h>

/* compat.h (liburing) and uring.h must be included first. */

struct ul_filetable {
    unsigned *free;          /* stack of free slots; NULL: no table */
    unsigned slots, free_count;
    struct ul_files_usage usage;
};

/* Provided by uring.c. */
struct ul_filetable *ul_ring_filetable(struct ul_ring *ring);
struct io_uring *ul_ring_io(struct ul_ring *ring);

/* At ring destruction, after the kernel dropped the table. */
void ul_files_free(struct ul_filetable *table);

/* Point a prepared SQE at its file target (see uring.h): a slot becomes
 * the SQE's fd with IOSQE_FIXED_FILE; a plain fd is left as prepared. */
static inline void ul_sqe_target(struct io_uring_sqe *sqe, int target)
{
    if (target < 0) {
        sqe->fd = -1 - target;
        sqe->flags |= IOSQE_FIXED_FILE;
    }
}

#endif
