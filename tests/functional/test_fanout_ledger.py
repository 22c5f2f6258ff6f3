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
import contextlib
import json
import os
import signal
import threading

import pytest

import hacluster
from hacluster import etcd as _etcd
from hacluster.periodic import ledger as _ledger
from hacluster.testing.process import LineWorker

from helpers import wait_for

HERE = os.path.dirname(__file__)
PERIODIC = os.path.join(HERE, 'periodicworker.py')
FAST = dict(lease_ttl=3, renew_deadline=2.0, renew_interval=0.5)
OLD = ('--cycle-formats', '1:1')


def member(etcd, rabbitmq, cluster, node, record, *extra, env=None):
    w = LineWorker(PERIODIC, etcd.url, rabbitmq.transport_url, cluster,
                   node, record, '--poll-spacing', '0.5', '--log', *extra,
                   env=env)
    w.wait_line('READY', timeout=30)
    return w


@contextlib.contextmanager
def members(record):
    """``{node: LineWorker}`` to fill; each is closed at the end, and its
    log printed first if the test failed (pytest shows it)."""
    workers = {}
    try:
        yield workers
    except BaseException:
        for node, w in workers.items():
            print('--- member %s (rc=%s), log tail:\n%s' % (
                node, w.proc.poll(), w.stderr_tail(20000)))
        if os.path.exists(record):
            with open(record) as f:
                print('--- record:\n' + f.read()[-5000:])
        raise
    finally:
        for w in workers.values():
            w.close()


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


class Cycles:
    """Every record of a task's current cycle written while it is open, the
    one current at the start included (a watch of that key): a record that
    was current for only a few milliseconds (a cycle done, the next one
    written straight after it) is never missed, as polling the key could.
    A context manager; thread-safe."""

    def __init__(self, obs, task='poll'):
        self.key = obs.layout.task_cycle(task)
        self._records = []
        self._lock = threading.Lock()
        kv = obs.client.get(self.key)
        self._watch = _etcd.Watch(obs.client, self.key, self._on_events,
                                  name='cycles')
        self._watch.start(kv.mod_revision if kv else
                          obs.client.revision + 1)

    def _on_events(self, events):
        with self._lock:
            self._records.extend(kv.json() for etype, kv in events
                                 if etype == 'PUT' and kv.key == self.key)

    def records(self):
        with self._lock:
            return list(self._records)

    def finished(self, pred):
        """The first record that says done and satisfies ``pred``."""
        for r in self.records():
            if r.get('status') == 'done' and pred(r):
                return r
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._watch.stop()


def history_keys(obs, prefix):
    """Every key written under ``prefix`` up to now that etcd still has in
    its history (a watch of that range from revision 1). Writes made while
    it reads are left out: members that go on writing cannot keep it
    going."""
    obs.client.get(obs.layout.root)         # the newest revision, now
    end = obs.client.revision
    keys, past_end = set(), threading.Event()

    def on_events(events):
        for _etype, kv in events:
            if kv.mod_revision > end:
                past_end.set()
            else:
                keys.add(kv.key)
    watch = _etcd.Watch(obs.client, prefix, on_events, name='history')
    watch.start(1)
    try:
        wait_for(lambda: watch.connected.is_set(), 10, 'the history watch')
        # etcd sends the past at once, after the watch is created: read
        # until a later write shows up or nothing comes for 0.5 s
        last = -1
        while len(keys) != last and not past_end.is_set():
            last = len(keys)
            past_end.wait(0.5)
    finally:
        watch.stop()
    return keys


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
    with obs, Cycles(obs) as cycles:
        try:
            for node in ('a', 'b'):
                workers.append(member(etcd, rabbitmq, cluster_name, node,
                                      record, '--items', '60'))
            done = wait_for(lambda: cycles.finished(
                lambda c: c['done'] == 60), 30, 'a cycle of 60 done')
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
    with hacluster.get_coordinator(etcd.url, cluster_name, 'obs',
                                   **FAST) as obs, Cycles(obs) as cycles, \
            members(record) as workers:
        workers['new'] = member(etcd, rabbitmq, cluster_name, 'new',
                                record)
        workers['old'] = member(etcd, rabbitmq, cluster_name, 'old',
                                record, *OLD)
        wait_for(lambda: {'new', 'old'} <= set(obs.live_members()), 10,
                 'both members')

        def mixed(c):
            nodes = {n for n, _ in handled(record)[c['cycle_id']]}
            return c['done'] == 30 and nodes == {'new', 'old'}
        mixed_cycle = wait_for(lambda: cycles.finished(mixed), 30,
                               'a cycle handled by both versions')
        assert not obs.layout.ledger_apart(mixed_cycle['cycle_id'])
        assert mixed_cycle['format'] == 1
        workers['old'].proc.send_signal(signal.SIGTERM)
        workers['old'].proc.wait(30)
        apart = wait_for(lambda: cycles.finished(
            lambda c: obs.layout.ledger_apart(c['cycle_id'])), 30,
            'a format 2 cycle once the old member left')
        assert apart['format'] == 2 and apart['done'] == 30


