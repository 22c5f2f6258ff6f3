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

"""``hacluster audit --fix-suggestions`` applied to a sample driver, run by
the HA share manager in a real manila-share against etcd.

The sample driver (:data:`SAMPLE`) has the locks an audit finds to replace:
a method decorated at import with manila's ``utils.synchronized(...,
external=True)`` and a ``with lockutils.lock(..., external=True)`` block;
its ``delete_share`` takes manila's own lock of the same name at call time
(which the manager swaps). Before the fix, the create takes file locks and
nothing in etcd; after it, the create takes the cluster locks
``manila-sample-pool`` and ``manila-sample-share-<id>`` -- the names manila's
own call sites use, so the delete's lock is the same one -- and no lock
file is made.
"""

import io
import os
import subprocess
import sys
import textwrap
import time

from helpers import wait_for

from hacluster import audit
from hacluster.cli import main as cli_main
from hacluster import etcd as _etcd
from hacluster import keys
from hacluster import url

SAMPLE = '''\
"""A sample share driver: manila's DummyDriver with the mixin."""

from oslo_concurrency import lockutils

from hacluster.manila.driver import HAShareDriverMixin
from manila.tests.share.drivers import dummy
from manila import utils


class SampleDriver(HAShareDriverMixin, dummy.DummyDriver):

    @utils.synchronized('sample-pool', external=True)
    def create_share(self, context, share, share_server=None):
        with lockutils.lock('sample-share-%s' % share['id'],
                            lock_file_prefix='manila-', external=True):
            return super().create_share(context, share, share_server)

    def delete_share(self, context, share, share_server=None):
        @utils.synchronized('sample-pool', external=True)
        def locked():
            return super(SampleDriver, self).delete_share(
                context, share, share_server)
        return locked()
'''


def _fixed(tmp_path):
    """The sample after ``git apply`` of the audit's diff."""
    work = tmp_path / 'src'
    (work / 'sampledrv').mkdir(parents=True)
    (work / 'sampledrv' / '__init__.py').write_text('')
    (work / 'sampledrv' / 'driver.py').write_text(SAMPLE)
    subprocess.run(['git', 'init', '-q', str(work)], check=True)
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(work)
    try:
        status = cli_main.main(['audit', '--fix-suggestions', 'sampledrv'],
                               stdout=out, stderr=err)
    finally:
        os.chdir(cwd)
    assert status == 1, err.getvalue()          # two sites to replace
    (work / 'fix.diff').write_text(out.getvalue())
    subprocess.run(['git', 'apply', 'fix.diff'], cwd=work, check=True)
    return work, out.getvalue()


def test_the_audit_fix_is_what_the_sample_needs(tmp_path):
    work, diff = _fixed(tmp_path)
    assert "+    @ha_synchronized('manila-sample-pool')\n" in diff
    assert "+        with self.ha_lock('sample-share-%s' % share['id']):" \
        in diff
    sites = audit.audit_paths([str(work / 'sampledrv')])[0]
    assert [(s.line, s.verdict, s.runtime) for s in sites] == [
        (13, 'already-distributed', 'etcd manila-sample-pool'),
        (15, 'already-distributed', "etcd manila-sample-share-{share['id']}"),
        (19, 'swapped', 'etcd manila-sample-pool')]
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), 'hacluster'), 'audit',
         str(work / 'sampledrv')], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def _locks_taken(etcd, cluster, during):
    """The cluster lock names acquired (queued) in etcd while
    ``during()`` runs, in order."""
    layout = keys.Layout(cluster)
    client = _etcd.Client(url.parse(etcd.url))
    _, revision = client.get_prefix(layout.locks)
    taken = []
    watch = _etcd.Watch(client, layout.locks, lambda events: taken.extend(
        layout.lock_name_from_key(kv.key) for etype, kv in events
        if etype == 'PUT'))
    watch.start(revision + 1)
    try:
        during(taken)
    finally:
        watch.stop()
    return taken


def _run(manila_cluster, etcd, src, delete=False):
    """Start one HA manila-share node with ``sampledrv.driver.SampleDriver``
    from ``src``, create a share (and delete it); the cluster, the lock
    names taken in etcd, the lock files left, the share instance."""
    cluster = manila_cluster(
        nodes=('node1',), driver='sampledrv.driver.SampleDriver',
        extra_env={'PYTHONPATH': os.pathsep.join(
            [str(src)] + sys.path[1:])}).start()
    created = []

    def work(taken):
        [instance] = [s['instance_id'] for s in cluster.create_shares(1)]
        created.append(instance)
        cluster.wait_statuses([instance], {'available'}, 60)
        if delete:
            cluster.client('delete', instance)
            wait_for(lambda: instance not in cluster.statuses(), 60,
                     'the share deleted')
            wait_for(lambda: taken.count('manila-sample-pool') >= 2, 5,
                     'the delete lock seen in etcd')
        else:
            time.sleep(2)     # (the watch delivers within milliseconds)

    taken = _locks_taken(etcd, cluster.cluster, work)
    lock_dir = os.path.join(cluster.nodes['node1'].dir, 'locks')
    return cluster, taken, sorted(os.listdir(lock_dir)), created[0]


def test_before_the_fix_the_sample_takes_file_locks_only(
        manila_cluster, etcd, tmp_path):
    src = tmp_path / 'src'
    (src / 'sampledrv').mkdir(parents=True)
    (src / 'sampledrv' / '__init__.py').write_text('')
    (src / 'sampledrv' / 'driver.py').write_text(SAMPLE)
    _, taken, files, instance = _run(manila_cluster, etcd, src)
    assert 'manila-sample-pool' not in taken
    assert 'manila-sample-share-%s' % instance not in taken
    assert {'manila-sample-pool', 'manila-sample-share-%s' % instance} <= \
        set(files)


def test_after_the_fix_it_takes_manilas_cluster_locks_and_no_file_lock(
        manila_cluster, etcd, tmp_path):
    work, _ = _fixed(tmp_path)
    _, taken, files, instance = _run(manila_cluster, etcd, work, delete=True)
    pool = [n for n in taken if n == 'manila-sample-pool']
    # one by the fixed decorator (create), one by manila's own call-time
    # lock of the same name (delete): the same cluster lock
    assert len(pool) == 2, taken
    assert 'manila-sample-share-%s' % instance in taken
    assert taken.index('manila-sample-pool') < taken.index(
        'manila-sample-share-%s' % instance)
    assert not [f for f in files if 'sample' in f], files


def test_a_fixed_with_block_needs_no_import():
    # (what the diff adds: only the decorator needs ha_synchronized)
    source = textwrap.dedent(SAMPLE).replace(
        "    @utils.synchronized('sample-pool', external=True)\n"
        "    def create_share", "    def create_share")
    fixed = audit.fix_source(source, audit.audit_source(source, 'd.py'))
    assert audit.FIX_IMPORT not in fixed
    assert "with self.ha_lock('sample-share-%s' % share['id']):" in fixed
