"""Small helpers shared by the functional tests."""

import time


def wait_for(predicate, timeout, what):
    """Poll ``predicate`` every 50 ms until true; fail after ``timeout``
    seconds, saying what was awaited. Returns the predicate's true value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError('timed out waiting for ' + what)
        time.sleep(0.05)
