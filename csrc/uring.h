/*
 * uring.h -- the whole C API that cffi sees (build_ffi.py feeds this file to
 * ffi.cdef verbatim, so it must stay plain declarations).
 *
 * Data flow: Python prepares operations with ul_prep_* (each only fills a
 * submission queue entry; nothing enters the kernel), then once per loop
 * turn calls ul_ring_turn, which submits everything queued, waits up to a
 * timeout and copies a batch of completions into a caller-owned array.
 * Every pointer passed to ul_prep_* must stay alive until the completion
 * carrying the same user_data has been returned by ul_ring_turn; the
 * Python side (uringloop/_ring.py) keeps those objects in its ops table.
 *
 * user_data 0 is reserved for operations whose completion Python never
 * needs to see (cancellation requests); ul_ring_turn swallows them.
 *
 * All functions return a negative errno on failure.
 */

struct ul_ring;

struct ul_completion {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
};

/* A receive/send message with room for any socket address. */
struct ul_msg {
    struct msghdr hdr;
    struct iovec iov;
    struct sockaddr_storage addr;
};

/* Ring lifetime and introspection.  cq_entries 0 means four times
 * `entries`; sq_thread_idle (milliseconds) matters only with
 * IORING_SETUP_SQPOLL. */
struct ul_ring *ul_ring_create(unsigned entries, unsigned cq_entries, unsigned setup_flags,
                               unsigned sq_thread_idle, int *error);
void ul_ring_destroy(struct ul_ring *ring);
/* Called once, from the first thread that runs the ring: enables a ring
 * created with R_DISABLED and registers the ring fd for a SINGLE_ISSUER ring. */
int ul_ring_bind_thread(struct ul_ring *ring);
/* Called whenever a thread other than the last one runs the ring: what the
 * kernel drops of operations submitted before is submitted again. */
void ul_ring_thread_changed(struct ul_ring *ring);
int ul_ring_fd(struct ul_ring *ring);
unsigned ul_ring_features(struct ul_ring *ring);
unsigned ul_ring_setup_flags(struct ul_ring *ring);
int ul_ring_registered_fd(struct ul_ring *ring);
/* Called before ul_ring_bind_thread: never register the ring fd. */
void ul_ring_skip_registered_fd(struct ul_ring *ring);
/* NAPI busy polling (kernel 6.9): a wait polls the NIC queues of the
 * ring's sockets for up to busy_poll_us before sleeping. */
int ul_ring_register_napi(struct ul_ring *ring, unsigned busy_poll_us, int prefer_busy_poll);
unsigned ul_ring_sq_entries(struct ul_ring *ring);
unsigned ul_ring_cq_entries(struct ul_ring *ring);
int ul_ring_probe(struct ul_ring *ring, unsigned char *supported, int size);
const char *ul_liburing_build_version(void);

/* Counters kept since the ring was made, each a plain increment on a path
 * the ring takes anyway (uringloop/_stats.py names them for Python). */
struct ul_ring_stats {
    uint64_t turns;              /* ul_ring_turn calls */
    uint64_t enters;             /* liburing submit/wait calls: each one io_uring_enter
                                  * (with SQPOLL, a submit enters only to wake the thread) */
    uint64_t batches;            /* turns that copied completions out */
    uint64_t cqes;               /* CQEs reaped */
    uint64_t cqes_to_python;     /* completions copied out (the rest were handled in C) */
    uint64_t cqes_cancelled;     /* CQEs with -ECANCELED */
    uint64_t sqes_resubmitted;   /* operations dropped with the thread that submitted them,
                                  * submitted again (csrc/resubmit.c) */
    uint64_t enobufs;            /* CQEs with -ENOBUFS (no provided buffer was free) */
    uint64_t cq_overflow_turns;  /* reaps that found IORING_SQ_CQ_OVERFLOW set */
    uint64_t buffers_high_water; /* most provided buffers held by one turn's completions */
    /* Read at the time of the call, not counted: */
    uint64_t cqes_dropped;       /* the kernel's CQ overflow counter (lost CQEs) */
    uint64_t sqes_dropped;       /* the kernel's count of invalid SQ entries */
    uint64_t buffers_in_use;     /* provided buffers held by the last turn's completions */
    uint64_t buffers_circulating;
    uint64_t buffer_count;       /* 0: no provided-buffer ring */
    uint64_t buffer_size;
    uint64_t sqes_by_opcode[256];  /* SQEs handed to the kernel, by IORING_OP_* */
};
void ul_ring_stats(struct ul_ring *ring, struct ul_ring_stats *out);

