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

"""manila resources stuck in a transitional status, and their repair.

A share (instance), snapshot (instance) or access rule in a transitional
status (``creating``, ``deleting``, ``extending``, ...) is *stuck* when
nothing is going to move it any more:

* no open claim in etcd names it -- a claimed operation whose node died is
  recovered by the cluster (:mod:`hacluster.manila.recovery`), and a claim
  that waits for (or failed) recovery shows in ``hacluster status``;
* no live owner: the cluster of its backend (``host@backend`` of the row's
  ``host``, as the HA share manager names it, or ``[hacluster] cluster``)
  has no member in etcd -- a live node may be running an unclaimed
  operation on it (manage, migration, access rules...) or will poll it;
* it has not changed for longer than a threshold (``updated_at``, else
  ``created_at``).

:class:`Finder` lists them from manila's database (manila's own models,
read-only) and etcd (read-only: it never joins a cluster). :meth:`Finder.
repair` applies what the recovery handlers would (:class:`hacluster.
manila.recovery.DatabaseRepair`, the same methods): a create cut short
becomes ``error``, an extend ``extending_error``, a snapshot delete
``error_deleting``..., see :data:`REPAIRS`. One difference: the handlers
hand a cut-short share delete to a live node of the backend; a stuck
resource has none, so the delete becomes ``error_deleting`` (manila's
status for a failed delete, from which an administrator deletes again or
forces it). Each write is made only after etcd was read again for that
row (no claim, no live member) and as one conditional UPDATE: the row must
still be in the transitional status and unchanged since the listing
(``updated_at`` still before the threshold). Resources in a status no
handler recovers (``migrating``, ``manage_starting``, access rules...) are
listed and left alone.
"""

import dataclasses
import datetime
import logging

from hacluster import claims as _hclaims
from hacluster import etcd as _etcd
from hacluster import exceptions
from hacluster import keys as _keys
from hacluster.manila import claims as _claims

LOG = logging.getLogger(__name__)

#: Statuses of share and snapshot instances that an operation in flight
#: leaves (manila's transitional statuses, hacluster.manila.claims).
TRANSITIONAL = _claims._TRANSITIONAL
#: States of an access rule (share instance access mapping) in flight.
ACCESS_TRANSITIONAL = frozenset((
    'queued_to_apply', 'applying', 'queued_to_deny', 'denying',
    'queued_to_update', 'updating'))
#: Seconds a resource must be unchanged to be stuck, by default.
DEFAULT_OLDER_THAN = 1800
#: The node named in the repair's log lines and claims.
NOBODY = 'an unknown node (hacluster stuck)'

COLUMNS = ('resource', 'id', 'share_id', 'status', 'host', 'cluster',
           'updated_at', 'age_s', 'repair', 'result')
#: With every transitional resource listed: why one is not stuck.
ALL_COLUMNS = COLUMNS + ('why',)


@dataclasses.dataclass
class Stuck:
    """One resource in a transitional status.

    ``resource`` is ``share_instance``, ``snapshot_instance`` or
    ``access_rule``; ``parent_id`` is the snapshot of a snapshot instance,
    the rule of an access rule mapping; ``instance_id`` the share instance
    a snapshot instance or rule belongs to. ``why`` says why it is not
    stuck (None when it is); ``repair`` what a repair sets (empty when no
    handler recovers this status); ``result`` what ``repair`` did.
    """

    resource: str
    id: str
    share_id: str
    status: str
    host: str
    cluster: str
    updated_at: datetime.datetime
    age_s: int
    parent_id: object = None
    instance_id: object = None
    replica_state: object = None
    why: object = None
    repair: str = ''
    result: str = ''

    @property
    def kind(self):
        """The row kind of its conditional write (hacluster.manila.claims
        .cas_status)."""
        return {'share_instance': 'share_instance',
                'snapshot_instance': 'snapshot_instance'}.get(self.resource)

    def related(self):
        """``(resource type, id)`` of the claims that cover it: a claim on
        it, on its share instance, its share or its snapshot."""
        keys = {('share', self.share_id)}
        if self.resource == 'share_instance':
            keys.add(('share_instance', self.id))
        if self.instance_id:
            keys.add(('share_instance', self.instance_id))
        if self.resource == 'snapshot_instance' and self.parent_id:
            keys.add(('snapshot', self.parent_id))
        return keys

    def as_dict(self):
        """The fields, ``updated_at`` as a Unix time (None when unknown)."""
        values = dataclasses.asdict(self)
        values['updated_at'] = epoch(self.updated_at)
        return values


def epoch(when):
    """A naive UTC datetime (manila's) as a Unix time; None for None."""
    if when is None:
        return None
    return when.replace(tzinfo=datetime.timezone.utc).timestamp()


