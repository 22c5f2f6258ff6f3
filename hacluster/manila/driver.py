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

"""The share-driver side of active-active manila.

A driver opts in by mixing this class in *before* manila's driver base::

    from hacluster.manila.driver import HAShareDriverMixin

    class MyDriver(HAShareDriverMixin, driver.ShareDriver):
        ...

and is then run by :class:`hacluster.manila.manager.HAShareManager`, which
refuses a clustered start with a driver that has not opted in: several
nodes calling one storage back end at once is only safe when the driver
says its back-end calls are (no node-local state the others need, locks
that are cluster locks, see :meth:`ha_lock`).

What the mixin adds:

* ``SUPPORTS_ACTIVE_ACTIVE = True`` (cinder's convention for the same
  promise);
* :meth:`ha_lock`: a cluster lock (etcd) when the manager runs clustered,
  manila's own external file lock otherwise -- use it where a driver would
  write ``utils.synchronized(name, external=True)``;
* :meth:`ha_claim`: a durable record of an operation in flight; the
  manager takes one around each share, snapshot and replica operation it
  receives over RPC (:data:`CLAIMED_OPERATIONS`);
* recovery: when a node dies inside such an operation, the cluster leader
  (or the node itself, restarting under the same name) calls
  :meth:`ha_recover`, which brings the resource to a final state. The
  defaults below only touch the database and only move a resource that is
  *still* in the operation's transitional status, so a recovery that runs
  twice, or after the operation did finish, changes nothing. Drivers that
  can do better (finish a half-made back-end object, remove leftovers)
  override the ``ha_recover_<type>_<operation>`` methods.

All methods are thread-safe; manila runs RPC handlers on many threads.
"""

import contextlib
import logging

LOG = logging.getLogger(__name__)

# (where the manager claims, and which resource types exist: their home
# is hacluster.manila.claims; the names stay importable from here)
from hacluster.manila.claims import CLAIMED_OPERATIONS  # noqa: E402,F401
from hacluster.manila.claims import RESOURCE_TYPES  # noqa: E402


