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

"""Self-fencing without servers: timings, the fence decision, the watchdog
stand-in device, and the fenced database writes of manila's claims."""

import json
import threading

import pytest

from hacluster import exceptions
from hacluster import fencing
from hacluster import opts


class FakeSession:
    lease_ttl = 10
    renew_deadline = 7.0
    renew_interval = 2.0

    def __init__(self):
        self.ok = True

    def valid(self, epoch=None):
        return self.ok


class Exited(Exception):
    pass


def exiter(calls):
    def _exit(status):
        calls.append(status)
        raise Exited(status)
    return _exit


@pytest.mark.parametrize('mode,timeout,message', [
    ('reboot', None, "fencing must be one of none, exit, watchdog, got "
                     "'reboot'"),
    ('watchdog', 4, 'watchdog_timeout (4) must be at most lease_ttl - '
                    'renew_deadline (10 - 7.0)'),
    ('watchdog', 0, 'watchdog_timeout must be a whole number of seconds'),
    ('watchdog', 2.5, 'watchdog_timeout must be a whole number of seconds'),
])
def test_bad_fencing_settings_are_refused_naming_the_setting(mode, timeout,
                                                             message):
    with pytest.raises(exceptions.ConfigurationError) as e:
        fencing.validate(mode, 10, 7.0, timeout)
    assert message in str(e.value)


def test_the_default_watchdog_timeout_fits_inside_the_margin():
    assert fencing.validate('watchdog', 10, 7.0) == ('watchdog', 3)
    assert fencing.validate('watchdog', 3, 2.0) == ('watchdog', 1)
    assert fencing.validate('exit', 3, 2.0) == ('exit', None)


def test_a_session_lost_while_holding_work_exits_at_once():
    calls = []
    f = fencing.Fencer('exit', FakeSession(), lambda: '1 open claims',
                       exit=exiter(calls))
    with pytest.raises(Exited):
        f.session_lost(1, 0x42, 'no renewal for 7.1s')
    assert calls == [fencing.EXIT_STATUS]
    assert '1 open claims' in f.fenced[1]


def test_a_session_lost_holding_nothing_only_steps_down():
    calls = []
    f = fencing.Fencer('exit', FakeSession(), lambda: '', exit=exiter(calls))
    f.session_lost(1, 0x42, 'gone')
    assert calls == [] and f.fenced is None


def test_mode_none_never_exits_and_its_fence_points_let_the_claim_decide():
    calls = []
    session = FakeSession()
    f = fencing.Fencer('none', session, lambda: '2 cluster locks',
                       exit=exiter(calls))
    f.session_lost(1, 0x42, 'gone')
    session.ok = False
    f.check()
    assert calls == []


def test_a_fence_point_past_the_deadline_exits_only_when_holding():
    calls = []
    session = FakeSession()
    held = ['']
    f = fencing.Fencer('exit', session, lambda: held[0], exit=exiter(calls))
    f.check()                       # valid session
    session.ok = False
    f.check()                       # nothing held
    held[0] = '1 open claims'
    with pytest.raises(Exited):
        f.check()
    assert calls == [fencing.EXIT_STATUS]


def test_the_watchdog_is_petted_while_valid_and_not_once_past_the_deadline(
        tmp_path):
    session = FakeSession()
    session.renew_interval = 0.05
    session.lease_ttl, session.renew_deadline = 3, 2.0
    device = tmp_path / 'watchdog'
    held = ['1 open claims']
    f = fencing.Fencer('watchdog', session, lambda: held[0],
                       watchdog_device=str(device))
    f.start()
    try:
        state = json.loads(device.read_text())
        assert state['timeout'] == 1 and not state['disarmed']
        first = state['pets']
        _wait(lambda: json.loads(device.read_text())['pets'] > first + 2)
        session.ok = False          # past the deadline, holding a claim
        stopped = json.loads(device.read_text())['pets']
        threading.Event().wait(0.5)
        assert json.loads(device.read_text())['pets'] <= stopped + 1
        held[0] = ''                # holding nothing: nothing to reset for
        _wait(lambda: json.loads(device.read_text())['pets'] > stopped + 2)
    finally:
        f.stop()
    assert json.loads(device.read_text())['disarmed'] is True


