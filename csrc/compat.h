/*
 * compat.h -- io_uring constants newer than the oldest headers we build
 * against (Debian 12: liburing 2.3, kernel headers 6.1).
 *
 * The kernel decides at run time whether it knows a feature; these values
 * only let the code name it.  Every use is guarded by a probe result or a
 * feature bit, never by the header version.
 */
#ifndef URINGLOOP_COMPAT_H
#define URINGLOOP_COMPAT_H

#include <liburing.h>

#ifndef IORING_FEAT_REG_REG_RING
#define IORING_FEAT_REG_REG_RING (1U << 13)      /* kernel 6.3 */
#endif

#ifndef IORING_FEAT_RECVSEND_BUNDLE
#define IORING_FEAT_RECVSEND_BUNDLE (1U << 14)   /* kernel 6.10 */
#endif

#ifndef IORING_FEAT_MIN_TIMEOUT
#define IORING_FEAT_MIN_TIMEOUT (1U << 15)       /* kernel 6.12 */
#endif

/* Opcodes are enum members, invisible to #ifdef; these are the kernel's
 * numbers (include/uapi/linux/io_uring.h) for the ones liburing 2.3's
 * enum stops short of. */
#define UL_IORING_OP_FTRUNCATE 55                /* kernel 6.9 */

/* io_uring_register opcode and argument for NAPI busy polling (kernel 6.9;
 * liburing 2.6 wraps it).  Later kernels split the first pad byte into an
 * opcode and a tracking mode whose zero values mean exactly this. */
#define UL_IORING_REGISTER_NAPI 27
struct ul_io_uring_napi {
    __u32 busy_poll_to;
    __u8 prefer_busy_poll;
    __u8 pad[3];
    __u64 resv;
};

#endif
