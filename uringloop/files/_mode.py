"""The arguments of ``uringloop.open``, checked the way the built-in
``open()`` checks them (same exception types and, for the usual mistakes,
the same messages), before any file is touched.

Data flow: ``parse(mode, buffering, encoding, errors, newline)`` returns an
:class:`OpenSpec` -- the ``os.open`` flags, what the file may do, the
buffer size and the text-layer settings -- which ``_binary.open`` turns
into an ``openat`` and a file object.
"""
import codecs
import functools
import io
import locale
import os
import warnings
from typing import NamedTuple

from ._args import c_int

# Read-ahead and write-buffer size when the caller does not choose one.
# Larger than io.DEFAULT_BUFFER_SIZE because every refill is a trip through
# the loop rather than one syscall.
DEFAULT_BUFFER_SIZE = 64 * 1024

_NEWLINES = (None, "", "\n", "\r", "\r\n")


class OpenSpec(NamedTuple):
    flags: int            # for openat
    readable: bool
    writable: bool
    appending: bool
    text: bool
    binary_mode: str      # the normalised binary mode ("rb", "rb+", "ab", ...)
    mode: str             # what file.mode reports
    buffer_size: int      # 0: unbuffered (binary only)
    line_buffering: bool
    encoding: str
    errors: str
    newline: object       # None, "", "\n", "\r" or "\r\n"


def _check_optional_str(name, value):
    if value is not None and not isinstance(value, str):
        raise TypeError(f"open() argument '{name}' must be str or None, "
                        f"not {type(value).__name__}")


def _text_encoding(encoding):
    if encoding is None or encoding == "locale":
        encoding = locale.getpreferredencoding(False)
    info = codecs.lookup(encoding)  # LookupError: unknown encoding
    if not getattr(info, "_is_text_encoding", True):
        raise LookupError(f"{encoding!r} is not a text encoding; "
                          "use codecs.open() to handle arbitrary codecs")
    return encoding


def parse(mode, buffering, encoding, errors, newline):
    if not isinstance(mode, str):
        raise TypeError(f"open() argument 'mode' must be str, not {type(mode).__name__}")
    buffering = c_int(buffering)
    _check_optional_str("encoding", encoding)
    _check_optional_str("errors", errors)
    _check_optional_str("newline", newline)
    spec = _parse(mode, buffering, encoding, errors, newline)
    # Warnings stay out of the cache: they are due on every call.
    if spec.text and encoding is None:
        io.text_encoding(None, 3)   # -X warn_default_encoding's EncodingWarning
    if buffering == 1 and not spec.text:
        warnings.warn("line buffering (buffering=1) isn't supported in binary mode, "
                      "the default buffer size will be used", RuntimeWarning, 3)
    return spec


@functools.lru_cache(maxsize=64)
def _parse(mode, buffering, encoding, errors, newline):
    # Pure, so cached: programs open many files with the same arguments.
    seen = set()
    for char in mode:
        if char not in "xrwa+tb" or char in seen:
            raise ValueError(f"invalid mode: '{mode}'")
        seen.add(char)
    creating, reading, writing, appending = ("x" in seen, "r" in seen,
                                             "w" in seen, "a" in seen)
    updating, text, binary = "+" in seen, "t" in seen, "b" in seen
    if text and binary:
        raise ValueError("can't have text and binary mode at once")
    kinds = creating + reading + writing + appending
    if kinds > 1:
        raise ValueError("must have exactly one of create/read/write/append mode")
    if kinds == 0:
        raise ValueError("Must have exactly one of create/read/write/append mode "
                         "and at most one plus")
    if binary and encoding is not None:
        raise ValueError("binary mode doesn't take an encoding argument")
    if binary and errors is not None:
        raise ValueError("binary mode doesn't take an errors argument")
    if binary and newline is not None:
        raise ValueError("binary mode doesn't take a newline argument")
    if not binary and newline not in _NEWLINES:
        raise ValueError(f"illegal newline value: {newline}")

    flags = os.O_CLOEXEC
    if creating:
        flags |= os.O_CREAT | os.O_EXCL
        kind = "x"
    elif reading:
        kind = "r"
    elif writing:
        flags |= os.O_CREAT | os.O_TRUNC
        kind = "w"
    else:
        flags |= os.O_CREAT | os.O_APPEND
        kind = "a"
    readable = reading or updating
    writable = not reading or updating
    flags |= os.O_RDWR if readable and writable else (os.O_RDONLY if readable else os.O_WRONLY)
    # The names FileIO gives: "w+" is reported as "rb+", like the built-in.
    if readable and writable:
        binary_mode = {"a": "ab+", "x": "xb+"}.get(kind, "rb+")
    else:
        binary_mode = kind + "b"

    line_buffering = False
    if buffering == 1:
        line_buffering = not binary
        buffer_size = DEFAULT_BUFFER_SIZE
    elif buffering < 0:
        buffer_size = DEFAULT_BUFFER_SIZE
    else:
        buffer_size = buffering
    if buffer_size == 0 and not binary:
        raise ValueError("can't have unbuffered text I/O")

    if binary:
        return OpenSpec(flags, readable, writable, appending, False, binary_mode,
                        binary_mode, buffer_size, False, "", "", None)
    return OpenSpec(flags, readable, writable, appending, True, binary_mode, mode,
                    buffer_size, line_buffering, _text_encoding(encoding),
                    "strict" if errors is None else errors, newline)
