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

"""A clean stop of real manila-share 23.0.1 processes (SIGTERM).

Two manila-share processes (cotyledon master + worker each) on one backend,
lease_ttl 3 s, manila's ``graceful_shutdown_timeout`` 10 s (the rig's;
oslo.service's alarm kills a worker whose stop takes longer). The node is
stopped the way an operator or systemd stops it: SIGTERM to the master.
:meth:`hacluster.testing.manila_rig.Node.stop` times the exit and fails
the test if the node was not gone within ``graceful_shutdown_timeout``,
exited with a status other than 0 (cotyledon's for a clean stop) or was
ended by oslo.service's alarm (which exits 0 as well: its log tells).

What a clean stop must leave: no member record, nothing bound to the
node's session lease (cluster locks, its place in the leader queue), a
leader elected at once rather than after the lease TTL, and no share left
``creating`` by an operation the stop cut short.
"""

import threading
import time

import pytest

from hacluster import election as _election
from hacluster import etcd as _etcd
from hacluster import keys
from hacluster.testing import manila_rig
from hacluster import url

from helpers import wait_for

LEASE_TTL = 3
INTERVAL = 2
GRACEFUL = manila_rig.GRACEFUL_SHUTDOWN_TIMEOUT
NODES = ('node1', 'node2')


def _client(etcd):
    return _etcd.Client(url.parse(etcd.url))


def _leader(client, layout):
    """The leading node's name, read from etcd (no CLI: a few ms)."""
    kvs, _ = client.get_prefix(layout.leader)
    head = _election.head_of(kvs)
    return head.json().get('node') if head is not None else None


def _busy_cluster(manila_cluster, **kwargs):
    """Two nodes that have done some work: a few creates (spread by the
    queue), backend stats polls on the leader and fan-out status-poll
    cycles."""
    cluster = manila_cluster(nodes=NODES, **kwargs).start()
    began = time.time()
    ids = [s['instance_id'] for s in cluster.create_shares(4, 'busy')]
    assert set(cluster.wait_statuses(ids, {'available', 'error'},
                                     60).values()) == {'available'}
    wait_for(lambda: len(cluster.events('stats', since=began)) >= 2,
             4 * INTERVAL + 10, 'the leader to poll the backend stats')
    wait_for(lambda: any(
        'task periodic_share_status_update cycle' in
        cluster.nodes[name].log_since_start() for name in NODES),
        4 * INTERVAL + 10, 'a fan-out cycle of the share status poll')
    return cluster


def _left_cleanly(cluster, client, name, lease, took):
    """What a node that stopped cleanly leaves behind: nothing."""
    layout = keys.Layout(cluster.cluster)
    # gone when the process is: revoked, not expired (its session renewed
    # until the stop, and would outlive the exit by up to lease_ttl)
    assert client.get(layout.member(name)) is None
    assert client.lease_time_to_live(lease) == -1
    kvs, _ = client.get_prefix(layout.root)
    bound = [kv.key for kv in kvs if kv.lease == lease]
    assert bound == [], bound        # no lock, no leader-queue entry
    log = cluster.nodes[name].log_since_start()
    assert 'left cluster %s' % cluster.cluster in log, log[-3000:]
    survivor = [n for n in NODES if n != name][0]
    wait_for(lambda: '(node %s) left (graceful)' % name in
             cluster.nodes[survivor].log_since_start(), 10,
             'the survivor to see %s leave gracefully' % name)
    print('%s: exited %.2f s after SIGTERM (graceful_shutdown_timeout %d s)'
          % (name, took, GRACEFUL))


def _member_lease(client, cluster, name):
    kv = client.get(keys.Layout(cluster.cluster).member(name))
    assert kv is not None, 'no member record of %s' % name
    assert kv.lease, kv
    return kv.lease


