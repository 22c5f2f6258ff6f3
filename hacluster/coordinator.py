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

"""The etcd coordinator: one process's membership in one cluster.

Built by :func:`hacluster.factory.get_coordinator` (also
``hacluster.get_coordinator``); the contract is
:class:`hacluster.api.CoordinatorAPI`. It owns the session, the cluster
watch and the parts that take its :class:`~hacluster.context.Context`
(membership, claims, recovery, the lock registry, the election).

One process serving several backends runs one coordinator per backend
(cluster). A coordinator is started in the process that uses it: in
manila-share, in the worker after the fork, never before.
"""

import logging
import threading
import time
import uuid

from hacluster import api as _api
from hacluster import claims as _claims
from hacluster import context as _context
from hacluster import dispatch as _dispatch
from hacluster import election as _election
from hacluster import etcd as _etcd
from hacluster import exceptions
from hacluster import fencing as _fencing
from hacluster import keys as _keys
from hacluster import locks as _locks
from hacluster import membership as _membership
from hacluster import protocol as _protocol
from hacluster import recovery as _recovery
from hacluster import session as _session
from hacluster.version import __version__

LOG = logging.getLogger(__name__)


def get_coordinator(*args, **kwargs):
    """Build (not start) a coordinator: see
    :func:`hacluster.factory.get_coordinator`."""
    from hacluster import factory
    return factory.get_coordinator(*args, **kwargs)


class _Leadership:
    """What recovery needs of the coordinator's election: whether this node
    leads, in which term, and a write guarded by that term."""

    def __init__(self, coord):
        self._coord = coord

    @property
    def is_leader(self):
        return self._coord.is_leader

    @property
    def term(self):
        return self._coord.term

    def guarded_txn(self, term, ops, compare=()):
        """:raises NotLeader: not leading in ``term``."""
        return self._coord.guarded_txn_as_leader(term, ops, compare)


