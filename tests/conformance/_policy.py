"""Running CPython test classes that get their loop from the policy.

Some CPython asyncio test classes call ``asyncio.new_event_loop()``
themselves instead of offering a ``create_event_loop``/``new_loop`` hook;
putting uringloop's policy in place for the duration of each test makes
those loops uringloop loops.
"""
import asyncio

import uringloop


class UringPolicyMixin:
    def setUp(self):
        asyncio.set_event_loop_policy(uringloop.EventLoopPolicy())
        super().setUp()

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            asyncio.set_event_loop_policy(None)
