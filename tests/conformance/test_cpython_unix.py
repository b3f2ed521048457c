"""CPython's subprocess and Unix-loop tests, bound to uringloop.

Imported from the installed ``test.test_asyncio`` at run time (never
copied).  Each binding only supplies the loop; known gaps would be listed
with ``apply_known_failures`` and there are none.

What is bound and why:

* ``test_subprocess.SubprocessMixin`` -- every subprocess behaviour.
  CPython binds it once per child watcher (Threaded, Safe, Fast, Pidfd,
  ...) because asyncio's Unix loop learns about child exits from the
  policy's watcher.  uringloop uses no watcher (a pidfd poll on the ring),
  so it is bound once, with no watcher installed, the way CPython binds it
  for the proactor loop on Windows.
* ``test_unix_events.SelectorEventLoopSignalTests`` -- add/remove signal
  handlers and close.  The tests patch asyncio's ``signal`` module but use
  the loop's real methods, which uringloop inherits; its ``setUp`` builds
  ``asyncio.SelectorEventLoop()`` by name, so the binding swaps that name
  for ``uringloop.Loop`` while ``setUp`` runs.
* ``test_unix_events.TestFunctional`` -- add_reader/add_writer argument
  checks against a real loop from the policy.

Not bound here:

* ``SelectorEventLoopUnixSocketTests`` and
  ``SelectorEventLoopUnixSockSendfileTests``: bound with the transports in
  ``test_cpython_transports.py``.
* ``UnixReadPipeTransportTests``, ``UnixWritePipeTransportTests``: they
  drive asyncio's pipe transport classes against ``test_utils.TestLoop``, a
  fake loop with a mocked selector; no real loop is involved.
* ``AbstractChildWatcherTests``, ``BaseChildWatcherTests``,
  ``SafeChildWatcherTests``, ``FastChildWatcherTests``,
  ``test_subprocess.GenericWatcherTests``, the ``Subprocess*WatcherTests``
  classes: they test asyncio's child watchers (mostly against mocked
  ``os.waitpid``), which uringloop does not use.
* ``PolicyTests``: asyncio's default policy object, not a loop.
* ``test_events``' signal, reader/writer, pipe and pty tests: bound already
  as ``UringEventLoopTests`` in ``test_cpython_events.py``.
"""

from test.test_asyncio import test_subprocess, test_unix_events
from test.test_asyncio import utils as test_utils

import uringloop

from ._policy import UringPolicyMixin, UringSelectorLoopMixin


class UringSubprocessTests(test_subprocess.SubprocessMixin, test_utils.TestCase):
    def setUp(self):
        super().setUp()
        self.loop = uringloop.Loop()
        self.set_event_loop(self.loop)


class UringSignalTests(UringSelectorLoopMixin,
                       test_unix_events.SelectorEventLoopSignalTests):
    pass


class UringFunctionalTests(UringPolicyMixin, test_unix_events.TestFunctional):
    def setUp(self):
        super().setUp()
        assert isinstance(self.loop, uringloop.Loop)
