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

"""Real manila-share 23.0.1 processes, active-active on one backend.

Three ``manila-share`` processes (cotyledon master + worker each) with
``share_manager = hacluster.manila.manager.HAShareManager`` and manila's
DummyDriver with the mixin, one PostgreSQL, one RabbitMQ, one etcd; shares
are created the way the scheduler does it (database records, then the RPC
cast to the backend's shared queue). Lease TTL 3 s, manila
``periodic_interval`` 2 s.
"""

import collections
import time


from hacluster.testing import manila_rig

from helpers import wait_for

LEASE_TTL = 3
INTERVAL = 2


def _leader(cluster):
    leader = cluster.leader()
    assert leader is not None, 'no leader (hacluster leader show failed)'
    return leader


def _by_node(events):
    return collections.Counter(e['node'] for e in events)


def test_three_nodes_share_the_work(manila_cluster):
    """Creates are spread by the shared queue; backend stats are polled by
    the leader only; the per-share status poll is handed out share by share
    to the members, each share once per cycle."""
    cluster = manila_cluster(delays={'create_share': 0.5}).start()
    ids = [s['instance_id'] for s in cluster.create_shares(9)]
    statuses = cluster.wait_statuses(ids, {'available', 'error'}, 60)
    assert set(statuses.values()) == {'available'}, statuses
    served = _by_node(cluster.events('create_share.end'))
    assert sum(served.values()) == 9
    assert set(served) == set(cluster.nodes), served

    # Backend stats: one node (the leader) polls, once per interval.
    leader = _leader(cluster)
    began = time.time()
    time.sleep(5 * INTERVAL + 0.5)
    stats = _by_node(cluster.events('stats', since=began))
    assert set(stats) == {leader}, stats
    # manila alone: every node would poll, 3 x 5 = 15 times (a tick
    # delayed by a loaded machine may fall outside the window)
    assert 3 <= stats[leader] <= 6, stats

    # Per-share poll: shares waiting on the driver (creating_from_snapshot)
    # are listed by the leader and spread over the members.
    waiting = ids[:6]
    for instance_id in waiting:
        cluster.client('set-status', instance_id, 'creating_from_snapshot')
    began = time.time()
    time.sleep(5 * INTERVAL + 0.5)
    polls = cluster.events('get_share_status', since=began)
    per_share = collections.defaultdict(list)
    for event in polls:
        per_share[event['id']].append(event)
    assert set(per_share) == set(waiting), per_share.keys()
    for instance_id, events in per_share.items():
        times = [e['t'] for e in events]
        # once per cycle: two polls of one share are a cycle apart
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert all(g > INTERVAL / 4 for g in gaps), (instance_id, gaps)
        assert 2 <= len(events) <= 6, (instance_id, len(events))
    pollers = _by_node(polls)
    assert len(pollers) >= 2, pollers     # spread over the members
    for instance_id in waiting:
        cluster.client('set-status', instance_id, 'available')

    def all_available():
        # a poll in flight when the status was set may write the driver's
        # answer (still pending) back over it: set it again
        now = cluster.statuses()
        late = [i for i in waiting if now[i]['status'] != 'available']
        for instance_id in late:
            cluster.client('set-status', instance_id, 'available')
        return not late
    wait_for(all_available, 60, 'every share available again')
    time.sleep(INTERVAL)        # a poll still in flight lands by now ...
    wait_for(all_available, 60, 'every share available again')   # ... fixed

    # A clean stop of every node, then all three start at once: exactly
    # one of them runs manila's ensure pass (manila alone: all three, each
    # flipping every share to 'ensuring' under the others).
    for name in cluster.nodes:
        cluster.stop(name)
    began = time.time()
    cluster.start()
    # (manila may still be ensuring the last shares when the node logs
    # that it is ready: wait for all nine, then check who did it)
    wait_for(lambda: {e['id'] for e in cluster.events(
        'ensure_share', since=began)} >= set(ids), 60, 'the ensure pass')
    ensured = cluster.events('ensure_share', since=began)
    assert len(_by_node(ensured)) == 1, _by_node(ensured)
    assert sorted(e['id'] for e in ensured) == sorted(ids)
    assert set(s['status'] for s in cluster.statuses().values()) == \
        {'available'}


