"""Text mode for ``uringloop.open``: str in and out over an :class:`AsyncFile`.

What this module owns: :class:`AsyncTextFile` -- decoding (an incremental
decoder, wrapped in ``io.IncrementalNewlineDecoder`` for universal
newlines), encoding with newline translation, and ``tell``/``seek`` cookies.

Data flow: reads pull bytes from the binary file one kernel read at a time
(``_read1_locked``), decode them, and keep the decoded text of the last
chunk or two in ``_chars``, together with a record of each chunk (where its
bytes start, the decoder state before it, the bytes, how many characters it
gave) so that ``tell()`` can name the position of the next unread
character.  Writes encode, translate ``"\\n"`` and go into the binary
file's write buffer.  The text layer takes turns through the binary file's
lock, so text and binary operations on one file never interleave.

Cancellation: the decoded state changes only after a read has returned, so
a cancelled text read loses nothing (the bytes wait in the binary file's
read-ahead).

``tell()`` returns the byte offset of the next character when that offset
determines the decoder state (always for UTF-8 and single-byte encodings);
otherwise an opaque cookie, as ``io.TextIOWrapper`` does.  Unlike
``io.TextIOWrapper``, a write after a read in a "+" mode goes where the
reading stopped, not after the text read ahead.
"""
import codecs
import errno
import io
import operator
import os
from collections import deque

from ._args import c_int, c_long, optional_size, ssize, type_name
from ._ops import CLOSED, LineReading
from .._native import os_error

_COOKIE_BITS = 64
_PLAIN_LIMIT = 1 << _COOKIE_BITS
# Codecs where one byte never gives more than one character, so equal
# byte and character counts mean a one-to-one chunk.
# io.TextIOWrapper's messages for a file that cannot do what was asked.
_UNSUPPORTED = {"read": "not readable", "write": "not writable", "truncate": "truncate"}
_BYTEWISE = frozenset({"utf-8", "ascii", "latin-1", "iso8859-1", "iso8859-15", "cp1252"})


class _Chunk:
    """One decoded read: re-decoding ``data`` from byte ``start`` with the
    decoder in state ``flags`` yields the same ``nchars`` characters."""

    __slots__ = ("start", "flags", "data", "nchars")

    def __init__(self, start, flags, data, nchars):
        self.start = start
        self.flags = flags
        self.data = data
        self.nchars = nchars


