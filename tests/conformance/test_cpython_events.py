"""CPython's own event-loop tests, bound to uringloop.

The test classes are imported from the installed ``test.test_asyncio``
package at run time (never copied); each binding below only supplies the
loop.  Known gaps go through ``apply_known_failures`` with their reason
and become expected failures, so a fix shows up as an unexpected pass.
"""

from test.test_asyncio import test_events, test_sock_lowlevel
from test.test_asyncio import utils as test_utils

import uringloop

from ._known import apply_known_failures


class UringEventLoopTests(test_events.UnixEventLoopTestsMixin,
                          test_events.SubprocessTestsMixin,
                          test_utils.TestCase):
    def create_event_loop(self):
        return uringloop.Loop()


class UringSockLowLevelTests(test_sock_lowlevel.BaseSockTestsMixin,
                             test_utils.TestCase):
    def create_event_loop(self):
        return uringloop.Loop()


apply_known_failures(UringEventLoopTests, {})
apply_known_failures(UringSockLowLevelTests, {})
