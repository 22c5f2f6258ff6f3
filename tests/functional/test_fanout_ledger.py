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

"""Where a fan-out cycle's ledger lives (cycle format 2: outside the members'
watch; format 1 while a member from before it is live), on real etcd and
RabbitMQ with member processes (periodicworker.py; ``--cycle-formats 1:1``
plays a version that knows only format 1)."""

import collections
import json
import os
import signal
import threading

import hacluster
from hacluster import etcd as _etcd
from hacluster.periodic import ledger as _ledger
from hacluster.testing.process import LineWorker

from helpers import wait_for

HERE = os.path.dirname(__file__)
PERIODIC = os.path.join(HERE, 'periodicworker.py')
FAST = dict(lease_ttl=3, renew_deadline=2.0, renew_interval=0.5)
OLD = ('--cycle-formats', '1:1')


def member(etcd, rabbitmq, cluster, node, record, *extra):
    w = LineWorker(PERIODIC, etcd.url, rabbitmq.transport_url, cluster,
                   node, record, '--poll-spacing', '0.5', *extra)
    w.wait_line('READY', timeout=30)
    return w


def handled(path):
    """``{cycle: [(node, item)]}`` from the members' record file."""
    cycles = collections.defaultdict(list)
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                r = line.split()
                if r and r[0] == 'item':
                    cycles[r[2]].append((r[1], r[3]))
    return cycles


def finished(obs, pred):
    """The last cycle record if it is done and ``pred(record)``."""
    current = _ledger.Ledger(obs, 'poll').current()
    return current if current and current['status'] == 'done' and \
        pred(current) else None


def history(obs, prefix, start=1):
    """``[(key, value)]`` of every write under ``prefix`` from revision
    ``start`` on that etcd still has in its history, oldest first (a watch
    of that range, read until it is quiet; a deletion's value is None)."""
    writes = []
    quiet = threading.Event()

    def on_events(events):
        for etype, kv in events:
            writes.append((kv.key, kv.value if etype == 'PUT' else None))
    watch = _etcd.Watch(obs.client, prefix, on_events, name='history')
    watch.start(start)
    try:
        wait_for(lambda: watch.connected.is_set(), 10, 'the history watch')
        last = -1
        while len(writes) != last:
            last = len(writes)
            quiet.wait(0.5)
    finally:
        watch.stop()
    return writes


def history_keys(obs, prefix):
    """Every key ever written under ``prefix`` that etcd still has in its
    history."""
    return {key for key, _ in history(obs, prefix)}


def test_a_cycle_ledger_stays_out_of_the_members_watch(
        etcd, rabbitmq, cluster_name, tmp_path):
    """Every member reads cycle format 2: the cycle's items and done
    markers go under ~ledger/, and no member's cluster watch is sent any of
    them; the leader still counts the done markers (its own watch of the
    cycle's markers) and the cycle finishes with every item handled."""
    record = str(tmp_path / 'record')
    seen = []
    obs = hacluster.get_coordinator(etcd.url, cluster_name, 'obs', **FAST)
    deliver = obs._on_events

    def counting(events):
        seen.extend(kv.key for _etype, kv in events)
        deliver(events)
    obs._on_events = counting       # what its cluster watch delivers
    workers = []
    with obs:
        try:
            for node in ('a', 'b'):
                workers.append(member(etcd, rabbitmq, cluster_name, node,
                                      record, '--items', '60'))
            done = wait_for(lambda: finished(
                obs, lambda c: c['done'] == 60), 30, 'a cycle of 60 done')
        finally:
            for w in workers:
                w.close()
    cycle_id = done['cycle_id']
    layout = obs.layout
    assert layout.ledger_apart(cycle_id) and done['format'] == 2
    items = [i for _, i in handled(record)[cycle_id]]
    assert sorted(set(items)) == ['item-%03d' % i for i in range(60)]
    # the members' watch carried membership, tasks... and nothing of it
    assert any(k.startswith(layout.members) for k in seen)
    assert any(k.startswith(layout.tasks) for k in seen)
    assert not [k for k in seen if not layout.watched(k)]
    # what etcd holds in its history: the ledger apart, none in the old place
    written = history_keys(obs, layout.root)
    ours = layout.cycle_root('poll', cycle_id)
    assert ours.startswith(layout.task_ledgers('poll'))
    assert len([k for k in written if k.startswith(ours + 'items/')]) == 60
    assert len([k for k in written if k.startswith(ours + 'done/')]) == 60
    assert not [k for k in written
                if k.startswith(layout.task_cycles('poll'))]


