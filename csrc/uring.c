/*
 * uring.c -- the ring: setup with feature fallback, SQE preparation for the
 * operations the loop uses, and the once-per-turn submit/wait/reap call.
 *
 * This file owns no Python objects.  Callers hand in pointers that they
 * keep alive until the matching completion comes back from ul_ring_turn
 * (see uring.h).  The memory owned here is the ring itself and the
 * provided receive buffers; the send queues' buffers belong to sendq.c,
 * whose tagged completions ul_ring_turn routes there instead of copying
 * them out.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "compat.h"
#include "uring.h"
#include "sendq.h"
#include "fixed.h"
#include "resubmit.h"

#ifndef UL_LIBURING_VERSION
#define UL_LIBURING_VERSION "unknown"
#endif

/* The group id of the one provided-buffer ring the loop registers. */
#define UL_BUFFER_GROUP 0

struct ul_bufring {
    struct io_uring_buf_ring *ring;   /* shared with the kernel */
    unsigned char *memory;            /* count * size bytes of buffers */
    unsigned count, size, mask;
    unsigned short *handed_out;       /* ids reaped last turn, to recycle */
    unsigned handed_out_count;
    unsigned active;                  /* ids [0, active) circulate */
    int ran_out;                      /* a receive found none last turn */
};

/* Buffers circulate only as many as demand needs, starting here: the ring
 * hands them out in FIFO order, so a large pool would make every receive
 * land in memory that left the cache long ago (measured: 100 KiB echo over
 * 512 circulating 128 KiB buffers spent a third more kernel time per
 * message than over 16; one connection's receive copy took 12 us per
 * message over 8, 16 us over 16, 22 us over 32). */
#define UL_BUFFERS_AT_START 8

/* The pool starts on a page boundary (so every buffer does when the size
 * is a multiple of 4 KiB, as the default is): the kernel's copy into a
 * buffer that starts 16 bytes into a page (malloc's header) measured
 * three times slower on this project's AMD machine, 72 against 23 us per
 * 100 KiB message. */
#define UL_BUFFER_ALIGNMENT 4096

struct ul_ring {
    struct io_uring ring;
    unsigned features;
    unsigned setup_flags;
    int registered_fd;
    int skip_registered_fd;
    struct ul_bufring buffers;
    struct ul_sendq_list sendqs;
    struct ul_filetable files;
    struct ul_resubmit resubmit;
    struct ul_ring_stats stats;
    int last_turn;                 /* what the last ul_ring_turn returned */
};

struct ul_ring *ul_ring_create(unsigned entries, unsigned cq_entries, unsigned setup_flags,
                               unsigned sq_thread_idle, int *error)
{
    struct ul_ring *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        *error = -ENOMEM;
        return NULL;
    }
    struct io_uring_params params;
    memset(&params, 0, sizeof(params));
    /* A CQ four times the SQ keeps overflow rare even when every submitted
     * operation completes in the same turn as a burst of multishot ones. */
    params.flags = setup_flags | IORING_SETUP_CQSIZE;
    params.cq_entries = cq_entries ? cq_entries : entries * 4;
    params.sq_thread_idle = sq_thread_idle;
    int ret = io_uring_queue_init_params(entries, &r->ring, &params);
    if (ret < 0) {
        free(r);
        *error = ret;
        return NULL;
    }
    r->features = params.features;
    r->setup_flags = params.flags;
    /* Only a ring that several threads may enter, one after another, can
     * outlive the thread that submitted an operation (see resubmit.c). */
    r->resubmit.enabled = !(params.flags & (IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_SQPOLL));
    *error = 0;
    return r;
}

