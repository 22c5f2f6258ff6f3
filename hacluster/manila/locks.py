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

"""Manila's locks, made cluster locks.

manila-share takes two kinds of lock, both looked up when the locked code
runs (not at import), so swapping the objects they come from swaps every
lock the share manager takes:

* ``manila.utils.synchronized(name, external=...)`` -- oslo.concurrency
  file locks on this host (``share_manager_<subnet>``, the access-rule
  locks ``locked_access_rules_operation_by_share_instance_<id>``, ...);
* ``manila.coordination.LOCK_COORDINATOR`` -- tooz locks behind
  ``coordination.synchronized`` (the replica and share-network operation
  locks).

:func:`install` replaces both with locks of the node's coordinator, under
manila's own prefix ``manila-`` so a lock has the same name on every node;
the returned function puts manila's originals back.

Decorators applied at import time captured manila's file lock already;
:data:`IMPORT_TIME_LOCKS` lists those of the code manila-share runs that
guard state shared by all nodes (IP allocation of the standalone network
plugin, the generic driver's Neutron objects), and :func:`install` wraps
them again with cluster locks of the same name. The import-time lock on
this host's own state (plugging an interface into the local host) stays
local; call-time locks all become cluster locks, host-local ones included
(e.g. ``linux_interface_<device>``): extra serialization, never less.
"""

import functools
import logging

LOG = logging.getLogger(__name__)

PREFIX = 'manila-'


def _release(lock, what):
    from hacluster.manila import claims as _claims
    _claims.untrack_lock(lock)
    try:
        if not lock.release():
            # The critical section ran (partly) unprotected; its effects
            # cannot be undone here, but the operator must hear of it.
            LOG.error('hacluster: cluster lock %r was lost while %s ran (%s)',
                      lock.name, what, lock.lost_reason)
    except Exception:
        LOG.exception('hacluster: releasing cluster lock %r', lock.name)


def _track(lock):
    # a write made after this lock is lost is refused (claims.FencedDB)
    from hacluster.manila import claims as _claims
    _claims.track_lock(lock)


class TrackedLock:
    """A cluster lock as a context manager whose loss fences the writes of
    the thread holding it (:class:`hacluster.manila.claims.FencedDB`): what
    :meth:`HAShareDriverMixin.ha_lock` returns when clustered."""

    def __init__(self, lock):
        self.lock = lock
        self.name = lock.name

    def __enter__(self):
        self.lock.__enter__()
        _track(self.lock)
        return self.lock

    def __exit__(self, *exc):
        _release(self.lock, 'a ha_lock block')
        return False


def make_synchronized(coordinator, prefix=PREFIX):
    """A drop-in for ``manila.utils.synchronized`` (oslo.concurrency's
    ``synchronized_with_prefix('manila-')``) taking cluster locks.

    The ``external``, ``lock_path``, semaphore and fairness arguments are
    accepted and ignored: a cluster lock excludes every thread of every
    node (and is FIFO), which is what every variant promises locally.
    ``blocking=False`` raises oslo's ``AcquireLockFailedException`` when the
    lock is held, as oslo does.
    """
    def synchronized(name, external=False, lock_path=None, semaphores=None,
                     delay=0.01, fair=False, lock_file_prefix=None,
                     blocking=True, **_ignored):
        lock_name = prefix + name

        def decorator(func):
            @functools.wraps(func)
            def inner(*args, **kwargs):
                lock = coordinator.get_lock(lock_name)
                if not lock.acquire(True if blocking else False):
                    from oslo_concurrency import lockutils
                    raise lockutils.AcquireLockFailedException(lock_name)
                _track(lock)
                try:
                    return func(*args, **kwargs)
                finally:
                    _release(lock, func.__qualname__)
            return inner
        return decorator
    return synchronized


class ToozLock:
    """One cluster lock with the interface manila's ``coordination.Lock``
    expects of a tooz lock: ``acquire(blocking=...)``, ``release()``."""

    def __init__(self, lock):
        self._lock = lock
        self.name = lock.name

    def acquire(self, blocking=True, shared=False, timeout=None):
        if timeout is not None and blocking is True:
            blocking = timeout
        ok = self._lock.acquire(blocking)
        if ok:
            _track(self._lock)
        return ok

    def release(self):
        _release(self._lock, 'a coordination.synchronized block')
        return True

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


class PendingLockCoordinator:
    """Stands in for ``manila.coordination.LOCK_COORDINATOR`` from the HA
    manager's construction (in the cotyledon master) until the worker has
    joined the cluster.

    manila 23's ``share.api.API()``, built by the ShareManager constructor,
    starts manila's own tooz coordinator on ``[coordination] backend_url``:
    in the master, before the fork, with a heartbeat thread the worker does
    not inherit -- and, with etcd unreachable, crashing the service before
    it could wait for etcd. This stand-in makes that ``start()`` a no-op;
    a lock asked of it (nothing should, before the worker joined) raises.
    """

    started = True

    def start(self):
        pass

    def stop(self):
        pass

    def get_lock(self, name):
        from hacluster import exceptions
        raise exceptions.NotStarted(
            'manila lock %r asked for before this node joined its cluster'
            % (name,))


