"""Child processes whose exit is noticed on the ring.

What this owns: ``RingSubprocessMixin._make_subprocess_transport``, which
``subprocess_exec``/``subprocess_shell`` (and so ``create_subprocess_*``)
call, and the loop's table of children not yet reaped.

asyncio's Unix loop asks the policy's child watcher to learn when a child
exits: on 3.11 the default ``ThreadedChildWatcher`` spends one thread per
child blocked in ``waitpid``; 3.12 and 3.13 prefer ``PidfdChildWatcher``
but reach it through the deprecated watcher API.  uringloop uses no child
watcher on any version (like uvloop, it ignores one set on the policy):

    spawn (asyncio's _UnixSubprocessTransport, pipes as usual)
      -> os.pidfd_open(pid)
      -> one IORING_OP_POLL_ADD(pidfd, POLLIN) on the loop's ring
      -> the poll completes when the child exits: waitpid(WNOHANG) reaps
         it, the pidfd is closed
      -> once the child's pipes have ended (a few turns at most, see
         _exit_after_pipes): transport._process_exited(returncode)

A poll rather than IORING_OP_WAITID (kernel 6.7+): the poll works from
kernel 5.3, needs nothing from the C layer, and a child's exit costs three
system calls (pidfd_open, waitpid, close), a few microseconds against the
milliseconds of fork and exec.  WAITID would save those calls but reap
inside the kernel, racing the ``Popen.wait()``/``poll()`` that user code
may call on the same child just as ``waitpid`` does here.

When the kernel or a seccomp filter refuses pidfds, asyncio's own
watcher-based path is used instead (probed once per process); a child
whose pidfd cannot be opened for want of a free fd is waited for by a
thread of its own.

Children still running when the loop closes are neither killed nor
abandoned as zombies: the loop's polls are cancelled and one daemon thread
per close waits on their pidfds and reaps each as it exits, which is what
the 3.11 default watcher's threads do for a closed loop.
"""
import os
import select
import threading
from asyncio import unix_events
from asyncio.log import logger

from ._op import RingCallback

_POLLIN = select.POLLIN
# How many turns an exit waits for the child's pipes to end.
_EXIT_WAIT_TURNS = 20
_pidfd_usable = None


def _pidfds_usable():
    global _pidfd_usable
    if _pidfd_usable is None:
        try:
            os.close(os.pidfd_open(os.getpid()))
        except (AttributeError, OSError):
            _pidfd_usable = False
        else:
            _pidfd_usable = True
    return _pidfd_usable


def _reap(pid, popen, block=False):
    """The exit code of ``pid`` if it has exited (reaping it), else None;
    with ``block``, wait for it to exit."""
    try:
        reaped, status = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        # Reaped by someone else: Popen.wait()/poll() called by the user
        # (which recorded the code), or SIGCHLD set to SIG_IGN.
        if popen.returncode is not None:
            return popen.returncode
        logger.warning("Unknown child process pid %d, will report returncode 255", pid)
        return 255
    if reaped == 0:
        return None
    return os.waitstatus_to_exitcode(status)


class _Child:
    __slots__ = ("pid", "pidfd", "transport", "user_data")

    def __init__(self, pid, pidfd, transport):
        self.pid = pid
        self.pidfd = pidfd
        self.transport = transport
        self.user_data = None


