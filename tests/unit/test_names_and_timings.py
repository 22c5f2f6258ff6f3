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

import pytest

from hacluster import exceptions
from hacluster import keys
from hacluster import session


@pytest.mark.parametrize('name', ['b1', 'hostgroup@dummy#pool0',
                                  'node-1.example.com', 'a:b+c_d'])
def test_good_cluster_names_are_accepted(name):
    assert keys.validate_ident(name, 'cluster') == name


@pytest.mark.parametrize('name, words', [
    ('', 'must not be empty'),
    ('a/b', 'may only contain'),
    ('../x', 'may only contain'),
    ('a b', 'may only contain'),
    ('a\nb', 'may only contain'),
    ('x' * 200, 'the limit is 128'),
    (42, 'must be a string'),
])
def test_bad_cluster_names_are_refused_naming_the_problem(name, words):
    with pytest.raises(exceptions.InvalidName) as e:
        keys.validate_ident(name, 'cluster')
    assert words in str(e.value) and 'cluster' in str(e.value)


@pytest.mark.parametrize('name, words', [
    ('', 'must not be empty'),
    ('a\x00b', 'control character'),
    ('a\nb', 'control character'),
    ('x' * 600, 'the limit is 512'),
    (None, 'must be a string'),
])
def test_bad_lock_names_are_refused(name, words):
    with pytest.raises(exceptions.InvalidName) as e:
        keys.validate_lock_name(name)
    assert words in str(e.value)


def test_a_cluster_prefix_never_covers_another_cluster():
    b1, b10 = keys.Layout('b1'), keys.Layout('b10')
    assert not b10.root.startswith(b1.root)
    end = keys.prefix_end(b1.root).decode()
    assert not (b1.root <= b10.root < end)


def test_lock_names_with_slashes_stay_inside_their_prefix():
    layout = keys.Layout('b1')
    prefix = layout.lock_prefix('../../other/locks/x')
    assert prefix.startswith(layout.locks)
    assert prefix[len(layout.locks):].count('/') == 1
    assert layout.lock_name_from_key(prefix + 'abc-1-w') == \
        '../../other/locks/x'
    assert not layout.lock_prefix('a').startswith(layout.lock_prefix('ab'))
    assert not layout.lock_prefix('ab').startswith(layout.lock_prefix('a'))


@pytest.mark.parametrize('ttl, deadline, interval, words', [
    (10, 10, 2, 'lease_ttl (10) must be greater than renew_deadline (10)'),
    (10, 7, 7, 'renew_deadline (7) must be greater than renew_interval'),
    (10, 7, 0, 'renew_interval must be positive'),
    (1, 0.5, 0.2, 'lease_ttl must be at least 2'),
    (2.5, 2, 1, 'lease_ttl must be a whole number'),
    ('10', 7, 2, 'lease_ttl must be a number'),
    (10, None, 2, 'renew_deadline must be a number'),
])
def test_bad_timings_are_refused_naming_the_option(ttl, deadline, interval,
                                                   words):
    with pytest.raises(exceptions.ConfigurationError) as e:
        session.validate_timings(ttl, deadline, interval)
    assert words in str(e.value)


def test_default_timings_are_valid():
    assert session.validate_timings(session.DEFAULT_LEASE_TTL,
                                    session.DEFAULT_RENEW_DEADLINE,
                                    session.DEFAULT_RENEW_INTERVAL)


def test_get_coordinator_validates_before_touching_the_network():
    import hacluster
    with pytest.raises(exceptions.ConfigurationError) as e:
        hacluster.get_coordinator('etcd3+http://127.0.0.1:1', 'b1',
                                  node='n', lease_ttl=5, renew_deadline=6)
    assert 'renew_deadline' in str(e.value)
    with pytest.raises(exceptions.InvalidName) as e:
        hacluster.get_coordinator('etcd3+http://127.0.0.1:1', 'b/1')
    assert 'cluster' in str(e.value)
    with pytest.raises(exceptions.InvalidName) as e:
        hacluster.get_coordinator('etcd3+http://127.0.0.1:1', 'b1',
                                  node='my node')
    assert 'node' in str(e.value)


