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

"""The coordinator contract (hacluster.api.CoordinatorAPI), run against
both coordinators: etcd (a private server) and single-node (files)."""

import threading
import time

import pytest

import hacluster
from hacluster import api
from hacluster import exceptions

from helpers import wait_for


@pytest.fixture(params=['etcd', 'single-node'])
def coord(request, tmp_path, cluster_name):
    if request.param == 'etcd':
        etcd = request.getfixturevalue('etcd')
        url = etcd.url
    else:
        url = 'file://%s' % tmp_path
    c = hacluster.get_coordinator(url, cluster_name, node='n1', lease_ttl=3,
                                  renew_deadline=2, renew_interval=0.5)
    with c:
        yield c


def test_both_coordinators_declare_the_contract(coord):
    assert isinstance(coord, api.CoordinatorAPI)
    assert coord.running
    assert coord.single_node == ('LocalCoordinator' in type(coord).__name__)


def test_a_lock_excludes_another_holder_and_keeps_its_token(coord):
    first = coord.get_lock('contract-x')
    second = coord.get_lock('contract-x')
    assert first.acquire(True)
    assert first.held and first.fencing_token is not None
    assert first in coord.held_locks()
    assert second.acquire(False) is False
    got = []
    t = threading.Thread(target=lambda: got.append(second.acquire(5)))
    t.start()
    time.sleep(0.2)
    assert got == []                       # still waiting
    token = first.fencing_token
    assert first.release() is True
    t.join(10)
    assert got == [True] and second.fencing_token > token
    second.release()
    assert coord.held_locks() == []


def test_shared_locks_are_held_together_and_exclude_a_writer(coord):
    r1 = coord.get_lock('contract-rw', shared=True)
    r2 = coord.get_lock('contract-rw', shared=True)
    w = coord.get_lock('contract-rw')
    assert r1.acquire(True) and r2.acquire(True)
    assert w.acquire(False) is False
    r1.release()
    r2.release()
    assert w.acquire(True)
    w.release()


def test_a_locked_call_raises_when_the_lock_cannot_be_taken(coord):
    holder = coord.get_lock('contract-busy')
    holder.acquire(True)
    try:
        @hacluster.synchronized('contract-busy', blocking=False,
                                coordinator=coord)
        def critical():
            raise AssertionError('ran without the lock')
        with pytest.raises(exceptions.AcquireTimeout):
            critical()
    finally:
        holder.release()


def test_leading_calls_back_and_guards_writes_by_term(coord):
    started, stopped, seen = [], [], []
    coord.run_for_leader(started.append, stopped.append, seen.append)
    wait_for(lambda: coord.is_leader, 10, 'leadership')
    term = coord.term
    assert started == [term]
    leader = coord.get_leader()
    assert leader['node'] == 'n1' and leader['term'] == term
    wait_for(lambda: seen, 5, 'on_new_leader')
    coord.guarded_put_as_leader(term, 'contract-k', 'v1')
    assert coord.get_data('contract-k')[0] == b'v1'
    coord.resign()
    wait_for(lambda: stopped == [term], 5, 'on_stopped_leading')
    assert not coord.is_leader and coord.term is None
    with pytest.raises(exceptions.HAClusterError):
        coord.guarded_put_as_leader(term, 'contract-k', 'v2')
    assert coord.get_data('contract-k')[0] == b'v1'


def test_members_include_this_node_with_its_fields(coord):
    coord.update_member(ready=True)
    members = coord.get_members()
    assert members['n1']['ready'] is True
    assert 'n1' in coord.live_members()


def test_a_claim_is_recorded_finished_and_removed(coord):
    with coord.claim('share', 'contract-s1', 'create', {'size': 1}) as c:
        [rec] = [r for r in coord.list_claims()
                 if r['resource_id'] == 'contract-s1']
        assert rec['operation'] == 'create' and rec['data'] == {'size': 1}
        assert c.still_owned()
        assert c.finish() is c
    assert not [r for r in coord.list_claims()
                if r['resource_id'] == 'contract-s1']


def test_a_claim_handed_over_stays_for_recovery(coord):
    with coord.claim('share', 'contract-s2', 'create') as c:
        c.hand_over('cannot finish safely')
    left = [r for r in coord.list_claims()
            if r['resource_id'] == 'contract-s2']
    assert len(left) == 1


def test_a_live_node_cannot_be_recovered_by_hand(coord):
    with pytest.raises(exceptions.HAClusterError):
        coord.recover_node('n1')


def test_bad_arguments_are_refused_naming_them(coord):
    with pytest.raises(exceptions.ConfigurationError, match='resource_id'):
        coord.claim('share', '', 'create')
    with pytest.raises(exceptions.ConfigurationError, match='callable'):
        coord.register_recovery('share', 'not-callable')
    with pytest.raises(exceptions.InvalidName):
        coord.get_lock('')


def test_a_lock_held_at_stop_is_reported_lost(coord):
    lost = []
    coord.on_lock_lost(lambda lock, reason: lost.append(reason))
    lock = coord.get_lock('contract-stop')
    lock.acquire(True)
    coord.stop()
    assert lost and 'stopped' in lost[0]
    assert not lock.held
    coord.fence_point()                    # never raises when idle