class RingSubprocessMixin:
    """Loop mixin: subprocess transports watched by pidfd polls on the ring.

    Needs ``self._ring`` and asyncio's Unix selector loop underneath."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._children = {}   # pid -> _Child, until reaped
        self._parent_pid = os.getpid()

    async def _make_subprocess_transport(self, protocol, args, shell,
                                         stdin, stdout, stderr, bufsize,
                                         extra=None, **kwargs):
        if not _pidfds_usable():
            return await super()._make_subprocess_transport(
                protocol, args, shell, stdin, stdout, stderr, bufsize,
                extra=extra, **kwargs)
        waiter = self.create_future()
        transport = unix_events._UnixSubprocessTransport(
            self, protocol, args, shell, stdin, stdout, stderr, bufsize,
            waiter=waiter, extra=extra, **kwargs)
        self._watch_child(transport)
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transport.close()
            await transport._wait()
            raise
        return transport

    def _watch_child(self, transport):
        pid = transport.get_pid()
        popen = transport.get_extra_info("subprocess")
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            # Already reaped elsewhere (see _reap): report what is known.
            self.call_soon(transport._process_exited, _reap(pid, popen))
            return
        except OSError:
            # No fd to spare (EMFILE, ENFILE): this child gets a thread
            # blocked in waitpid, as under asyncio's ThreadedChildWatcher.
            threading.Thread(target=self._wait_in_thread, args=(transport,),
                             name=f"uringloop-waitpid-{pid}", daemon=True).start()
            return
        child = _Child(pid, pidfd, transport)
        self._children[pid] = child
        self._arm_child(child)

    def _wait_in_thread(self, transport):
        popen = transport.get_extra_info("subprocess")
        returncode = _reap(transport.get_pid(), popen, block=True)
        popen.returncode = returncode
        try:
            self.call_soon_threadsafe(transport._process_exited, returncode)
        except RuntimeError:
            pass  # the loop was closed meanwhile; the child is reaped anyway

    def _arm_child(self, child):
        def on_exit(res, flags):
            if self._children.get(child.pid) is not child:
                return
            popen = child.transport.get_extra_info("subprocess")
            returncode = _reap(child.pid, popen)
            if returncode is None:
                # Not reapable yet (an interrupted poll): wait again.
                self._arm_child(child)
                return
            del self._children[child.pid]
            os.close(child.pidfd)
            # The pid is reaped: record that in the Popen object at once, so
            # that nothing polls a pid that may be reused.  The transport
            # learns it through the ready queue, as from asyncio's watchers:
            # a wait() started in this iteration must still see the exit
            # together with the pipes' end, not before it.
            popen.returncode = returncode
            self.call_soon(self._exit_after_pipes, child.transport, returncode, 0)

        child.user_data = self._ring.submit_poll(child.pidfd, _POLLIN, RingCallback(on_exit))

    def _exit_after_pipes(self, transport, returncode, turns):
        """Report the exit once the child's pipes have ended (its stdin
        too: the write pipe sees the read end close), or after a few turns
        (a grandchild may hold them open).  The exit reaches asyncio's 3.11
        loop from a watcher thread, after the pipes' end in practice, so
        process_exited() (and a wait() that returns) comes last.  Here the
        pidfd's poll is armed all along, while a pipe's next read goes in
        only once the data before it was delivered: without the wait, the
        exit came first for 12 of 30 children that wrote, then exited."""
        pipes = transport._pipes   # asyncio's, the same in 3.11-3.13
        # (None: a pipe not connected yet, which the end will reach too.)
        if turns < _EXIT_WAIT_TURNS and any(
                pipe is None or not pipe.disconnected for pipe in pipes.values()):
            # The first turns at once (the end of a pipe is a read away),
            # then a millisecond apart.
            delay = 0 if turns < 3 else 0.001
            self.call_later(delay, self._exit_after_pipes, transport, returncode, turns + 1)
            return
        transport._process_exited(returncode)

    def close(self):
        if not self.is_closed() and not self.is_running():
            self._release_children()
        super().close()

    def _release_children(self):
        children, self._children = self._children, {}
        if os.getpid() != self._parent_pid:
            # A forked child closing the loop it inherited: the children
            # are its parent's to reap; only the pidfd copies are ours.
            for child in children.values():
                os.close(child.pidfd)
            return
        # Closing a pidfd while the ring's cancelled poll on it is still in
        # flight is safe: the poll holds its own file reference and its
        # completion is matched by user_data, not by fd.
        still_running = []
        for child in children.values():
            self._ring.cancel(child.user_data)
            popen = child.transport.get_extra_info("subprocess")
            returncode = _reap(child.pid, popen)
            if returncode is None:
                still_running.append((child.pid, child.pidfd, popen))
            else:
                os.close(child.pidfd)
                child.transport._process_exited(returncode)
        if still_running:
            threading.Thread(target=_reap_when_exited, args=(still_running,),
                             name="uringloop-reaper", daemon=True).start()


def _reap_when_exited(children):
    """Reap children that outlived their loop, as each exits."""
    poller = select.poll()
    waiting = {}
    for pid, pidfd, popen in children:
        poller.register(pidfd, _POLLIN)
        waiting[pidfd] = (pid, popen)
    while waiting:
        for pidfd, _ in poller.poll():
            pid, popen = waiting[pidfd]
            returncode = _reap(pid, popen)
            if returncode is None:
                continue
            del waiting[pidfd]
            poller.unregister(pidfd)
            os.close(pidfd)
            # Popen.returncode is what the transport consults when it is
            # closed or collected: a known exit means no kill() of a pid
            # that may have been reused.
            popen.returncode = returncode
