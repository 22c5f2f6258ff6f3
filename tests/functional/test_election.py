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

"""Membership and leader election against real etcd, candidates in separate
processes."""

import json
import os
import signal
import threading
import time

import pytest

import hacluster
from hacluster import exceptions
from hacluster.membership import DuplicateMember
from helpers import wait_for

FAST = dict(lease_ttl=3, renew_deadline=2.0, renew_interval=0.5)


class Observer:
    """A coordinator that never campaigns and records what it sees."""

    def __init__(self, url, cluster):
        self.coord = hacluster.get_coordinator(url, cluster, node='observer',
                                               **FAST)
        self.leaders = []       # (monotonic, node or None)
        self.joins = []         # (monotonic, record)
        self.leaves = []        # (monotonic, record, graceful)
        self.coord.on_new_leader(lambda r: self.leaders.append(
            (time.monotonic(), r['node'] if r else None)))
        self.coord.on_member_join(lambda r: self.joins.append(
            (time.monotonic(), r, time.time())))
        self.coord.on_member_leave(lambda r, g: self.leaves.append(
            (time.monotonic(), r, g)))

    def __enter__(self):
        self.coord.start()
        return self

    def __exit__(self, *exc):
        self.coord.stop()

    def wait_leader(self, predicate, timeout, what='a leader'):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, node in reversed(self.leaders):
                if predicate(node):
                    return t, node
                break
            time.sleep(0.01)
        raise AssertionError('timed out waiting for %s; saw %r'
                             % (what, self.leaders))


def candidate(workers, etcd, cluster, node, events, config=None):
    args = [etcd.url, cluster, node, 'elect', events]
    if config is not None:
        args.append(json.dumps(config))
    w = workers(*args)
    w.wait_line('MEMBER')
    return w


def terms_from(events):
    """Leadership intervals per term: {term: [node, start, stop or None]}."""
    terms = {}
    with open(events) as f:
        for line in f:
            kind, term, node, t = line.split()
            entry = terms.setdefault(int(term), [node, None, None])
            entry[1 if kind == 'start' else 2] = float(t)
    return terms


def test_one_leader_at_a_time_through_churn_and_callbacks_never_overlap(
        etcd, cluster_name, workers, tmp_path):
    events = str(tmp_path / 'events')
    killed_at = {}
    with Observer(etcd.url, cluster_name) as obs:
        cands = {n: candidate(workers, etcd, cluster_name, n, events)
                 for n in ('c1', 'c2', 'c3')}
        samples = []
        stop_sampling = threading.Event()

        def sample():
            while not stop_sampling.is_set():
                leader = obs.coord.get_leader()
                samples.append(leader['term'] if leader else None)
                time.sleep(0.02)
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            for round_ in range(4):
                _, leader = obs.wait_leader(lambda n: n is not None, 10)
                if round_ % 2 == 0:
                    cands[leader].proc.send_signal(signal.SIGTERM)
                    assert cands[leader].wait_line('EXITED')
                else:
                    cands[leader].proc.kill()
                    killed_at[leader] = time.monotonic()
                cands[leader].proc.wait(10)
                obs.wait_leader(lambda n, old=leader: n not in (None, old),
                                FAST['lease_ttl'] + 3, 'a new leader')
                # Bring a candidate back under the same node name.
                cands[leader] = candidate(workers, etcd, cluster_name,
                                          leader, events)
        finally:
            stop_sampling.set()
            sampler.join()
    # get_leader() only ever names one leader, and terms only go up.
    seen = [t for t in samples if t is not None]
    assert seen and seen == sorted(seen)
    # Callbacks of successive leaders never overlap in time. A SIGKILLed
    # leader never called on_stopped_leading: its term ended at the kill.
    intervals = []
    for term, (node, start, stop) in sorted(terms_from(events).items()):
        assert start is not None
        if stop is None:
            stop = killed_at.get(node, float('inf'))
        intervals.append((start, stop, term, node))
    intervals.sort()
    for (s1, e1, t1, n1), (s2, e2, t2, n2) in zip(intervals, intervals[1:]):
        assert e1 <= s2, 'term %d (%s) overlaps term %d (%s)' % (t1, n1,
                                                                 t2, n2)
        assert t1 < t2
    assert len(intervals) >= 5