def _utcnow():
    # manila stores naive UTC datetimes (oslo_utils.timeutils.utcnow)
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def backend_host(host):
    """``host@backend`` of a manila host field (``host@backend#pool``)."""
    return (host or '').split('#', 1)[0]


def _claim(resource_type, resource_id, operation):
    """The claim a repair hands to DatabaseRepair: what a claimed
    operation would have recorded."""
    return _hclaims.ClaimRecord(resource_type=resource_type,
                                resource_id=resource_id,
                                operation=operation, node=NOBODY, data={})


def _replica(row):
    return row.replica_state not in (None, 'active')


#: ``(resource, status) -> (what it sets, how)``: ``how(repair, ctx,
#: row)`` calls :class:`~hacluster.manila.recovery.DatabaseRepair` as the
#: recovery handler of that operation does.
REPAIRS = {
    ('share_instance', 'creating'): (
        'status error',
        lambda r, ctx, row: r.share_instance_create(
            ctx, _claim('share_instance', row.id, 'create'))),
    ('share_replica', 'creating'): (
        'status error, replica_state error',
        lambda r, ctx, row: r.share_instance_create_replica(
            ctx, _claim('share_instance', row.id, 'create_replica'))),
    # (the handler of a share delete hands it to a live node: a stuck one
    # has none; this is the replica delete's handler)
    ('share_instance', 'deleting'): (
        'status error_deleting',
        lambda r, ctx, row: r.share_instance_delete_replica(
            ctx, _claim('share_instance', row.id, 'delete'))),
    ('share_instance', 'deferred_deleting'): (
        'status error_deferred_deleting',
        lambda r, ctx, row: r._instance(
            ctx, _claim('share_instance', row.id, 'delete'),
            ('deferred_deleting',), {'status': 'error_deferred_deleting'})),
    ('share_instance', 'extending'): (
        'status extending_error',
        lambda r, ctx, row: r.share_extend(
            ctx, _claim('share', row.share_id, 'extend'))),
    ('share_instance', 'shrinking'): (
        'status shrinking_error',
        lambda r, ctx, row: r.share_shrink(
            ctx, _claim('share', row.share_id, 'shrink'))),
    ('share_instance', 'reverting'): (
        'status reverting_error',
        lambda r, ctx, row: r._share_instances(
            ctx, _claim('share', row.share_id, 'revert'), ('reverting',),
            {'status': 'reverting_error'}, share_id=row.share_id)),
    ('snapshot_instance', 'creating'): (
        'status error',
        lambda r, ctx, row: r.snapshot_create(
            ctx, _claim('snapshot', row.parent_id, 'create'))),
    ('snapshot_instance', 'deleting'): (
        'status error_deleting',
        lambda r, ctx, row: r.snapshot_delete(
            ctx, _claim('snapshot', row.parent_id, 'delete'))),
    ('snapshot_instance', 'restoring'): (
        'status available',
        lambda r, ctx, row: r._snapshot_instances(
            ctx, _claim('snapshot', row.parent_id, 'revert'), ('restoring',),
            {'status': 'available'})),
}


def plan(row):
    """``(what it sets, how)`` for ``row`` (see :data:`REPAIRS`), or None
    when no recovery handler moves a resource out of its status."""
    resource = row.resource
    if resource == 'share_instance' and row.status == 'creating' and \
            _replica(row):
        resource = 'share_replica'
    return REPAIRS.get((resource, row.status))


def parse_age(text):
    """Seconds from ``90``, ``90s``, ``30m``, ``2h``, ``1d``.

    :raises ConfigurationError: anything else, naming ``--older-than``."""
    units = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400}
    value = str(text).strip().lower()
    factor = 1
    if value and value[-1] in units:
        factor, value = units[value[-1]], value[:-1]
    try:
        seconds = float(value) * factor
    except ValueError:
        seconds = -1
    if not seconds >= 0:
        raise exceptions.ConfigurationError(
            '--older-than %r: give seconds, or a number with s, m, h or d '
            '(e.g. 30m)' % (text,))
    return seconds


class EtcdState:
    """The members and claims of clusters, read from etcd (read-only; one
    transaction per cluster and call).

    :param client: a :class:`hacluster.etcd.Client`.
    """

    def __init__(self, client):
        self.client = client

    def __call__(self, cluster):
        """``(member node names, claim records)`` of ``cluster`` now.

        :raises BackendUnavailable: etcd could not be reached."""
        layout = _keys.Layout(cluster)
        prefixes = (layout.members, layout.claims)
        resp = self.client.txn(success=[
            _etcd.range_op(p, _keys.prefix_end(p)) for p in prefixes])
        members = sorted(kv.json().get('node') or
                         kv.key[len(layout.members):]
                         for kv in resp.kvs(0))
        claims = [kv.json() for kv in resp.kvs(1)]
        return members, claims


