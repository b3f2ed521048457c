/*
 * fixed.c -- registered (fixed) files: a sparse table registered on the
 * ring once, whose slots hold the sockets of long-lived stream transports,
 * so that their receives and sends name a slot (IOSQE_FIXED_FILE) and the
 * kernel skips the fd-table lookup and file reference of each request.
 *
 * Data flow: ul_files_setup registers `slots` empty slots (kernel 5.19).
 * ul_files_install takes a free slot and puts the socket in it with a
 * synchronous update, so an SQE prepared right after may use it; the
 * caller keeps its fd open as well (asyncio's socket object, extra info,
 * sendfile all need it).  ul_files_remove empties the slot and makes it
 * free again; the caller removes it when it closes the fd, under the same
 * rule (uringloop/_ringfd.py): once no SQE naming the slot waits in the
 * submission queue.  An operation the kernel already holds resolved the
 * slot when it was submitted and keeps the file until it completes, as it
 * would keep an fd's file.
 *
 * Only this file calls io_uring_register for the table; the table and its
 * counters live in struct ul_ring (uring.c) and are freed with it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "compat.h"
#include "uring.h"
#include "fixed.h"

int ul_files_setup(struct ul_ring *ring, unsigned slots)
{
    struct ul_filetable *t = ul_ring_filetable(ring);
    if (t->free != NULL)
        return -EEXIST;
    if (slots == 0)
        return -EINVAL;
    unsigned *free_slots = malloc(slots * sizeof(*free_slots));
    if (free_slots == NULL)
        return -ENOMEM;
    /* The caller keeps `slots` within RLIMIT_NOFILE: past it liburing 2.3
     * would raise the process's limit to make room. */
    int ret = io_uring_register_files_sparse(ul_ring_io(ring), slots);
    if (ret < 0) {
        free(free_slots);
        return ret;
    }
    /* Popped from the end: slot 0 goes first. */
    for (unsigned i = 0; i < slots; i++)
        free_slots[i] = slots - 1 - i;
    t->free = free_slots;
    t->slots = t->free_count = slots;
    t->usage.slots = slots;
    return 0;
}

int ul_files_install(struct ul_ring *ring, int fd)
{
    struct ul_filetable *t = ul_ring_filetable(ring);
    if (t->free == NULL)
        return -EBADF;
    if (t->free_count == 0) {
        t->usage.table_full++;
        return -ENFILE;
    }
    unsigned slot = t->free[t->free_count - 1];
    int ret = io_uring_register_files_update(ul_ring_io(ring), slot, &fd, 1);
    if (ret < 0) {
        t->usage.refused++;
        return ret;
    }
    t->free_count--;
    t->usage.installed++;
    unsigned in_use = t->slots - t->free_count;
    if (in_use > t->usage.high_water)
        t->usage.high_water = in_use;
    return (int)slot;
}

int ul_files_remove(struct ul_ring *ring, unsigned slot)
{
    struct ul_filetable *t = ul_ring_filetable(ring);
    if (t->free == NULL || slot >= t->slots)
        return -EINVAL;
    int empty = -1;
    int ret = io_uring_register_files_update(ul_ring_io(ring), slot, &empty, 1);
    if (ret < 0)
        return ret;   /* the slot keeps its file (until the ring goes): never reused */
    t->free[t->free_count++] = slot;
    return 0;
}

void ul_files_usage(struct ul_ring *ring, struct ul_files_usage *out)
{
    struct ul_filetable *t = ul_ring_filetable(ring);
    *out = t->usage;
    out->in_use = t->slots - t->free_count;
}

void ul_files_free(struct ul_filetable *t)
{
    free(t->free);
    t->free = NULL;
}