def test_an_older_member_keeps_cycles_in_the_old_place(
        etcd, rabbitmq, cluster_name, tmp_path):
    """With a member that reads only format 1 live, cycles stay format 1
    (under tasks/<task>/cycles/, items handled by both versions); once it
    has left, the next cycles are format 2."""
    record = str(tmp_path / 'record')
    workers = {}
    with hacluster.get_coordinator(etcd.url, cluster_name, 'obs',
                                   **FAST) as obs:
        try:
            workers['new'] = member(etcd, rabbitmq, cluster_name, 'new',
                                    record)
            workers['old'] = member(etcd, rabbitmq, cluster_name, 'old',
                                    record, *OLD)
            wait_for(lambda: {'new', 'old'} <= set(obs.live_members()), 10,
                     'both members')

            def mixed(c):
                nodes = {n for n, _ in handled(record)[c['cycle_id']]}
                return c['done'] == 30 and nodes == {'new', 'old'}
            mixed_cycle = wait_for(lambda: finished(obs, mixed), 30,
                                   'a cycle handled by both versions')
            assert not obs.layout.ledger_apart(mixed_cycle['cycle_id'])
            assert mixed_cycle['format'] == 1
            workers['old'].proc.send_signal(signal.SIGTERM)
            workers['old'].proc.wait(30)
            apart = wait_for(lambda: finished(
                obs, lambda c: obs.layout.ledger_apart(c['cycle_id'])), 30,
                'a format 2 cycle once the old member left')
            assert apart['format'] == 2 and apart['done'] == 30
        finally:
            for w in workers.values():
                w.close()


def test_an_older_member_joining_mid_cycle_gets_none_of_its_items(
        etcd, rabbitmq, cluster_name, tmp_path):
    """A rollback: a format 2 cycle is running when a member that knows
    only format 1 joins (it would look for the items in the old place, find
    none and drop them). The items of a member that dies then are
    re-dispatched to the members that read the cycle, never to the old one;
    the cycle finishes with every item handled; the next cycles are format
    1, handled by the old member too."""
    record = str(tmp_path / 'record')
    workers = {}
    slow = ('--items', '40', '--item-sleep', '0.4', '--item-timeout', '60')
    with hacluster.get_coordinator(etcd.url, cluster_name, 'obs',
                                   **FAST) as obs:
        try:
            workers['a'] = member(etcd, rabbitmq, cluster_name, 'a', record,
                                  *slow)
            wait_for(lambda: (obs.get_leader() or {}).get('node') == 'a',
                     10, 'a to lead')
            workers['b'] = member(etcd, rabbitmq, cluster_name, 'b', record,
                                  *slow)

            def running_apart_with_b():
                c = _ledger.Ledger(obs, 'poll').current()
                if not _ledger.Ledger.in_progress(c) or \
                        not obs.layout.ledger_apart(c['cycle_id']):
                    return None
                nodes = {n for n, _ in handled(record)[c['cycle_id']]}
                return c if 'b' in nodes else None
            cycle = wait_for(running_apart_with_b, 30,
                             'a format 2 cycle running on a and b')
            cycle_id = cycle['cycle_id']
            workers['old'] = member(etcd, rabbitmq, cluster_name, 'old',
                                    record, *OLD, *slow)
            wait_for(lambda: 'old' in obs.live_members(), 10, 'old to join')
            assert _ledger.Ledger(obs, 'poll').current()['cycle_id'] == \
                cycle_id, 'the cycle ended before the old member joined'
            workers['b'].proc.send_signal(signal.SIGKILL)
            workers['b'].proc.wait(10)
            done = wait_for(lambda: finished(
                obs, lambda c: c['cycle_id'] == cycle_id), 60,
                'the cycle to finish without b')
            assert done['done'] == 40 and done['failed'] == 0
            assert done['redispatched'] > 0     # b's items moved
            by = handled(record)[cycle_id]
            assert sorted({i for _, i in by}) == \
                ['item-%03d' % i for i in range(40)]
            assert 'old' not in {n for n, _ in by}
            # from now on format 1, and the old member takes part
            wait_for(lambda: finished(obs, lambda c: not obs.layout
                                      .ledger_apart(c['cycle_id']) and
                                      'old' in {n for n, _ in handled(
                                          record)[c['cycle_id']]}), 60,
                     'a format 1 cycle with the old member')
        finally:
            for w in workers.values():
                w.close()


