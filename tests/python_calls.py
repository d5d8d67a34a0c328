"""Watching the Python functions a call runs (a sys.setprofile hook), for the tests that count them."""
import sys


def profiled(fn, hook):
    """fn() with `hook` as the profile function (called with frame, event, arg); the previous hook is
    restored afterwards."""
    old = sys.getprofile()
    sys.setprofile(hook)
    try:
        return fn()
    finally:
        sys.setprofile(old)
