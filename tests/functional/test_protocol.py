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

"""Two protocol versions in one cluster: the canary (the next protocol,
HACLUSTER_CANARY_PROTOCOL=1) beside this one, on real etcd and RabbitMQ,
members in separate processes."""

import json
import os
import signal

import pytest

import hacluster
from hacluster import protocol as _protocol
from hacluster.testing.process import LineWorker

from helpers import wait_for

HERE = os.path.dirname(__file__)
PERIODIC = os.path.join(HERE, 'periodicworker.py')
FAST = dict(lease_ttl=3, renew_deadline=2.0, renew_interval=0.5)


def member(etcd, rabbitmq, cluster, node, record, canary=False, *extra):
    env = dict(os.environ)
    env.pop(_protocol.CANARY_ENV, None)
    if canary:
        env[_protocol.CANARY_ENV] = '1'
    w = LineWorker(PERIODIC, etcd.url, rabbitmq.transport_url, cluster,
                   node, record, '--poll-spacing', '0.5', *extra, env=env)
    w.wait_line('READY', timeout=30)
    return w


def items_by_cycle(path):
    cycles = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                r = line.split()
                if r and r[0] == 'item':
                    cycles.setdefault(r[2], []).append(r[1])
    return cycles


def leader_pin(obs, node):
    kv = obs.client.get(obs.layout.task_stats('poll', node))
    return kv and json.loads(kv.value).get('rpc_pin')


def test_a_newer_leader_sends_at_the_oldest_members_rpc_version(
        etcd, rabbitmq, cluster_name, tmp_path):
    """The canary serves fan-out RPC 1.1 (the version before it: 1.0).
    Leading older members, it must send at 1.0 -- a 1.1 cast is dropped by
    a 1.0 server as UnsupportedVersion -- and at 1.1 once it is alone."""
    record = str(tmp_path / 'record')
    workers = []
    try:
        workers.append(member(etcd, rabbitmq, cluster_name, 'new', record,
                              True))
        with hacluster.get_coordinator(etcd.url, cluster_name, 'obs',
                                       **FAST) as obs:
            wait_for(lambda: (obs.get_leader() or {}).get('node') == 'new',
                     10, 'the canary to lead')
            for node in ('old1', 'old2'):
                workers.append(member(etcd, rabbitmq, cluster_name, node,
                                      record))
            members = obs.get_members()
            assert _protocol.Compat.from_record(
                members['new']).fanout_rpc == ('1.0', '1.1')
            assert _protocol.Compat.from_record(
                members['old1']).fanout_rpc == ('1.0',)

            def mixed_cycle():
                # a whole cycle (30 items) handled by the old members too
                return any(len(nodes) >= 30 and {'old1', 'old2'} & set(nodes)
                           for nodes in items_by_cycle(record).values())
            wait_for(mixed_cycle, 30, 'a cycle with items on old members')
            # (published stats are throttled: the first cycles, alone, were
            # sent at 1.1)
            wait_for(lambda: leader_pin(obs, 'new') == '1.0', 10,
                     'the pin at 1.0')
            for cycle in items_by_cycle(record).values():
                assert len(cycle) <= 30     # nothing handled twice
            # the old members leave: the pin moves up at the next dispatch
            for w in workers[1:]:
                w.proc.send_signal(signal.SIGTERM)
                w.proc.wait(30)
            wait_for(lambda: leader_pin(obs, 'new') == '1.1', 30,
                     'the pin to move to 1.1')
    finally:
        for w in workers:
            w.close()


def test_a_node_refuses_a_cluster_it_cannot_interoperate_with(
        etcd, cluster_name, monkeypatch):
    """A member two protocols ahead (its oldest protocol is newer than this
    version's newest): joining must fail naming both versions, not form a
    second cluster beside it."""
    ahead = hacluster.get_coordinator(etcd.url, cluster_name, 'ahead',
                                      **FAST)
    monkeypatch.setattr(_protocol, 'PROTOCOL', _protocol.PROTOCOL + 2)
    monkeypatch.setattr(_protocol, 'MIN_PROTOCOL', _protocol.PROTOCOL)
    with ahead:
        monkeypatch.undo()
        here = hacluster.get_coordinator(etcd.url, cluster_name, 'here',
                                         **FAST)
        with pytest.raises(_protocol.IncompatibleCluster) as e:
            here.start()
        message = str(e.value)
        ahead_p = _protocol.PROTOCOL + 2
        assert 'ahead' in message and \
            'protocol %d-%d' % (ahead_p, ahead_p) in message
        assert 'protocol %d-%d' % (_protocol.MIN_PROTOCOL,
                                   _protocol.PROTOCOL) in message
        assert 'here' not in ahead.get_members()


def test_one_protocol_apart_is_one_cluster(etcd, cluster_name, monkeypatch):
    """N beside N+1 (the canary: protocol 2, still speaking 1) join."""
    monkeypatch.setenv(_protocol.CANARY_ENV, '1')
    nxt = hacluster.get_coordinator(etcd.url, cluster_name, 'next', **FAST)
    with nxt:
        monkeypatch.delenv(_protocol.CANARY_ENV)
        here = hacluster.get_coordinator(etcd.url, cluster_name, 'here',
                                         **FAST)

        def recover_create(claim):
            pass
        recover_create.operations = ['create', 'delete']
        here.register_recovery('share', recover_create)
        with here:
            assert set(here.get_members()) == {'next', 'here'}
            # what next writes is what here reads: claims stay format 1
            wait_for(lambda: 'here' in nxt.live_members(), 10, 'the view')
            monkeypatch.setenv(_protocol.CANARY_ENV, '1')
            assert nxt.compat.write_format('claim') == 1
            with nxt.claim('share', 's1', 'create') as claim:
                assert claim.record['format'] == 1
            # and its new kind of claim waits for the upgrade to complete
            assert not nxt.can_claim(*_protocol.CANARY_CLAIM)
        wait_for(lambda: 'here' not in nxt.live_members(), 10, 'the leave')
        assert nxt.compat.write_format('claim') == 2
        assert nxt.can_claim(*_protocol.CANARY_CLAIM)