def test_a_leader_from_before_the_contract_never_adopts_a_format_2_cycle(
        etcd, rabbitmq, cluster_name, tmp_path, old_tree):
    """N, a real older version (upgrade.OLD_COMMIT, from before the format
    contract), adopts any cycle recorded as running without reading its
    format. Taking office while a format 2 cycle is in progress, it would
    look for the items in the old place, find none and record the cycle
    done with 0 items. A format 2 cycle in progress says "underway", which
    N does not adopt: it starts a fresh cycle of its own and handles every
    item, and the format 2 cycle is never recorded done by it."""
    record = str(tmp_path / 'record')
    workers = {}
    slow = ('--items', '20', '--item-sleep', '0.4', '--item-timeout', '60')
    env = dict(os.environ, PYTHONPATH=old_tree)
    with hacluster.get_coordinator(etcd.url, cluster_name, 'obs',
                                   **FAST) as obs:
        ledger = _ledger.Ledger(obs, 'poll')
        try:
            workers['a'] = member(etcd, rabbitmq, cluster_name, 'a', record,
                                  *slow)

            def underway():
                c = ledger.current()
                return c if ledger.in_progress(c) and obs.layout.ledger_apart(
                    c['cycle_id']) and handled(record)[c['cycle_id']] \
                    else None
            cycle = wait_for(underway, 30, 'a format 2 cycle under way')
            assert cycle['status'] == 'underway'
            cycle_id = cycle['cycle_id']
            workers['n'] = LineWorker(
                PERIODIC, etcd.url, rabbitmq.transport_url, cluster_name,
                'n', record, '--poll-spacing', '0.5', *slow, env=env)
            workers['n'].wait_line('READY', timeout=30)
            member_n = wait_for(lambda: obs.live_members().get('n'), 10,
                                'n to join')
            assert 'compat' not in member_n, 'n is not from before the ' \
                'contract: %r' % member_n
            assert ledger.current()['cycle_id'] == cycle_id, \
                'the cycle ended before n joined'
            since = obs.client.revision + 1
            workers['a'].proc.send_signal(signal.SIGKILL)
            workers['a'].proc.wait(10)
            fresh = wait_for(lambda: finished(
                obs, lambda c: c['cycle_id'] != cycle_id and
                c.get('node') == 'n'), 60, "a cycle of n's own")
            written = [json.loads(v) for k, v in history(
                obs, ledger.cycle_key, since) if k == ledger.cycle_key and v]
        finally:
            for w in workers.values():
                w.close()
    assert written, 'no cycle record was written after a died'
    assert [c for c in written if c['cycle_id'] == cycle_id] == [], \
        'n rewrote the format 2 cycle (adopted it)'
    assert fresh['done'] == 20 and not obs.layout.ledger_apart(
        fresh['cycle_id'])
    assert sorted(i for n, i in handled(record)[fresh['cycle_id']]
                  if n == 'n') == ['item-%03d' % i for i in range(20)]


def test_a_subscription_outside_the_cluster_watch_gets_a_watch_of_its_own(
        etcd, cluster_name):
    """Coordinator.subscribe on a prefix from '~' on: its events arrive
    (from the newest revision seen: a write after subscribe is never
    missed), on a watch that ends with the last subscriber; one made
    before start() gets its watch at start, one after stop() none."""
    got = []

    class Sub:
        def notify(self, etype, kv):
            got.append((etype, kv.key, kv.value))

        def resync(self):
            got.append(('resync', None, None))

    c = hacluster.get_coordinator(etcd.url, cluster_name, 'a', **FAST)
    early = c.layout.task_ledgers('t') + 'early-a/done/'
    c.subscribe(early, Sub())
    assert not c._side_watches          # not running: no watch yet
    with c:
        assert list(c._side_watches) == [early]
        early_watch = c._side_watches[early]
        c.client.put(early + 'k0', '{}')
        wait_for(lambda: got, 10, 'the event of the early subscription')
        assert [g[1] for g in got] == [early + 'k0']
        del got[:]
        prefix = c.layout.task_ledgers('t') + 'x-a/done/'
        assert not c.layout.watched(prefix)
        assert c.layout.watched(c.layout.task_cycles('t'))
        sub, other = Sub(), Sub()
        c.subscribe(prefix, sub)
        c.subscribe(prefix, other)
        c.client.put(prefix + 'k1', json.dumps({'ok': True}))
        wait_for(lambda: len(got) >= 2, 10, 'the event, twice')
        assert {g[1] for g in got} == {prefix + 'k1'}
        side = c._side_watches[prefix]
        c.unsubscribe(prefix, sub)
        assert c._side_watches[prefix] is side      # other still there
        c.unsubscribe(prefix, other)
        assert prefix not in c._side_watches
        wait_for(lambda: not side._thread.is_alive(), 10,
                 'the side watch to end')
        del got[:]
        c.client.put(prefix + 'k2', '{}')
        # a key inside the cluster watch still goes the usual way
        inside = c.layout.task_cycles('t') + 'y/done/'
        c.subscribe(inside, sub)
        try:
            assert inside not in c._side_watches
            c.client.put(inside + 'k3', '{}')
            wait_for(lambda: got, 10, 'the inside event')
            assert [g[1] for g in got] == [inside + 'k3']
        finally:
            c.unsubscribe(inside, sub)
    # stopped: every watch of its own ended, and a late subscribe opens none
    assert not c._side_watches and not early_watch._thread.is_alive()
    c.subscribe(prefix, Sub())
    assert not c._side_watches
