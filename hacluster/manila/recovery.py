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

"""What each kind of manila claim repairs: database-only recovery.

When a node dies inside a claimed operation (:data:`hacluster.manila.
claims.CLAIMED_OPERATIONS`), the cluster leader -- or the node itself,
restarting under the same name -- calls the driver's
``ha_recover_<type>_<operation>``; the defaults of
:class:`hacluster.manila.driver.HAShareDriverMixin` come here. They only
touch manila's database and only move a resource that is *still* in the
operation's transitional status, in one conditional UPDATE (the same one a
late owner's final write makes, :mod:`hacluster.manila.claims`), so a
recovery that runs twice, or after the operation did finish, changes
nothing, and of a recovery and a late owner exactly one lands.
"""

import logging

LOG = logging.getLogger(__name__)


class DatabaseRepair:
    """The database side of recovering manila's claimed operations.

    :param db: manila's database API (``manila.db``).
    :param cas: ``cas(ctx, kind, row_id, from_status, values)`` -> bool,
        the conditional status write (the driver's ``ha_cas_status``).
    :param rpcapi: manila's ``ShareAPI`` (to hand a dead node's delete to
        a live one); made lazily when None.

    Thread-safe (no state but the lazily built RPC client).
    """

    def __init__(self, db, cas, rpcapi=None):
        self._db = db
        self._cas = cas
        self._rpcapi = rpcapi

    def _move(self, what, get, update, resource_id, from_status, values,
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
            if not self._cas(ctx, kind, resource_id, from_status,
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

    def _instance(self, ctx, claim, from_status, values):
        db = self._db
        return self._move(
            'share instance',
            lambda i: db.share_instance_get(ctx, i),
            lambda i, v: db.share_instance_update(ctx, i, v),
            claim.resource_id, from_status, values, claim,
            kind='share_instance', ctx=ctx)

    def _instances_of(self, what, parent, update, claim, from_status,
                      values, kind=None, ctx=None):
        """Move every instance of ``parent()`` (a share or a snapshot,
        read now; gone: nothing to do) still in ``from_status``."""
        from manila import exception
        try:
            instances = parent().instances
        except exception.NotFound:
            return
        for instance in instances:
            self._move(what, lambda i, current=instance: current, update,
                       instance['id'], from_status, values, claim,
                       kind=kind, ctx=ctx)

    def _share_instances(self, ctx, claim, from_status, values,
                         share_id=None):
        db = self._db
        self._instances_of(
            'share instance',
            lambda: db.share_get(ctx, share_id or claim.resource_id),
            lambda i, v: db.share_instance_update(ctx, i, v),
            claim, from_status, values, kind='share_instance', ctx=ctx)

    def _snapshot_instances(self, ctx, claim, from_status, values):
        db = self._db
        self._instances_of(
            'snapshot instance',
            lambda: db.share_snapshot_get(ctx, claim.resource_id),
            lambda i, v: db.share_snapshot_instance_update(ctx, i, v),
            claim, from_status, values, kind='snapshot_instance', ctx=ctx)

    def share_instance_create(self, ctx, claim):
        """A create cut short cannot be trusted to be whole: ``error``
        (manila's own outcome of a failed create; the user deletes it)."""
        self._instance(ctx, claim, ('creating',), {'status': 'error'})

    def share_instance_delete(self, ctx, claim):
        """Finish the delete: hand it to a live node over manila's own RPC
        queue for this backend (deleting on the back end is idempotent for
        manila drivers). The claim the new delete takes covers a second
        death."""
        from manila import exception
        try:
            instance = self._db.share_instance_get(
                ctx, claim.resource_id, with_share_data=True)
        except exception.NotFound:
            return
        if instance['status'] == 'deferred_deleting':
            # a deferred delete cut short: manila's own deferred-deletion
            # task (leader-only here) retries instances in this status
            self._instance(ctx, claim, ('deferred_deleting',),
                           {'status': 'error_deferred_deleting'})
            return
        if instance['status'] != 'deleting':
            return
        rpcapi = self._rpcapi
        if rpcapi is None:
            from manila.share import rpcapi as share_rpcapi
            rpcapi = self._rpcapi = share_rpcapi.ShareAPI()
        data = claim.get('data') or {}
        rpcapi.delete_share_instance(
            ctx, instance, force=bool(data.get('force')),
            deferred_delete=bool(data.get('deferred_delete')))
        LOG.warning('hacluster: delete of share instance %s was cut short by '
                    'the death of %s; handed to a live node',
                    claim.resource_id, claim.node)

    def share_extend(self, ctx, claim):
        self._share_instances(ctx, claim, ('extending',),
                              {'status': 'extending_error'})

    def share_shrink(self, ctx, claim):
        self._share_instances(ctx, claim, ('shrinking',),
                              {'status': 'shrinking_error'})

    def snapshot_create(self, ctx, claim):
        self._snapshot_instances(ctx, claim, ('creating',),
                                 {'status': 'error'})

    def snapshot_delete(self, ctx, claim):
        self._snapshot_instances(ctx, claim, ('deleting',),
                                 {'status': 'error_deleting'})

    def snapshot_revert(self, ctx, claim):
        from manila import exception
        try:
            snapshot = self._db.share_snapshot_get(ctx, claim.resource_id)
        except exception.NotFound:
            return
        self._snapshot_instances(ctx, claim, ('restoring',),
                                 {'status': 'available'})
        self._share_instances(ctx, claim, ('reverting',),
                              {'status': 'reverting_error'},
                              share_id=snapshot['share_id'])

    def share_instance_create_replica(self, ctx, claim):
        self._instance(ctx, claim, ('creating',),
                       {'status': 'error', 'replica_state': 'error'})

    def share_instance_delete_replica(self, ctx, claim):
        self._instance(ctx, claim, ('deleting',),
                       {'status': 'error_deleting'})
