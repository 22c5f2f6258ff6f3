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

"""Fenced completion of manila's claimed operations.

A node that was thought dead -- frozen past its lease, or cut off from etcd
but not from the database -- may resume in the middle of a claimed
operation and finish it after a survivor already recovered it (measured
before this module existed: ``creating`` -> ``error`` by the recovery ->
``available`` by the late node). The HA share manager therefore runs
manila's database API through :class:`FencedDB` while a claimed RPC
operation runs in a thread:

* a **final write** of the operation (a status leaving the transitional
  ones, or the deletion of the row) first finishes the claim in etcd
  (:meth:`hacluster.claims.Claim.finish`); if a recoverer took the claim,
  the write is not made, the recovery's status stands, and the late result
  is recorded (log, ``late/`` record, a warning in ``hacluster status``);
* every status write to the rows the operation moves (:data:`FENCED_ROWS`)
  is made **conditional** on the row still being in the operation's
  transitional status, in one UPDATE ... WHERE status IN (...) -- the
  recovery handlers move the row the same way -- so whichever of the two
  comes first wins, and a status never flips between final states, even
  for a process frozen between the finish and the write (after a refused
  finish the database decides); manila's own write of the row joins that
  UPDATE's transaction (:func:`manila_transaction`: one commit, and the
  status never lands without the rest of the write); a final write that
  etcd cannot confirm, on a row no such comparison guards, is refused and
  the claim handed over to recovery;
* once the claim is known to be recovered, or handed over to recovery
  while the operation runs (the node stopping before it finished), or a
  cluster lock taken in this thread is lost, any other write raises
  :class:`hacluster.exceptions.Fenced` (no further shared write);
* each write is a fence point: with ``[hacluster] fencing = exit`` a
  process past its renew deadline while holding work exits there.

Writes outside claimed operations pass through untouched.
"""

import contextlib
import functools
import logging
import re
import threading

from hacluster import exceptions

LOG = logging.getLogger(__name__)

_local = threading.local()

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

#: The rows a claimed operation moves, and the statuses it moves them
#: from: ``(resource type, operation) -> (row kind, statuses)``. Every
#: status write of the operation to one of its rows is conditional on them
#: (and on the statuses the operation itself wrote since), in one UPDATE.
FENCED_ROWS = {
    ('share_instance', 'create'): ('share_instance', ('creating',)),
    ('share_instance', 'delete'): ('share_instance', (
        'deleting', 'deferred_deleting', 'error_deferred_deleting')),
    ('share_instance', 'create_replica'): ('share_instance', ('creating',)),
    ('share_instance', 'delete_replica'): ('share_instance', ('deleting',)),
    ('share', 'extend'): ('share_instance', ('extending',)),
    ('share', 'shrink'): ('share_instance', ('shrinking',)),
    ('snapshot', 'create'): ('snapshot_instance', ('creating',)),
    ('snapshot', 'delete'): ('snapshot_instance', ('deleting',)),
}

#: manila.db functions that write one row's status: name -> row kind.
_STATUS_WRITES = {
    'share_instance_update': 'share_instance',
    'share_replica_update': 'share_instance',
    'share_update': 'share',
    'share_snapshot_instance_update': 'snapshot_instance',
    'share_snapshot_update': 'snapshot',
}

#: manila.db functions that write statuses of several rows at once.
_BULK_STATUS_WRITES = ('share_instance_status_update',
                       'share_snapshot_instances_status_update',
                       'share_and_snapshot_instances_status_update')

#: manila.db functions that delete the resource an operation works on.
_DELETES = ('share_instance_delete', 'share_replica_delete',
            'share_snapshot_instance_delete', 'share_delete',
            'share_soft_delete', 'share_snapshot_destroy')

_WRITE = re.compile(r'(^|_)(update|delete|create|destroy|add|remove|set|'
                    r'upsert|purge|restore|soft|transfer|accept|mark|copy|'
                    r'reserve|commit|rollback|expire|cleanup|insert|'
                    r'increment|allocate|deallocate|extend|shrink)(_|$)')

#: manila's transitional statuses (constants.TRANSITIONAL_STATUSES plus
#: the share-from-snapshot and deferred-deletion ones); a status write
#: outside these is final.
_TRANSITIONAL = frozenset((
    'creating', 'deleting', 'manage_starting', 'unmanage_starting',
    'extending', 'shrinking', 'migrating', 'migrating_to', 'restoring',
    'reverting', 'server_migrating', 'server_migrating_to',
    'backup_restoring', 'backup_creating', 'ensuring',
    'reverting_to_snapshot', 'creating_from_snapshot', 'replication_change',
    'deferred_deleting',
))


