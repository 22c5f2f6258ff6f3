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

import os
import uuid

import pytest

from hacluster.testing import process
from hacluster.testing import upgrade

WORKER = os.path.join(os.path.dirname(__file__), 'lockworker.py')


@pytest.fixture
def cluster_name():
    """A cluster name no other test uses (tests share one etcd)."""
    return 'test-' + uuid.uuid4().hex[:10]


class Worker(process.LineWorker):
    """A worker subprocess (lockworker.py unless ``script`` says which)
    whose stdout lines are collected."""

    def __init__(self, *args, script=WORKER):
        super().__init__(script, *args)


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


@pytest.fixture(scope='session')
def old_tree(tmp_path_factory):
    """The hacluster package of upgrade.OLD_COMMIT ("N", a real older
    version), extracted once: put it first on a process's PYTHONPATH."""
    return upgrade.extract_old_tree(str(tmp_path_factory.mktemp('N')))


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