class Coordinator(_api.CoordinatorAPI):
    """A cluster member on etcd. Build it with :func:`get_coordinator`.

    Thread-safe throughout. Callbacks registered here run in hacluster's
    own threads (session renewal, watch): they must be short and must not
    block on etcd.
    """

    single_node = False

    def __init__(self, backend_url, cluster, node, timings,
                 request_timeout=None, clock=_session.boottime, config=None,
                 rpc_version=None, fencing=_fencing.NONE,
                 watchdog_timeout=None,
                 watchdog_device=_fencing.DEFAULT_WATCHDOG_DEVICE):
        lease_ttl, renew_deadline, renew_interval = timings
        self.url = backend_url
        self.cluster = cluster
        self.node = node
        self.layout = _keys.Layout(cluster)
        self.clock = clock
        if request_timeout is None:
            request_timeout = max(1.0, renew_interval)
        self.client = _etcd.Client(backend_url, timeout=request_timeout)
        self.session = _session.Session(
            self.client, lease_ttl, renew_deadline, renew_interval,
            clock=clock, name='%s/%s' % (cluster, node))
        # First listener: it must see what was held when the session is
        # lost, before the locks are given up below.
        self.fencer = _fencing.Fencer(
            fencing, self.session, self._holding,
            name='%s/%s' % (cluster, node),
            watchdog_timeout=watchdog_timeout,
            watchdog_device=watchdog_device)
        self.session.add_listener(self.fencer)
        self.session.add_listener(self)
        self._state_lock = threading.Lock()
        self._running = False
        self._watch = None
        self._dispatch = _dispatch.Dispatcher()
        #: ``{parent prefix: Watch}`` of the prefixes subscribed to outside
        #: the cluster watch (a fan-out cycle's done markers)
        self._side_watches = {}
        #: side watches stopping in the background after an unsubscribe
        self._side_stopping = set()
        self._side_lock = threading.Lock()
        self._callbacks = {'session_lost': [],
                           'session_started': []}
        #: This process incarnation's id: stable across a lost and renewed
        #: session, new at every process start.
        self.member_id = '%s-%s' % (node, uuid.uuid4().hex[:8])
        #: What the parts get of this coordinator (see hacluster.context).
        #: What the cluster's members speak (see hacluster.protocol).
        self.compat = _protocol.ClusterCompat(
            self._own_compat, lambda: self._membership.view(), node)
        self.ctx = _context.Context(
            self.client, self.session, self.layout, cluster, node,
            self.member_id, clock, self.subscribe, self.unsubscribe,
            self.fence_point, self._check_running, lambda: self._running,
            compat=self.compat)
        self._membership = _membership.Membership(
            self.ctx, self.member_id, config=config, rpc_version=rpc_version,
            compat=lambda: self._own_compat().as_record())
        self._leader_view = _election.LeaderView(self.ctx)
        self._election = None
        self._claims = _claims.ClaimBook(self.ctx)
        self.lock_registry = _locks.LockRegistry(self.ctx,
                                                 lambda: self._running)
        self._recovery = _recovery.RecoveryManager(self.ctx,
                                                   _Leadership(self))
        self._membership.add_callback('leave', self._recovery.kick)
        #: changes of leader this node's watch saw (for the metrics)
        self.leader_changes = 0
        self._leader_seen = None
        self._leader_view.add_callback(self._count_leader_change)
        self._metrics = None
        self._metrics_lock = threading.Lock()

    def __repr__(self):
        return '<Coordinator %s/%s %s>' % (self.cluster, self.node,
                                           self.url.safe)

    def _own_compat(self):
        return _protocol.local(__version__, self._recovery.recovers())

    def _count_leader_change(self, record):
        # watch thread; a term is a leadership, so a new term is a change
        if record is not None and record.get('term') != self._leader_seen:
            self._leader_seen = record.get('term')
            self.leader_changes += 1

    @property
    def metrics(self):
        """This coordinator's :class:`hacluster.metrics.Metrics` (its
        Prometheus metrics: ``.serve(host, port)``, ``.start_textfile(path,
        interval)``, ``.render()``, ``.registry``). Made on first use: the
        lock-wait, lock-hold and renewal-latency histograms observe from
        then on. No request."""
        with self._metrics_lock:
            if self._metrics is None:
                from hacluster import metrics as _metrics
                self._metrics = _metrics.Metrics(
                    self, self._claims, self._recovery, self._leader_view)
            return self._metrics

    # -- life cycle ---------------------------------------------------------

    @property
    def running(self):
        return self._running

    def start(self, timeout=None):
        """Connect, start the session, publish the member record and start
        the cluster watch.

        Blocks until etcd grants the session lease (for up to ``timeout``
        seconds, default ``lease_ttl``) and the member record is published
        (a previous registration of this node name that is not renewed any
        more is waited for, up to its lease's expiry).

        :raises BackendUnavailable: etcd did not answer in time (the
            message names the scrubbed endpoints).
        :raises DuplicateMember: a live process already uses this node name
            in this cluster.
        """
        with self._state_lock:
            if self._running:
                return self
            revision = self._first_view(timeout)
            # Join only a cluster whose live members this version can work
            # with; never form a second cluster beside them.
            self._own_compat().check_join(
                {n: r for n, r in self._membership.view().items()
                 if n != self.node})
            self.subscribe(self.layout.members, self._membership)
            self.subscribe(self.layout.leader, self._leader_view)
            self.subscribe(self.layout.recovery_requests, self._recovery)
            # Keys from '~' on are left out (bulk records that only one
            # part reads, hacluster.keys): they would be pushed to every
            # member for nothing.
            self._watch = _etcd.Watch(
                self.client, self.layout.root, self._on_events,
                on_resync=self._on_resync,
                name='hacluster-watch-%s' % self.node,
                range_end=self.layout.watched_end)
            # From the revision we read: every later change reaches the
            # subscribers, whenever the stream actually connects.
            self._watch.start(revision + 1)
            with self._side_lock:
                self._running = True
                # subscriptions made before start() get their watches now
                for prefix in self._dispatch.prefixes():
                    self._open_side(prefix)
            try:
                self.session.start(timeout=timeout)
                self.fencer.start()
                self._membership.register()
                self._recovery.start()
            except Exception:
                with self._side_lock:
                    self._running = False
                self.fencer.stop()
                self.session.stop(revoke=True)
                self._watch.stop()
                self._stop_side_watches()
                raise
        if self._recovery.has_handlers:
            self._campaign_for_recovery()
        LOG.info('hacluster: %s/%s started as member %s on %s',
                 self.cluster, self.node, self.member_id, self.url.safe)
        return self

    def _first_view(self, timeout):
        """Read members and the leader queue at one revision; return it."""
        deadline = self.clock() + (timeout if timeout is not None
                                   else self.session.lease_ttl)
        while True:
            try:
                resp = self.client.txn(success=[
                    _etcd.range_op(self.layout.members,
                                   _keys.prefix_end(self.layout.members)),
                    _etcd.range_op(self.layout.leader,
                                   _keys.prefix_end(self.layout.leader))])
                break
            except exceptions.BackendUnavailable:
                if self.clock() >= deadline:
                    raise
                time.sleep(0.2)
        self._membership.load(resp.kvs(0))
        self._leader_view.load(resp.kvs(1))
        return resp.revision

    def stop(self, claim_grace=None):
        """Leave the cluster gracefully: wait up to ``claim_grace`` seconds
        (default: the coordinator's, 30) for open claims to finish (those
        still open are handed over, for another node to recover at once),
        resign leadership (if leading), mark the member record ``leaving``,
        revoke the session lease (releasing every lock at once, in etcd) and
        stop the background threads.

        Locks still held are marked lost with reason "coordinator stopped"
        (their ``on_lost`` callbacks run). Blocks for at most a couple of
        etcd requests. Idempotent.
        """
        election = self._election
        if election is not None and \
                election.in_callback_thread():
            # Called from a leadership callback: stop from another thread,
            # once the callbacks have returned, so on_stopped_leading comes
            # after on_started_leading and before the lease is revoked.
            threading.Thread(target=self.stop, daemon=True,
                             name='hacluster-stop').start()
            return
        with self._state_lock:
            if not self._running:
                return
        grace = self._recovery.claim_grace if claim_grace is None \
            else claim_grace
        left = self._claims.wait_open_claims(grace)
        if left:
            LOG.warning('hacluster: %s/%s stopping with %d claims still open '
                        'after %ss: handed over to recovery by another node',
                        self.cluster, self.node, left, grace)
            self._claims.hand_over_open(
                'the coordinator stopped while it ran')
        self._recovery.stop()
        self._claims.close()
        with self._state_lock:
            election, self._election = self._election, None
        if election is not None:
            election.resign()
        self._membership.mark_leaving()
        with self._state_lock, self._side_lock:
            # (under the side lock too: a subscribe() after this opens no
            # watch of its own)
            self._running = False
        for _key, lock in self.lock_registry.items():
            lock.mark_lost('coordinator stopped')
        # Disarm first: stopping the session ends its validity, and a
        # watchdog that stopped being petted would reset the machine while
        # the lease is revoked.
        self.fencer.stop()
        self.session.stop(revoke=True)
        if self._watch is not None:
            self._watch.stop()
        self._stop_side_watches()
        if self._metrics is not None:
            # its endpoints and files (a file is written once more, showing
            # this member down)
            self._metrics.stop()
        LOG.info('hacluster: %s/%s stopped', self.cluster, self.node)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _holding(self):
        """What this process holds that a survivor could take over, as
        text ('' when nothing): open claims, recoveries running, cluster
        locks. Cheap and thread-safe (no request)."""
        parts = []
        claims = self._claims.open_count
        if claims:
            parts.append('open claims: %d' % claims)
        recovering = self._recovery.recovering_count
        if recovering:
            parts.append('recoveries running: %d' % recovering)
        # Cluster locks (not the leadership entry: a leader that loses its
        # session steps down, and its leader-only writes are refused).
        locks = sum(1 for key, lock in self.lock_registry.items()
                    if key.startswith(self.layout.locks) and lock.taken)
        if locks:
            parts.append('cluster locks: %d' % locks)
        return ', '.join(parts)

    def fence_point(self):
        """Call right before a write a recovery must not race: exits the
        process (fencing ``exit``/``watchdog``) if the renew deadline has
        passed while work is held. Cheap (no request)."""
        self.fencer.check()

    def _check_running(self):
        if not self._running:
            raise exceptions.NotStarted(
                'coordinator %s/%s is not started' % (self.cluster,
                                                      self.node))

    # -- locks ----------------------------------------------------------------

    def get_lock(self, name, shared=False, on_lost=None):
        """A :class:`hacluster.locks.Lock` for ``name`` (not acquired yet).

        :param name: any printable text up to 512 characters.
        :param shared: True for a shared (read) lock; exclusive by default.
        :param on_lost: optional ``callback(lock, reason)``.
        :raises InvalidName: the name cannot be used.
        """
        return _locks.Lock(self.ctx, self.lock_registry, name, shared=shared,
                           on_lost=on_lost)

    def get_data(self, key):
        """Read a data item written by a guarded write: ``(value, revision)``
        or ``(None, 0)``. Blocks for one etcd request."""
        kv = self.client.get(self.layout.data_key(key))
        return (kv.value, kv.mod_revision) if kv else (None, 0)

    # -- membership -----------------------------------------------------------

    def get_members(self):
        """The live members, read from etcd: ``{node: MemberRecord}``.

        A MemberRecord is a dict (``node``, ``member_id``, ``host``, ``pid``,
        ``version``, ``rpc_version``, ``config_fingerprint``, ``joined_at``,
        ``lease``, ``state``...) whose keys are also attributes. Blocks for
        one etcd request.
        """
        kvs, _ = self.client.get_prefix(self.layout.members)
        records = (_membership.MemberRecord.from_kv(kv) for kv in kvs)
        return {r['node']: r for r in records}

    def update_member(self, **fields):
        """Publish extra fields in this member's record (JSON-able values).
        Blocks for one etcd request."""
        self._membership.update(**fields)

    def live_members(self):
        """The members as this coordinator's watch sees them now:
        ``{node: MemberRecord}`` (no request)."""
        return self._membership.view()

    def on_member_join(self, callback):
        """Register ``callback(record)``: a member joined (or rejoined with
        a new session). Called in the watch thread; keep it short."""
        self._membership.add_callback('join', callback)

    def on_member_leave(self, callback):
        """Register ``callback(record, graceful)``: a member left;
        ``graceful`` is False when its lease expired (crash, pause,
        partition). Called in the watch thread; keep it short."""
        self._membership.add_callback('leave', callback)

    # -- leadership -----------------------------------------------------------

    def run_for_leader(self, on_started_leading, on_stopped_leading,
                       on_new_leader=None):
        """Campaign to lead this cluster; returns at once.

        See :mod:`hacluster.election` for the callback contract. Calling it
        again while campaigning adds the callbacks to the same campaign
        (``on_started_leading`` is called at once if leading now).

        :raises NotStarted: the coordinator is not started.
        """
        self._check_running()
        with self._state_lock:
            election = self._election
            if election is not None and not election._stop.is_set():
                # Already campaigning (hacluster's own runner or recovery
                # may have started it): add these callbacks to it.
                election.add_listener(on_started_leading, on_stopped_leading)
                if on_new_leader is not None:
                    self._leader_view.add_callback(on_new_leader)
                return election
            self._election = _election.Election(
                self.ctx, self.lock_registry, self._leader_view,
                on_started_leading, on_stopped_leading, on_new_leader)
            return self._election.start()

    def campaign(self):
        """Run for leader if not already (no callbacks of our own); used by
        hacluster's own leader work (periodic tasks, recovery). Returns the
        election."""
        return self.run_for_leader(lambda term: None, lambda term: None)

    def resign(self):
        """Stop leading and campaigning (see Election.resign). A
        ``run_for_leader`` after (or during) it starts a new campaign."""
        with self._state_lock:
            election, self._election = self._election, None
        if election is not None:
            election.resign()

    @property
    def is_leader(self):
        """True while this node leads (checked against the renew deadline;
        no request)."""
        return self._election is not None and self._election.is_leader

    @property
    def term(self):
        """The leadership term while leading, else None."""
        return self._election.term if self._election is not None else None

    def get_leader(self):
        """The leader's record (as :meth:`get_members`, plus ``term``), or
        None. Read from etcd; works on any coordinator, campaigning or not.
        Blocks for one etcd request."""
        resp = self.client.txn(success=[
            _etcd.range_op(self.layout.leader,
                           _keys.prefix_end(self.layout.leader),
                           sort_create=True, limit=1)])
        head_kv = _election.head_of(resp.kvs(0))
        if head_kv is None:
            return None
        head = head_kv.json()
        record = _membership.MemberRecord(head)
        member = self._membership.view().get(head.get('node'))
        if member is not None and \
                member.get('member_id') == head.get('member_id'):
            record = _membership.MemberRecord(dict(member, **head))
        record['term'] = head_kv.create_revision
        return record

    def on_new_leader(self, callback):
        """Register ``callback(record_or_None)``, called whenever the
        observed leader changes (watch thread)."""
        self._leader_view.add_callback(callback)

    def guarded_txn_as_leader(self, term, ops, compare=()):
        """Run etcd operations (:mod:`hacluster.etcd` ops) only while this
        node leads in ``term``, atomically. Blocks for one request.

        :raises NotLeader: not leading in ``term``.
        :raises StaleFencingToken: etcd refused: the term is over.
        """
        election = self._election
        if election is None:
            raise exceptions.NotLeader('%s is not campaigning' % self.node)
        return election.guarded_txn(term, ops, compare=compare)

    def guarded_put_as_leader(self, term, key, value):
        """Write data ``key`` only if this node still leads in ``term``.

        :raises NotLeader: not leading in ``term``.
        :raises StaleFencingToken: etcd refused: the term is over.
        """
        if self._election is None:
            raise exceptions.NotLeader('%s is not campaigning' % self.node)
        self._election.guarded_put(term, key, value)

    # -- claims and recovery --------------------------------------------------

    def claim(self, resource_type, resource_id, operation, data=None):
        """A claim on in-flight work, to use as a context manager::

            with coord.claim('share', share_id, 'create', {'size': 1}):
                ...

        Entering writes a durable record in etcd (one request), leaving
        removes it (one request), even when the block raises. If this
        process dies inside the block, the record stays and the leader runs
        the recovery handler registered for ``resource_type``. See
        :mod:`hacluster.recovery` for the guarantees.

        :raises ConfigurationError: bad arguments or data that is not JSON.
        :raises NotStarted: entered on a stopped coordinator.
        """
        return self._claims.claim(resource_type, resource_id, operation,
                                  data)

    def can_claim(self, resource_type, operation):
        """True if every live member can recover a claim of
        ``resource_type``/``operation`` should this node die while it runs
        (see :mod:`hacluster.protocol`). During a rolling upgrade, an
        operation that is new in this version is claimed only once no
        member of the older version is left (as cinder gates its cleanup on
        the pinned version); until then it runs as the older version ran
        it. No request (the membership view)."""
        return self.compat.everyone_recovers(resource_type, operation)

    def register_recovery(self, resource_type, handler):
        """Register ``handler(claim_record)`` to finish or undo the
        operations of dead nodes on ``resource_type`` (e.g. set a share
        stuck in ``creating`` to ``error``). It runs on the leader (and on a
        node restarting under the same name, for its own old claims), one
        claim at a time; raising means "retry later" (with backoff). Makes
        this coordinator run for leader."""
        self._recovery.register(resource_type, handler)
        if self._running:
            # what this node recovers is in its record (hacluster.protocol)
            self._membership.update()
            self._campaign_for_recovery()

    def _campaign_for_recovery(self):
        self.run_for_leader(self._recovery.kick, lambda term: None)

    def list_claims(self, node=None):
        """The claims in etcd (of ``node``, if given): ClaimRecords with
        their state (``active``, ``recovering``, ``failed``), attempts and
        last error. Blocks for one etcd request."""
        return self._recovery.list_claims(node)

    def recover_node(self, node):
        """Recover the claims of ``node`` now (an operator who knows it is
        dead). Refused while ``node`` is a live member.

        :raises HAClusterError: ``node`` is alive.
        :returns: the number of claims recovered here.
        """
        if node in self.get_members():
            raise exceptions.HAClusterError(
                'node %r is a live member of cluster %r: its claims are not '
                'orphaned; refusing to recover them' % (node, self.cluster))
        return self._recovery.recover_node(node, force=True)

    # -- callbacks ------------------------------------------------------------

    def on_lock_lost(self, callback):
        """Register ``callback(lock, reason)`` for every lock of this
        coordinator that is lost while held."""
        self.lock_registry.on_lost(callback)

    def on_session_lost(self, callback):
        """Register ``callback(reason)``: the session is gone and everything
        held with it. Called before a new session is started."""
        self._callbacks['session_lost'].append(callback)

    def on_session_started(self, callback):
        """Register ``callback(member_id)``: a new session (first one, or one
        replacing a lost one) is live."""
        self._callbacks['session_started'].append(callback)

    def _fire(self, kind, *args):
        for cb in list(self._callbacks[kind]):
            try:
                cb(*args)
            except Exception:
                LOG.exception('hacluster: %s callback %r failed', kind, cb)

    # Session listener interface.
    def session_lost(self, epoch, lease_id, reason):
        self._membership.session_lost()
        for key, lock in self.lock_registry.items():
            if lock.epoch == epoch:
                lock.mark_lost('session lost: %s' % reason, key=key)
        self._fire('session_lost', reason)

    def session_started(self, epoch, lease_id):
        if epoch > 1 and self._running:
            # A new session after a lost one: put our record back (in its
            # own thread, retried while this session lives), and move the
            # claims still open here onto the new lease, so that they are
            # not mistaken for a dead node's.
            self._membership.rejoin(epoch)
            threading.Thread(target=self._claims.rebind, args=(lease_id,),
                             daemon=True, name='hacluster-rebind').start()
        self._fire('session_started', self.member_id)

    def held_locks(self):
        """The locks this coordinator holds now (a snapshot list)."""
        return self.lock_registry.held()

    # -- watch dispatch -------------------------------------------------------

    def subscribe(self, parent_prefix, subscriber):
        """Deliver the cluster watch's events for keys directly under
        ``parent_prefix`` (ending in ``/``) to ``subscriber``, a
        :class:`hacluster.api.Subscriber`. Thread-safe, no request.

        A prefix outside the cluster watch (from ``~`` on, see
        :mod:`hacluster.keys`) gets a watch of its own while anyone
        subscribes to it, from the newest revision this node has seen:
        every change made after this call returns is delivered (and a few
        from just before it may be, again). Its thread and stream end when
        the last subscriber leaves. Such a watch runs only while the
        coordinator does: a subscription made before :meth:`start` gets it
        at start, one made after :meth:`stop` none."""
        with self._side_lock:
            self._dispatch.subscribe(parent_prefix, subscriber)
            if self._running:
                self._open_side(parent_prefix)

    def _open_side(self, parent_prefix):
        """Open the watch of its own of a prefix outside the cluster watch,
        unless it has one. Call with the side lock held."""
        if self.layout.watched(parent_prefix) or \
                parent_prefix in self._side_watches:
            return
        watch = _etcd.Watch(
            self.client, parent_prefix, self._dispatch.deliver,
            on_resync=lambda: self._resync_side(parent_prefix),
            name='hacluster-watch-%s-side' % self.node)
        watch.start(self.client.revision + 1)
        self._side_watches[parent_prefix] = watch

    def unsubscribe(self, parent_prefix, subscriber):
        """Stop delivering to ``subscriber`` (idempotent). Never blocks: a
        watch of its own that is not needed any more stops in the
        background."""
        with self._side_lock:
            self._dispatch.unsubscribe(parent_prefix, subscriber)
            watch = None
            if not self._dispatch.subscribers(parent_prefix):
                watch = self._side_watches.pop(parent_prefix, None)
            if watch is not None:
                # (in the same section: a stop() in between joins it too)
                self._side_stopping.add(watch)
        if watch is not None:
            threading.Thread(target=self._unwatch, args=(watch,),
                             daemon=True, name='hacluster-unwatch').start()

    def _unwatch(self, watch):
        watch.stop()
        with self._side_lock:
            self._side_stopping.discard(watch)

    def _stop_side_watches(self, timeout=5.0):
        """Stop every watch of its own (those still stopping after an
        unsubscribe too); blocks until their threads end, ``timeout``
        seconds at most in all."""
        with self._side_lock:
            side = list(self._side_watches.values()) + \
                list(self._side_stopping)
            self._side_watches = {}
        # all told to stop first, then waited for against one deadline:
        # one stuck in a request to a frozen member costs its timeout once,
        # not once per watch
        for watch in side:
            watch.stop(wait=False)
        deadline = time.monotonic() + timeout
        for watch in side:
            watch.join(max(0.0, deadline - time.monotonic()))

    def _resync_side(self, parent_prefix):
        """A watch of its own resumed after a compaction: its subscribers
        re-read what they keep (a failure is theirs to recover from: the
        fan-out leader checks its count against etcd every
        renew_interval)."""
        self._dispatch.resync(only=self._dispatch.subscribers(parent_prefix))

    def _on_events(self, events):
        for etype, kv in events:
            if etype == 'DELETE':
                lock = self.lock_registry.get(kv.key)
                if lock is not None:
                    # Only if it still holds under that very key: a late
                    # event about an old key must not touch a re-acquired
                    # lock.
                    lock.mark_lost('its key was deleted from etcd by '
                                   'someone else', key=kv.key)
        self._dispatch.deliver(events)

    def _on_resync(self):
        """Events were missed (the watch resumed after a compaction): every
        subscriber re-reads what it keeps, and every held lock is checked
        against etcd. Whatever cannot be re-read now is retried every
        renew_interval, in a thread of its own, until it succeeds -- a stale
        view must not stay stale, nor a lost lock unnoticed."""
        failed = self._dispatch.resync()
        if failed or not self._check_held_locks():
            threading.Thread(target=self._resync_until_done, args=(failed,),
                             daemon=True, name='hacluster-resync').start()

    def _resync_until_done(self, failed):
        locks_ok = False
        while self._running:
            time.sleep(self.session.renew_interval)
            if failed:
                failed = self._dispatch.resync(only=failed)
            if not locks_ok:
                locks_ok = self._check_held_locks()
            if not failed and locks_ok:
                LOG.info('hacluster: %s/%s: resynchronised with etcd',
                         self.cluster, self.node)
                return

    def _check_held_locks(self):
        """A held key may have been deleted while events were missed.
        Returns False if etcd could not say for every lock."""
        ok = True
        for key, lock in self.lock_registry.items():
            try:
                kv = self.client.get(key)
            except exceptions.HAClusterError:
                ok = False
                continue
            if kv is None or kv.create_revision != lock.fencing_token:
                lock.mark_lost('its key is gone from etcd', key=key)
        return ok
