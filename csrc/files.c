/*
 * files.c -- io_uring operations on files and paths: openat, read/write
 * (plain and vectored), fsync/fdatasync, fallocate, statx, close, unlinkat,
 * renameat, mkdirat.
 *
 * Like uring.c, this file owns no memory: every path, buffer, iovec array
 * and statx buffer passed in is the caller's and must stay alive until the
 * completion with the same user_data comes back from ul_ring_turn
 * (uringloop/files/_ops.py keeps them in the ring's ops table).  Each
 * function only fills one SQE taken from uring.c's SQ; nothing enters the
 * kernel until the loop's next turn.
 *
 * ftruncate has no prep helper in liburing 2.3 (IORING_OP_FTRUNCATE arrived
 * with kernel 6.9 and liburing 2.6): its SQE is filled here by hand, and the
 * Python side submits it only when the kernel's opcode probe lists it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>

#include "compat.h"
#include "uring.h"

/* Provided by uring.c: the next free SQE, submitting first if the SQ is
 * full (NULL and *error set when even that fails). */
struct io_uring_sqe *ul_ring_sqe(struct ul_ring *ring, int *error);

/* struct ul_statx_buf is the kernel's struct statx behind an opaque name,
 * so that the cdef (which cannot include system headers) can size it. */
_Static_assert(sizeof(struct statx) <= sizeof(struct ul_statx_buf),
               "struct ul_statx_buf is too small for struct statx");
_Static_assert(_Alignof(struct statx) <= _Alignof(struct ul_statx_buf),
               "struct ul_statx_buf is less aligned than struct statx");

#define FILE_SQE(r, sqe)                           \
    int error_ = 0;                                \
    struct io_uring_sqe *sqe = ul_ring_sqe((r), &error_); \
    if (sqe == NULL)                               \
        return error_

/* -1 in an offset means "the fd's own position": liburing takes the
 * offset as __u64, where (__u64)-1 is exactly the kernel's marker. */
static uint64_t file_offset(int64_t offset)
{
    return (uint64_t)offset;
}

int ul_prep_openat(struct ul_ring *r, int dfd, const char *path, int flags, unsigned mode,
                   uint64_t user_data)
{
    FILE_SQE(r, sqe);
    io_uring_prep_openat(sqe, dfd, path, flags, (mode_t)mode);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int ul_prep_read(struct ul_ring *r, int fd, void *buf, unsigned nbytes, int64_t offset,
                 uint64_t user_data)
{
    FILE_SQE(r, sqe);
    io_uring_prep_read(sqe, fd, buf, nbytes, file_offset(offset));
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int ul_prep_write(struct ul_ring *r, int fd, const void *buf, unsigned nbytes, int64_t offset,
                  uint64_t user_data)
{
    FILE_SQE(r, sqe);
    io_uring_prep_write(sqe, fd, buf, nbytes, file_offset(offset));
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

/* struct iovec is opaque to the cdef; Python fills arrays through this. */
void ul_iovec_set(struct iovec *iov, unsigned index, void *base, size_t len)
{
    iov[index].iov_base = base;
    iov[index].iov_len = len;
}

int ul_prep_readv(struct ul_ring *r, int fd, const struct iovec *iov, unsigned count,
                  int64_t offset, uint64_t user_data)
{
    FILE_SQE(r, sqe);
    io_uring_prep_readv(sqe, fd, iov, count, file_offset(offset));
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int ul_prep_writev(struct ul_ring *r, int fd, const struct iovec *iov, unsigned count,
                   int64_t offset, uint64_t user_data)
{
    FILE_SQE(r, sqe);
    io_uring_prep_writev(sqe, fd, iov, count, file_offset(offset));
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int ul_prep_fsync(struct ul_ring *r, int fd, int datasync, uint64_t user_data)
{
    FILE_SQE(r, sqe);
    io_uring_prep_fsync(sqe, fd, datasync ? IORING_FSYNC_DATASYNC : 0);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int ul_prep_fallocate(struct ul_ring *r, int fd, int mode, int64_t offset, int64_t len,
                      uint64_t user_data)
{
    if (offset < 0 || len <= 0)
        return -EINVAL;
    FILE_SQE(r, sqe);
    io_uring_prep_fallocate(sqe, fd, mode, (off_t)offset, (off_t)len);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int ul_prep_statx(struct ul_ring *r, int dfd, const char *path, int flags,
                  struct ul_statx_buf *buf, uint64_t user_data)
{
    FILE_SQE(r, sqe);
    io_uring_prep_statx(sqe, dfd, path, flags, STATX_BASIC_STATS, (struct statx *)buf);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

/* The fields os.stat_result carries, with dev/rdev combined as stat(2)
 * reports them. */
void ul_statx_decode(const struct ul_statx_buf *buf, struct ul_stat *out)
{
    const struct statx *stx = (const struct statx *)buf;
    out->mode = stx->stx_mode;
    out->nlink = stx->stx_nlink;
    out->uid = stx->stx_uid;
    out->gid = stx->stx_gid;
    out->blksize = stx->stx_blksize;
    out->ino = stx->stx_ino;
    out->size = stx->stx_size;
    out->blocks = stx->stx_blocks;
    out->dev = makedev(stx->stx_dev_major, stx->stx_dev_minor);
    out->rdev = makedev(stx->stx_rdev_major, stx->stx_rdev_minor);
    out->atime_sec = stx->stx_atime.tv_sec;
    out->atime_nsec = stx->stx_atime.tv_nsec;
    out->mtime_sec = stx->stx_mtime.tv_sec;
    out->mtime_nsec = stx->stx_mtime.tv_nsec;
    out->ctime_sec = stx->stx_ctime.tv_sec;
    out->ctime_nsec = stx->stx_ctime.tv_nsec;
}

int ul_prep_close(struct ul_ring *r, int fd, uint64_t user_data)
{
    FILE_SQE(r, sqe);
    io_uring_prep_close(sqe, fd);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int ul_prep_ftruncate(struct ul_ring *r, int fd, int64_t length, uint64_t user_data)
{
    FILE_SQE(r, sqe);
    /* The kernel reads the fd and the new length (in `off`) and wants
     * every other field zero, which io_uring_prep_rw leaves them. */
    io_uring_prep_rw(UL_IORING_OP_FTRUNCATE, sqe, fd, NULL, 0, (uint64_t)length);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int ul_prep_unlinkat(struct ul_ring *r, int dfd, const char *path, int flags, uint64_t user_data)
{
    FILE_SQE(r, sqe);
    io_uring_prep_unlinkat(sqe, dfd, path, flags);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int ul_prep_renameat(struct ul_ring *r, int olddfd, const char *oldpath, int newdfd,
                     const char *newpath, unsigned flags, uint64_t user_data)
{
    FILE_SQE(r, sqe);
    io_uring_prep_renameat(sqe, olddfd, oldpath, newdfd, newpath, flags);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int ul_prep_mkdirat(struct ul_ring *r, int dfd, const char *path, unsigned mode, uint64_t user_data)
{
    FILE_SQE(r, sqe);
    io_uring_prep_mkdirat(sqe, dfd, path, (mode_t)mode);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}