/* An SQE's length field is 32 bits and a CQE's result a signed int: one
 * socket operation moves at most this much (1 GiB: a short receive or
 * send, which every caller already handles by looping), never a truncated
 * length; the Python side asks no more of one file request either. */
#define UL_MAX_IO_LEN 0x40000000

/* Operation preparation: queue one SQE (submitting first if the SQ is full).
 * ul_prep_recv's and ul_prep_recv_multishot's fd is a file target (see
 * ul_files_setup). */
int ul_prep_nop(struct ul_ring *ring, uint64_t user_data);
int ul_prep_recv(struct ul_ring *ring, int fd, void *buf, size_t len, int flags, uint64_t user_data);
int ul_prep_send(struct ul_ring *ring, int fd, const void *buf, size_t len, int flags, uint64_t user_data);
int ul_prep_recvmsg(struct ul_ring *ring, int fd, struct ul_msg *msg, void *buf, size_t len, int flags, uint64_t user_data);
int ul_prep_sendmsg(struct ul_ring *ring, int fd, struct ul_msg *msg, const void *buf, size_t len,
                    const void *addr, unsigned addrlen, int flags, uint64_t user_data);
int ul_prep_accept(struct ul_ring *ring, int fd, int flags, uint64_t user_data);
/* One completion per accepted connection until IORING_CQE_F_MORE clears
 * (kernel 5.19). */
int ul_prep_accept_multishot(struct ul_ring *ring, int fd, int flags, uint64_t user_data);
int ul_prep_poll(struct ul_ring *ring, int fd, unsigned mask, uint64_t user_data);
/* Move bytes between fds through the kernel (file -> pipe -> socket for
 * sendfile); an offset of -1 means "the fd's own position / none". */
int ul_prep_splice(struct ul_ring *ring, int fd_in, int64_t off_in, int fd_out, int64_t off_out,
                   unsigned nbytes, uint64_t user_data);
int ul_prep_cancel(struct ul_ring *ring, uint64_t target);
int ul_prep_cancel_all(struct ul_ring *ring);

/* Provided receive buffers (kernel 5.19+): one group of `count` buffers
 * of `size` bytes each, shared by every multishot receive of the ring.
 * A completion with IORING_CQE_F_BUFFER names buffer (flags >> 16) at
 * ul_bufring_base() + id * size; the caller must copy what it needs
 * before the next ul_ring_turn, which gives those buffers back to the
 * kernel (that recycling never crosses into Python). */
int ul_bufring_setup(struct ul_ring *ring, unsigned count, unsigned size);
void *ul_bufring_base(struct ul_ring *ring);
int ul_prep_recv_multishot(struct ul_ring *ring, int fd, uint64_t user_data);
/* One receive of at most `len` bytes into a provided buffer. */
int ul_prep_recv_provided(struct ul_ring *ring, int fd, unsigned len, uint64_t user_data);

/* Registered (fixed) files (csrc/fixed.c; kernel 5.19): a sparse table
 * of `slots` registered once; ul_files_install puts a socket in a free
 * slot (returns the slot, or -ENFILE when none is free, or the kernel's
 * -errno) and ul_files_remove empties it, once no SQE naming it waits in
 * the submission queue.  Wherever an argument is called a "file target"
 * (ul_prep_recv, ul_prep_recv_multishot, ul_sendq_new) it is an fd >= 0,
 * or slot s given as -1 - s: the SQE then names the slot with
 * IOSQE_FIXED_FILE. */
struct ul_files_usage {
    uint64_t slots;          /* 0: no table */
    uint64_t in_use;
    uint64_t high_water;     /* most slots in use at once */
    uint64_t installed;      /* sockets put in a slot */
    uint64_t table_full;     /* installs that found no free slot (the fd was used) */
    uint64_t refused;        /* installs the kernel refused (the fd was used) */
};
int ul_files_setup(struct ul_ring *ring, unsigned slots);
int ul_files_install(struct ul_ring *ring, int fd);
int ul_files_remove(struct ul_ring *ring, unsigned slot);
void ul_files_usage(struct ul_ring *ring, struct ul_files_usage *out);