def test_an_older_member_joining_mid_cycle_gets_none_of_its_items(
        etcd, rabbitmq, cluster_name, tmp_path):
    """A rollback: a format 2 cycle is running when a member that knows
    only format 1 joins (it would look for the items in the old place, find
    none and drop them). The items of a member that dies then are
    re-dispatched to the members that read the cycle, never to the old one;
    the cycle finishes with every item handled; the next cycles are format
    1, handled by the old member too."""
    record = str(tmp_path / 'record')
    slow = ('--items', '40', '--item-sleep', '0.4', '--item-timeout', '60')
    with hacluster.get_coordinator(etcd.url, cluster_name, 'obs',
                                   **FAST) as obs, Cycles(obs) as cycles, \
            members(record) as workers:
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
        now = _ledger.Ledger(obs, 'poll').current()
        assert now['cycle_id'] == cycle_id and _ledger.Ledger.in_progress(
            now), 'the cycle ended before the old member joined: %r' % now
        workers['b'].proc.send_signal(signal.SIGKILL)
        workers['b'].proc.wait(10)
        done = wait_for(lambda: cycles.finished(
            lambda c: c['cycle_id'] == cycle_id), 60,
            'the cycle to finish without b')
        assert done['done'] == 40 and done['failed'] == 0
        assert done['redispatched'] > 0     # b's items moved
        by = handled(record)[cycle_id]
        assert sorted({i for _, i in by}) == \
            ['item-%03d' % i for i in range(40)]
        assert 'old' not in {n for n, _ in by}
        # from now on format 1, and the old member takes part
        wait_for(lambda: cycles.finished(
            lambda c: not obs.layout.ledger_apart(c['cycle_id']) and
            'old' in {n for n, _ in handled(record)[c['cycle_id']]}), 60,
            'a format 1 cycle with the old member')