def test_every_error_derives_from_one_root():
    for name in dir(exceptions):
        obj = getattr(exceptions, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and \
                obj.__module__ == exceptions.__name__:
            assert issubclass(obj, exceptions.HAClusterError), name


def test_errors_carry_their_cause():
    cause = OSError('boom')
    err = exceptions.BackendUnavailable('etcd down', cause=cause)
    assert err.cause is cause and err.__cause__ is cause


def test_the_session_deadline_runs_on_the_injected_clock():
    import threading

    from hacluster import exceptions as _exc
    from hacluster import session as _session

    now = [1000.0]
    second_grant = threading.Event()

    class Client:
        timeout = 1.0
        grants = 0

        def lease_grant(self, ttl):
            self.grants += 1
            if self.grants > 1:
                second_grant.wait(5)      # no new session during the test
            return 0x10 + self.grants, ttl

        def lease_keepalive(self, lease_id, budget=None, timeout=None):
            raise _exc.BackendUnavailable('etcd is down')

        def lease_revoke(self, lease_id, timeout=None):
            pass

    s = _session.Session(Client(), lease_ttl=3, renew_deadline=2.0,
                         renew_interval=0.5, clock=lambda: now[0])
    s.start()
    try:
        assert s.valid() and s.current() == (1, 0x11)
        now[0] += 1.9                      # just inside the deadline
        assert s.valid()
        now[0] += 0.2                      # past it: no request needed
        assert not s.valid() and s.current() == (1, None)
    finally:
        second_grant.set()
        s.stop(revoke=False)


@pytest.mark.parametrize('name', ['share-\udc80', '\ud800', 'a\udfffb'])
def test_a_name_with_a_lone_surrogate_is_an_invalid_name(name):
    from hacluster import keys
    with pytest.raises(exceptions.InvalidName, match='not valid Unicode'):
        keys.validate_lock_name(name)


def test_a_claim_with_a_lone_surrogate_is_refused_by_name(tmp_path):
    import hacluster
    c = hacluster.get_coordinator('file://%s' % tmp_path, 'c1', node='n1')
    with c:
        with pytest.raises(exceptions.InvalidName, match='not valid Unicode'):
            c.claim('share', 'id-\udc80', 'create')


def test_retry_delays_are_jittered_within_half_to_whole():
    from hacluster import backoff
    waits = [backoff.jittered(2.0) for _ in range(200)]
    assert all(1.0 <= w <= 2.0 for w in waits)
    assert len({round(w, 3) for w in waits}) > 100    # not in lockstep
    assert backoff.doubled(0.4, 1.0) == 0.8 and backoff.doubled(0.8, 1.0) \
        == 1.0


def test_a_cycle_id_says_where_its_ledger_is():
    layout = keys.Layout('c')
    old, apart = '1764000000-0a1b2c3d', '1764000000-0a1b2c3d-a'
    assert not layout.ledger_apart(old) and layout.ledger_apart(apart)
    assert layout.cycle_items('t', old) == \
        '/hacluster/v1/c/tasks/t/cycles/%s/items/' % old
    assert layout.cycle_done('t', apart) == \
        '/hacluster/v1/c/~ledger/t/%s/done/' % apart
    # the apart ledger is outside the members' watch, everything else in
    assert not layout.watched(layout.cycle_done('t', apart))
    for prefix in (layout.members, layout.leader, layout.locks,
                   layout.claims, layout.tasks, layout.tombstones,
                   layout.recovery_requests, layout.late, layout.data,
                   layout.fanout_queues, layout.cycle_done('t', old)):
        assert layout.watched(prefix), prefix
    # and inside the cluster's prefix (a per-cluster etcd role covers it)
    assert layout.ledgers.startswith(layout.root)
    assert not keys.Layout('c2').watched(layout.ledgers)


def test_a_cycle_record_whose_format_and_id_disagree_is_not_adopted():
    from hacluster.periodic import ledger as _ledger
    from hacluster import protocol

    class Coord:
        layout = keys.Layout('c')
        client = None
        compat = protocol.ClusterCompat(protocol.local, dict, 'n')
    ledger = _ledger.Ledger(Coord(), 't')
    assert ledger.readable({'cycle_id': '1-ab-a', 'format': 2})
    assert ledger.readable({'cycle_id': '1-ab', 'format': 1})
    assert ledger.readable({'cycle_id': '1-ab'})        # before formats
    assert not ledger.readable({'cycle_id': '1-ab', 'format': 2})
    assert not ledger.readable({'cycle_id': '1-ab-a', 'format': 1})
    assert not ledger.readable({'cycle_id': '1-ab-a', 'format': 3})
    # a new cycle is apart when every live member reads format 2
    assert keys.Layout.ledger_apart(ledger.new_cycle_id())
    old = {'compat': {'formats': {'cycle': [1, 1]}}}
    Coord.compat = protocol.ClusterCompat(protocol.local,
                                          lambda: {'old': old}, 'n')
    assert not keys.Layout.ledger_apart(
        _ledger.Ledger(Coord(), 't').new_cycle_id())


def test_a_cycle_in_progress_says_underway_while_a_member_cannot_read_it():
    """'running' while every live member reads the cycle's format;
    'underway' while one does not (a version from before the contract
    would adopt a 'running' cycle without reading its format); both are in
    progress to this version, 'done' is not."""
    from hacluster.periodic import ledger as _ledger
    from hacluster import protocol

    members = {}

    class Coord:
        layout = keys.Layout('c')
        client = None
        compat = protocol.ClusterCompat(protocol.local, lambda: members, 'n')
    ledger = _ledger.Ledger(Coord(), 't')
    apart, old_place = '1-ab-a', '1-ab'
    assert ledger.in_progress_status(apart) == 'running'
    assert ledger.in_progress_status(old_place) == 'running'
    members['n0'] = {'node': 'n0'}          # no compat: before the contract
    assert ledger.in_progress_status(apart) == 'underway'
    assert ledger.in_progress_status(old_place) == 'running'
    members['n0'] = {'compat': {'formats': {'cycle': [1, 2]}}}
    assert ledger.in_progress_status(apart) == 'running'
    for status, going in (('running', True), ('underway', True),
                          ('done', False), (None, False)):
        assert ledger.in_progress({'cycle_id': apart, 'status': status}) \
            is going, status
    assert not ledger.in_progress(None)