int ul_ring_bind_thread(struct ul_ring *r)
{
    /* A SINGLE_ISSUER ring is created disabled so that its issuer is the
     * thread that runs the loop, not the one that constructed it. */
    if (r->setup_flags & IORING_SETUP_R_DISABLED) {
        /* liburing 2.3 declares io_uring_enable_rings but does not export
         * it, so make the register call directly. */
        if (syscall(__NR_io_uring_register, r->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0)
            return -errno;
    }
    /* A registered ring fd is per thread: only worth it (and only valid)
     * when the ring can only ever be entered from this thread. */
    if ((r->setup_flags & IORING_SETUP_SINGLE_ISSUER) && !r->skip_registered_fd)
        r->registered_fd = io_uring_register_ring_fd(&r->ring) == 1;
    return 0;
}

void ul_ring_thread_changed(struct ul_ring *r)
{
    r->resubmit.generation++;
}

void ul_ring_destroy(struct ul_ring *r)
{
    /* Exiting the ring drops the kernel's references to the buffer ring,
     * so the memory is freed after, never before. */
    io_uring_queue_exit(&r->ring);
    ul_sendq_free_all(&r->sendqs);
    ul_files_free(&r->files);
    free(r->buffers.ring);
    free(r->buffers.memory);
    free(r->buffers.handed_out);
    ul_resubmit_free(&r->resubmit);
    free(r);
}

/* Put buffer ids [active, target) into circulation. */
static void grow_buffers(struct ul_bufring *b, unsigned target)
{
    unsigned added = 0;
    for (unsigned id = b->active; id < target; id++, added++)
        io_uring_buf_ring_add(b->ring, b->memory + (size_t)id * b->size, b->size,
                              (unsigned short)id, b->mask, (int)added);
    io_uring_buf_ring_advance(b->ring, (int)added);
    b->active = target;
}

int ul_bufring_setup(struct ul_ring *r, unsigned count, unsigned size)
{
    struct ul_bufring *b = &r->buffers;
    if (b->ring != NULL)
        return -EEXIST;
    if (count == 0 || count > 32768 || (count & (count - 1)) != 0 || size == 0)
        return -EINVAL;
    void *ring_memory = NULL;
    if (posix_memalign(&ring_memory, 4096, count * sizeof(struct io_uring_buf)) != 0)
        return -ENOMEM;
    memset(ring_memory, 0, count * sizeof(struct io_uring_buf));
    void *memory = NULL;
    if (posix_memalign(&memory, UL_BUFFER_ALIGNMENT, (size_t)count * size) != 0)
        memory = NULL;
    unsigned short *handed_out = calloc(count, sizeof(*handed_out));
    if (memory == NULL || handed_out == NULL) {
        free(ring_memory);
        free(memory);
        free(handed_out);
        return -ENOMEM;
    }
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)ring_memory;
    reg.ring_entries = count;
    reg.bgid = UL_BUFFER_GROUP;
    int ret = io_uring_register_buf_ring(&r->ring, &reg, 0);
    if (ret < 0) {
        free(ring_memory);
        free(memory);
        free(handed_out);
        return ret;
    }
    b->ring = ring_memory;
    b->memory = memory;
    b->count = count;
    b->size = size;
    b->mask = io_uring_buf_ring_mask(count);
    b->handed_out = handed_out;
    b->handed_out_count = 0;
    io_uring_buf_ring_init(b->ring);
    b->active = 0;
    grow_buffers(b, count < UL_BUFFERS_AT_START ? count : UL_BUFFERS_AT_START);
    return 0;
}

void *ul_bufring_base(struct ul_ring *r) { return r->buffers.memory; }

/* Give back the buffers whose contents the caller has consumed; when the
 * last turn took half of those circulating (or ran out), put twice as many
 * into circulation. */
static void recycle_buffers(struct ul_bufring *b)
{
    int grow = b->ran_out || b->handed_out_count * 2 >= b->active;
    for (unsigned i = 0; i < b->handed_out_count; i++) {
        unsigned id = b->handed_out[i];
        io_uring_buf_ring_add(b->ring, b->memory + (size_t)id * b->size, b->size,
                              (unsigned short)id, b->mask, (int)i);
    }
    io_uring_buf_ring_advance(b->ring, (int)b->handed_out_count);
    b->handed_out_count = 0;
    b->ran_out = 0;
    if (grow && b->active < b->count)
        grow_buffers(b, b->active * 2 < b->count ? b->active * 2 : b->count);
}