def test_sigkill_mid_create_is_repaired_and_restart_leaves_shares_alone(
        manila_cluster):
    """A node SIGKILLed inside create_share: a survivor sets the share to a
    final state within lease_ttl + 2 s plus one poll; the node's restart
    under the same name does not put the live nodes' shares into
    ``ensuring``."""
    cluster = manila_cluster(delays={'create_share': 8}).start()
    ids = [s['instance_id'] for s in cluster.create_shares(3)]
    wait_for(lambda: len(cluster.events('create_share.start')) == 3, 20,
             'three creates in flight')
    starts = {e['id']: e['node'] for e in cluster.events('create_share.start')}
    # the leader's own create if it has one: the harder case (the cluster
    # must elect a new leader before anyone recovers)
    leader = _leader(cluster)
    victim_share, victim = sorted(
        starts.items(), key=lambda kv: (kv[1] != leader, kv[0]))[0]
    killed_at = time.time()
    cluster.kill(victim)
    got = cluster.wait_statuses([victim_share], {'error', 'available'},
                                LEASE_TTL + 2 + INTERVAL + 20)
    assert got[victim_share] == 'error', got
    # when the database row changed, not when this test saw it
    repaired_in = cluster.updated_at(victim_share) - killed_at
    print('victim %s (leader: %s): share in error %.2f s after SIGKILL'
          % (victim, leader, repaired_in))
    assert 0 < repaired_in <= LEASE_TTL + 2 + INTERVAL, repaired_in
    others = [i for i in ids if i != victim_share]
    statuses = cluster.wait_statuses(others, {'available', 'error'}, 30)
    # the creates on the other nodes finished normally (unless they were
    # also on the victim: the queue may give one node two of them)
    for instance_id in others:
        if starts[instance_id] != victim:
            assert statuses[instance_id] == 'available', statuses

    # rolling restart: the victim comes back; nothing it did not own moves
    ensured_before = len(cluster.events('ensure_share'))
    cluster.start([victim])
    time.sleep(3)
    now = cluster.statuses()
    assert all(now[i]['status'] != 'ensuring' for i in ids), now
    assert len(cluster.events('ensure_share')) == ensured_before
    assert 'not re-ensuring' in cluster.nodes[victim].log_since_start()
    rc, out, err = cluster.hacluster('status')
    assert rc == 0, out + err
    assert 'claims (0)' in out, out


def test_sigkill_mid_delete_is_finished_by_a_survivor(manila_cluster):
    """A node SIGKILLed inside delete_share: the delete is handed to a live
    node through the backend's queue and finished (the share is gone)."""
    cluster = manila_cluster(delays={'delete_share': 6}).start()
    ids = [s['instance_id'] for s in cluster.create_shares(3)]
    cluster.wait_statuses(ids, {'available'}, 60)
    cluster.client('delete', *ids)
    wait_for(lambda: len(cluster.events('delete_share')) == 3, 20,
             'three deletes in flight')
    first = {}
    for e in cluster.events('delete_share'):
        first.setdefault(e['id'], e['node'])
    victim_share, victim = sorted(first.items())[0]
    cluster.kill(victim)
    wait_for(lambda: not set(ids) & set(cluster.statuses()), 40,
             'every share deleted')
    again = [e for e in cluster.events('delete_share')
             if e['id'] == victim_share]
    assert len(again) == 2, again          # cut short, then finished
    assert again[1]['node'] != victim


def test_manilas_own_locks_are_cluster_locks(manila_cluster, etcd):
    """The access-rule lock manila's code takes (``utils.synchronized(
    'locked_access_rules_operation_by_share_instance_<id>', external=True)``
    deep in manila.share.access) is taken in etcd, by the node serving the
    request: every acquisition is one key under the cluster's locks/."""
    from hacluster import etcd as _etcd
    from hacluster import keys

    cluster = manila_cluster(nodes=('node1', 'node2')).start()
    [instance_id] = [s['instance_id'] for s in cluster.create_shares(1)]
    cluster.wait_statuses([instance_id], {'available'}, 60)
    layout = keys.Layout(cluster.cluster)
    client = _etcd.Client(servers_url(etcd))
    _, revision = client.get_prefix(layout.locks)
    taken = []
    watch = _etcd.Watch(client, layout.locks, lambda events: taken.extend(
        layout.lock_name_from_key(kv.key) for etype, kv in events
        if etype == 'PUT'))
    watch.start(revision + 1)
    try:
        cluster.client('allow-access', instance_id, '10.0.0.7')
        wait_for(lambda: cluster.client('access', instance_id).get(
            '10.0.0.7') == 'active', 30, 'the access rule applied')
        name = ('manila-locked_access_rules_operation_by_share_instance_%s'
                % instance_id)
        wait_for(lambda: name in taken, 5, 'the lock seen in etcd')
    finally:
        watch.stop()