class Finder:
    """Lists the stuck resources of manila's database and repairs them.

    :param ctx: a manila admin context.
    :param state: ``state(cluster) -> (members, claims)`` (an
        :class:`EtcdState`).
    :param older_than: seconds a resource must be unchanged.
    :param clusters: ``{host@backend: cluster}`` for backends whose
        cluster is not named after them (``[hacluster] cluster``).
    :param host: only resources of this ``host@backend``.
    :param snapshot_shares: ``snapshot ids -> {snapshot id: share id}``
        (default: read from manila's database).
    """

    def __init__(self, ctx, state, older_than=DEFAULT_OLDER_THAN,
                 clusters=None, host=None, now=None, snapshot_shares=None):
        self.ctx = ctx
        self.state = state
        self.older_than = older_than
        self.clusters = dict(clusters or {})
        self.host = backend_host(host) if host else None
        self.now = now or _utcnow()
        self.cutoff = self.now - datetime.timedelta(seconds=older_than)
        self._snapshot_shares = snapshot_shares or _snapshot_shares
        #: ``{why: count}`` of the transitional resources found not stuck
        self.not_stuck = {}

    def cluster_of(self, host):
        backend = backend_host(host)
        return self.clusters.get(backend, backend)

    # -- reading --------------------------------------------------------------

    def transitional(self):
        """Every resource in a transitional status, as :class:`Stuck`
        rows (``why`` not yet judged). Blocks for three queries."""
        from manila.db.sqlalchemy import api as db_api
        from manila.db.sqlalchemy import models
        from sqlalchemy import func

        instance = models.ShareInstance
        snapshot = models.ShareSnapshotInstance
        access = models.ShareInstanceAccessMapping
        rows = []

        def changed(model):
            return func.coalesce(model.updated_at, model.created_at)

        def on_host(query):
            if self.host:
                query = query.filter(
                    (instance.host == self.host) |
                    instance.host.like(self.host + '#%'))
            return query

        def add(resource, row_id, share_id, status, host, when, **extra):
            rows.append(Stuck(
                resource=resource, id=row_id, share_id=share_id,
                status=status, host=host, cluster=self.cluster_of(host),
                updated_at=when,
                age_s=int((self.now - when).total_seconds()) if when
                else None, **extra))

        with db_api.context_manager.reader.using(self.ctx):
            session = self.ctx.session
            query = session.query(
                instance.id, instance.share_id, instance.status,
                instance.host, changed(instance), instance.replica_state
            ).filter(instance.deleted == 'False').filter(
                instance.status.in_(sorted(TRANSITIONAL)))
            for r in on_host(query).order_by(instance.created_at):
                add('share_instance', r[0], r[1], r[2], r[3], r[4],
                    replica_state=r[5])
            query = session.query(
                snapshot.id, instance.share_id, snapshot.status,
                instance.host, changed(snapshot), snapshot.snapshot_id,
                snapshot.share_instance_id
            ).join(instance, snapshot.share_instance_id == instance.id
                   ).filter(snapshot.deleted == 'False').filter(
                snapshot.status.in_(sorted(TRANSITIONAL)))
            for r in on_host(query).order_by(snapshot.created_at):
                add('snapshot_instance', r[0], r[1], r[2], r[3], r[4],
                    parent_id=r[5], instance_id=r[6])
            query = session.query(
                access.id, instance.share_id, access.state, instance.host,
                changed(access), access.access_id, access.share_instance_id
            ).join(instance, access.share_instance_id == instance.id
                   ).filter(access.deleted == 'False').filter(
                access.state.in_(sorted(ACCESS_TRANSITIONAL)))
            for r in on_host(query).order_by(access.created_at):
                add('access_rule', r[0], r[1], r[2], r[3], r[4],
                    parent_id=r[5], instance_id=r[6])
        for row in rows:
            found = plan(row)
            row.repair = found[0] if found else ''
        return rows

    def blocker(self, row, state=None):
        """Why ``row`` is not stuck right now: a live member of its
        cluster, or an open claim on it (reads etcd unless ``state`` is
        given); None when it is stuck."""
        members, claims = state if state is not None else \
            self.state(row.cluster)
        if members:
            return ('live owner: %s of cluster %s'
                    % (', '.join(members), row.cluster))
        related = row.related()
        snapshots = [c for c in claims if c.get('resource_type') ==
                     'snapshot']
        shares = self._snapshot_shares(
            self.ctx, [c.get('resource_id') for c in snapshots]) \
            if snapshots else {}
        for claim in claims:
            key = (claim.get('resource_type'), claim.get('resource_id'))
            covered = key in related or (
                key[0] == 'snapshot' and
                ('share', shares.get(key[1])) in related)
            if covered:
                return ('open claim %s (%s of %s %s by %s, %s)'
                        % (claim.get('claim_id'), claim.get('operation'),
                           key[0], key[1], claim.get('node'),
                           claim.get('state')))
        return None

    def find(self, everything=False):
        """The stuck resources (:class:`Stuck`, ``why`` None); the others'
        reasons are counted in :attr:`not_stuck`.

        :param everything: return every resource in a transitional status,
            the others with ``why`` set, not only the stuck ones.
        :raises BackendUnavailable: etcd could not be reached.
        """
        rows = self.transitional()
        states = {}
        stuck = []
        for row in rows:
            if row.updated_at is not None and row.updated_at > self.cutoff:
                row.why = 'changed %ds ago' % row.age_s
                self.not_stuck['younger than the threshold'] = \
                    self.not_stuck.get('younger than the threshold', 0) + 1
                continue
            if row.cluster not in states:
                states[row.cluster] = self.state(row.cluster)
            row.why = self.blocker(row, states[row.cluster])
            if row.why is None:
                stuck.append(row)
            else:
                reason = row.why.split(':')[0].split(' (')[0]
                if reason.startswith('open claim'):
                    reason = 'open claim'
                self.not_stuck[reason] = self.not_stuck.get(reason, 0) + 1
        return rows if everything else stuck

    # -- repairing ------------------------------------------------------------

    def repair(self, rows, db, dry_run=True, update=None):
        """Repair ``rows`` (from :meth:`find`) as the recovery handlers
        would; sets each row's ``result``.

        :param db: manila's database API (``manila.db``).
        :param dry_run: only say what would be done (etcd is read again
            for each row all the same).
        :param update: the conditional write ``update(ctx, kind, row_id,
            from_status, values, cutoff) -> bool`` (default:
            :func:`conditional_update`).
        :returns: ``rows``.
        """
        from hacluster.manila import recovery
        update = update or conditional_update
        for row in rows:
            if row.why is not None:
                row.result = 'not stuck: left alone'
                continue
            found = plan(row)
            if found is None:
                row.result = ('not repaired: no recovery handler for %s '
                              '%s' % (row.resource, row.status))
                continue
            what, how = found
            if dry_run:
                why = self.blocker(row)
                row.result = ('would set ' + what[len('status '):]
                              if why is None else 'would skip: ' + why)
                continue
            outcome = {}

            def cas(ctx, kind, row_id, from_status, values, row=row,
                    outcome=outcome):
                # only the row listed (DatabaseRepair moves every instance
                # of a share or snapshot: each has its own row here)
                if (kind, row_id) != (row.kind, row.id):
                    return False
                why = self.blocker(row)        # etcd, read again
                if why is not None:
                    outcome['result'] = 'skipped: ' + why
                    return False
                if not update(ctx, kind, row_id, from_status, values,
                              self.cutoff):
                    outcome['result'] = ('skipped: changed since it was '
                                         'listed')
                    return False
                outcome['result'] = 'set ' + ', '.join(
                    '%s %s' % kv for kv in sorted(values.items()))
                return True

            try:
                how(recovery.DatabaseRepair(db, cas), self.ctx, row)
            except Exception as exc:
                LOG.exception('hacluster stuck: repairing %s %s',
                              row.resource, row.id)
                row.result = 'failed: %s' % exc
                continue
            row.result = outcome.get(
                'result', 'skipped: no longer %s' % row.status)
        return rows