class HAShareDriverMixin:
    """Mix into a manila ``ShareDriver`` subclass (before the base class)
    to run it active-active under :class:`HAShareManager`."""

    #: The driver's promise that several nodes may drive its back end at
    #: once. The HA manager refuses to start clustered without it.
    SUPPORTS_ACTIVE_ACTIVE = True

    #: Set by :meth:`ha_attach`: the node's coordinator, or None.
    ha_coordinator = None

    # -- wiring (called by the manager) ---------------------------------------

    def ha_attach(self, coordinator, db, rpcapi=None, recover=True):
        """Join the driver to ``coordinator`` (so :meth:`ha_lock` and
        :meth:`ha_claim` use it). Called by the manager in the worker
        process, after the coordinator started and before ``do_setup``.

        :param db: manila's database API (``manila.db``).
        :param rpcapi: manila's ``ShareAPI`` (to hand a dead node's delete
            to a live one); made lazily when None.
        :param recover: also register the recovery handlers now (see
            :meth:`ha_register_recovery`).
        """
        self.ha_coordinator = coordinator
        self._ha_db = db
        from hacluster.manila import recovery as _repair
        # (late-bound: a driver or a test may replace ha_cas_status)
        self._ha_repair = _repair.DatabaseRepair(
            db, lambda *a: self.ha_cas_status(*a), rpcapi)
        if recover:
            self.ha_register_recovery()

    def ha_register_recovery(self):
        """Register :meth:`ha_recover` for every resource type. This makes
        the node run for leader (the leader recovers), so the manager calls
        it once the driver is set up and the node serves: a node that
        cannot serve must not lead."""
        for resource_type in RESOURCE_TYPES:
            self.ha_coordinator.register_recovery(
                resource_type, _Recoverer(self, resource_type))

    # -- locks and claims -----------------------------------------------------

    def ha_lock(self, name, shared=False):
        """A lock named ``name`` for the whole backend, as a context manager.

        Clustered: a cluster lock (etcd; FIFO; lost if this node's session
        ends, which the lock reports). Otherwise manila's own external file
        lock (``manila-<name>`` in ``[oslo_concurrency] lock_path``), which
        is exactly what ``utils.synchronized(name, external=True)`` takes.
        Entering blocks until the lock is held.

        :raises BackendUnavailable: etcd could not be reached.
        """
        coordinator = self.ha_coordinator
        if coordinator is None or coordinator.single_node:
            from oslo_concurrency import lockutils
            return lockutils.lock(name, lock_file_prefix='manila-',
                                  external=True)
        from hacluster.manila import locks as _locks
        return _locks.TrackedLock(coordinator.get_lock('manila-' + name,
                                                       shared=shared))

    def ha_claim(self, resource_type, resource_id, operation, data=None):
        """A claim on in-flight work (context manager): while it is open, a
        death of this node makes the cluster call :meth:`ha_recover` for it.
        A no-op when no coordinator is attached.

        :raises ConfigurationError: bad arguments.
        :raises BackendUnavailable: the claim could not be written (then the
            operation must not start).
        """
        coordinator = self.ha_coordinator
        if coordinator is None:
            return contextlib.nullcontext()
        return coordinator.claim(resource_type, resource_id, operation, data)

    # -- recovery -------------------------------------------------------------

    def ha_recover(self, claim):
        """Bring the resource of a dead node's ``claim`` to a final state.

        Runs on the cluster leader (or on the node itself when it restarts
        under the same name), one claim at a time. Raising means "try again
        later" (with backoff); returning means done.
        """
        method = getattr(self, 'ha_recover_%s_%s' % (claim.resource_type,
                                                     claim.operation), None)
        if method is None:
            # Kept and retried (by any leader): a newer node, or a driver
            # that knows this operation, recovers it; deleting the claim
            # would leave the resource stuck with no trace.
            from hacluster import exceptions
            raise exceptions.NoRecoveryHandler(
                'driver %s has no ha_recover_%s_%s: cannot recover %s of %s '
                '%s (left by %s)' % (type(self).__name__,
                                     claim.resource_type, claim.operation,
                                     claim.operation, claim.resource_type,
                                     claim.resource_id, claim.node))
        from manila import context
        method(context.get_admin_context(), claim)

    def ha_cas_status(self, ctx, kind, row_id, from_status, values):
        """Set ``values`` on a ``kind`` row (``share_instance`` or
        ``snapshot_instance``) only if it is still in ``from_status``, in
        one conditional UPDATE; True if it was. The same write a late
        owner's final status write makes (hacluster.manila.claims), so of
        the two exactly one lands."""
        from hacluster.manila import claims as _claims
        return _claims.cas_status(ctx, kind, row_id, from_status, values)

    # The default repairs (hacluster.manila.recovery); a driver overrides
    # ha_recover_<type>_<operation> to do better (remove leftovers, finish
    # a half-made object), then calls super() for the database.

    def ha_recover_share_instance_create(self, ctx, claim):
        return self._ha_repair.share_instance_create(ctx, claim)

    def ha_recover_share_instance_delete(self, ctx, claim):
        return self._ha_repair.share_instance_delete(ctx, claim)

    def ha_recover_share_extend(self, ctx, claim):
        return self._ha_repair.share_extend(ctx, claim)

    def ha_recover_share_shrink(self, ctx, claim):
        return self._ha_repair.share_shrink(ctx, claim)

    def ha_recover_snapshot_create(self, ctx, claim):
        return self._ha_repair.snapshot_create(ctx, claim)

    def ha_recover_snapshot_delete(self, ctx, claim):
        return self._ha_repair.snapshot_delete(ctx, claim)

    def ha_recover_snapshot_revert(self, ctx, claim):
        return self._ha_repair.snapshot_revert(ctx, claim)

    def ha_recover_share_instance_create_replica(self, ctx, claim):
        return self._ha_repair.share_instance_create_replica(ctx, claim)

    def ha_recover_share_instance_delete_replica(self, ctx, claim):
        return self._ha_repair.share_instance_delete_replica(ctx, claim)


class DefaultRecovery(HAShareDriverMixin):
    """The mixin's database-only recovery on its own: what the HA manager
    uses for a driver without the mixin (allowed in single-node mode only),
    so a crash there is repaired at the next start all the same."""


class _Recoverer:
    """The recovery handler of one resource type: calls the driver's
    :meth:`HAShareDriverMixin.ha_recover`, and says which operations it
    recovers (the driver's ``ha_recover_<type>_<op>`` methods), which the
    member record advertises: a new kind of claim is only written once
    every member recovers it (:mod:`hacluster.protocol`)."""

    def __init__(self, driver, resource_type):
        self._driver = driver
        prefix = 'ha_recover_%s_' % resource_type
        self.operations = sorted(
            name[len(prefix):] for name in dir(driver)
            if name.startswith(prefix) and callable(getattr(driver, name)))

    def __call__(self, claim):
        return self._driver.ha_recover(claim)