def test_one_process_shares_one_watchdog_between_its_coordinators(tmp_path):
    path = str(tmp_path / 'wd')
    a = fencing.Watchdog.get(path, 2)
    b = fencing.Watchdog.get(path, 2)
    assert a is b and a.users == 2
    with pytest.raises(exceptions.ConfigurationError, match='armed with'):
        fencing.Watchdog.get(path, 1)
    a.release()
    assert not a.closed
    b.release()
    assert a.closed and json.loads(open(path).read())['disarmed']


def test_an_unusable_watchdog_device_is_named():
    with pytest.raises(exceptions.ConfigurationError) as e:
        fencing.Watchdog('/nonexistent/dir/watchdog', 3)
    assert 'watchdog_device /nonexistent/dir/watchdog cannot be opened' in \
        str(e.value)


def test_the_fencing_option_defaults_to_exit_and_is_validated():
    from oslo_config import cfg
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf([])
    assert conf.hacluster.fencing == 'exit'
    conf.set_override('fencing', 'watchdog', group='hacluster')
    conf.set_override('watchdog_timeout', 9, group='hacluster')
    conf.set_override('backend_url', 'etcd3+http://127.0.0.1:1',
                      group='coordination')
    with pytest.raises(exceptions.ConfigurationError) as e:
        opts.coordinator_from_conf(conf, cluster='c1')
    assert '[hacluster] watchdog_timeout (9)' in str(e.value)


def _wait(predicate, timeout=5.0):
    import time
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.02)


# -- manila's fenced database writes ----------------------------------------

class _Claim:
    def __init__(self, recovered=False):
        self.recovered_elsewhere = recovered
        self.finished = False
        self.claim_id = 'c1'
        self.late = None

    def finish(self):
        if self.recovered_elsewhere:
            raise exceptions.ClaimRecovered('recovered by node2')
        self.finished = True

    def record_late(self, current=None):
        self.late = {'message': 'late'}
        return self.late

    def hand_over(self, reason):
        self.handed_over = reason


class _Coord:
    def __init__(self):
        self.fences = 0

    def fence_point(self):
        self.fences += 1


class _DB:
    def __init__(self):
        self.calls = []

    def share_instance_get(self, ctx, i):
        return {'id': i}

    def share_instance_update(self, ctx, i, values):
        self.calls.append(('update', i, values))
        return values

    def share_update(self, ctx, i, values):
        self.calls.append(('share', i, values))

    def export_locations_update(self, ctx, i, locations):
        self.calls.append(('exports', i, locations))


def _fenced(monkeypatch, cas_result=True):
    from hacluster.manila import claims
    cas = []

    def fake_cas(ctx, kind, row_id, expected, values):
        cas.append((kind, row_id, expected, values))
        return cas_result
    monkeypatch.setattr(claims, 'cas_status', fake_cas)
    db = _DB()
    return claims, claims.FencedDB(db), db, cas


def test_writes_outside_claimed_operations_pass_through(monkeypatch):
    claims, fdb, db, cas = _fenced(monkeypatch)
    assert fdb.share_instance_get(None, 'a') == {'id': 'a'}
    fdb.share_instance_update(None, 'a', {'status': 'available'})
    assert db.calls == [('update', 'a', {'status': 'available'})]
    assert cas == []


def test_a_final_write_finishes_the_claim_and_is_conditional(monkeypatch):
    claims, fdb, db, cas = _fenced(monkeypatch)
    coord, claim = _Coord(), _Claim()
    with claims.operation(coord, claim, 'share_instance', 'a', 'create'):
        fdb.export_locations_update(None, 'a', ['x'])     # not final
        assert not claim.finished
        fdb.share_instance_update(None, 'a', {'status': 'available'})
    assert claim.finished
    assert cas == [('share_instance', 'a', ['creating'],
                    {'status': 'available'})]
    assert [c[0] for c in db.calls] == ['exports', 'update']
    assert coord.fences == 2