def test_failover_after_sigkill_and_after_a_graceful_stop(
        etcd, cluster_name, workers, tmp_path):
    events = str(tmp_path / 'events')
    with Observer(etcd.url, cluster_name) as obs:
        c = {n: candidate(workers, etcd, cluster_name, n, events)
             for n in ('a', 'b')}
        _, first = obs.wait_leader(lambda n: n is not None, 10)
        c[first].proc.kill()
        killed = time.monotonic()
        t, second = obs.wait_leader(lambda n: n not in (None, first),
                                    FAST['lease_ttl'] + 3)
        assert t - killed <= FAST['lease_ttl'] + 2
        c[second].proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        c[first] = candidate(workers, etcd, cluster_name, first, events)
        t, third = obs.wait_leader(lambda n: n == first, 5)
        assert t - stopped <= 1.0 + 1.5   # +1.5: the restart of `first`
        # ... and a graceful stop with a candidate already waiting:
        c[second] = candidate(workers, etcd, cluster_name, second, events)
        time.sleep(0.5)
        c[first].proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        t, fourth = obs.wait_leader(lambda n: n == second, 5)
        assert t - stopped <= 1.0


def test_a_paused_leader_steps_down_on_its_own_and_is_fenced(
        etcd, cluster_name, workers, tmp_path):
    events = str(tmp_path / 'events')
    with Observer(etcd.url, cluster_name) as obs:
        a = candidate(workers, etcd, cluster_name, 'a', events)
        old_term = int(a.wait_line('STARTED').split()[1])
        assert a.wait_line('WRITE') == 'WRITE ok %d' % old_term
        b = candidate(workers, etcd, cluster_name, 'b', events)
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            obs.wait_leader(lambda n: n == 'b', FAST['lease_ttl'] + 3)
            new_term = int(b.wait_line('STARTED').split()[1])
            assert new_term > old_term
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        assert a.wait_line('STOPPED') == 'STOPPED %d' % old_term

        def refused():
            return [ln.split()[1] for ln in a.lines if
                    ln.startswith('WRITE ') and not ln.startswith('WRITE ok')]
        # A write in flight when the process was frozen is answered (or
        # times out) after the renew deadline: OutcomeUnknown, never "ok".
        # Every later one is refused outright.
        definite = ('StaleFencingToken', 'NotLeader')
        wait_for(lambda: any(r in definite for r in refused()), 3,
                 'the resumed leader to be refused')
        seen = refused()
        assert all(r in definite for r in seen[1:]), seen
        assert seen[0] in definite + ('OutcomeUnknown',), seen
        assert [ln for ln in a.lines if ln.startswith('WRITE ok')] == \
            ['WRITE ok %d' % old_term], a.lines
        # Only the new leader's writes reach etcd from now on.
        time.sleep(0.3)
        assert obs.coord.get_data('leader-write')[0] == b'b'
        # etcd itself refuses a write guarded by the old term.
        from hacluster import etcd as _etcd
        old_key = [k for k in (obs.coord.client.get_prefix(
            obs.coord.layout.leader)[0])]
        resp = obs.coord.client.txn(
            compare=[_etcd.create_revision_is(
                obs.coord.layout.leader + 'gone', old_term)],
            success=[_etcd.put_op(obs.coord.layout.data_key('x'), 'y')])
        assert not resp.succeeded and old_key


