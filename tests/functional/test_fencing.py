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

"""Fencing: a node that is not provably dead never has its work recovered,
and a node thought dead never finishes over a recovery. Real etcd, member
processes frozen with SIGSTOP, real lease expiry (ttl 3 s)."""

import json
import os
import signal
import time

import pytest

import hacluster
from hacluster import fencing as _fencing
from helpers import handled
from helpers import start_recovery_worker as start
from helpers import wait_for

TTL = 3


def _late(obs, claim_id):
    kv = obs.client.get(obs.layout.late_result(claim_id))
    return kv.json() if kv else None


def test_a_paused_claim_owner_is_refused_its_finish_after_recovery(
        etcd, cluster_name, workers, tmp_path, obs):
    store = str(tmp_path)
    survivor = start(workers, etcd, cluster_name, 's1', store, 'survive')
    survivor.wait_line('READY')
    owner = start(workers, etcd, cluster_name, 'frozen', store, 'op')
    claim_id = owner.wait_line('OPEN').split()[2]
    os.kill(owner.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: handled(store), TTL + 10,
                 'the survivor to recover the frozen owner\'s claim')
    finally:
        os.kill(owner.proc.pid, signal.SIGCONT)
    assert [r[0] for r in handled(store)] == [claim_id]
    owner.send('finish')
    refused = owner.wait_line('REFUSED')
    assert 'after it was recovered by s1' in refused
    late = _late(obs, claim_id)
    assert late['node'] == 'frozen' and late['recovered_by'] == 's1'
    assert 'backend object' in late['message']
    from hacluster import status as _status
    snap = _status.collect(obs.client, cluster_name)
    assert [r['claim_id'] for r in snap['late_results']] == [claim_id]
    assert any('after they were recovered' in w['text']
               for w in snap['warnings'])
    owner.send('close')
    assert owner.wait_line('CLOSED') == 'CLOSED True'
    # the handler ran once, and nothing of the claim is left
    assert len(handled(store)) == 1 and not obs.list_claims('frozen')


def test_a_finished_claim_is_not_taken_while_its_owner_lives(
        etcd, cluster_name, workers, tmp_path, obs):
    store = str(tmp_path)
    survivor = start(workers, etcd, cluster_name, 's1', store, 'survive')
    survivor.wait_line('READY')
    owner = start(workers, etcd, cluster_name, 'owner', store, 'op')
    owner.wait_line('OPEN')
    owner.send('finish')
    owner.wait_line('FINISHED')
    [claim] = obs.list_claims('owner')
    assert claim.state == 'finishing'
    # the member record vanishes (an operator) -- the lease lives on
    obs.client.delete(obs.layout.member('owner'))
    time.sleep(TTL + 1)      # a recovery would have run by now
    assert not handled(store)
    owner.send('close')
    assert owner.wait_line('CLOSED') == 'CLOSED False'


def test_a_live_member_whose_record_is_deleted_keeps_its_claims_and_puts_it_back(  # noqa: E501
        etcd, cluster_name, workers, tmp_path, obs):
    store = str(tmp_path)
    survivor = start(workers, etcd, cluster_name, 's1', store, 'survive')
    survivor.wait_line('READY')
    holder = start(workers, etcd, cluster_name, 'alive', store, 'hold', 5)
    holder.wait_line('HELD')
    key = obs.layout.member('alive')
    before = obs.client.get(key)
    assert obs.client.delete(key) == 1
    deleted = time.monotonic()
    wait_for(lambda: obs.client.get(key) is not None, 5,
             'the member to put its record back')
    back = time.monotonic() - deleted
    again = obs.client.get(key)
    assert again.lease == before.lease          # same session, same lease
    assert back <= 0.5 + 0.5                    # renew_interval + slack
    # and over two lease lifetimes, none of its claims is recovered
    time.sleep(2 * TTL)
    assert not handled(store)
    assert len(obs.list_claims('alive')) == 5
    assert all(c.state == 'active' for c in obs.list_claims('alive'))