def test_a_final_write_after_a_recovery_that_moved_the_row_is_not_made(
        monkeypatch):
    claims, fdb, db, cas = _fenced(monkeypatch, cas_result=False)
    claim = _Claim(recovered=True)
    with claims.operation(_Coord(), claim, 'share_instance', 'a', 'create'):
        with pytest.raises(exceptions.ClaimRecovered):
            fdb.export_locations_update(None, 'a', ['x'])
        assert fdb.share_instance_update(
            None, 'a', {'status': 'available'}) is None
    assert db.calls == [] and claim.late == {'message': 'late'}


def test_a_recovery_that_had_not_moved_the_row_yet_loses_to_the_owner(
        monkeypatch):
    # the claim was taken, but its handler had not run: the database's
    # comparison lets the owner's result stand (the handler then finds
    # the row moved and does nothing)
    claims, fdb, db, cas = _fenced(monkeypatch, cas_result=True)
    claim = _Claim(recovered=True)
    with claims.operation(_Coord(), claim, 'share_instance', 'a', 'create'):
        fdb.share_instance_update(None, 'a', {'status': 'available'})
    assert db.calls == [('update', 'a', {'status': 'available'})]


def test_every_status_write_to_the_claimed_row_is_conditional(monkeypatch):
    # a transitional status (creating_from_snapshot) after a recovery must
    # not overwrite the recovery's error either
    claims, fdb, db, cas = _fenced(monkeypatch, cas_result=False)
    claim = _Claim()
    with claims.operation(_Coord(), claim, 'share_instance', 'a', 'create'):
        assert fdb.share_instance_update(
            None, 'a', {'status': 'creating_from_snapshot'}) is None
    assert db.calls == [] and not claim.finished


def test_a_final_write_etcd_cannot_confirm_is_refused_and_handed_over(
        monkeypatch):
    claims, fdb, db, cas = _fenced(monkeypatch)

    class Unconfirmed(_Claim):
        def finish(self):
            raise exceptions.BackendUnavailable('no etcd endpoint answered')
    claim = Unconfirmed()
    with claims.operation(_Coord(), claim, 'share', 's1', 'manage'):
        # a row without a conditional write: nothing could stop it from
        # landing over a recovery, so it is not made
        with pytest.raises(exceptions.Fenced, match='share_update not made'):
            fdb.share_update(None, 's1', {'status': 'available'})
    assert db.calls == [] and 'did not confirm' in claim.handed_over


def test_a_final_write_the_database_refuses_is_recorded_late(monkeypatch):
    claims, fdb, db, cas = _fenced(monkeypatch, cas_result=False)
    claim = _Claim()
    with claims.operation(_Coord(), claim, 'share_instance', 'a', 'create'):
        assert fdb.share_instance_update(
            None, 'a', {'status': 'available'}) is None
    assert db.calls == [] and claim.late == {'message': 'late'}


def test_no_write_after_a_cluster_lock_of_this_thread_is_lost(monkeypatch):
    claims, fdb, db, cas = _fenced(monkeypatch)

    class Lock:
        name = 'manila-x'
        lost = False
        lost_reason = None
    lock = Lock()
    claims.track_lock(lock)
    try:
        fdb.share_instance_update(None, 'a', {'size': 2})
        lock.lost, lock.lost_reason = True, 'session lost'
        with pytest.raises(exceptions.Fenced, match="'manila-x' was lost"):
            fdb.share_instance_update(None, 'a', {'size': 3})
    finally:
        claims.untrack_lock(lock)
    fdb.share_instance_update(None, 'a', {'size': 4})
    assert [c[2]['size'] for c in db.calls] == [2, 4]


def test_reads_are_not_mistaken_for_writes():
    from hacluster.manila import claims
    for name in ('share_instance_get', 'share_get_all_by_host',
                 'share_instance_get_all_by_share_group_id',
                 'share_snapshot_get', 'backend_info_get'):
        assert not claims.is_write(name), name
    for name in ('share_instance_update', 'export_locations_update',
                 'share_instance_delete', 'message_create',
                 'share_metadata_update', 'backend_info_update'):
        assert claims.is_write(name), name
