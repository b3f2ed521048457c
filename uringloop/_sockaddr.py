"""Socket addresses in the kernel's binary form (``struct sockaddr_*``).

Ring operations take addresses as raw bytes, so the conversions that
``socket.connect``/``recvfrom`` would do inside CPython happen here:
``pack`` turns a resolved Python address into a sockaddr for
``IORING_OP_CONNECT``/``SENDMSG``; ``unpack`` turns what ``RECVMSG`` wrote
back into the tuple or path Python's socket module would have returned.
Only the families asyncio's socket methods deal with are supported.
"""
import socket
import struct

_SA_FAMILY = struct.Struct("=H")
_SOCKADDR_IN = struct.Struct("=H2s4s8x")          # family, port (BE), addr
_SOCKADDR_IN6 = struct.Struct("=H2s4s16sI")       # family, port, flowinfo (BE), addr, scope
_UNIX_PATH_MAX = 108


def pack(family, address):
    if family == socket.AF_INET:
        host, port = address
        return _SOCKADDR_IN.pack(family, port.to_bytes(2, "big"),
                                 socket.inet_pton(family, host))
    if family == socket.AF_INET6:
        host, port, flowinfo, scope_id = (tuple(address) + (0, 0))[:4]
        if "%" in host:
            host, _, zone = host.partition("%")
            scope_id = scope_id or socket.if_nametoindex(zone)
        return _SOCKADDR_IN6.pack(family, port.to_bytes(2, "big"),
                                  flowinfo.to_bytes(4, "big"),
                                  socket.inet_pton(family, host), scope_id)
    if family == socket.AF_UNIX:
        path = address.encode() if isinstance(address, str) else bytes(address)
        if path and path[0] != 0:
            path += b"\0"          # filesystem names are NUL-terminated
        if len(path) > _UNIX_PATH_MAX:
            raise OSError(36, "AF_UNIX path too long")
        return _SA_FAMILY.pack(family) + path
    raise OSError(97, f"address family {family!r} is not supported by the ring")


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
