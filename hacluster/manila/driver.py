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

#: RPC methods of manila's ShareManager that run under a claim:
#: ``{method: (resource type, operation, argument naming the resource[,
#: arguments recorded in the claim's data])}``. Other operations (manage,
#: unmanage, replica promotion, share servers, access rules, migration) are
#: not claimed: a node dying inside one leaves it as plain manila would.
CLAIMED_OPERATIONS = {
    'create_share_instance': ('share_instance', 'create',
                              'share_instance_id'),
    'delete_share_instance': ('share_instance', 'delete',
                              'share_instance_id',
                              ('force', 'deferred_delete')),
    'extend_share': ('share', 'extend', 'share_id'),
    'shrink_share': ('share', 'shrink', 'share_id'),
    'create_snapshot': ('snapshot', 'create', 'snapshot_id'),
    'delete_snapshot': ('snapshot', 'delete', 'snapshot_id'),
    'revert_to_snapshot': ('snapshot', 'revert', 'snapshot_id'),
    'create_share_replica': ('share_instance', 'create_replica',
                             'share_replica_id'),
    'delete_share_replica': ('share_instance', 'delete_replica',
                             'share_replica_id'),
}

RESOURCE_TYPES = ('share_instance', 'share', 'snapshot')


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
        self._ha_rpcapi = rpcapi
        if recover:
            self.ha_register_recovery()

    def ha_register_recovery(self):
        """Register :meth:`ha_recover` for every resource type. This makes
        the node run for leader (the leader recovers), so the manager calls
        it once the driver is set up and the node serves: a node that
        cannot serve must not lead."""
        for resource_type in RESOURCE_TYPES:
            self.ha_coordinator.register_recovery(resource_type,
                                                  self.ha_recover)

    def ha_detach(self):
        """Forget the coordinator (the manager is stopping)."""
        self.ha_coordinator = None

    # -- locks and claims ---------------------------------------------------------

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

    # -- recovery -------------------------------------------------------------------

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

    def _ha_move(self, what, get, update, resource_id, from_status, values,
                 claim, kind=None, ctx=None):
        """Set ``values`` on a resource if it is still in ``from_status``
        (for a ``kind`` of row the claims module knows, in one conditional
        UPDATE, so a late owner's final write and this one never both
        land)."""
        from manila import exception
        try:
            current = get(resource_id)
        except exception.NotFound:
            LOG.info('hacluster: %s %s is gone; nothing to recover (claim of '
                     '%s)', what, resource_id, claim.node)
            return False
        status = current['status']
        if status not in from_status:
            LOG.info('hacluster: %s %s is %r, not %s; the operation of %s '
                     'finished, nothing to recover', what, resource_id,
                     status, '/'.join(from_status), claim.node)
            return False
        if kind is not None:
            if not self.ha_cas_status(ctx, kind, resource_id, from_status,
                                      values):
                LOG.info('hacluster: %s %s left %s meanwhile (its operation '
                         'of %s finished); nothing to recover', what,
                         resource_id, '/'.join(from_status), claim.node)
                return False
        else:
            update(resource_id, values)
        LOG.warning('hacluster: %s %s was left %r by %s (dead): set %s', what,
                    resource_id, status, claim.node, values)
        return True

    def ha_cas_status(self, ctx, kind, row_id, from_status, values):
        """Set ``values`` on a ``kind`` row (``share_instance`` or
        ``snapshot_instance``) only if it is still in ``from_status``, in
        one conditional UPDATE; True if it was. The same write a late
        owner's final status write makes (hacluster.manila.claims), so of
        the two exactly one lands."""
        from hacluster.manila import claims as _claims
        return _claims.cas_status(ctx, kind, row_id, from_status, values)

    def _ha_instance(self, ctx, claim, from_status, values):
        db = self._ha_db
        return self._ha_move(
            'share instance',
            lambda i: db.share_instance_get(ctx, i),
            lambda i, v: db.share_instance_update(ctx, i, v),
            claim.resource_id, from_status, values, claim,
            kind='share_instance', ctx=ctx)

    def _ha_instances_of(self, what, parent, update, claim, from_status,
                         values, kind=None, ctx=None):
        """Move every instance of ``parent()`` (a share or a snapshot,
        read now; gone: nothing to do) still in ``from_status``."""
        from manila import exception
        try:
            instances = parent().instances
        except exception.NotFound:
            return
        for instance in instances:
            self._ha_move(what, lambda i, current=instance: current, update,
                          instance['id'], from_status, values, claim,
                          kind=kind, ctx=ctx)

    def _ha_share_instances(self, ctx, claim, from_status, values,
                            share_id=None):
        db = self._ha_db
        self._ha_instances_of(
            'share instance',
            lambda: db.share_get(ctx, share_id or claim.resource_id),
            lambda i, v: db.share_instance_update(ctx, i, v),
            claim, from_status, values, kind='share_instance', ctx=ctx)

    def _ha_snapshot_instances(self, ctx, claim, from_status, values):
        db = self._ha_db
        self._ha_instances_of(
            'snapshot instance',
            lambda: db.share_snapshot_get(ctx, claim.resource_id),
            lambda i, v: db.share_snapshot_instance_update(ctx, i, v),
            claim, from_status, values, kind='snapshot_instance', ctx=ctx)

    def ha_recover_share_instance_create(self, ctx, claim):
        """A create cut short cannot be trusted to be whole: ``error``
        (manila's own outcome of a failed create; the user deletes it)."""
        self._ha_instance(ctx, claim, ('creating',), {'status': 'error'})

    def ha_recover_share_instance_delete(self, ctx, claim):
        """Finish the delete: hand it to a live node over manila's own RPC
        queue for this backend (deleting on the back end is idempotent for
        manila drivers). The claim the new delete takes covers a second
        death."""
        from manila import exception
        try:
            instance = self._ha_db.share_instance_get(
                ctx, claim.resource_id, with_share_data=True)
        except exception.NotFound:
            return
        if instance['status'] == 'deferred_deleting':
            # a deferred delete cut short: manila's own deferred-deletion
            # task (leader-only here) retries instances in this status
            self._ha_instance(ctx, claim, ('deferred_deleting',),
                              {'status': 'error_deferred_deleting'})
            return
        if instance['status'] != 'deleting':
            return
        rpcapi = self._ha_rpcapi
        if rpcapi is None:
            from manila.share import rpcapi as share_rpcapi
            rpcapi = self._ha_rpcapi = share_rpcapi.ShareAPI()
        data = claim.get('data') or {}
        rpcapi.delete_share_instance(
            ctx, instance, force=bool(data.get('force')),
            deferred_delete=bool(data.get('deferred_delete')))
        LOG.warning('hacluster: delete of share instance %s was cut short by '
                    'the death of %s; handed to a live node',
                    claim.resource_id, claim.node)

    def ha_recover_share_extend(self, ctx, claim):
        self._ha_share_instances(ctx, claim, ('extending',),
                                 {'status': 'extending_error'})

    def ha_recover_share_shrink(self, ctx, claim):
        self._ha_share_instances(ctx, claim, ('shrinking',),
                                 {'status': 'shrinking_error'})

    def ha_recover_snapshot_create(self, ctx, claim):
        self._ha_snapshot_instances(ctx, claim, ('creating',),
                                    {'status': 'error'})

    def ha_recover_snapshot_delete(self, ctx, claim):
        self._ha_snapshot_instances(ctx, claim, ('deleting',),
                                    {'status': 'error_deleting'})

    def ha_recover_snapshot_revert(self, ctx, claim):
        from manila import exception
        try:
            snapshot = self._ha_db.share_snapshot_get(ctx, claim.resource_id)
        except exception.NotFound:
            return
        self._ha_snapshot_instances(ctx, claim, ('restoring',),
                                    {'status': 'available'})
        self._ha_share_instances(ctx, claim, ('reverting',),
                                 {'status': 'reverting_error'},
                                 share_id=snapshot['share_id'])

    def ha_recover_share_instance_create_replica(self, ctx, claim):
        self._ha_instance(ctx, claim, ('creating',),
                          {'status': 'error', 'replica_state': 'error'})

    def ha_recover_share_instance_delete_replica(self, ctx, claim):
        self._ha_instance(ctx, claim, ('deleting',),
                          {'status': 'error_deleting'})


class DefaultRecovery(HAShareDriverMixin):
    """The mixin's database-only recovery on its own: what the HA manager
    uses for a driver without the mixin (allowed in single-node mode only),
    so a crash there is repaired at the next start all the same."""