def test_etcd_down_the_leader_steps_down_and_one_leader_returns(
        fresh_etcd, cluster_name):
    stopped, started = [], []
    c = hacluster.get_coordinator(fresh_etcd.url, cluster_name, 'n1', **FAST)
    c2 = hacluster.get_coordinator(fresh_etcd.url, cluster_name, 'n2', **FAST)
    with c, c2:
        c.run_for_leader(lambda t: started.append(('n1', t, time.monotonic())),
                         lambda t: stopped.append(('n1', t,
                                                   time.monotonic())))
        deadline = time.monotonic() + 5
        while not c.is_leader and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.is_leader
        c2.run_for_leader(lambda t: started.append(('n2', t,
                                                    time.monotonic())),
                          lambda t: stopped.append(('n2', t,
                                                    time.monotonic())))
        fresh_etcd.kill()
        down = time.monotonic()
        while not stopped and time.monotonic() < down + 5:
            time.sleep(0.02)
        assert stopped and stopped[0][0] == 'n1'
        assert stopped[0][2] - down <= FAST['renew_deadline'] + 0.5
        assert not c.is_leader and not c2.is_leader
        fresh_etcd.restart()
        deadline = time.monotonic() + 15
        while not (c.is_leader or c2.is_leader) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        assert [c.is_leader, c2.is_leader].count(True) == 1
        leader = c.get_leader()
        assert leader['node'] == ('n1' if c.is_leader else 'n2')
        assert leader['term'] == (c.term or c2.term)


def test_member_records_carry_every_field_and_fingerprints_differ(
        etcd, cluster_name):
    a = hacluster.get_coordinator(etcd.url, cluster_name, 'a',
                                  config={'driver': 'dummy', 'pools': 2,
                                          'password': 'x'},
                                  rpc_version='1.0', **FAST)
    b = hacluster.get_coordinator(etcd.url, cluster_name, 'b',
                                  config={'driver': 'dummy', 'pools': 3},
                                  rpc_version='1.0', **FAST)
    with a, b:
        members = a.get_members()
        assert set(members) == {'a', 'b'}
        rec = members['a']
        for field in ('node', 'member_id', 'host', 'pid', 'version',
                      'rpc_version', 'config_fingerprint', 'joined_at',
                      'lease', 'state'):
            assert rec.get(field) is not None, field
        assert rec.member_id == a.member_id and rec.pid == os.getpid()
        assert rec.version == hacluster.__version__
        assert rec.state == 'active'
        assert members['a'].config_fingerprint != \
            members['b'].config_fingerprint


def test_fingerprints_ignore_secrets():
    from hacluster.membership import fingerprint
    assert fingerprint({'a': 1, 'password': 'x'}) == \
        fingerprint({'a': 1, 'password': 'y'})
    assert fingerprint({'url': 'rabbit://u:p1@h'}) == \
        fingerprint({'url': 'rabbit://u:p2@h'})
    assert fingerprint({'a': 1}) != fingerprint({'a': 2})


def test_a_second_live_process_with_the_same_node_name_is_refused(
        etcd, cluster_name, workers, tmp_path):
    with hacluster.get_coordinator(etcd.url, cluster_name, 'twin',
                                   **FAST) as first:
        w = workers(etcd.url, cluster_name, 'twin', 'elect',
                    str(tmp_path / 'ev'))
        line = w.wait_line('START-FAILED', timeout=FAST['lease_ttl'] + 5)
        assert 'DuplicateMember' in line and "'twin'" in line
        assert first.get_members()['twin'].member_id == first.member_id
    # ... and in one process:
    with hacluster.get_coordinator(etcd.url, cluster_name, 'twin2', **FAST):
        again = hacluster.get_coordinator(etcd.url, cluster_name, 'twin2',
                                          **FAST)
        with pytest.raises(DuplicateMember) as e:
            again.start()
        assert 'node_name' in str(e.value)


def test_a_restart_after_a_crash_takes_the_node_name_back_at_once(
        etcd, cluster_name, workers, tmp_path):
    w = candidate(workers, etcd, cluster_name, 'phoenix',
                  str(tmp_path / 'ev'))
    w.proc.kill()
    w.proc.wait(5)
    started = time.monotonic()
    # Same host, dead pid: no need to wait for the old lease to expire.
    with hacluster.get_coordinator(etcd.url, cluster_name, 'phoenix',
                                   lease_ttl=10, renew_deadline=7,
                                   renew_interval=2) as c:
        assert time.monotonic() - started < 2.0
        assert c.get_members()['phoenix'].member_id == c.member_id