int ul_ring_fd(struct ul_ring *r) { return r->ring.ring_fd; }
unsigned ul_ring_features(struct ul_ring *r) { return r->features; }
unsigned ul_ring_setup_flags(struct ul_ring *r) { return r->setup_flags; }
int ul_ring_registered_fd(struct ul_ring *r) { return r->registered_fd; }
void ul_ring_skip_registered_fd(struct ul_ring *r) { r->skip_registered_fd = 1; }

int ul_ring_register_napi(struct ul_ring *r, unsigned busy_poll_us, int prefer_busy_poll)
{
    struct ul_io_uring_napi napi;
    memset(&napi, 0, sizeof(napi));
    napi.busy_poll_to = busy_poll_us;
    napi.prefer_busy_poll = prefer_busy_poll != 0;
    /* The kernel writes the previous settings back into napi. */
    if (syscall(__NR_io_uring_register, r->ring.ring_fd, UL_IORING_REGISTER_NAPI, &napi, 1) < 0)
        return -errno;
    return 0;
}
unsigned ul_ring_sq_entries(struct ul_ring *r) { return r->ring.sq.ring_entries; }
unsigned ul_ring_cq_entries(struct ul_ring *r) { return r->ring.cq.ring_entries; }
const char *ul_liburing_build_version(void) { return UL_LIBURING_VERSION; }

int ul_ring_probe(struct ul_ring *r, unsigned char *supported, int size)
{
    struct io_uring_probe *probe = io_uring_get_probe_ring(&r->ring);
    if (probe == NULL)
        return -ENOMEM;
    int count = probe->last_op + 1;
    for (int op = 0; op < size; op++)
        supported[op] = op < count && (probe->ops[op].flags & IO_URING_OP_SUPPORTED);
    io_uring_free_probe(probe);
    return count;
}

/* Called before every liburing call that submits: counts the call and the
 * SQEs it is about to hand over (those between liburing's local head and
 * tail, which the call flushes to the kernel), and keeps their copies. */
static void count_submit(struct ul_ring *r)
{
    struct io_uring_sq *sq = &r->ring.sq;
    r->stats.enters++;
    for (unsigned head = sq->sqe_head; head != sq->sqe_tail; head++)
        r->stats.sqes_by_opcode[sq->sqes[head & sq->ring_mask].opcode]++;
    ul_resubmit_track(&r->resubmit, sq);
}

/* The SQ is full only when a turn queued more than `entries` operations;
 * submitting what is there frees the slots. */
static struct io_uring_sqe *next_sqe(struct ul_ring *r, int *error)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (sqe != NULL)
        return sqe;
    count_submit(r);
    int ret = io_uring_submit(&r->ring);
    if (ret < 0) {
        *error = ret;
        return NULL;
    }
    sqe = io_uring_get_sqe(&r->ring);
    if (sqe == NULL)
        *error = -EBUSY;
    return sqe;
}

struct ul_sendq_list *ul_ring_sendq_list(struct ul_ring *r) { return &r->sendqs; }
struct ul_filetable *ul_ring_filetable(struct ul_ring *r) { return &r->files; }
struct io_uring *ul_ring_io(struct ul_ring *r) { return &r->ring; }

/* The same SQE source for the operations defined in other files (files.c,
 * sendq.c). */
struct io_uring_sqe *ul_ring_sqe(struct ul_ring *r, int *error)
{
    return next_sqe(r, error);
}

static size_t cap_len(size_t len)
{
    return len > UL_MAX_IO_LEN ? UL_MAX_IO_LEN : len;
}