def conditional_update(ctx, kind, row_id, from_status, values, cutoff):
    """Set ``values`` on the ``kind`` row ``row_id`` only if its status is
    one of ``from_status`` and it has not changed since ``cutoff``, in one
    UPDATE (:func:`hacluster.manila.claims.cas_status`, plus the age).
    True if the row was updated."""
    from manila.db.sqlalchemy import api as db_api
    from manila.db.sqlalchemy import models
    from sqlalchemy import func
    model = {'share_instance': models.ShareInstance,
             'snapshot_instance': models.ShareSnapshotInstance}[kind]
    with db_api.context_manager.writer.using(ctx):
        count = db_api.model_query(
            ctx, model, read_deleted='no').filter(
            model.id == row_id).filter(
            model.status.in_(list(from_status))).filter(
            func.coalesce(model.updated_at, model.created_at) <= cutoff
        ).update(dict(values), synchronize_session=False)
    return count == 1


def _snapshot_shares(ctx, snapshot_ids):
    """``{snapshot id: share id}`` for ``snapshot_ids`` (manila's DB)."""
    from manila.db.sqlalchemy import api as db_api
    from manila.db.sqlalchemy import models
    ids = [i for i in snapshot_ids if i]
    if not ids:
        return {}
    with db_api.context_manager.reader.using(ctx):
        return dict(ctx.session.query(
            models.ShareSnapshot.id, models.ShareSnapshot.share_id).filter(
            models.ShareSnapshot.id.in_(ids)))
