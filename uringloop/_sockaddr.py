"""Socket addresses in the kernel's binary form (``struct sockaddr_*``).

Ring operations take addresses as raw bytes, so the conversions that
``socket.sendto``/``recvfrom``/``accept`` would do inside CPython happen
here: ``check`` refuses what CPython's ``sendto`` would refuse, with the
same exception, and puts the address in canonical form; ``pack`` turns a
checked address whose host is numeric into a sockaddr for
``IORING_OP_SENDMSG``; ``unpack`` turns what ``RECVMSG``
wrote back into the tuple or path Python's socket module would have
returned; ``peername`` is the peer address ``accept`` would have reported.
Only the families asyncio's socket methods deal with are supported.
"""
import errno
import operator
import os
import socket
import struct

_SA_FAMILY = struct.Struct("=H")
_SOCKADDR_IN = struct.Struct("=H2s4s8x")          # family, port (BE), addr
_SOCKADDR_IN6 = struct.Struct("=H2s4s16sI")       # family, port, flowinfo (BE), addr, scope
_UNIX_PATH_MAX = 108
# getsockopt(SO_PEERNAME) asks the kernel for the peer as accept does, so it
# still answers once the peer has reset the connection (getpeername then
# fails with ENOTCONN).  It wants the exact size of the family's sockaddr.
_SO_PEERNAME = getattr(socket, "SO_PEERNAME", 28)
_PEER_SIZES = {socket.AF_INET: _SOCKADDR_IN.size, socket.AF_INET6: _SOCKADDR_IN6.size}
_ANY = {socket.AF_INET: "0.0.0.0", socket.AF_INET6: "::"}
_closed_probes = {}   # family -> a closed socket of that family


def _numeric_host(family, host):
    """``host`` as an address inet_pton takes, or None for a name to resolve
    (socket.sendto's own shortcuts: "" and "<broadcast>")."""
    if host == "":
        return _ANY[family]
    if host == "<broadcast>" and family == socket.AF_INET:
        return "255.255.255.255"
    try:
        socket.inet_pton(family, host)
    except (OSError, ValueError):   # ValueError: an embedded NUL
        return None
    return host


def check(sock, address):
    """``address`` for ``sock.sendto(...)``, refused with the exception
    CPython's socket method raises.  Returns it
    as ``pack`` takes it, except that an IP host may still be a name: see
    ``needs_resolving``."""
    family = sock.family
    if family == socket.AF_INET:
        if (type(address) is tuple and len(address) == 2 and type(address[0]) is str
                and type(address[1]) is int and 0 <= address[1] <= 0xFFFF):
            return address
    elif family == socket.AF_INET6:
        if (type(address) is tuple and 2 <= len(address) <= 4 and type(address[0]) is str
                and all(type(value) is int for value in address[1:])):
            host, port, flowinfo, scope_id = address + (0, 0)[len(address) - 2:]
            if 0 <= port <= 0xFFFF and 0 <= flowinfo <= 0xFFFFF and 0 <= scope_id <= 0xFFFFFFFF:
                return host, port, flowinfo, scope_id
    elif family == socket.AF_UNIX:
        if type(address) is str or type(address) is bytes:
            return address
    else:
        raise OSError(errno.EAFNOSUPPORT,
                      f"address family {family!r} is not supported by the ring")
    _check_by_cpython(sock, address)
    if family == socket.AF_UNIX:
        return address if isinstance(address, str) else bytes(address)
    host = address[0]
    if not isinstance(host, str):
        host = bytes(host).decode("latin-1")
    if family == socket.AF_INET:
        return host, operator.index(address[1])
    # 'I' in CPython's parser: unsigned, masked rather than checked.
    rest = [operator.index(value) & 0xFFFFFFFF for value in address[2:]]
    flowinfo, scope_id = (rest + [0, 0])[:2]
    return host, operator.index(address[1]), flowinfo, scope_id


def _check_by_cpython(sock, address):
    """Let CPython's own parser judge ``address``: the same method of a
    closed socket of the same family parses it exactly as the real call would,
    then fails with EBADF without touching anything.  A host name is
    swapped for a numeric one first, so that no lookup blocks the loop
    (the caller resolves it asynchronously)."""
    probe = _closed_probes.get(sock.family)
    if probe is None:
        # Datagram: any process may create one (the parsing is the family's).
        probe = socket.socket(sock.family, socket.SOCK_DGRAM)
        probe.close()
        _closed_probes[sock.family] = probe
    if (sock.family != socket.AF_UNIX and type(address) is tuple and address
            and type(address[0]) is str and _numeric_host(sock.family, address[0]) is None
            and "%" not in address[0]):
        address = (_ANY[sock.family],) + address[1:]
    try:
        probe.sendto(b"", address)
    except OSError as exc:
        if exc.errno != errno.EBADF:
            raise


def needs_resolving(family, address):
    """True if a checked IP address names its host rather than numbering it."""
    return family != socket.AF_UNIX and _numeric_host(family, address[0]) is None


def pack(family, address):
    """A checked address (``check``) with a numeric host, as a sockaddr."""
    if family == socket.AF_INET:
        host, port = address
        return _SOCKADDR_IN.pack(family, port.to_bytes(2, "big"),
                                 socket.inet_pton(family, _numeric_host(family, host)))
    if family == socket.AF_INET6:
        host, port, flowinfo, scope_id = (tuple(address) + (0, 0))[:4]
        if "%" in host:
            host, _, zone = host.partition("%")
            scope_id = scope_id or socket.if_nametoindex(zone)
        return _SOCKADDR_IN6.pack(family, port.to_bytes(2, "big"),
                                  flowinfo.to_bytes(4, "big"),
                                  socket.inet_pton(family, _numeric_host(family, host)),
                                  scope_id)
    path = os.fsencode(address)
    if path[:1] == b"\0" or not path:
        if len(path) > _UNIX_PATH_MAX:     # Linux's abstract namespace
            raise OSError("AF_UNIX path too long")
    else:
        if len(path) >= _UNIX_PATH_MAX:    # room for the terminating NUL
            raise OSError("AF_UNIX path too long")
        path += b"\0"
    return _SA_FAMILY.pack(family) + path


def unpack(raw, length):
    """Decode ``length`` bytes of a sockaddr the kernel filled in."""
    if length < _SA_FAMILY.size:
        return None
    family = _SA_FAMILY.unpack_from(raw)[0]
    if family == socket.AF_INET:
        _, port, addr = _SOCKADDR_IN.unpack_from(raw)
        return socket.inet_ntop(family, addr), int.from_bytes(port, "big")
    if family == socket.AF_INET6:
        _, port, flowinfo, addr, scope_id = _SOCKADDR_IN6.unpack_from(raw)
        return (socket.inet_ntop(family, addr), int.from_bytes(port, "big"),
                int.from_bytes(flowinfo, "big"), scope_id)
    if family == socket.AF_UNIX:
        path = bytes(raw[_SA_FAMILY.size:length])
        if path[:1] == b"\0":
            return path                     # abstract namespace: bytes
        return path.split(b"\0", 1)[0].decode(errors="surrogateescape")
    return None


def peername(conn):
    """The peer of an accepted connection, as ``accept`` reports it: even
    when the peer reset the connection before it was accepted."""
    try:
        return conn.getpeername()
    except OSError:
        size = _PEER_SIZES.get(conn.family)
        if size is None:
            raise
        raw = conn.getsockopt(socket.SOL_SOCKET, _SO_PEERNAME, size)
        return unpack(raw, len(raw))