def test_an_idle_member_stops_at_once_and_leaves_nothing(manila_cluster,
                                                         etcd):
    """SIGTERM a member that does not lead: it exits within
    graceful_shutdown_timeout, status 0, its member record and everything
    bound to its lease gone as it exits; the survivor still serves."""
    cluster = _busy_cluster(manila_cluster)
    client = _client(etcd)
    leader = _leader(client, keys.Layout(cluster.cluster))
    assert leader in NODES, leader
    [victim] = [n for n in NODES if n != leader]
    lease = _member_lease(client, cluster, victim)

    took = cluster.stop(victim)          # raises unless clean and in time
    _left_cleanly(cluster, client, victim, lease, took)
    assert _leader(client, keys.Layout(cluster.cluster)) == leader

    [sid] = [s['instance_id'] for s in cluster.create_shares(1, 'after')]
    assert cluster.wait_statuses([sid], {'available', 'error'},
                                 60)[sid] == 'available'


def test_the_leader_hands_over_leadership_at_once(manila_cluster, etcd):
    """SIGTERM the leader: another node leads within about a second (the
    stop resigns first thing; an expiry would take lease_ttl after the
    exit), and takes over the leader-only work; the old leader exits within
    graceful_shutdown_timeout and leaves nothing."""
    cluster = _busy_cluster(manila_cluster)
    client = _client(etcd)
    layout = keys.Layout(cluster.cluster)
    leader = _leader(client, layout)
    assert leader in NODES, leader
    [other] = [n for n in NODES if n != leader]
    lease = _member_lease(client, cluster, leader)

    result = {}

    def stop():
        try:
            result['took'] = cluster.stop(leader)
        except BaseException as exc:     # reported by the test thread
            result['error'] = exc
    stopper = threading.Thread(target=stop)
    began = time.monotonic()
    stopper.start()
    wait_for(lambda: _leader(client, layout) == other, LEASE_TTL + 10,
             '%s to lead' % other)
    handed_in = time.monotonic() - began
    changed_at = time.time()
    stopper.join(GRACEFUL + 30)
    if 'error' in result:
        raise result['error']
    print('leader %s SIGTERMed: %s leads %.2f s later'
          % (leader, other, handed_in))
    # SIGTERM reaches the worker through the master first: allow for it
    assert handed_in < 1.5, handed_in
    _left_cleanly(cluster, client, leader, lease, result['took'])
    # the leader-only work runs on the new leader now
    wait_for(lambda: [e for e in cluster.events('stats', since=changed_at)
                      if e['node'] == other], 4 * INTERVAL + 10,
             'the new leader to poll the backend stats')


@pytest.mark.parametrize('seconds, final', [(2, 'available'),
                                            (40, 'error')])
def test_a_stop_during_a_create_never_leaves_it_creating(manila_cluster,
                                                         etcd, seconds,
                                                         final):
    """SIGTERM the node running a create of ``seconds``: a short one
    finishes before the node leaves (the stop waits up to half of
    graceful_shutdown_timeout for it); a long one is handed over to
    recovery and a survivor sets it to ``error`` as soon as the node has
    left. Either way the node exits within graceful_shutdown_timeout, the
    share settles once, and no claim is left."""
    cluster = manila_cluster(nodes=NODES).start()
    client = _client(etcd)
    [sid] = [s['instance_id'] for s in cluster.create_shares(
        1, 'slow%d-stop' % seconds)]
    start = wait_for(lambda: [e for e in cluster.events('create_share.start')
                              if e['id'] == sid], 30, 'the create to start')
    victim = start[0]['node']
    lease = _member_lease(client, cluster, victim)
    sampler = manila_rig.StatusSampler(cluster, sid)

    took = cluster.stop(victim)
    exited_at = time.time()
    got = cluster.wait_statuses([sid], {'available', 'error'}, 30)[sid]
    settled_in = cluster.updated_at(sid) - exited_at
    print('create of %d s on %s: node exited %.2f s after SIGTERM; share %s '
          '%.2f s after the exit' % (seconds, victim, took, got, settled_in))
    assert got == final
    _left_cleanly(cluster, client, victim, lease, took)
    if final == 'error':
        # recovered at once (a handed-over claim), not after an expiry
        assert settled_in < LEASE_TTL, settled_in
        log = cluster.nodes[victim].log_since_start()
        assert 'handed over to recovery' in log
    else:
        assert [e for e in cluster.events('create_share.end')
                if e['id'] == sid and e['node'] == victim]
    time.sleep(INTERVAL)        # nothing flips it later
    assert sampler.stop() == ['creating', final], sampler.changes
    rc, out, err = cluster.hacluster('status')
    assert 'claims (0)' in out, out + err