def is_write(name):
    """True if manila.db function ``name`` writes (by its name)."""
    return bool(_WRITE.search(name))


class _Operation:
    def __init__(self, coord, claim, resource_type, resource_id, operation):
        self.coord = coord
        self.claim = claim
        self.resource_type = resource_type
        self.resource_id = resource_id
        self.operation = operation
        fenced = FENCED_ROWS.get((resource_type, operation))
        self.kind = fenced[0] if fenced else None
        #: statuses the operation's rows may be moved from
        self.expected = set(fenced[1]) if fenced else set()
        self._row_ids = None
        #: why the claim was given up to recovery while the operation ran
        #: (the node stopping), or None; its writes are refused from then on
        self.handed_over = None

    def row_ids(self, db, context):
        """The ids of the rows this operation moves (read once, with the
        unfenced database API): the claimed share instance itself, or the
        instances of the claimed share or snapshot."""
        if self._row_ids is None:
            ids = set()
            if self.resource_type == 'share_instance':
                ids.add(self.resource_id)
            else:
                get = {'share': 'share_get',
                       'snapshot': 'share_snapshot_get'}.get(
                           self.resource_type)
                try:
                    parent = getattr(db, get)(context, self.resource_id)
                    ids.update(i['id'] for i in parent.instances)
                except Exception:
                    LOG.exception('hacluster: cannot read the instances of '
                                  '%s %s', self.resource_type,
                                  self.resource_id)
            self._row_ids = ids
        return self._row_ids


def _locks():
    if not hasattr(_local, 'locks'):
        _local.locks = []
    return _local.locks


def track_lock(lock):
    """Note a cluster lock taken by the current thread (manila's lock
    stand-ins call it): while it is held, a write after its loss is
    refused."""
    _locks().append(lock)


def untrack_lock(lock):
    locks = _locks()
    for i in range(len(locks) - 1, -1, -1):
        if locks[i] is lock:
            del locks[i]
            return


class operation:
    """Context manager: the claimed operation running in this thread.

    :param coord: the node's coordinator.
    :param claim: the open claim (None: the operation runs unclaimed, its
        writes pass through but for lost locks).
    """

    def __init__(self, coord, claim, resource_type, resource_id, op):
        self._op = _Operation(coord, claim, resource_type, resource_id, op)
        self._outer = None

    def __enter__(self):
        self._outer = getattr(_local, 'op', None)
        _local.op = self._op
        return self._op

    def __exit__(self, *exc):
        _local.op = self._outer
        return False


def current():
    """The claimed operation running in this thread, or None."""
    return getattr(_local, 'op', None)


def cas_status(context, kind, row_id, expected, values):
    """Set ``values`` on row ``row_id`` only if its status is one of
    ``expected``, in one UPDATE (atomic in the database: of two racing
    writers exactly one wins). ``kind`` is ``share_instance`` or
    ``snapshot_instance``. Returns True if the row was updated. Blocks for
    one database statement."""
    from manila.db.sqlalchemy import api as db_api
    from manila.db.sqlalchemy import models
    model = {'share_instance': models.ShareInstance,
             'snapshot_instance': models.ShareSnapshotInstance}[kind]
    with db_api.context_manager.writer.using(context):
        count = db_api.model_query(
            context, model, read_deleted='no').filter(
            model.id == row_id).filter(
            model.status.in_(list(expected))).update(
            dict(values), synchronize_session=False)
    return count == 1


def manila_transaction(context):
    """manila's database writer transaction on ``context`` (a context
    manager): the manila database functions called inside it with that
    context join it and are committed with it (oslo.db's enginefacade).
    What the HA manager gives :class:`FencedDB`."""
    from manila.db.sqlalchemy import api as db_api
    return db_api.context_manager.writer.using(context)


def _values(args, kwargs):
    for name in ('values', 'update_values'):
        if isinstance(kwargs.get(name), dict):
            return kwargs[name]
    if len(args) > 2 and isinstance(args[2], dict):
        return args[2]
    return None


def _target(args, kwargs):
    if len(args) > 1:
        return args[1]
    for name in ('share_instance_id', 'share_replica_id', 'instance_id',
                 'snapshot_instance_id', 'share_id'):
        if name in kwargs:
            return kwargs[name]
    return None


