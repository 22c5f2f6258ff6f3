# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""Shared pytest fixtures: private etcd and RabbitMQ servers.

All servers come from :mod:`hacluster.testing.servers`: free loopback
ports, data in temporary directories, stopped at teardown (and at
interpreter exit if a test run crashes).  Tests under ``tests/functional/``
are marked ``functional`` automatically; deselect them with
``-m 'not functional'``.
"""

import gc
import os
import pathlib
import signal
import sys
import threading
import traceback

import pytest

from hacluster.testing import servers

FUNCTIONAL_DIR = pathlib.Path(__file__).resolve().parent / 'functional'

#: Seconds one test (setup, call and teardown) may take before its stacks
#: are printed and it is failed; HACLUSTER_TEST_TIMEOUT overrides it. The
#: slowest test takes about 4 minutes on a loaded machine.
TEST_TIMEOUT = float(os.environ.get('HACLUSTER_TEST_TIMEOUT', '600'))
#: After the timeout, how long the test may still take to unwind before
#: the whole run is interrupted (a hang that swallows the first exception).
UNWIND_GRACE = 60.0


def pytest_configure(config):
    # SIGTERM (e.g. from `timeout`) would otherwise skip fixture teardown
    # and the exit hook, leaving etcd/RabbitMQ processes behind.
    servers.stop_on_sigterm()
    # Tests that run periodic tasks in this process need oslo.service's
    # threading backend. Left unchosen, the first import of an eventlet-only
    # part of oslo.service (manila's WSGI app does one) picks eventlet, and a
    # runner's green threads in this unpatched process then never run: its
    # stop() waited in eventlet's hub for ever (the suite hung in
    # test_metrics). manila-share chooses threading too.
    from oslo_service import backend
    if backend.get_backend_type() is None:
        backend.init_backend(backend.BackendType.THREADING)
    config.addinivalue_line(
        'markers',
        'functional: needs real etcd/RabbitMQ servers (started privately on '
        'free loopback ports); every test under tests/functional/ has it')


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = pathlib.Path(str(item.fspath)).resolve()
        if FUNCTIONAL_DIR in path.parents:
            item.add_marker(pytest.mark.functional)


@pytest.fixture(scope='session')
def etcd():
    """One single-member etcd shared by the whole session.

    Do not stop, kill or pause it (use ``fresh_etcd``); use unique key
    prefixes, other tests share its keyspace.
    """
    with servers.EtcdServer(name='etcd-session') as server:
        yield server


@pytest.fixture
def fresh_etcd():
    """A single-member etcd for this test only; it may be killed/stopped."""
    with servers.EtcdServer(name='etcd-fresh') as server:
        yield server


@pytest.fixture
def etcd_cluster():
    """A fresh 3-member etcd cluster for this test (members may be killed)."""
    with servers.EtcdCluster(size=3) as cluster:
        yield cluster


@pytest.fixture(scope='session')
def rabbitmq():
    """One RabbitMQ broker for the session, started by the first test that
    asks for it (6-9 s).  Do not stop or kill it.
    """
    with servers.RabbitMQServer() as broker:
        yield broker


@pytest.fixture(scope='session')
def postgres():
    """One PostgreSQL server for the session with manila's schema in a
    template database (``manila-manage db sync``, ~5 s); each manila test
    cluster works on a copy of it.  Do not stop it."""
    from hacluster.testing import manila_rig
    with servers.PostgresServer() as server:
        manila_rig.make_template(server)
        yield server


class TestHung(Exception):
    """A test ran past TEST_TIMEOUT (its stacks were printed)."""


def _dump_stacks(out):
    """Every thread's stack, and every suspended greenlet's: a thread
    waiting in eventlet's hub shows only the hub's frames, and the code
    that switched to it is on the greenlet it left."""
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        out.write('\n--- thread %s (%s)\n' % (names.get(ident, '?'), ident))
        out.write(''.join(traceback.format_stack(frame)))
    greenlet = sys.modules.get('greenlet')
    if greenlet is not None:
        for obj in gc.get_objects():
            if isinstance(obj, greenlet.greenlet) and not obj.dead and \
                    getattr(obj, 'gr_frame', None) is not None:
                out.write('\n--- greenlet %r\n' % obj)
                out.write(''.join(traceback.format_stack(obj.gr_frame)))
    out.flush()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    # A hung test must fail with its stacks, not eat the CI job's time (a
    # whole run once waited 80 minutes on one test). SIGALRM lands in the
    # main thread wherever it waits; the first raises TestHung there, the
    # second (UNWIND_GRACE later) KeyboardInterrupt, which also escapes
    # eventlet's hub and ends the run after teardown.
    if TEST_TIMEOUT <= 0 or \
            threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = []

    def on_alarm(signum, frame):
        if not fired:
            fired.append(True)
            sys.__stderr__.write(
                '\n=== %s ran past %.0f s (HACLUSTER_TEST_TIMEOUT): '
                'stacks follow ===\n' % (item.nodeid, TEST_TIMEOUT))
            _dump_stacks(sys.__stderr__)
            signal.setitimer(signal.ITIMER_REAL, UNWIND_GRACE)
            raise TestHung('%s ran past %.0f s (stacks on stderr)'
                           % (item.nodeid, TEST_TIMEOUT))
        raise KeyboardInterrupt('%s did not unwind after its timeout'
                                % item.nodeid)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # item.rep_setup / rep_call / rep_teardown, so fixtures can tell at
    # teardown whether the test failed (and print server logs then)
    outcome = yield
    report = outcome.get_result()
    setattr(item, 'rep_' + report.when, report)