#define GET_SQE(r, sqe)                         \
    int error_ = 0;                             \
    struct io_uring_sqe *sqe = next_sqe((r), &error_); \
    if (sqe == NULL)                            \
        return error_

int ul_prep_nop(struct ul_ring *r, uint64_t user_data)
{
    GET_SQE(r, sqe);
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int ul_prep_recv(struct ul_ring *r, int fd, void *buf, size_t len, int flags, uint64_t user_data)
{
    GET_SQE(r, sqe);
    io_uring_prep_recv(sqe, fd, buf, cap_len(len), flags);
    ul_sqe_target(sqe, fd);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int ul_prep_recv_multishot(struct ul_ring *r, int fd, uint64_t user_data)
{
    if (r->buffers.ring == NULL)
        return -ENOBUFS;
    GET_SQE(r, sqe);
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    ul_sqe_target(sqe, fd);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = UL_BUFFER_GROUP;
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int ul_prep_recv_provided(struct ul_ring *r, int fd, unsigned len, uint64_t user_data)
{
    if (r->buffers.ring == NULL)
        return -ENOBUFS;
    GET_SQE(r, sqe);
    io_uring_prep_recv(sqe, fd, NULL, len < r->buffers.size ? len : r->buffers.size, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = UL_BUFFER_GROUP;
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int ul_prep_send(struct ul_ring *r, int fd, const void *buf, size_t len, int flags, uint64_t user_data)
{
    GET_SQE(r, sqe);
    io_uring_prep_send(sqe, fd, buf, cap_len(len), flags);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int ul_prep_recvmsg(struct ul_ring *r, int fd, struct ul_msg *msg, void *buf, size_t len, int flags,
                    uint64_t user_data)
{
    GET_SQE(r, sqe);
    memset(&msg->hdr, 0, sizeof(msg->hdr));
    msg->iov.iov_base = buf;
    msg->iov.iov_len = cap_len(len);
    msg->hdr.msg_name = &msg->addr;
    msg->hdr.msg_namelen = sizeof(msg->addr);
    msg->hdr.msg_iov = &msg->iov;
    msg->hdr.msg_iovlen = 1;
    io_uring_prep_recvmsg(sqe, fd, &msg->hdr, (unsigned)flags);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int ul_prep_sendmsg(struct ul_ring *r, int fd, struct ul_msg *msg, const void *buf, size_t len,
                    const void *addr, unsigned addrlen, int flags, uint64_t user_data)
{
    if (addrlen > sizeof(msg->addr))
        return -EINVAL;
    GET_SQE(r, sqe);
    memset(&msg->hdr, 0, sizeof(msg->hdr));
    msg->iov.iov_base = (void *)buf;
    msg->iov.iov_len = cap_len(len);
    if (addrlen > 0) {
        memcpy(&msg->addr, addr, addrlen);
        msg->hdr.msg_name = &msg->addr;
        msg->hdr.msg_namelen = addrlen;
    }
    msg->hdr.msg_iov = &msg->iov;
    msg->hdr.msg_iovlen = 1;
    io_uring_prep_sendmsg(sqe, fd, &msg->hdr, (unsigned)flags);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int ul_prep_accept(struct ul_ring *r, int fd, int flags, uint64_t user_data)
{
    GET_SQE(r, sqe);
    io_uring_prep_accept(sqe, fd, NULL, NULL, flags);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int ul_prep_accept_multishot(struct ul_ring *r, int fd, int flags, uint64_t user_data)
{
    GET_SQE(r, sqe);
    io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, flags);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int ul_prep_poll(struct ul_ring *r, int fd, unsigned mask, uint64_t user_data)
{
    GET_SQE(r, sqe);
    io_uring_prep_poll_add(sqe, fd, mask);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int ul_prep_splice(struct ul_ring *r, int fd_in, int64_t off_in, int fd_out, int64_t off_out,
                   unsigned nbytes, uint64_t user_data)
{
    GET_SQE(r, sqe);
    io_uring_prep_splice(sqe, fd_in, off_in, fd_out, off_out, nbytes, 0);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

/* Cancellation requests carry user_data 0: their own completion only says
 * whether the target was found, which the target's completion tells too. */
int ul_prep_cancel(struct ul_ring *r, uint64_t target)
{
    GET_SQE(r, sqe);
    io_uring_prep_cancel64(sqe, target, 0);
    io_uring_sqe_set_data64(sqe, 0);
    return 0;
}

int ul_prep_cancel_all(struct ul_ring *r)
{
    GET_SQE(r, sqe);
    io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ALL | IORING_ASYNC_CANCEL_ANY);
    io_uring_sqe_set_data64(sqe, 0);
    return 0;
}

int ul_ring_submit(struct ul_ring *r)
{
    if (r->sendqs.to_start != NULL)
        ul_sendq_start_waiting(&r->sendqs);
    /* Also run deferred task work (DEFER_TASKRUN), so that a cancellation
     * submitted here has let go of its file by the time we return. */
    count_submit(r);
    int ret = io_uring_submit_and_get_events(&r->ring);
    if (ret < 0)
        return ret;
    return io_uring_sq_ready(&r->ring) > 0;
}

/* True when entering the kernel could produce completions we cannot see
 * yet: queued SQEs, deferred task work, or an overflowed CQ. */
static int kernel_has_work(struct ul_ring *r)
{
    unsigned sq_flags = IO_URING_READ_ONCE(*r->ring.sq.kflags);
    return io_uring_sq_ready(&r->ring) > 0 ||
           (sq_flags & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) != 0;
}

/* Enter the kernel for one wait of up to timeout_ns (see ul_ring_turn). */
static int enter(struct ul_ring *r, long long timeout_ns)
{
    struct io_uring *ring = &r->ring;
    if (io_uring_cq_ready(ring) > 0 || timeout_ns == 0) {
        /* Completions are already waiting (or the caller must not block):
         * only enter the kernel if it holds work we have not seen. */
        if (!kernel_has_work(r))
            return 0;
        count_submit(r);
        return io_uring_submit_and_get_events(ring);
    }
    count_submit(r);
    if (timeout_ns < 0)
        return io_uring_submit_and_wait(ring, 1);
    struct __kernel_timespec ts = {
        .tv_sec = timeout_ns / 1000000000LL,
        .tv_nsec = timeout_ns % 1000000000LL,
    };
    struct io_uring_cqe *first;
    return io_uring_submit_and_wait_timeout(ring, &first, 1, &ts, NULL);
}

/* Copy what the CQ holds into out (see ul_ring_turn), adding to the counts. */
static void reap(struct ul_ring *r, struct ul_completion *out, unsigned max,
                 unsigned *copied, unsigned *inlined)
{
    struct io_uring *ring = &r->ring;
    unsigned head, seen = 0;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(ring, head, cqe) {
        if (*copied + *inlined == max)
            break;
        seen++;
        if (cqe->res == -ECANCELED)
            r->stats.cqes_cancelled++;
        if (cqe->user_data == 0)
            continue;
        struct io_uring_sqe copy;
        if (ul_resubmit_reaped(&r->resubmit, cqe->user_data, cqe->res, cqe->flags, &copy)) {
            /* Dropped with the thread that submitted it: in again, unseen. */
            int error = 0;
            struct io_uring_sqe *sqe = next_sqe(r, &error);
            if (sqe != NULL) {
                *sqe = copy;
                r->stats.sqes_resubmitted++;
                continue;
            }
            ul_resubmit_forget(&r->resubmit, cqe->user_data);   /* deliver the drop */
        }
        if (cqe->user_data & UL_SENDQ_TAG) {
            /* A send of a C-owned queue: Python sees it only as an event. */
            *copied += ul_sendq_complete(cqe->user_data, cqe->res, cqe->flags, &out[*copied]);
            continue;
        }
        if (cqe->flags & IORING_CQE_F_BUFFER)
            r->buffers.handed_out[r->buffers.handed_out_count++] =
                (unsigned short)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        else if (cqe->res == -ENOBUFS) {
            r->buffers.ran_out = 1;
            r->stats.enobufs++;
        }
        struct ul_completion *slot =
            (cqe->user_data & UL_INLINE_TAG) ? &out[max - 1 - (*inlined)++] : &out[(*copied)++];
        slot->user_data = cqe->user_data;
        slot->res = cqe->res;
        slot->flags = cqe->flags;
    }
    io_uring_cq_advance(ring, seen);
    r->stats.cqes += seen;
    if (IO_URING_READ_ONCE(*ring->sq.kflags) & IORING_SQ_CQ_OVERFLOW)
        r->stats.cq_overflow_turns++;
}

static long long monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

int ul_ring_turn(struct ul_ring *r, long long timeout_ns, struct ul_completion *out, unsigned max,
                 unsigned *inline_count)
{
    long long deadline = timeout_ns > 0 ? monotonic_ns() + timeout_ns : 0;
    unsigned copied = 0, inlined = 0;

    r->stats.turns++;
    if (r->buffers.handed_out_count > 0 || r->buffers.ran_out)
        recycle_buffers(&r->buffers);
    for (;;) {
        if (r->sendqs.to_start != NULL)
            ul_sendq_start_waiting(&r->sendqs);
        int ret = enter(r, timeout_ns);
        /* EINTR: a signal arrived.  Nothing is reaped then (the next turn
         * reaps it): a Python handler of that signal runs as soon as the
         * caller holds the GIL, and one that raises (KeyboardInterrupt, a
         * test timeout) must find no completion taken out of the ring and
         * not yet handed over, or that operation would never finish. */
        if (ret == -EINTR)
            break;
        /* ETIME: the timeout passed; EBUSY/EAGAIN: the kernel wants us to
         * reap before it accepts more.  None of them loses a completion. */
        if (ret < 0 && ret != -ETIME && ret != -EBUSY && ret != -EAGAIN)
            return r->last_turn = ret;
        reap(r, out, max, &copied, &inlined);
        /* Woken only by completions handled here (sends of C-owned queues):
         * wait on, rather than cost Python a loop iteration with nothing to
         * do.  A signal or the timeout still returns at once. */
        if (copied + inlined > 0 || timeout_ns == 0 || ret == -ETIME)
            break;
        if (timeout_ns > 0) {
            timeout_ns = deadline - monotonic_ns();
            if (timeout_ns <= 0)
                break;
        }
    }
    /* A send completion reaped above may have started the next send of
     * its queue (the rest of a partial send, or what was written while it
     * was in flight): hand it to the kernel now, not a whole Python
     * iteration later. */
    if (io_uring_sq_ready(&r->ring) > 0) {
        count_submit(r);
        io_uring_submit(&r->ring);
    }
    if (copied + inlined > 0) {
        r->stats.batches++;
        r->stats.cqes_to_python += copied + inlined;
    }
    if (r->buffers.handed_out_count > r->stats.buffers_high_water)
        r->stats.buffers_high_water = r->buffers.handed_out_count;
    *inline_count = inlined;
    r->last_turn = (int)(copied + inlined);
    return r->last_turn;
}

int ul_ring_last_turn(struct ul_ring *r)
{
    return r->last_turn;
}

void ul_ring_stats(struct ul_ring *r, struct ul_ring_stats *out)
{
    *out = r->stats;
    out->cqes_dropped = IO_URING_READ_ONCE(*r->ring.cq.koverflow);
    out->sqes_dropped = IO_URING_READ_ONCE(*r->ring.sq.kdropped);
    out->buffers_in_use = r->buffers.handed_out_count;
    out->buffers_circulating = r->buffers.active;
    out->buffer_count = r->buffers.count;
    out->buffer_size = r->buffers.size;
}
