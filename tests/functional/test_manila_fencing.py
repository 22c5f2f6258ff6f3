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

"""Fencing in real manila-share 23.0.1: a node thought dead never writes
over a recovery.

Two manila-share processes (cotyledon master + worker each) on one backend,
lease_ttl 3 s, a 10 s create. The node running the create is frozen
(SIGSTOP, master and worker) or cut off from etcd only (a TCP proxy between
it and etcd, database and broker untouched) 1 s into it; a survivor
recovers the claim (the share goes to ``error``); then the node resumes.
The share's status is sampled from PostgreSQL every 0.1 s throughout: it
must settle once (``creating`` -> ``error``) and never flip.
"""

import json
import signal
import threading
import time

import pytest

from hacluster import fencing as _fencing
from hacluster.testing import manila_rig
from hacluster.testing import proxy as _proxy

from helpers import wait_for

LEASE_TTL = 3
INTERVAL = 2
# a recovery within lease_ttl + absence grace + a poll, on a loaded machine
RECOVERY_BOUND = LEASE_TTL + 2 + INTERVAL + 10


class StandInWatchdog:
    """What the watchdog hardware does, for a stand-in device file: once
    armed, if no pet arrives for ``timeout`` seconds, reset the machine --
    here, SIGKILL the node's processes."""

    def __init__(self, path, on_expiry):
        self._path = path
        self._on_expiry = on_expiry
        self.reset_at = None
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        last = None
        while not self._stop.wait(0.05):
            try:
                with open(self._path) as f:
                    state = json.loads(f.read() or 'null')
            except (OSError, ValueError):
                continue
            if not state or state.get('disarmed'):
                continue
            # the hardware counts from the last pet it received
            if last is None or state['pets'] != last[0]:
                last = (state['pets'], time.monotonic())
                continue
            if time.monotonic() - last[1] > state['timeout']:
                self.reset_at = time.time()
                self._on_expiry()
                return

    def stop(self):
        self._stop.set()


def _slow_create(cluster):
    [share] = cluster.create_shares(1, name='slow10-fence')
    sid = share['instance_id']
    start = wait_for(lambda: [e for e in cluster.events('create_share.start')
                              if e['id'] == sid], 30, 'the create to start')
    return sid, start[0]['node']


def _late_results(cluster):
    rc, out, err = cluster.hacluster('status', '-f', 'json')
    assert rc in (0, 1), out + err
    return json.loads(out)['late_results']


@pytest.mark.parametrize('mode', ['none', 'exit', 'watchdog'])
def test_a_frozen_owner_never_writes_over_the_recovery(manila_cluster,
                                                       tmp_path, mode):
    nodes = ('node1', 'node2')
    node_extra = {}
    if mode == 'watchdog':
        # a stand-in device file per node (no watchdog device here)
        node_extra = {n: {'hacluster': {'watchdog_device': str(
            tmp_path / ('watchdog-' + n))}} for n in nodes}
    cluster = manila_cluster(nodes=nodes,
                             extra={'hacluster': {'fencing': mode}},
                             node_extra=node_extra).start()
    sid, victim = _slow_create(cluster)
    sampler = manila_rig.StatusSampler(cluster, sid)
    dog = None
    if mode == 'watchdog':
        dog = StandInWatchdog(str(tmp_path / ('watchdog-' + victim)),
                              lambda: cluster.kill(victim))
    frozen_at = time.time()
    cluster.signal(victim, signal.SIGSTOP)
    try:
        wait_for(lambda: cluster.db_status(sid) == 'error', RECOVERY_BOUND,
                 'a survivor to recover the frozen node\'s create')
    finally:
        recovered_at = time.time()
        if cluster.nodes[victim].running:
            cluster.signal(victim, signal.SIGCONT)
    print('%s: frozen at 0, share in error at %.2f s' % (
        mode, recovered_at - frozen_at))
    log = cluster.nodes[victim].log_since_start
    if mode == 'none':
        # it finishes its create (the driver's sleep ran on while frozen)
        # and is refused the final write
        wait_for(lambda: 'after it was recovered' in log(), 30,
                 'the late create to be refused')
        assert 'not made' in log()
        late = _late_results(cluster)
        assert [r['resource_id'] for r in late] == [sid], late
        assert late[0]['node'] == victim
    elif mode == 'exit':
        wait_for(lambda: 'FENCED' in log(), 30,
                 'the resumed node to fence itself')
        assert 'exit %d' % _fencing.EXIT_STATUS in log()
    else:
        assert dog.reset_at is not None, 'the watchdog never fired'
        # reset before the lease could expire, hence before the recovery
        assert dog.reset_at - frozen_at < LEASE_TTL
        assert dog.reset_at < cluster.updated_at(sid)
        dog.stop()
    # the outcome holds: nothing flips it later (the late node's driver
    # call is over by now; watch a few more poll intervals)
    time.sleep(2 * INTERVAL)
    assert sampler.stop() == ['creating', 'error'], sampler.changes


@pytest.mark.parametrize('mode', ['none', 'exit'])
def test_a_node_cut_off_from_etcd_only_never_writes_over_the_recovery(
        manila_cluster, etcd, mode):
    with _proxy.TcpProxy(etcd.client_port) as link:
        nodes = ('node1', 'node2')
        # both nodes reach etcd through a proxy; the one running the create
        # is cut off (the other link is never cut)
        proxies = {'node1': link,
                   'node2': _proxy.TcpProxy(etcd.client_port)}
        try:
            cluster = manila_cluster(
                nodes=nodes, extra={'hacluster': {'fencing': mode}},
                node_extra={n: {'coordination': {
                    'backend_url': 'etcd3+http://%s' % proxies[n].address}}
                    for n in nodes}).start()
            sid, victim = _slow_create(cluster)
            sampler = manila_rig.StatusSampler(cluster, sid)
            cut_at = time.time()
            proxies[victim].cut()
            wait_for(lambda: cluster.db_status(sid) == 'error',
                     RECOVERY_BOUND, 'a survivor to recover the create')
            print('%s: cut off at 0, share in error at %.2f s'
                  % (mode, time.time() - cut_at))
            log = cluster.nodes[victim].log_since_start
            if mode == 'exit':
                wait_for(lambda: 'FENCED' in log(), 30,
                         'the cut-off node to fence itself')
            # the create's 10 s are over: its final write was refused (or
            # never made by a process that fenced itself)
            wait_for(lambda: time.time() - cut_at > 10, 15, 'the create')
            proxies[victim].restore()
            if mode == 'none':
                wait_for(lambda: 'not made' in log(), 30,
                         'the late create to be refused')
            time.sleep(2 * INTERVAL)
            assert sampler.stop() == ['creating', 'error'], sampler.changes
            # the node serves again once etcd is back (a new worker after a
            # fence): two members, no claim left open

            def settled():
                members = cluster.hacluster('member', 'list', '-f', 'value',
                                            '-c', 'node')[1].split()
                return sorted(members) == list(nodes) and \
                    'claims (0)' in cluster.hacluster('status')[1]
            wait_for(settled, 60, 'the cluster to settle')
        finally:
            proxies['node2'].close()