/* Submit queued SQEs now, without waiting or reaping.  Returns 0 once
 * every queued SQE is in the kernel, 1 if some are still queued (a kernel
 * without IORING_SETUP_SUBMIT_ALL stops at a failing one). */
int ul_ring_submit(struct ul_ring *ring);

/* Operations whose user_data carries this bit complete "inline": the
 * loop must see them during the turn itself (readiness polls), while the
 * others may wait for the ready queue. */
#define UL_INLINE_TAG 0x4000000000000000

/* Submit queued SQEs, wait for at least one completion or the timeout
 * (timeout_ns < 0: no timeout; 0: do not wait), copy up to `max`
 * completions into `out`: the others in order from out[0], the inline ones
 * backwards from out[max - 1] (their number goes to *inline_count).
 * Returns the total copied or a negative errno; 0 when a signal cut the
 * wait short (nothing is copied then: see the loop's signal rule in
 * uring.c). */
int ul_ring_turn(struct ul_ring *ring, long long timeout_ns, struct ul_completion *out, unsigned max,
                 unsigned *inline_count);
/* What the last ul_ring_turn returned: for a caller whose Python code a
 * signal handler's exception interrupted as the call returned, before it
 * could take the count (uringloop/_ring.py, Ring.run_turn). */
int ul_ring_last_turn(struct ul_ring *ring);

/* ---- C-owned send queues (csrc/sendq.c; used by uringloop/_stream.py) ----
 * A stream transport's writes are copied into its queue, so no Python
 * object has to outlive the call, except big ones when the owner asks
 * (ul_sendq_by_reference).  The queue keeps at most one send in
 * flight (the rest coalesces behind it), resubmits partial sends, and
 * handles every successful send completion itself.  Its owner hears only
 * what it must act on, as completions with the owner's user_data and
 * flags = (event << UL_SENDQ_EVENT_SHIFT) | IORING_CQE_F_MORE:
 *   UL_SENDQ_DRAINED   res = bytes still unconfirmed, now at or below the
 *                      threshold set with ul_sendq_notify_at (one shot), or
 *                      above the mark given to ul_sendq_check_pressure, or
 *                      a big buffer written by reference is let go;
 *   UL_SENDQ_FAILED    res = -errno of the failed send; queued bytes dropped;
 *   UL_SENDQ_RELEASED  (no IORING_CQE_F_MORE: the last one) the queue that
 *                      ul_sendq_release left to its send is freed now.
 * The socket must stay open until the queue is released. */
#define UL_SENDQ_EVENT_SHIFT 16
#define UL_SENDQ_DRAINED 1
#define UL_SENDQ_FAILED 2
#define UL_SENDQ_RELEASED 3
/* Added to ul_sendq_write's result when the queue took the buffer by
 * reference (see ul_sendq_by_reference). */
#define UL_SENDQ_BY_REF 0x2000000000000000
/* Added when the write went to the socket first (see ul_sendq_send_first)
 * and the socket did not take all of it: the result is what it refused
 * (what asyncio's write() would buffer). */
#define UL_SENDQ_SENT_FIRST 0x1000000000000000

struct ul_sendq;
/* fd is a file target (see ul_files_setup). */
struct ul_sendq *ul_sendq_new(struct ul_ring *ring, int fd, uint64_t owner);
/* Queue `len` bytes (copied).  Returns the bytes not yet confirmed by the
 * kernel, this write included, or a negative errno (a failed queue). */
long long ul_sendq_write(struct ul_sendq *q, const void *data, size_t len);
/* From now on a write to an idle queue (nothing in flight, queued or held)
 * is first offered to the socket `fd` (the socket's own fd, also when the
 * queue's target is a registered slot) with a non-blocking send(2), as
 * asyncio's write() does: 0 when the socket took it all; else what it
 * refused, queued, | UL_SENDQ_SENT_FIRST; a send error fails the queue
 * and is returned.  Writes of the zero-copy size go to the ring. */
void ul_sendq_send_first(struct ul_sendq *q, int fd);
/* From now on, a write of `ref_min` bytes or more to an idle queue is sent
 * from `data` itself (the result | UL_SENDQ_BY_REF), and one of `zc_min`
 * or more with IORING_OP_SEND_ZC (0: never).  The caller keeps such a
 * buffer alive and unchanged until ul_sendq_holds_ref returns 0, a
 * UL_SENDQ_RELEASED event, or ul_sendq_release returning 0; for a buffer
 * over 256 KiB a UL_SENDQ_DRAINED event (whatever the size) says when that
 * may be.  A write to a busy queue is copied. */
