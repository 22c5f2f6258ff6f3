import os
import subprocess
import sys
import threading
import time
import uuid

import pytest

WORKER = os.path.join(os.path.dirname(__file__), 'lockworker.py')


@pytest.fixture
def cluster_name():
    """A cluster name no other test uses (tests share one etcd)."""
    return 'test-' + uuid.uuid4().hex[:10]


class Worker:
    """A lockworker.py subprocess whose stdout lines are collected."""

    def __init__(self, *args, script=WORKER):
        self.proc = subprocess.Popen(
            [sys.executable, '-W', 'ignore', script] + [str(a) for a in args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.lines = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip('\n'))
                self._cond.notify_all()

    def wait_line(self, prefix, timeout=10.0):
        """The first line starting with ``prefix`` (waits for it)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and \
                        not any(ln.startswith(prefix) for ln in self.lines):
                    if left > 0:
                        self._cond.wait(0.2)   # drain what is buffered
                        if any(ln.startswith(prefix) for ln in self.lines):
                            continue
                    raise AssertionError(
                        'no %r line from worker (rc=%s); got %r; stderr: %s'
                        % (prefix, self.proc.poll(), self.lines,
                           self.stderr_tail()))
                self._cond.wait(left)

    def stderr_tail(self):
        if self.proc.poll() is None:
            return '(running)'
        return self.proc.stderr.read()[-2000:]

    def send(self, line):
        self.proc.stdin.write(line + '\n')
        self.proc.stdin.flush()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def workers():
    """Start lockworker.py processes; all are killed at teardown."""
    started = []

    def start(*args, **kwargs):
        w = Worker(*args, **kwargs)
        started.append(w)
        return w
    yield start
    for w in started:
        w.close()


@pytest.fixture
def obs(etcd, cluster_name):
    """An observer coordinator in the test's cluster (ttl 3 s), started."""
    import hacluster
    c = hacluster.get_coordinator(etcd.url, cluster_name, 'test-observer',
                                  lease_ttl=3, renew_deadline=2,
                                  renew_interval=0.5)
    with c:
        yield c


@pytest.fixture
def manila_cluster(request, postgres, rabbitmq, etcd):
    """A factory: ``manila_cluster(**kwargs)`` -> a ManilaCluster (not
    started; periodic_interval 2 s, on the session's etcd), closed at
    teardown (nodes left frozen are resumed first); the nodes' log tails
    are printed when the test failed."""
    import signal

    from hacluster.testing import manila_rig
    made = []

    def make(**kwargs):
        kwargs.setdefault('backend_url', etcd.url)
        kwargs.setdefault('periodic_interval', 2)
        cluster = manila_rig.ManilaCluster(postgres, rabbitmq.transport_url,
                                           **kwargs)
        made.append(cluster)
        return cluster
    yield make
    report = getattr(request.node, 'rep_call', None)
    for cluster in made:
        if report is not None and report.failed:
            for name in cluster.nodes:
                print('---- %s log tail ----\n%s'
                      % (name, cluster.log_tail(name, 120)))
        for node in cluster.nodes.values():
            if node.running:
                node.child.signal(signal.SIGCONT)
        cluster.close()
