"""Running CPython test classes that build their loop themselves.

Some CPython asyncio test classes call ``asyncio.new_event_loop()`` or
``asyncio.SelectorEventLoop()`` instead of offering a
``create_event_loop``/``new_loop`` hook.  These mixins make those calls
return uringloop loops, and refuse to run a test that still ends up on
another loop (it would pass while testing nothing of ours).
"""
import asyncio
from unittest import mock

import uringloop


class UringPolicyMixin:
    def setUp(self):
        asyncio.set_event_loop_policy(uringloop.EventLoopPolicy())
        super().setUp()
        # A class that builds its loop another way would silently test
        # asyncio's loop instead: refuse to run it.
        loop = getattr(self, "loop", None)
        if loop is not None and not isinstance(loop, uringloop.Loop):
            raise TypeError(f"{type(self).__name__} got {type(loop).__name__}, "
                            f"not a uringloop loop")

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            asyncio.set_event_loop_policy(None)


class UringSelectorLoopMixin:
    """For classes whose setUp builds ``asyncio.SelectorEventLoop()`` by
    name: that name means uringloop's loop while setUp runs."""

    def setUp(self):
        with mock.patch("asyncio.SelectorEventLoop", uringloop.Loop):
            super().setUp()
        if not isinstance(self.loop, uringloop.Loop):
            raise TypeError(f"{type(self).__name__} got {type(self.loop).__name__}, "
                            f"not a uringloop loop")
