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

"""The manila glue, checked against manila 23.0.1's own classes (no
processes; the multi-node behaviour is in tests/functional/test_manila.py).
"""

import inspect
import threading
import time

import pytest

from hacluster.periodic import runner as _runner

# Importing manila's share manager imports oslo.service modules that pin
# the process to oslo.service's default backend (eventlet) if none was
# chosen -- and this module is imported at collection, before every other
# test. Choose first, as manila-share itself does (threading, unpatched).
_runner._select_backend()
share_manager = pytest.importorskip('manila.share.manager')

from hacluster import coordinator as _coordinator  # noqa: E402
from hacluster import exceptions  # noqa: E402
from hacluster.manila import driver as ha_driver  # noqa: E402
from hacluster.manila import locks as ha_locks  # noqa: E402
from hacluster.manila import manager as ha_manager  # noqa: E402
from hacluster.periodic import task as _task  # noqa: E402


def test_every_manila_periodic_task_has_a_chosen_mode():
    """A manila upgrade that adds or renames a periodic task must be
    looked at (the default, leader only, is safe but maybe not best)."""
    names = {name for name, _ in share_manager.ShareManager._periodic_tasks}
    names.add('update_share_usage_size')       # disabled by default
    assert names == set(ha_manager.TASK_MODES)


def test_fanout_tasks_have_a_lister_and_a_handler():
    for name, mode in ha_manager.TASK_MODES.items():
        if mode == _task.FANOUT:
            assert callable(getattr(ha_manager.HAShareManager,
                                    '_ha_list_' + name))
            assert callable(getattr(ha_manager.HAShareManager,
                                    '_ha_handle_' + name))


@pytest.mark.parametrize('method', sorted(ha_driver.CLAIMED_OPERATIONS))
def test_claimed_rpc_methods_exist_with_the_named_argument(method):
    """oslo.messaging calls endpoint methods by name with keyword
    arguments: each wrapped method must be manila's, with the argument that
    names the resource (and those recorded in the claim)."""
    base = share_manager.ShareManager.__dict__[method]
    assert ha_manager.HAShareManager.__dict__[method] is not base
    params = inspect.signature(base).parameters
    spec = ha_driver.CLAIMED_OPERATIONS[method]
    for arg in (spec[2],) + tuple(spec[3] if len(spec) > 3 else ()):
        assert arg in params, (method, arg)


def _wrapped_delete(monkeypatch, seen):
    """HAShareManager's claim wrapper around a stand-in for manila's
    delete_share_instance (same signature) that records the claims open
    while it runs."""
    def delete_share_instance(self, context, share_instance_id, force=False,
                              deferred_delete=False):
        seen.append([dict(c) for c in self.ha_coordinator.list_claims()]
                    if self.ha_coordinator.running else 'stopped')
        return 'deleted'
    monkeypatch.setattr(share_manager.ShareManager, 'delete_share_instance',
                        delete_share_instance)
    return ha_manager._claimed('delete_share_instance')


def test_an_rpc_operation_runs_under_a_claim(monkeypatch, local_coord):
    seen = []
    wrapper = _wrapped_delete(monkeypatch, seen)
    mgr = ha_manager.HAShareManager.__new__(ha_manager.HAShareManager)
    mgr.ha_coordinator = local_coord
    # as oslo.messaging calls it: context positional, the rest by keyword
    assert wrapper(mgr, 'ctx', share_instance_id='si-1', force=True) == \
        'deleted'
    [claims] = seen
    assert [(c['resource_type'], c['resource_id'], c['operation'],
             c['data']) for c in claims] == [
        ('share_instance', 'si-1', 'delete', {'force': True})]
    assert local_coord.list_claims() == []          # closed afterwards


def test_an_rpc_operation_runs_even_if_its_claim_cannot_be_written(
        monkeypatch, local_coord, caplog):
    """The message is acknowledged already: a claim that cannot be
    recorded must not strand the share in its transitional status."""
    seen = []
    wrapper = _wrapped_delete(monkeypatch, seen)
    mgr = ha_manager.HAShareManager.__new__(ha_manager.HAShareManager)
    mgr.ha_coordinator = local_coord
    local_coord.stop()
    assert wrapper(mgr, 'ctx', share_instance_id='si-2') == 'deleted'
    assert seen == ['stopped']
    assert 'without crash protection' in caplog.text


class _Claim(dict):
    __getattr__ = dict.__getitem__


class _DB:
    """manila's db API, for the two calls the recovery defaults make."""

    def __init__(self, **instances):
        self.instances = {k: dict(v, id=k) for k, v in instances.items()}
        self.updates = []

    def share_instance_get(self, ctx, instance_id, with_share_data=False):
        from manila import exception
        if instance_id not in self.instances:
            raise exception.ShareInstanceNotFound(
                share_instance_id=instance_id)
        return self.instances[instance_id]

    def share_instance_update(self, ctx, instance_id, values):
        self.updates.append((instance_id, values))
        self.instances[instance_id].update(values)


class _Coord:
    single_node = True

    def __init__(self):
        self.handlers = {}

    def register_recovery(self, resource_type, handler):
        self.handlers[resource_type] = handler