@pytest.mark.parametrize('how', ['joins', 'restart'])
def test_a_leader_from_before_the_contract_never_adopts_a_format_2_cycle(
        etcd, rabbitmq, cluster_name, tmp_path, old_tree, how):
    """N, a real older version (upgrade.OLD_COMMIT, from before the format
    contract), adopts any cycle recorded as running without reading its
    format. Taking office while a format 2 cycle is in progress, it would
    look for the items in the old place, find none and record the cycle
    done with 0 items. The leader records its format 2 cycle as "underway",
    which N does not adopt, as soon as N joins (``joins``; then the leader
    is SIGKILLed), and when it stops gracefully (``restart``: a rollback
    that stops every node and starts them again on N). N starts a fresh
    cycle of its own and handles every item, and never writes the format 2
    cycle."""
    record = str(tmp_path / 'record')
    # a's cycle lasts 40 s (100 items of 0.4 s, one at a time): N starts,
    # joins and is seen well within it; N's own items are quick
    items = ('--items', '100', '--item-timeout', '120')
    env = dict(os.environ, PYTHONPATH=old_tree)
    with hacluster.get_coordinator(etcd.url, cluster_name, 'obs',
                                   **FAST) as obs, Cycles(obs) as cycles, \
            members(record) as workers:
        ledger = _ledger.Ledger(obs, 'poll')

        def in_progress(status):
            c = ledger.current()
            return c if ledger.in_progress(c) and c['status'] == status and \
                obs.layout.ledger_apart(c['cycle_id']) else None

        def start_n():
            workers['n'] = member(etcd, rabbitmq, cluster_name, 'n', record,
                                  *items, '--item-sleep', '0.01', env=env)
            member_n = wait_for(lambda: obs.live_members().get('n'), 10,
                                'n to join')
            assert 'compat' not in member_n, 'n is not from before the ' \
                'contract: %r' % member_n
        workers['a'] = member(etcd, rabbitmq, cluster_name, 'a', record,
                              *items, '--item-sleep', '0.4')
        cycle = wait_for(lambda: in_progress('running'), 30,
                         'a format 2 cycle running')
        cycle_id = cycle['cycle_id']
        if how == 'joins':
            start_n()
            shielded = wait_for(lambda: in_progress('underway'), 10,
                                'the cycle recorded as underway')
            assert shielded['cycle_id'] == cycle_id, \
                'the cycle ended before n joined: %r' % shielded
            workers['a'].proc.send_signal(signal.SIGKILL)
            workers['a'].proc.wait(10)
        else:
            workers['a'].proc.send_signal(signal.SIGTERM)
            assert workers['a'].proc.wait(30) == 0, \
                workers['a'].stderr_tail()
            left = ledger.current()
            assert left['cycle_id'] == cycle_id and \
                left['status'] == 'underway', left
            start_n()
        assert ledger.in_progress(ledger.current())
        fresh = wait_for(lambda: cycles.finished(
            lambda c: c['cycle_id'] != cycle_id and c.get('node') == 'n'),
            60, "a cycle of n's own")
        # (the watch delivers in order: whatever n wrote before its own
        # cycle finished is in by now)
        by_n = [c for c in cycles.records() if c['cycle_id'] == cycle_id and
                'n' in (c.get('node'), c.get('adopted_by_node'))]
        assert by_n == [], 'n wrote the format 2 cycle: %r' % by_n
        assert fresh['done'] == 100 and not obs.layout.ledger_apart(
            fresh['cycle_id'])
        assert sorted(i for n, i in handled(record)[fresh['cycle_id']]
                      if n == 'n') == ['item-%03d' % i for i in range(100)]


def test_a_subscription_outside_the_cluster_watch_gets_a_watch_of_its_own(
        etcd, cluster_name):
    """Coordinator.subscribe on a prefix from '~' on: its events arrive
    (from the newest revision seen: a write after subscribe is never
    missed), on a watch that ends with the last subscriber; one made
    before start() gets its watch at start, one after stop() none."""
    got = []

    class Sub:
        # (a resync, after a compaction, is not what this test is about)
        def notify(self, etype, kv):
            got.append((etype, kv.key, kv.value))

        def resync(self):
            pass

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
        # two watches of their own open at stop(), and one still stopping
        c.subscribe(prefix, sub)
        open_at_stop = [early_watch, c._side_watches[prefix]]
        c.unsubscribe(prefix, sub)
        c.subscribe(prefix, other)
        open_at_stop.append(c._side_watches[prefix])
    # stopped: every watch of its own ended, and a late subscribe opens none
    assert not c._side_watches
    assert not [w for w in open_at_stop if w._thread.is_alive()]
    c.subscribe(prefix, Sub())
    assert not c._side_watches
