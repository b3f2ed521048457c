"""Marking CPython tests that uringloop does not pass yet.

A known failure is an ``unittest.expectedFailure`` whose reason is kept
on the test as ``__uringloop_reason__``: it still runs, still counts, and
turns into an unexpected success (a failure under pytest) the day it is
fixed, so the list cannot go stale silently.
"""
import functools
import unittest


def apply_known_failures(cls, known):
    for name, reason in known.items():
        original = getattr(cls, name)

        @functools.wraps(original)
        def wrapper(self, *args, _original=original, **kwargs):
            return _original(self, *args, **kwargs)

        wrapper.__uringloop_reason__ = reason
        setattr(cls, name, unittest.expectedFailure(wrapper))