def servers_url(etcd):
    from hacluster import url
    return url.parse(etcd.url)


def test_single_node_mode_is_plain_manila(manila_cluster, tmp_path):
    """No etcd configured: one node works like manila's own manager (its
    own periodic loop, its own locks), and a create cut short by a crash
    is repaired when the node starts again (claims in local files)."""
    cluster = manila_cluster(backend_url=None, nodes=('solo',),
                             delays={'create_share': 6}).start()
    log = cluster.nodes['solo'].log_since_start()
    assert 'single-node' in log
    assert 'periodic tasks started' not in log     # manila's own loop
    began = time.time()
    ids = [s['instance_id'] for s in cluster.create_shares(2)]
    statuses = cluster.wait_statuses(ids, {'available', 'error'}, 60)
    assert set(statuses.values()) == {'available'}, statuses
    wait_for(lambda: cluster.events('stats', since=began), 3 * INTERVAL + 5,
             "manila's own stats poll")

    [cut] = [s['instance_id'] for s in cluster.create_shares(1, 'cut')]
    wait_for(lambda: any(e['id'] == cut for e in
                         cluster.events('create_share.start')), 20,
             'the create in flight')
    cluster.kill('solo')
    assert cluster.statuses()[cut]['status'] == 'creating'
    cluster.start(['solo'])
    got = cluster.wait_statuses([cut], {'error', 'available'}, 20)
    assert got[cut] == 'error', got


def test_a_node_waits_for_etcd_and_serves_once_it_is_back(
        manila_cluster, fresh_etcd):
    """etcd down when manila-share starts: the node does not serve (it could
    neither lock nor claim), says why, and joins when etcd is back."""
    fresh_etcd.stop()
    cluster = manila_cluster(backend_url=fresh_etcd.url, nodes=('n1',))
    node = cluster.nodes['n1']
    node.start()
    wait_for(lambda: 'cannot join cluster' in node.log_since_start(), 30,
             'the node to say it cannot join')
    assert manila_rig.READY_MARK not in node.log_since_start()
    assert node.running
    fresh_etcd.start()
    node.wait_ready(60)
    [instance_id] = [s['instance_id'] for s in cluster.create_shares(1)]
    assert cluster.wait_statuses([instance_id], {'available', 'error'},
                                 60)[instance_id] == 'available'


def test_single_node_mode_recovers_a_plain_driver_too(manila_cluster):
    """manila's own DummyDriver (no mixin) is fine for one node; a create
    cut short by a crash is still repaired at the next start."""
    cluster = manila_cluster(backend_url=None, nodes=('solo',),
                             driver=manila_rig.PLAIN_DRIVER,
                             delays={'create_share': 6}).start()
    [cut] = [s['instance_id'] for s in cluster.create_shares(1)]
    time.sleep(2)             # (the plain driver records no events)
    cluster.kill('solo')
    assert cluster.statuses()[cut]['status'] == 'creating'
    cluster.start(['solo'])
    got = cluster.wait_statuses([cut], {'error', 'available'}, 20)
    assert got[cut] == 'error', got


def test_refuses_a_driver_that_has_not_opted_in(manila_cluster):
    cluster = manila_cluster(driver=manila_rig.PLAIN_DRIVER, nodes=('n1',))
    node = cluster.nodes['n1']
    node.start()
    wait_for(lambda: 'does not support active-active' in
             node.log_since_start(), 60, 'the refusal in the log')
    assert manila_rig.READY_MARK not in node.log_since_start()