def test_a_claim_in_a_format_this_version_does_not_read_is_left_alone(
        etcd, cluster_name):
    """A claim written by a newer version (format 2) whose owner died: an
    older leader must neither recover it nor rewrite it."""
    handled = []
    leader = hacluster.get_coordinator(etcd.url, cluster_name, 'leader',
                                       **FAST)
    leader.register_recovery('share', lambda claim: handled.append(claim))
    with leader:
        wait_for(lambda: leader.is_leader, 10, 'the leader')
        key = leader.layout.claim('gone', 'share', 's1', 'create', 'c1')
        record = {'claim_id': 'c1', 'resource_type': 'share',
                  'resource_id': 's1', 'operation': 'create', 'node': 'gone',
                  'member_id': 'gone-1', 'state': 'active', 'lease': 0,
                  'attempt': 0, 'format': 2, 'written_by': 2}
        leader.client.put(key, json.dumps(record))
        # a readable claim of the same dead owner, for comparison
        key1 = leader.layout.claim('gone', 'share', 's2', 'create', 'c2')
        leader.client.put(key1, json.dumps(dict(
            record, claim_id='c2', resource_id='s2', format=1)))
        leader.recover_node('gone')
        wait_for(lambda: handled, 10, 'the readable claim to be recovered')
        assert [c['resource_id'] for c in handled] == ['s2']
        kv = leader.client.get(key)
        assert json.loads(kv.value) == record     # untouched


def test_a_cycle_left_running_in_a_newer_format_is_not_adopted(
        etcd, rabbitmq, cluster_name):
    """A newer leader died mid-cycle, its ledger in a format this version
    does not read: the next leader starts a fresh cycle (every item
    handled) instead of adopting a record it cannot understand."""
    from hacluster.periodic import FANOUT
    from hacluster.periodic import ledger as _ledger
    from hacluster.periodic import periodic_task
    from hacluster.periodic import PeriodicRunner
    handled = []

    class Tasks:
        @periodic_task(spacing=3600, mode=FANOUT, handler='_item',
                       initial_delay=0.1, item_timeout=20)
        def poll(self, ctx):
            return ['i%d' % i for i in range(5)]

        def _item(self, ctx, item_id, payload):
            handled.append(item_id)

    c = hacluster.get_coordinator(etcd.url, cluster_name, 'a', **FAST)
    with c:
        ledger = _ledger.Ledger(c, 'poll')
        newer = {'cycle_id': 'newer-1', 'status': 'running', 'items': 9,
                 'node': 'gone', 'member_id': 'gone-1',
                 'format': _protocol.FORMATS['cycle'][1] + 1}
        c.client.put(ledger.cycle_key, json.dumps(newer))
        runner = PeriodicRunner(c, transport_url=rabbitmq.transport_url)
        runner.add_all(Tasks())
        runner.start()
        try:
            wait_for(lambda: len(handled) >= 5, 30, 'the items')
            wait_for(lambda: (ledger.current() or {}).get('status') ==
                     'done', 10, 'the cycle to finish')
        finally:
            runner.stop()
        current = ledger.current()
    assert sorted(handled) == ['i%d' % i for i in range(5)]
    assert current['cycle_id'] != 'newer-1'
    # a fresh cycle, in the newest format every member reads (2: its ledger
    # outside the members' watch)
    assert current['format'] == 2 and 'adopted_by' not in current
    assert c.layout.ledger_apart(current['cycle_id'])


def test_status_shows_an_upgrade_not_drift_and_check_stays_ok(
        etcd, cluster_name, monkeypatch):
    """Two versions side by side, the newer one fingerprinting one more
    option: an upgrade in progress, health OK; a real difference in an
    option both have is still drift."""
    from hacluster import membership as _membership
    from hacluster import status as _status
    with monkeypatch.context() as m:
        m.setattr(_membership, '__version__', '0.0.9')
        old = hacluster.get_coordinator(etcd.url, cluster_name, 'old',
                                        config={'lease_ttl': 3}, **FAST)
        old.start()
    try:
        with hacluster.get_coordinator(
                etcd.url, cluster_name, 'new', **FAST,
                config={'lease_ttl': 3, 'added': True}) as new:
            old.run_for_leader(lambda t: None, lambda t: None)
            wait_for(lambda: old.get_leader(), 10, 'a leader')
            state = _status.collect(new.client, cluster_name)
            assert state['health_name'] == 'OK', state['warnings']
            up = state['upgrade']
            assert up['versions']['0.0.9'] == ['old']
            assert up['members'] == 2 and up['rpc_pin'] == '1.0'
            note = _status.upgrade_note(state)
            assert note.startswith('upgrade in progress: 1 of 2 members at')
            assert 'pinned to 1.0' in _status.summary(state)
        with hacluster.get_coordinator(
                etcd.url, cluster_name, 'drifted', **FAST,
                config={'lease_ttl': 10}) as drifted:
            state = _status.collect(drifted.client, cluster_name)
            assert state['health_name'] == 'WARNING'
            assert 'options lease_ttl differ' in _status.summary(state)
    finally:
        old.stop()
