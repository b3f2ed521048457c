"""The arguments of the async file methods and path functions, converted
and checked as ``io`` and ``os`` convert them: the same exception types
and, for the usual mistakes, the same messages -- before anything reaches
an engine, so a value no kernel call can take (an int past 64 bits, a
float, a str for bytes) is refused here instead of failing later inside
cffi or an executor thread.

Each converter is named after the C type CPython converts the argument to,
since that is what decides the error: ``read(n)`` takes an "index-sized
integer or None", ``read1(n)`` and ``os.pread``'s length a ``ssize_t``,
file offsets and sizes a C ``long`` (``off_t``), ``seek``'s offset an
"offset-sized integer", ``whence`` and a mode an ``int``.
"""
import operator
import sys

_SSIZE_MIN, _SSIZE_MAX = -sys.maxsize - 1, sys.maxsize
# off_t is 64 bits on Linux (CPython builds with _FILE_OFFSET_BITS=64),
# and a C long on the 64-bit platforms uringloop runs on.
_OFF_MIN, OFF_MAX = -(1 << 63), (1 << 63) - 1
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1


def optional_size(n):
    """``read(n)``, ``readline(size)``, ``readlines(hint)``: an int or
    None (-1: no limit)."""
    if n is None:
        return -1
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"argument should be integer or None, not '{type(n).__name__}'") from None
    if not _SSIZE_MIN <= n <= _SSIZE_MAX:
        raise OverflowError("cannot fit 'int' into an index-sized integer")
    return n


def _ranged(value, low, high, c_type):
    value = operator.index(value)
    if not low <= value <= high:
        raise OverflowError(f"Python int too large to convert to C {c_type}")
    return value


def ssize(n):
    """A length as ``read1(n)``, a text ``readline(size)`` and ``os.pread``
    take it."""
    return _ranged(n, _SSIZE_MIN, _SSIZE_MAX, "ssize_t")


def c_long(value):
    """A file offset or size as ``os.pread``, ``os.posix_fallocate`` and
    ``truncate`` take it."""
    return _ranged(value, _OFF_MIN, OFF_MAX, "long")


def c_int(value):
    """``whence``, a mode."""
    return _ranged(value, _INT_MIN, _INT_MAX, "int")


def seek_offset(offset):
    """The offset of a binary ``seek``."""
    offset = operator.index(offset)
    if not _OFF_MIN <= offset <= OFF_MAX:
        raise ValueError("cannot fit 'int' into an offset-sized integer")
    return offset


def fd_number(fd):
    """An int path naming an open file, as ``os.stat`` takes it."""
    fd = operator.index(fd)
    if fd > _INT_MAX:
        raise OverflowError("fd is greater than maximum")
    if fd < _INT_MIN:
        raise OverflowError("fd is less than minimum")
    return fd


def type_name(obj):
    """How CPython's argument errors name the type of ``obj``."""
    return "None" if obj is None else type(obj).__name__


def bytes_view(data):
    """What ``write(data)`` writes: a flat, contiguous byte view."""
    if isinstance(data, str):
        raise TypeError("a bytes-like object is required, not 'str'")
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'") from None
    if not view.c_contiguous:
        raise BufferError("memoryview: underlying buffer is not C-contiguous")
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def writable_buffer(buffer, caller):
    """``buffer``, once checked to be one ``readinto`` can fill: writable
    and contiguous.  The caller pins the object itself, so that it stays
    exported (a memoryview refuses ``release()``) while the kernel may
    write there."""
    try:
        with memoryview(buffer) as view:
            fits = not view.readonly and view.c_contiguous
    except TypeError:
        fits = False
    if not fits:
        raise TypeError(f"{caller}() argument must be read-write bytes-like object, "
                        f"not {type_name(buffer)}")
    return buffer


def vector_buffer(buffer, writable):
    """One buffer of ``preadv``/``pwritev``'s sequence, checked as
    ``os.preadv``/``os.pwritev`` check it (a read-only one for preadv is a
    BufferError there); a byte view to write, or the buffer to fill."""
    if not writable:
        return bytes_view(buffer)
    try:
        with memoryview(buffer) as view:
            readonly, contiguous = view.readonly, view.c_contiguous
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(buffer).__name__}'") \
            from None
    if readonly:
        raise BufferError("Object is not writable.")
    if not contiguous:
        raise BufferError("memoryview: underlying buffer is not C-contiguous")
    return buffer