def test_join_and_leave_events_arrive_promptly(etcd, cluster_name, workers,
                                               tmp_path):
    with Observer(etcd.url, cluster_name) as obs:
        joined = time.monotonic()
        w = candidate(workers, etcd, cluster_name, 'j1', str(tmp_path / 'e'))
        member = w.wait_line('MEMBER').split()[1]
        deadline = time.monotonic() + 5
        while not any(r.member_id == member for _, r, _ in obs.joins) and \
                time.monotonic() < deadline:
            time.sleep(0.01)
        rec, seen_at = [(r, w) for _, r, w in obs.joins
                        if r.member_id == member][0]
        # from the member's own registration to the observer's callback
        assert 0 <= seen_at - rec.joined_at < 1.0
        assert time.monotonic() - joined < 10
        # graceful (once it is past start-up and has its SIGTERM handler)
        w.wait_line('STARTED')
        w.proc.send_signal(signal.SIGTERM)
        w.wait_line('EXITED')
        gone = time.monotonic()
        while not obs.leaves and time.monotonic() < gone + 2:
            time.sleep(0.01)
        t, rec, graceful = obs.leaves[0]
        assert rec.member_id == member and graceful is True
        assert t - gone < 1.0
        # expiry
        w2 = candidate(workers, etcd, cluster_name, 'j2',
                       str(tmp_path / 'e'))
        member2 = w2.wait_line('MEMBER').split()[1]
        time.sleep(0.3)
        w2.proc.kill()
        killed = time.monotonic()
        deadline = killed + FAST['lease_ttl'] + 3
        while len(obs.leaves) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        t, rec, graceful = obs.leaves[1]
        assert rec.member_id == member2 and graceful is False
        # within 1 s of the lease expiry (lease_ttl after the last renewal)
        assert t - killed < FAST['lease_ttl'] + 1.0


def test_single_node_mode_is_its_own_leader(tmp_path):
    c = hacluster.get_coordinator('file://%s' % tmp_path, 'b1', 'n1')
    calls = []
    with c:
        c.run_for_leader(lambda t: calls.append(('start', t)),
                         lambda t: calls.append(('stop', t)))
        assert c.is_leader and c.get_leader()['node'] == 'n1'
        assert list(c.get_members()) == ['n1']
    assert [k for k, _ in calls] == ['start', 'stop']


def test_guarded_write_as_leader_needs_the_current_term(etcd, cluster_name):
    with hacluster.get_coordinator(etcd.url, cluster_name, 'n1',
                                   **FAST) as c:
        terms = []
        c.run_for_leader(terms.append, lambda t: None)
        deadline = time.monotonic() + 5
        while not terms and time.monotonic() < deadline:
            time.sleep(0.01)
        c.guarded_put_as_leader(terms[0], 'k', 'v')
        with pytest.raises(exceptions.NotLeader):
            c.guarded_put_as_leader(terms[0] - 1, 'k', 'v')
        c.resign()
        assert not c.is_leader
        with pytest.raises(exceptions.NotLeader):
            c.guarded_put_as_leader(terms[0], 'k', 'v2')
        assert c.get_data('k')[0] == b'v'


def test_an_idle_candidate_sends_no_request_besides_its_renewals(
        fresh_etcd, cluster_name):
    # Every member campaigns; those that do not lead wait in the leader
    # queue. Idle, each must cost one keep-alive per renew_interval and
    # nothing more (hacluster.locks: the safety check), whatever the size
    # of the cluster.
    coords = [hacluster.get_coordinator(fresh_etcd.url, cluster_name,
                                        node='n%d' % i, **FAST)
              for i in range(3)]
    try:
        for c in coords:
            c.start()
            c.campaign()
        deadline = time.monotonic() + 10
        while sum(c.is_leader for c in coords) != 1 or len(
                coords[0].client.get_prefix(coords[0].layout.leader)[0]) \
                != 3:
            assert time.monotonic() < deadline, 'no leader and 3 candidates'
            time.sleep(0.05)
        time.sleep(FAST['renew_interval'])
        candidates = [c for c in coords if not c.is_leader]

        def extra(c):
            s = c.session
            return c.client.requests - s.renewals - s.renew_failures
        before = [extra(c) for c in candidates]
        time.sleep(8 * FAST['renew_interval'])
        assert [extra(c) for c in candidates] == before
    finally:
        for c in coords:
            c.stop()
