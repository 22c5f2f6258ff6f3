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

import pathlib

import pytest

from hacluster.testing import servers

FUNCTIONAL_DIR = pathlib.Path(__file__).resolve().parent / 'functional'


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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # item.rep_setup / rep_call / rep_teardown, so fixtures can tell at
    # teardown whether the test failed (and print server logs then)
    outcome = yield
    report = outcome.get_result()
    setattr(item, 'rep_' + report.when, report)
