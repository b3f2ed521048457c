"""Sockets whose class replaces a method that asyncio's selector loop calls.

asyncio moves a socket's data by calling the socket object's own methods
(``recv``, ``recv_into``, ``send``, ``sendmsg``, ``recvfrom``, ``sendto``,
``connect``, ``accept``), so a ``socket.socket`` subclass (or a socket-like
object) whose methods count, log, throttle or transform sees every call;
websockets' suite relies on it.  The ring moves data by fd and would
bypass them.  So each entry point that would (a transport, a server's
accept, a ``sock_*`` method) first asks ``overrides`` and, for such a
socket, hands over to asyncio's own readiness-based implementation, which
calls those methods and waits on the ring's polls (``_readiness``).  A
plain ``socket.socket``, or a subclass that keeps these methods, stays on
the completion path; the check is one type comparison for a plain socket.
"""
import socket
import sys

# What asyncio's selector transports call on their socket: its stream
# transport also sends with sendmsg from 3.12 (writelines, and writes
# queued while the socket was full).
STREAM = ("recv", "recv_into", "send") + (("sendmsg",) if sys.version_info >= (3, 12) else ())
DATAGRAM = ("recvfrom", "send", "sendto")


# The class itself, as it was at import: a program (asyncssh's tests among
# them) may patch the module attribute with a factory function while it
# runs, and asyncio never looks that attribute up where these checks are.
SOCKET = socket.socket


def overrides(sock, names):
    """True if ``sock`` has its own version of one of ``names``, from its
    class or set on the object itself (or lacks it: asyncio's call then
    fails as it fails there)."""
    cls = type(sock)
    if cls is SOCKET:
        return False  # its __slots__ leave no room for an instance's own
    own = getattr(sock, "__dict__", None) or ()
    return any(name in own or getattr(cls, name, None) is not getattr(SOCKET, name)
               for name in names)
