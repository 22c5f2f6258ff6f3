"""Small helpers shared by the functional tests."""

import os
import time

RECOVERY_WORKER = os.path.join(os.path.dirname(__file__), 'recoveryworker.py')


def start_recovery_worker(workers, etcd, cluster, node, store, *args):
    """A recoveryworker.py process (see its doc for the modes)."""
    return workers(etcd.url, cluster, node, store, *args,
                   script=RECOVERY_WORKER)


def handled(store):
    """The recovery handler calls recorded by recoveryworker.py processes:
    ``[claim_id, resource, attempt, node, time]`` rows."""
    path = os.path.join(store, 'handled')
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split() for line in f if line.strip()]


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
