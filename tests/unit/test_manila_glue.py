"""The manila glue, checked against manila 23.0.1's own classes (no
processes; the multi-node behaviour is in tests/functional/test_manila.py).
"""

import inspect
import threading
import time

import pytest

share_manager = pytest.importorskip('manila.share.manager')

from hacluster import coordinator as _coordinator  # noqa: E402
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
def test_claimed_rpc_methods_keep_manilas_signature(method):
    """oslo.messaging calls endpoint methods with keyword arguments: the
    wrapper must accept exactly what manila's method accepts, and the
    argument naming the resource must exist."""
    base = getattr(share_manager.ShareManager, method)
    ours = getattr(ha_manager.HAShareManager, method)
    assert ours is not base
    assert inspect.signature(ours) == inspect.signature(base)
    arg = ha_driver.CLAIMED_OPERATIONS[method][2]
    assert arg in inspect.signature(base).parameters


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
            raise exception.ShareInstanceNotFound(share_instance_id=instance_id)
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
    pass


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
    # an operation nobody handles is logged and left alone, not an error
    handler(_claim('b', operation='frobnicate'))
    assert db.updates == [('a', {'status': 'error'})]


def test_every_claimed_operation_has_a_recovery():
    for resource_type, operation, _ in ha_driver.CLAIMED_OPERATIONS.values():
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