class AsyncTextFile(LineReading):
    """A text file opened by :func:`uringloop.open`; ``buffer`` is the
    underlying binary :class:`AsyncFile`."""

    def __init__(self, binary, spec):
        self.buffer = binary
        self.mode = spec.mode
        self.encoding = spec.encoding
        self.errors = spec.errors
        self.line_buffering = spec.line_buffering
        self._newline = spec.newline
        self._codec = codecs.lookup(spec.encoding)
        # Written "\n" becomes this ("" or "\n": left alone).
        self._write_newline = os.linesep if spec.newline is None else spec.newline
        self._decoder = self._new_decoder() if spec.readable else None
        self._encoder = None
        if spec.writable:
            self._encoder = self._codec.incrementalencoder(self.errors)
            if binary.seekable() and binary._logical_pos() != 0:
                # Appending or updating past the start: no second BOM.
                self._encoder.setstate(0)
        self._chunks = deque()
        self._chars = ""     # decoded text of the chunks in _chunks
        self._used = 0       # characters of _chars already returned

    def _new_decoder(self):
        decoder = self._codec.incrementaldecoder(self.errors)
        if self._newline is None or self._newline == "":
            decoder = io.IncrementalNewlineDecoder(decoder, translate=self._newline is None)
        return decoder

    def __repr__(self):
        return (f"<uringloop.AsyncTextFile name={self.name!r} mode={self.mode!r} "
                f"encoding={self.encoding!r} engine={self.buffer.engine}"
                f"{' closed' if self.closed else ''}>")

    # -- attributes ----------------------------------------------------------
    @property
    def name(self):
        return self.buffer.name

    @property
    def closed(self):
        return self.buffer.closed

    @property
    def engine(self):
        """``"io_uring"`` or ``"executor"``: where this file's I/O runs."""
        return self.buffer.engine

    @property
    def newlines(self):
        """The newline kinds seen so far (universal-newlines mode only)."""
        return getattr(self._decoder, "newlines", None)

    def fileno(self):
        return self.buffer.fileno()

    def readable(self):
        return self.buffer.readable()

    def writable(self):
        return self.buffer.writable()

    def seekable(self):
        return self.buffer.seekable()

    # -- decoded read-ahead ----------------------------------------------------
    async def _decode_more(self):
        """Decode one more read's worth; False once the file is exhausted."""
        binary = self.buffer
        pending, flags = self._decoder.getstate()
        start = binary._logical_pos() - len(pending)
        data = await binary._read1_locked(binary._chunk)
        text = self._decoder.decode(data, final=not data)
        if self._used == len(self._chars):
            # Everything decoded so far was returned: start afresh.
            self._chunks.clear()
            self._chars = text
            self._used = 0
        else:
            self._chars += text
        self._chunks.append(_Chunk(start, flags, pending + data, len(text)))
        return bool(data)

    def _take(self, end):
        """Return ``_chars[_used:end]`` and drop chunks fully returned
        (keeping the last one: ``tell`` needs it)."""
        text = self._chars[self._used:end]
        self._used = end
        chunks = self._chunks
        while len(chunks) > 1 and self._used >= chunks[0].nchars:
            first = chunks.popleft()
            self._chars = self._chars[first.nchars:]
            self._used -= first.nchars
        return text

    def _reset_reading(self):
        self._chunks.clear()
        self._chars = ""
        self._used = 0

    def _line_end(self, start):
        """End (exclusive) of the first line ending at or after ``start``
        in ``_chars``, or -1."""
        chars, newline = self._chars, self._newline
        if newline is None or newline == "\n":
            at = chars.find("\n", start)
            return at + 1 if at >= 0 else -1
        if newline == "":
            lf, cr = chars.find("\n", start), chars.find("\r", start)
            if cr < 0 or 0 <= lf < cr:
                return lf + 1 if lf >= 0 else -1
            # The newline decoder holds back a final "\r" until it knows
            # what follows, so "\r" is never last unless at end of file.
            return cr + 2 if chars.startswith("\n", cr + 1) else cr + 1
        at = chars.find(newline, start)
        return at + len(newline) if at >= 0 else -1

    # -- reading -----------------------------------------------------------
    async def _begin(self, need=None):
        # io.TextIOWrapper checks for a closed file first, then the mode.
        await self.buffer._begin(need, CLOSED, _UNSUPPORTED.get(need))

    async def read(self, n=-1):
        """Up to ``n`` characters; all that is left if ``n`` < 0 or None."""
        n = optional_size(n)
        await self._begin("read")
        try:
            if n < 0:
                data = await self.buffer._read_locked(-1)
                text = self._chars[self._used:] + self._decoder.decode(data, final=True)
                self._reset_reading()
                return text
            while len(self._chars) - self._used < n:
                if not await self._decode_more():
                    break
            return self._take(min(self._used + n, len(self._chars)))
        finally:
            self.buffer._end()

    async def readline(self, size=-1):
        """One line with its line ending (translated to "\\n" when newline
        is None), or at most ``size`` characters."""
        size = ssize(size)
        await self._begin("read")
        try:
            # Offsets relative to _used: _decode_more may rebase _chars.
            scanned = 0
            while True:
                end = self._line_end(self._used + scanned)
                if end >= 0:
                    end -= self._used
                    break
                available = len(self._chars) - self._used
                if 0 <= size <= available:
                    end = size
                    break
                # A "\r\n" ending may straddle the chunk boundary.
                scanned = max(available - 1, 0)
                if not await self._decode_more():
                    end = len(self._chars) - self._used
                    break
            if size >= 0:
                end = min(end, size)
            return self._take(self._used + end)
        finally:
            self.buffer._end()

    # -- position ------------------------------------------------------------
    def _decoded_count(self, flags, data):
        decoder = self._new_decoder()
        decoder.setstate((b"", flags))
        count = len(decoder.decode(data))
        return count, decoder.getstate() == (b"", 0)

    def _cookie(self):
        """Where the next unread character starts: a byte offset when that
        is enough to restart decoding, else ``start | flags << 64 |
        skip << 128`` (decode from ``start`` in state ``flags``, drop
        ``skip`` characters)."""
        if not self._chunks:
            return self.buffer._logical_pos()
        chunk, skip = self._chunks[0], self._used
        if skip == 0 and chunk.flags == 0:
            return chunk.start
        if (chunk.flags == 0 and chunk.nchars == len(chunk.data)
                and self._codec.name in _BYTEWISE):
            return chunk.start + skip
        # The fewest leading bytes that decode to `skip` characters.
        lo, hi = 0, len(chunk.data)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._decoded_count(chunk.flags, chunk.data[:mid])[0] >= skip:
                hi = mid
            else:
                lo = mid + 1
        count, clean = self._decoded_count(chunk.flags, chunk.data[:lo])
        if count == skip and clean:
            return chunk.start + lo
        return chunk.start | chunk.flags << _COOKIE_BITS | skip << (2 * _COOKIE_BITS)

    async def tell(self):
        """An opaque position for ``seek`` -- the byte offset of the next
        character whenever that is enough (see the module notes)."""
        await self._begin()
        try:
            if not self.buffer._seekable:
                raise os_error(-errno.ESPIPE)
            return self._cookie()
        finally:
            self.buffer._end()

    def _restart_codecs(self, position, flags):
        if self._decoder is not None:
            if position == 0 and flags == 0:
                self._decoder.reset()
            else:
                self._decoder.setstate((b"", flags))
        if self._encoder is not None:
            if position == 0:
                self._encoder.reset()
            else:
                self._encoder.setstate(0)

    async def seek(self, cookie, whence=os.SEEK_SET):
        """``seek(cookie)`` with a value from ``tell()``, ``seek(0, 1)`` or
        ``seek(0, 2)``, as ``io.TextIOWrapper`` allows."""
        whence = c_int(whence)
        if self.closed:
            raise ValueError(CLOSED)
        cookie = operator.index(cookie)
        if whence not in (os.SEEK_SET, os.SEEK_CUR, os.SEEK_END):
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if whence == os.SEEK_CUR and cookie != 0:
            raise io.UnsupportedOperation("can't do nonzero cur-relative seeks")
        if whence == os.SEEK_END and cookie != 0:
            raise io.UnsupportedOperation("can't do nonzero end-relative seeks")
        if whence == os.SEEK_SET and cookie < 0:
            raise ValueError(f"negative seek position {cookie}")
        binary = self.buffer
        await self._begin()
        try:
            if whence == os.SEEK_CUR:
                if not binary._seekable:
                    raise os_error(-errno.ESPIPE)
                return self._cookie()
            if whence == os.SEEK_END:
                position = await binary._seek_locked(0, os.SEEK_END)
                self._reset_reading()
                self._restart_codecs(position, 0)
                return position
            start = cookie & (_PLAIN_LIMIT - 1)
            flags = (cookie >> _COOKIE_BITS) & (_PLAIN_LIMIT - 1)
            skip = cookie >> (2 * _COOKIE_BITS)
            await binary._seek_locked(start, os.SEEK_SET)
            self._reset_reading()
            self._restart_codecs(start, flags)
            if skip:
                while len(self._chars) < skip:
                    if not await self._decode_more():
                        raise OSError("can't restore logical file position")
                self._take(skip)
            return cookie
        finally:
            binary._end()

    async def _rewind(self):
        """Put the binary position where text reading stopped, before a
        write or truncate in a "+" mode."""
        if not self._chunks:
            return
        cookie = self._cookie()
        if cookie >= _PLAIN_LIMIT:
            raise io.UnsupportedOperation(
                "can't write after reading here: the position is inside a stateful "
                "encoding; seek() to a position from tell() first")
        await self.buffer._seek_locked(cookie, os.SEEK_SET)
        self._reset_reading()
        self._restart_codecs(cookie, 0)

    # -- writing -------------------------------------------------------------
    async def write(self, s):
        """Encode and write ``s`` (buffered); returns ``len(s)``."""
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type_name(s)}")
        await self._begin("write")
        try:
            await self._rewind()
            text = s
            if self._write_newline not in ("", "\n") and "\n" in s:
                text = s.replace("\n", self._write_newline)
            await self.buffer._write_locked(memoryview(self._encoder.encode(text)))
            if self.line_buffering and ("\n" in s or "\r" in s):
                await self.buffer._write_out()
            return len(s)
        finally:
            self.buffer._end()

    async def flush(self):
        if self.closed:
            raise ValueError(CLOSED)
        await self.buffer.flush()

    async def truncate(self, size=None):
        """Resize to ``size`` bytes (default: the current position); the
        position does not move."""
        self.buffer._check(CLOSED, "truncate", _UNSUPPORTED["truncate"])
        if size is not None:
            size = c_long(size)
        await self._begin("truncate")
        try:
            await self._rewind()
            return await self.buffer._truncate_locked(size)
        finally:
            self.buffer._end()

    async def fsync(self):
        await self.buffer.fsync()

    async def fdatasync(self):
        await self.buffer.fdatasync()

    async def stat(self):
        return await self.buffer.stat()

    async def close(self):
        await self.buffer.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        await self.close()