def test_a_claim_no_leader_can_recover_is_kept_and_recovered_by_one_that_can(
        etcd, cluster_name, workers, tmp_path, obs):
    store = str(tmp_path)
    old = start(workers, etcd, cluster_name, 'old', store, 'survive')
    old.wait_line('READY')
    wait_for(lambda: (obs.get_leader() or {}).get('node') == 'old', 5,
             'old to lead')
    owner = start(workers, etcd, cluster_name, 'owner', store, 'op',
                  '--type', 'volume')
    claim_id = owner.wait_line('OPEN').split()[2]
    owner.proc.kill()

    def marked():
        claims = obs.list_claims('owner')
        return claims and claims[0].state == 'failed' and claims[0]
    claim = wait_for(marked, TTL + 10, 'the claim to be marked unhandled')
    assert claim.claim_id == claim_id
    assert 'no recovery handler' in claim.last_error
    assert claim.failed_on == 'old'
    from hacluster import status as _status
    snap = _status.collect(obs.client, cluster_name)
    shown = [c for c in snap['claims'] if c['claim_id'] == claim_id]
    assert shown and shown[0]['state'] == 'failed'
    assert any('stuck' in w['text'] and 'no recovery handler' in w['text']
               for w in snap['warnings'])
    # a node that can recover volumes takes over the lead
    new = start(workers, etcd, cluster_name, 'new', store, 'survive',
                '--types', 'share,volume')
    new.wait_line('READY')
    old.proc.terminate()
    wait_for(lambda: not obs.list_claims('owner'), 15,
             'the new leader to recover the kept claim')
    rows = handled(store)
    assert [(r[0], r[3]) for r in rows] == [(claim_id, 'new')]


@pytest.mark.parametrize('mode', ['exit', 'watchdog'])
def test_a_frozen_owner_fences_itself_when_it_resumes(
        etcd, cluster_name, workers, tmp_path, obs, mode):
    store = str(tmp_path)
    survivor = start(workers, etcd, cluster_name, 's1', store, 'survive')
    survivor.wait_line('READY')
    args = ['--fencing', mode]
    dog = tmp_path / 'watchdog'
    if mode == 'watchdog':
        # a stand-in device file (this machine offers no watchdog device)
        os.environ['HACLUSTER_TEST_WATCHDOG'] = str(dog)
    try:
        owner = start(workers, etcd, cluster_name, 'frozen', store, 'op',
                      *args)
        owner.wait_line('OPEN')
    finally:
        os.environ.pop('HACLUSTER_TEST_WATCHDOG', None)
    if mode == 'watchdog':
        status = json.loads(dog.read_text())
        assert status['pid'] == owner.proc.pid and status['timeout'] == 1
        assert not status['disarmed']
    os.kill(owner.proc.pid, signal.SIGSTOP)
    if mode == 'watchdog':
        stopped = time.time()
        # no more pets while frozen: the hardware would reset the machine
        time.sleep(1.5)
        assert json.loads(dog.read_text())['at'] < stopped
    wait_for(lambda: handled(store), TTL + 10, 'the recovery')
    os.kill(owner.proc.pid, signal.SIGCONT)
    # at once when it runs again: past its renew deadline with a claim
    assert owner.proc.wait(10) == _fencing.EXIT_STATUS
    assert 'FENCED' in owner.stderr_tail(100000)
    assert len(handled(store)) == 1


def test_a_write_after_the_drivers_cluster_lock_is_lost_is_refused(
        etcd, cluster_name):
    from hacluster import exceptions
    from hacluster.manila import claims as _claims
    from hacluster.manila import driver as _driver

    class DB:
        writes = []

        def share_instance_update(self, ctx, i, values):
            self.writes.append(values)

    drv = _driver.HAShareDriverMixin()
    coord = hacluster.get_coordinator(etcd.url, cluster_name, 'n1',
                                      lease_ttl=3, renew_deadline=2,
                                      renew_interval=0.5)
    with coord:
        drv.ha_attach(coord, None, recover=False)
        db = _claims.FencedDB(DB())
        with drv.ha_lock('pool-a') as lock:
            assert lock.name == 'manila-pool-a' and lock.held
            db.share_instance_update(None, 'x', {'size': 1})
            coord.session.expire_now('test: session lost mid-operation')
            wait_for(lambda: lock.lost, 5, 'the lock to be reported lost')
            with pytest.raises(exceptions.Fenced, match='manila-pool-a'):
                db.share_instance_update(None, 'x', {'size': 2})
        # out of the block the thread writes freely again
        db.share_instance_update(None, 'x', {'size': 3})
    assert [w['size'] for w in DB.writes] == [1, 3]
