"""Names for the kernel's io_uring numbers: opcodes (``IORING_OP_*``),
feature bits (``IORING_FEAT_*``) and setup flags (``IORING_SETUP_*``), for
``python -m uringloop info`` and ``loop.ring_stats()``.

The tables follow the kernel's numbering in
``include/uapi/linux/io_uring.h``; a number newer than a table is named
``op N`` / ``bit N`` rather than hidden.
"""

# IORING_OP_* in kernel order: the index is the opcode.
OPCODE_NAMES = (
    "NOP", "READV", "WRITEV", "FSYNC", "READ_FIXED", "WRITE_FIXED",
    "POLL_ADD", "POLL_REMOVE", "SYNC_FILE_RANGE", "SENDMSG", "RECVMSG",
    "TIMEOUT", "TIMEOUT_REMOVE", "ACCEPT", "ASYNC_CANCEL", "LINK_TIMEOUT",
    "CONNECT", "FALLOCATE", "OPENAT", "CLOSE", "FILES_UPDATE", "STATX",
    "READ", "WRITE", "FADVISE", "MADVISE", "SEND", "RECV", "OPENAT2",
    "EPOLL_CTL", "SPLICE", "PROVIDE_BUFFERS", "REMOVE_BUFFERS", "TEE",
    "SHUTDOWN", "RENAMEAT", "UNLINKAT", "MKDIRAT", "SYMLINKAT", "LINKAT",
    "MSG_RING", "FSETXATTR", "SETXATTR", "FGETXATTR", "GETXATTR", "SOCKET",
    "URING_CMD", "SEND_ZC", "SENDMSG_ZC", "READ_MULTISHOT", "WAITID",
    "FUTEX_WAIT", "FUTEX_WAKE", "FUTEX_WAITV", "FIXED_FD_INSTALL",
    "FTRUNCATE", "BIND", "LISTEN", "RECV_ZC", "EPOLL_WAIT", "READV_FIXED",
    "WRITEV_FIXED", "PIPE",
)

# IORING_FEAT_*: the index is the bit.
FEATURE_NAMES = (
    "SINGLE_MMAP", "NODROP", "SUBMIT_STABLE", "RW_CUR_POS",
    "CUR_PERSONALITY", "FAST_POLL", "POLL_32BITS", "SQPOLL_NONFIXED",
    "EXT_ARG", "NATIVE_WORKERS", "RSRC_TAGS", "CQE_SKIP", "LINKED_FILE",
    "REG_REG_RING", "RECVSEND_BUNDLE", "MIN_TIMEOUT", "RW_ATTR", "NO_IOWAIT",
)

# IORING_SETUP_*: the index is the bit.
SETUP_FLAG_NAMES = (
    "IOPOLL", "SQPOLL", "SQ_AFF", "CQSIZE", "CLAMP", "ATTACH_WQ",
    "R_DISABLED", "SUBMIT_ALL", "COOP_TASKRUN", "TASKRUN_FLAG", "SQE128",
    "CQE32", "SINGLE_ISSUER", "DEFER_TASKRUN", "NO_MMAP",
    "REGISTERED_FD_ONLY", "NO_SQARRAY", "HYBRID_IOPOLL",
)


def opcode_name(op):
    return OPCODE_NAMES[op] if op < len(OPCODE_NAMES) else f"op {op}"


def bit_names(value, names):
    return [names[bit] if bit < len(names) else f"bit {bit}"
            for bit in range(value.bit_length()) if value >> bit & 1]