class _Driver(ha_driver.HAShareDriverMixin):
    def ha_cas_status(self, ctx, kind, row_id, from_status, values):
        # the conditional UPDATE, on the stand-in database
        if self._ha_db.instances[row_id]['status'] not in from_status:
            return False
        self._ha_db.share_instance_update(ctx, row_id, values)
        return True


def _claim(resource_id, operation='create', resource_type='share_instance'):
    return _Claim(resource_type=resource_type, resource_id=resource_id,
                  operation=operation, node='node9')


def test_recovery_moves_only_what_is_still_in_flight():
    db = _DB(a={'status': 'creating'}, b={'status': 'available'})
    coord = _Coord()
    drv = _Driver()
    drv.ha_attach(coord, db)
    assert set(coord.handlers) == set(ha_driver.RESOURCE_TYPES)
    handler = coord.handlers['share_instance']
    handler(_claim('a'))
    handler(_claim('b'))                 # finished before the node died
    handler(_claim('gone'))              # deleted since: nothing to do
    handler(_claim('a'))                 # a second run changes nothing
    assert db.updates == [('a', {'status': 'error'})]
    # an operation nobody here can recover is kept (the handler raises,
    # so the claim is retried, by any leader), never taken as recovered
    with pytest.raises(exceptions.NoRecoveryHandler,
                       match='ha_recover_share_instance_frobnicate'):
        handler(_claim('b', operation='frobnicate'))
    assert db.updates == [('a', {'status': 'error'})]


def test_a_recovery_loses_to_a_late_owner_that_moved_the_row_first():
    db = _DB(a={'status': 'creating'})
    drv = _Driver()
    drv.ha_attach(_Coord(), db)
    handler = drv.ha_recover
    real = drv.ha_cas_status

    def racing(ctx, kind, row_id, from_status, values):
        db.instances[row_id]['status'] = 'available'   # the owner, first
        return real(ctx, kind, row_id, from_status, values)
    drv.ha_cas_status = racing
    handler(_claim('a'))
    assert db.instances['a']['status'] == 'available' and not db.updates


def test_every_claimed_operation_has_a_recovery():
    for spec in ha_driver.CLAIMED_OPERATIONS.values():
        resource_type, operation = spec[:2]
        assert callable(getattr(ha_driver.HAShareDriverMixin,
                                'ha_recover_%s_%s' % (resource_type,
                                                      operation)))


@pytest.fixture
def local_coord(tmp_path):
    coord = _coordinator.get_coordinator('file://%s' % tmp_path, 'c1',
                                         node='n1').start()
    yield coord
    coord.stop()


def test_synchronized_stand_in_excludes_threads(local_coord):
    synchronized = ha_locks.make_synchronized(local_coord)
    inside = []
    overlaps = []

    @synchronized('share_manager_subnet1', external=True)
    def critical():
        inside.append(1)
        if len(inside) > 1:
            overlaps.append(True)
        time.sleep(0.02)
        inside.pop()

    threads = [threading.Thread(target=critical) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not overlaps


def test_tooz_stand_in_takes_manila_prefixed_locks(local_coord):
    lc = ha_locks.LockCoordinator(local_coord)
    first = lc.get_lock(b'locked-share-replica-operation-for-share-1')
    assert first.name == 'manila-locked-share-replica-operation-for-share-1'
    assert first.acquire(blocking=True)
    second = lc.get_lock('locked-share-replica-operation-for-share-1')
    assert second.acquire(blocking=False) is False
    first.release()
    assert second.acquire(blocking=False)
    second.release()


def test_lock_coordinator_stop_runs_the_managers_stop_once():
    calls = []
    lc = ha_locks.LockCoordinator(object(), on_stop=lambda: calls.append(1))
    lc.start()
    lc.stop()
    lc.stop()
    assert calls == [1]


def test_manilas_own_coordinator_is_deferred_until_the_node_joined():
    """ShareManager's constructor (in the cotyledon master) starts manila's
    lock coordinator: under the HA manager that start must do nothing, and
    a lock asked for before the node joined must fail, not go local."""
    from manila import coordination

    from hacluster import exceptions

    saved = coordination.LOCK_COORDINATOR
    try:
        original = ha_locks.defer_manilas_coordinator()
        assert original is saved
        pending = coordination.LOCK_COORDINATOR
        pending.start()                       # what manila's API() does
        assert pending.started
        with pytest.raises(exceptions.NotStarted):
            coordination.Lock('locked-share-network-operation-1')
    finally:
        coordination.LOCK_COORDINATOR = saved


def test_synchronized_stand_in_honours_blocking_false(local_coord):
    """oslo's synchronized(..., blocking=False) raises when the lock is
    held; drivers rely on that, so the cluster-lock stand-in does too."""
    from oslo_concurrency import lockutils

    synchronized = ha_locks.make_synchronized(local_coord)
    held = local_coord.get_lock('manila-busy')
    assert held.acquire(True)
    try:
        @synchronized('busy', external=True, blocking=False)
        def work():
            return 'ran'
        with pytest.raises(lockutils.AcquireLockFailedException):
            work()
    finally:
        held.release()
    assert work() == 'ran'