void ul_sendq_by_reference(struct ul_sendq *q, size_t ref_min, size_t zc_min);
int ul_sendq_holds_ref(struct ul_sendq *q);
/* After the next send completion, one UL_SENDQ_DRAINED event if more than
 * `high_water` bytes are still unconfirmed, none otherwise (one shot). */
void ul_sendq_check_pressure(struct ul_sendq *q, size_t high_water);
long long ul_sendq_size(struct ul_sendq *q);
/* Ask for one UL_SENDQ_DRAINED event once at most `threshold` bytes are
 * unconfirmed (the caller checks the current size first). */
void ul_sendq_notify_at(struct ul_sendq *q, size_t threshold);
/* Drop what is queued and cancel the send in flight. */
int ul_sendq_abort(struct ul_sendq *q);
/* The owner is done: returns 0 if the queue was freed now, 1 if a send is
 * still in the kernel (UL_SENDQ_RELEASED follows when it completes). */
int ul_sendq_release(struct ul_sendq *q);
/* Sends the kernel still holds, over all queues of the ring. */
unsigned ul_ring_sends_in_flight(struct ul_ring *ring);

/* ---- file operations (csrc/files.c; used by uringloop/files/_ops.py) ----
 * Offsets of -1 mean "the fd's own position" (streams, O_APPEND).  Paths,
 * buffers, iovec arrays and statx buffers stay alive until the completion,
 * like every other pointer handed to ul_prep_*.  ul_prep_ftruncate needs
 * IORING_OP_FTRUNCATE (kernel 6.9): the caller checks the opcode probe. */

/* Room for the kernel's struct statx (checked in files.c); opaque here. */
struct ul_statx_buf { uint64_t words[32]; };

/* What os.stat_result needs, decoded from a completed ul_statx_buf. */
struct ul_stat {
    uint32_t mode, nlink, uid, gid, blksize;
    uint64_t ino, size, blocks, dev, rdev;
    int64_t atime_sec, mtime_sec, ctime_sec;
    uint32_t atime_nsec, mtime_nsec, ctime_nsec;
};

int ul_prep_openat(struct ul_ring *ring, int dfd, const char *path, int flags, unsigned mode,
                   uint64_t user_data);
int ul_prep_read(struct ul_ring *ring, int fd, void *buf, unsigned nbytes, int64_t offset,
                 uint64_t user_data);
int ul_prep_write(struct ul_ring *ring, int fd, const void *buf, unsigned nbytes, int64_t offset,
                  uint64_t user_data);
void ul_iovec_set(struct iovec *iov, unsigned index, void *base, size_t len);
int ul_prep_readv(struct ul_ring *ring, int fd, const struct iovec *iov, unsigned count,
                  int64_t offset, uint64_t user_data);
int ul_prep_writev(struct ul_ring *ring, int fd, const struct iovec *iov, unsigned count,
                   int64_t offset, uint64_t user_data);
int ul_prep_fsync(struct ul_ring *ring, int fd, int datasync, uint64_t user_data);
int ul_prep_ftruncate(struct ul_ring *ring, int fd, int64_t length, uint64_t user_data);
int ul_prep_fallocate(struct ul_ring *ring, int fd, int mode, int64_t offset, int64_t len,
                      uint64_t user_data);
int ul_prep_statx(struct ul_ring *ring, int dfd, const char *path, int flags,
                  struct ul_statx_buf *buf, uint64_t user_data);
void ul_statx_decode(const struct ul_statx_buf *buf, struct ul_stat *out);
int ul_prep_close(struct ul_ring *ring, int fd, uint64_t user_data);
int ul_prep_unlinkat(struct ul_ring *ring, int dfd, const char *path, int flags, uint64_t user_data);
int ul_prep_renameat(struct ul_ring *ring, int olddfd, const char *oldpath, int newdfd,
                     const char *newpath, unsigned flags, uint64_t user_data);
int ul_prep_mkdirat(struct ul_ring *ring, int dfd, const char *path, unsigned mode, uint64_t user_data);