class FencedDB:
    """manila's database API (``manila.db``) as the HA share manager uses
    it: writes made while a claimed operation runs in the calling thread
    are fenced (see the module doc); everything else passes through.
    Thread-safe (per-thread state only).

    :param transaction: ``transaction(context)``, a context manager in
        which the conditional UPDATE of a claimed row and the database
        API's own write of it are one transaction (:func:`manila_transaction`
        for manila's); None: each commits on its own.
    """

    def __init__(self, db, transaction=None):
        self._db = db
        self._transaction = transaction
        self._wrapped = {}

    def __getattr__(self, name):
        attr = getattr(self._db, name)
        if not callable(attr) or not is_write(name):
            return attr
        wrapped = self._wrapped.get(name)
        if wrapped is None:
            @functools.wraps(attr)
            def wrapped(*args, **kwargs):
                return self._write(name, attr, args, kwargs)
            self._wrapped[name] = wrapped
        return wrapped

    def _write(self, name, fn, args, kwargs):
        for lock in list(_locks()):
            if lock.lost:
                raise exceptions.Fenced(
                    'cluster lock %r was lost (%s): %s not made'
                    % (lock.name, lock.lost_reason, name))
        op = current()
        if op is None or op.claim is None:
            return fn(*args, **kwargs)
        if op.handed_over is not None:
            # a survivor may be recovering the resource now: any write of
            # ours could land over its outcome
            raise exceptions.Fenced(
                '%s of %s %s was handed over to recovery (%s): %s not made'
                % (op.operation, op.resource_type, op.resource_id,
                   op.handed_over, name))
        op.coord.fence_point()      # exits here when fencing says so
        claim = op.claim
        values = _values(args, kwargs)
        status = values.get('status') if values else None
        row = None
        if status is not None and op.kind is not None and \
                _STATUS_WRITES.get(name) == op.kind:
            target = _target(args, kwargs)
            if target in op.row_ids(self._db, args[0]):
                row = target
        final = name in _DELETES or name in _BULK_STATUS_WRITES or (
            status is not None and name in _STATUS_WRITES and
            status not in _TRANSITIONAL)
        if not final and row is None:
            if claim.recovered_elsewhere:
                raise exceptions.ClaimRecovered(
                    '%s of %s %s was recovered by another node: %s not made'
                    % (op.operation, op.resource_type, op.resource_id, name))
            return fn(*args, **kwargs)
        confirmed = True
        if final:
            try:
                claim.finish()
            except exceptions.ClaimRecovered as exc:
                if row is None:
                    LOG.error('hacluster: %s not made: %s', name, exc)
                    return None
                confirmed = False    # the row's own comparison decides
            except exceptions.HAClusterError as exc:
                if row is None:
                    # Nothing else could stop this write from landing over
                    # a recovery: do not make it; give the claim up to
                    # recovery instead (the resource stays transitional
                    # until a survivor moves it).
                    claim.hand_over(
                        'etcd did not confirm the finish before %s '
                        '(%s)' % (name, exc))
                    raise exceptions.Fenced(
                        'claim %s could not be finished (%s): %s not made'
                        % (claim.claim_id, exc, name), cause=exc) from exc
                confirmed = False
        if row is not None:
            made, result = self._conditional(op, row, status, fn, args,
                                             kwargs)
            if not made:
                late = claim.record_late()
                LOG.error('hacluster: %s %s is no longer %s: %s (status %s) '
                          'not made: %s', op.kind, row,
                          '/'.join(sorted(op.expected)), name, status,
                          late['message'])
                return None
            if not confirmed:
                LOG.warning('hacluster: %s %s moved to %s although its claim '
                            'could not be finished: the recovery had not '
                            'moved it (the database compared)', op.kind,
                            row, status)
            return result
        return fn(*args, **kwargs)

    def _conditional(self, op, row, status, fn, args, kwargs):
        """The conditional UPDATE of the claimed ``row`` to ``status`` and,
        if it was made, the write ``fn`` itself -- in one transaction when
        this FencedDB was given one (then a failing ``fn`` leaves the row
        as it was). Returns ``(made, fn's result)``."""
        context = args[0]
        scope = (self._transaction(context)
                 if self._transaction is not None and context is not None
                 else contextlib.nullcontext())
        with scope:
            if not cas_status(context, op.kind, row, sorted(op.expected),
                              {'status': status}):
                return False, None
            result = fn(*args, **kwargs)
        op.expected.add(status)
        return True, result