class LockCoordinator:
    """Stands in for ``manila.coordination.LOCK_COORDINATOR``.

    manila's ``Service`` calls ``start()`` after ``init_host`` and ``stop()``
    when the service stops: ``start`` does nothing (the HA manager started
    the coordinator already), ``stop`` calls ``on_stop`` -- the manager's
    clean leave of the cluster.
    """

    def __init__(self, coordinator, on_stop=None, prefix=PREFIX):
        self._coord = coordinator
        self._on_stop = on_stop
        self.prefix = prefix
        self.started = True

    def start(self):
        pass

    def stop(self):
        on_stop, self._on_stop = self._on_stop, None
        if on_stop is not None:
            on_stop()

    def get_lock(self, name):
        if isinstance(name, bytes):
            name = name.decode()
        return ToozLock(self._coord.get_lock(self.prefix + name))


#: ``(module, class, method, lock name)``: methods manila decorates with
#: ``utils.synchronized(name, external=True)`` at import time whose lock
#: guards state every node shares.
IMPORT_TIME_LOCKS = (
    ('manila.network.standalone_network_plugin', 'StandaloneNetworkPlugin',
     'allocate_network', 'allocate_network_for_standalone_network_plugin'),
    ('manila.share.drivers.service_instance', 'ServiceInstanceManager',
     '_get_or_create_security_group',
     'service_instance_get_or_create_security_group'),
    ('manila.share.drivers.service_instance', 'ServiceInstanceManager',
     '_get_key', 'service_instance_get_key'),
    ('manila.share.drivers.service_instance', 'NeutronNetworkHelper',
     'teardown_network',
     'service_instance_setup_and_teardown_network_for_instance'),
    ('manila.share.drivers.service_instance', 'NeutronNetworkHelper',
     'setup_network',
     'service_instance_setup_and_teardown_network_for_instance'),
    ('manila.share.drivers.service_instance', 'NeutronNetworkHelper',
     '_get_service_port', 'service_instance_get_service_port'),
    ('manila.share.drivers.service_instance', 'NeutronNetworkHelper',
     '_add_fixed_ips_to_service_port',
     'service_instance_add_fixed_ips_to_service_port'),
    ('manila.share.drivers.service_instance', 'NeutronNetworkHelper',
     '_get_private_router', 'service_instance_get_private_router'),
    ('manila.share.drivers.service_instance', 'NeutronNetworkHelper',
     '_get_service_subnet', 'service_instance_get_service_subnet'),
    ('manila.share.drivers.service_instance', 'NeutronNetworkHelper',
     '_get_all_service_subnets', 'service_instance_get_all_service_subnets'),
)


def _rewrap_import_time_locks(synchronized):
    """Re-decorate the methods of IMPORT_TIME_LOCKS with ``synchronized``;
    returns ``[(class, name, original)]`` to undo it."""
    import importlib
    undo = []
    for module_name, class_name, method, lock_name in IMPORT_TIME_LOCKS:
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            LOG.debug('hacluster: %s.%s not available (%s)', module_name,
                      class_name, exc)
            continue
        original = cls.__dict__.get(method)
        inner = getattr(original, '__wrapped__', None)
        if inner is None:
            # another manila: say so rather than guess
            LOG.warning('hacluster: %s.%s.%s is not a locked method here; its '
                        'lock %r stays node-local', module_name, class_name,
                        method, lock_name)
            continue
        setattr(cls, method, synchronized(lock_name, external=True)(inner))
        undo.append((cls, method, original))
    return undo


def defer_manilas_coordinator():
    """Put :class:`PendingLockCoordinator` in place of manila's lock
    coordinator (call before building a ShareManager). Returns manila's."""
    from manila import coordination
    old = coordination.LOCK_COORDINATOR
    coordination.LOCK_COORDINATOR = PendingLockCoordinator()
    return old


def install(coordinator, on_stop=None):
    """Point manila's lock factories (and the import-time locks of
    :data:`IMPORT_TIME_LOCKS`) at ``coordinator``. Returns a function that
    restores manila's own. Not thread-safe against locks being taken at the
    same moment: call before the RPC server starts."""
    from manila import coordination
    from manila import utils

    old_sync = utils.synchronized
    old_coord = coordination.LOCK_COORDINATOR
    synchronized = make_synchronized(coordinator)
    utils.synchronized = synchronized
    coordination.LOCK_COORDINATOR = LockCoordinator(coordinator,
                                                    on_stop=on_stop)
    undo = _rewrap_import_time_locks(synchronized)

    def restore():
        utils.synchronized = old_sync
        coordination.LOCK_COORDINATOR = old_coord
        for cls, method, original in undo:
            setattr(cls, method, original)
    return restore
