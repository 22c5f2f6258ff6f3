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

"""The HA share manager: manila-share active-active on one backend.

Configure every node of a backend alike, except the node name::

    [DEFAULT]
    # the same on every node
    host = hagroup
    # required when clustered
    enabled_share_backends = dummy
    share_manager = hacluster.manila.manager.HAShareManager
    [coordination]
    # manila's tooz URL: manila-api and manila-scheduler read it, one endpoint
    backend_url = etcd3+http://10.0.0.5:2379
    [hacluster]
    # hacluster's own: several endpoints, TLS, user:password@
    backend_url = etcd3+http://10.0.0.5:2379,10.0.0.6:2379
    # unique per node (default hostname)
    node_name = node-a

Each backend ``host@backend`` is one cluster (``[hacluster] cluster``
overrides the name). All nodes share manila's RPC queue for the backend
(RabbitMQ spreads the requests); hacluster gives each process its own
member identity.

What changes against manila's own ``ShareManager`` when clustered:

* ``init_host`` (in the worker process, after cotyledon forked it) joins
  the cluster before anything else; the driver must have opted in
  (:class:`hacluster.manila.driver.HAShareDriverMixin`), else the service
  refuses to start.
* manila's locks become cluster locks (:mod:`hacluster.manila.locks`).
* The share, snapshot and replica operations of
  :data:`hacluster.manila.claims.CLAIMED_OPERATIONS` run under a claim; a
  node's death inside one is repaired by a survivor.
* The start-up "ensure" pass runs on the first node of the cluster only:
  a node joining while others serve the backend must not put their shares
  into ``ensuring``.
* manila's periodic tasks run on hacluster's runner in the mode of
  :data:`TASK_MODES`: the leader alone polls backend stats and cleans up;
  the per-share status and replica polls are handed out share by share to
  the members, each share once per cycle.
* A stop (SIGTERM) leaves the cluster within manila's
  ``graceful_shutdown_timeout``: leadership passes on and the periodic
  tasks stop as soon as manila stops its RPC server; the operations in
  flight get half of that time, after which their claims are handed over
  to recovery; then the node's locks, member record and lease go
  (:meth:`HAShareManager.ha_stop`).

In single-node mode (``[hacluster] backend_url`` and ``[coordination]
backend_url`` unset, or the one in use ``file://``, manila's default)
locks, periodic tasks and ensure stay manila's own; claims are kept in
local files and recovered when the node starts again.
"""

import contextlib
import functools
import inspect
import logging
import threading
import time

from oslo_config import cfg

from manila import context as manila_context
from manila import exception as manila_exception
from manila.share import manager as share_manager

from hacluster import backoff as _backoff
from hacluster import exceptions
from hacluster import factory as _factory
from hacluster.manila import claims as _claims
from hacluster.manila import driver as _driver
from hacluster.manila import locks as _locks
from hacluster import metrics as _metrics
from hacluster import opts as _opts
from hacluster.periodic import task as _task

LOG = logging.getLogger(__name__)
CONF = cfg.CONF

#: Mode of each of manila 23's share-manager periodic tasks. A task not
#: named here runs on the leader only (never twice per cycle).
TASK_MODES = {
    '_report_driver_status': _task.LEADER,
    '_publish_service_capabilities': _task.LEADER,
    'do_deferred_share_deletion': _task.LEADER,
    'do_deferred_snapshot_deletion': _task.LEADER,
    'delete_free_share_servers': _task.LEADER,
    'delete_expired_share': _task.LEADER,
    'delete_expired_transfers': _task.LEADER,
    'update_share_usage_size': _task.LEADER,
    'migration_driver_continue': _task.LEADER,
    'share_server_migration_driver_continue': _task.LEADER,
    'create_backup_continue': _task.LEADER,
    'restore_backup_continue': _task.LEADER,
    'periodic_share_replica_snapshot_update': _task.LEADER,
    '_execute_periodic_hook': _task.EVERY,
    'periodic_share_status_update': _task.FANOUT,
    'periodic_share_replica_update': _task.FANOUT,
}

ENSURE_LOCK = 'hacluster-ensure'

#: Seconds a stop waits for the operations in flight when manila's
#: ``graceful_shutdown_timeout`` is 0 (no bound), as long as hacluster's
#: coordinator waits for open claims.
CLAIM_GRACE = 30.0
#: Shares of ``graceful_shutdown_timeout``, counted from the SIGTERM: the
#: operations in flight may run until the first (then their claims are
#: handed over to recovery); the periodic tasks and the fan-out RPC server
#: have until the second to stop; leaving the cluster (a few etcd
#: requests) and the rest of manila's stop take what is left, before
#: oslo.service's alarm kills the worker.
CLAIMS_SHARE = 0.5
PERIODIC_SHARE = 0.7
#: The share after which :meth:`HAShareManager.ha_stop` returns even if
#: leaving the cluster has not finished (the lease then expires instead).
LEAVE_SHARE = 0.9


def graceful_shutdown_timeout(conf=CONF):
    """manila's ``[DEFAULT] graceful_shutdown_timeout`` (oslo.service's
    option: seconds from SIGTERM until the worker is killed; 0 = no
    bound). 60, oslo.service's default, where it is not registered."""
    try:
        return max(0.0, float(conf.graceful_shutdown_timeout or 0))
    except cfg.NoSuchOptError:
        return 60.0


def stop_deadlines(began, graceful):
    """``(claims, periodic, leave)``: the ``time.monotonic()`` deadlines of
    a stop that began at ``began`` under a ``graceful_shutdown_timeout``
    of ``graceful`` seconds (see :data:`CLAIMS_SHARE`); with 0 (no bound)
    :data:`CLAIM_GRACE` for the claims, twice that for the rest."""
    if not graceful:
        return (began + CLAIM_GRACE, began + 2 * CLAIM_GRACE,
                began + 3 * CLAIM_GRACE)
    return (began + min(CLAIM_GRACE, CLAIMS_SHARE * graceful),
            began + PERIODIC_SHARE * graceful,
            began + LEAVE_SHARE * graceful)


def task_name(manila_name):
    """hacluster's name of a manila periodic task (``[hacluster]
    task_spacing`` keys): the method name without leading underscores."""
    return manila_name.lstrip('_')


def _claimed(method_name):
    """Wrap ShareManager.<method_name> in the claim its operation needs."""
    spec = _claims.CLAIMED_OPERATIONS[method_name]
    resource_type, operation, arg = spec[:3]
    recorded = spec[3] if len(spec) > 3 else ()
    base = getattr(share_manager.ShareManager, method_name)
    signature = inspect.signature(base)

    @functools.wraps(base)
    def wrapper(self, *args, **kwargs):
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:
            bound = None             # let manila report the bad call
        resource_id = bound.arguments.get(arg) if bound else None
        if not resource_id:
            return base(self, *args, **kwargs)
        data = {name: bound.arguments[name] for name in recorded
                if name in bound.arguments} or None
        safe = _SafeClaim(self.ha_coordinator, resource_type, resource_id,
                          operation, data)
        inflight = getattr(self, '_ha_inflight', None)
        with safe as claim, \
                _claims.operation(self.ha_coordinator, claim, resource_type,
                                  resource_id, operation) as op, \
                (inflight.running(safe, op) if inflight is not None
                 else contextlib.nullcontext()):
            # (manila's database writes in this thread are fenced by the
            # claim: see hacluster.manila.claims)
            return base(self, *args, **kwargs)
    return wrapper


class _SafeClaim:
    """A claim around an RPC operation that never stops the operation.

    The RPC message is already acknowledged when the handler runs: if the
    claim cannot be recorded (etcd down, coordinator stopping, a local file
    that cannot be written), refusing to work would strand the resource in
    its transitional status for good. The operation runs unprotected then,
    and the log says so.
    """

    def __init__(self, coordinator, resource_type, resource_id, operation,
                 data):
        self._args = (resource_type, resource_id, operation, data)
        self._coord = coordinator
        self._claim = None
        self._lock = threading.Lock()

    def __enter__(self):
        if self._coord is None:
            return None
        try:
            claim = self._coord.claim(*self._args)
            claim.__enter__()
        except (exceptions.HAClusterError, OSError) as exc:
            LOG.error('hacluster: could not record a claim for %s of %s %s '
                      '(%s); running it without crash protection',
                      self._args[2], self._args[0], self._args[1], exc)
            return None
        with self._lock:
            self._claim = claim
        return claim

    def __exit__(self, *exc):
        self._close(exc)
        return False

    def hand_over(self, reason):
        """Give the claim up to recovery now, while the operation may still
        run (the node is stopping and cannot wait for it): its record is
        left in etcd bound to no lease, for the leader to recover at once,
        and the operation's own end no longer touches it. Blocks for one
        etcd request; never raises. Returns True if a claim was open."""
        claim = self._take()
        if claim is None:
            return False
        claim.hand_over(reason)
        self._end(claim, (None, None, None))
        return True

    def _close(self, exc):
        claim = self._take()
        if claim is not None:
            self._end(claim, exc)

    def _take(self):
        # once: the operation's end and a hand-over at stop may race, and
        # whichever comes first ends the claim its way
        with self._lock:
            claim, self._claim = self._claim, None
        return claim

    def _end(self, claim, exc):
        try:
            claim.__exit__(*exc)
        except (exceptions.HAClusterError, OSError) as err:
            # the operation is over; a claim left behind is recovered
            # as if this node died (idempotent handlers)
            LOG.error('hacluster: could not remove the claim for %s of '
                      '%s %s: %s', self._args[2], self._args[0],
                      self._args[1], err)


class _InFlight:
    """The claimed operations running in this process, so that a stop can
    wait for them (up to a deadline) and hand the rest over to recovery.

    Once closed (:meth:`hand_over`), an operation that still arrives --
    an RPC message dispatched after the stop began, already acknowledged
    -- is not run: its claim is opened and handed over at once, so a
    survivor brings the resource to a final state (one whose claim cannot
    be recorded runs unprotected, as :class:`_SafeClaim` runs it).
    Thread-safe.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._entries = set()        # (_SafeClaim, claims._Operation)
        self._closed = None          # the hand-over reason, once closed

    @contextlib.contextmanager
    def running(self, safe, op):
        """Context manager around one claimed operation.

        :raises Fenced: (on entering) the registry is closed; the
            operation's claim has been handed over to recovery.
        """
        entry = (safe, op)
        with self._cond:
            closed = self._closed
            if closed is None:
                self._entries.add(entry)
        if closed is not None:
            if self._give_up(entry, closed):
                raise exceptions.Fenced(
                    '%s of %s %s not started: %s' % (
                        op.operation, op.resource_type, op.resource_id,
                        closed))
            # no claim to hand over (it could not be recorded): run it
            # unprotected, as _SafeClaim does -- dropping it would strand
            # the resource with no trace
            yield
            return
        try:
            yield
        finally:
            with self._cond:
                self._entries.discard(entry)
                self._cond.notify_all()

    def wait(self, deadline):
        """Block until no claimed operation runs, or until ``deadline``
        (``time.monotonic()``); returns how many still run."""
        with self._cond:
            while self._entries:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return len(self._entries)

    def hand_over(self, reason):
        """Close the registry and hand the claims of the operations still
        running over to recovery (their further database writes are
        refused: hacluster.manila.claims). Blocks for one etcd request per
        claim; never raises. Returns the number handed over."""
        with self._cond:
            self._closed = reason
            entries = list(self._entries)
        return sum(1 for entry in entries if self._give_up(entry, reason))

    @staticmethod
    def _give_up(entry, reason):
        safe, op = entry
        # first the writes, then the record: once a survivor can take the
        # claim, this thread must not write any more
        op.handed_over = reason
        return safe.hand_over(reason)


def _join_by(thread, deadline, start=False):
    """Join ``thread`` (starting it first if ``start``) until ``deadline``
    (``time.monotonic()``); True if it ended."""
    if start:
        thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    return not thread.is_alive()


class _StopNotifyingServer:
    """manila's RPC server of an HA manager, as manila's Service uses it
    (``start``, ``stop``, ``wait``: everything is the server's own), except
    that ``stop`` first tells the manager -- so it stops taking periodic
    work and passes leadership on while oslo.messaging takes up to 5 s to
    stop the listener, instead of after."""

    def __init__(self, server, on_stop):
        self.server = server
        self._on_stop = on_stop

    def stop(self):
        try:
            self._on_stop()
        except Exception:
            LOG.exception('hacluster: starting to leave the cluster')
        return self.server.stop()

    def __getattr__(self, name):
        return getattr(self.server, name)


class HAShareManager(share_manager.ShareManager):
    """manila's ShareManager, active-active. See the module doc.

    Built in the cotyledon master (manila constructs managers before it
    forks): the constructor only validates; sessions, threads and
    connections start in :meth:`init_host`, in the worker.

    :raises ConfigurationError: (at construction) clustered with a driver
        that has not opted in, or a bad ``[hacluster]`` /
        ``[coordination]`` setting; the message names it.
    """

    def __init__(self, share_driver=None, service_name=None, *args,
                 **kwargs):
        # [hacluster] backend_url, else [coordination] backend_url (the
        # error names the option in use)
        parsed = self._ha_backend = _opts.backend_url(CONF)
        self.ha_clustered = parsed.kind != 'file'
        if self.ha_clustered:
            # before manila's constructor starts its own tooz coordinator
            # on the same URL (see locks.PendingLockCoordinator)
            _locks.defer_manilas_coordinator()
        super().__init__(share_driver, service_name, *args, **kwargs)
        backends = CONF.enabled_share_backends or []
        if self.ha_clustered and not backends:
            # manila-share without enabled_share_backends builds its Service
            # without coordination, so it never calls LOCK_COORDINATOR.stop()
            # -- the only way a clean stop reaches this manager.
            raise exceptions.ConfigurationError(
                'enabled_share_backends is not set: the HA share manager '
                'needs a backend section (clustered mode, %s = %s)'
                % (parsed.option, parsed.safe))
        if CONF.hacluster.cluster and len(backends) > 1:
            raise exceptions.ConfigurationError(
                '[hacluster] cluster = %s is set while enabled_share_backends '
                'names %d backends (%s): each backend is a cluster of its own '
                '(named host@backend by default); unset [hacluster] cluster'
                % (CONF.hacluster.cluster, len(backends), ', '.join(backends)))
        self.ha_cluster = _opts.cluster_name(CONF, host=self.host)
        driver = self.driver
        if self.ha_clustered and not getattr(driver, 'SUPPORTS_ACTIVE_ACTIVE',
                                             False):
            raise exceptions.ConfigurationError(
                'share driver %s of backend %s does not support '
                'active-active (it does not mix in hacluster.manila.driver.'
                'HAShareDriverMixin / set SUPPORTS_ACTIVE_ACTIVE); refusing '
                'to run it on several nodes. Unset %s (or use file://) for '
                'single-node mode.'
                % (type(driver).__name__, self.host, parsed.option))
        # Fail now, in the master, on bad timings or names -- not in a
        # worker that cotyledon would restart forever.
        _opts.coordinator_from_conf(CONF, cluster=self.ha_cluster,
                                    lock_path=parsed.path, backend=parsed)
        self.ha_coordinator = None
        self.ha_runner = None
        self._ha_starting = False
        # the claimed operations running, for the stop to wait for
        self._ha_inflight = _InFlight()
        # start-up and stop exclude each other (a SIGTERM may come while
        # init_host_with_rpc starts the periodic tasks)
        self._ha_life_lock = threading.Lock()
        self._ha_stop_began = None       # time.monotonic() of the stop
        self._ha_quiesce = None          # its first phase's thread
        self._ha_rpcserver = None        # manila's, once it is built
        self._ha_manila_tasks = list(type(self)._periodic_tasks)
        if self.ha_clustered:
            # A claimed operation's final writes are fenced by its claim: a
            # node thought dead never writes over a recovery. (The
            # conditional UPDATE of a claimed row shares manila's own
            # transaction for that write: one commit, not two.)
            self.db = _claims.FencedDB(
                self.db, transaction=_claims.manila_transaction)
            # manila built its access helpers with the raw API already
            for helper in ('access_helper', 'snapshot_access_helper'):
                helper = getattr(self, helper, None)
                if helper is not None and hasattr(helper, 'db'):
                    helper.db = self.db
            # manila's own periodic loop (Service.periodic_tasks) runs
            # nothing: every task runs on hacluster's runner, in its mode.
            self._periodic_tasks = []

    # -- start and stop -------------------------------------------------------

    def init_host(self, service_id=None):
        """Join the cluster, then manila's own init_host (driver set-up,
        ensure). Runs in the worker process. Blocks until this node is a
        member (retrying, see :meth:`_ha_join`), then as long as manila's
        driver set-up takes."""
        self._ha_start_coordinator()
        self._ha_starting = True
        try:
            super().init_host(service_id=service_id)
        finally:
            self._ha_starting = False
        if not self.ha_coordinator.single_node:
            self._ha_hook_rpc_server()

    def init_host_with_rpc(self, *args, **kwargs):
        """Once the node serves: recovery handlers (which make it run for
        leader -- only a node that serves may lead), then the periodic
        tasks (none of it once a stop has begun)."""
        super().init_host_with_rpc(*args, **kwargs)
        coord = self.ha_coordinator
        if coord is not None:
            with self._ha_life_lock:
                if self._ha_stop_began is not None:
                    return
                self._ha_recoverer.ha_register_recovery()
                if not coord.single_node:
                    self._ha_update_member(ready=True)
                    self._ha_start_periodic()
        # (the test rig waits for this line)
        LOG.info('hacluster: manila-share ready: %s serves %s (%s)',
                 coord.node if coord else CONF.host, self.host,
                 'clustered' if self.ha_clustered else 'single-node')

    def _ha_start_coordinator(self):
        if self.ha_coordinator is not None:
            return
        parsed = self._ha_backend
        # the member record carries a fingerprint of what must agree
        # between nodes (drift shows in `hacluster status`), never secrets
        coord_config = {
            'share_driver': self.configuration.share_driver,
            'driver_handles_share_servers':
                self.configuration.safe_get('driver_handles_share_servers'),
            'share_backend_name':
                self.configuration.safe_get('share_backend_name'),
        }
        coord = _opts.coordinator_from_conf(
            CONF, cluster=self.ha_cluster, lock_path=parsed.path,
            config=coord_config, rpc_version=self.RPC_API_VERSION,
            backend=parsed)
        self._ha_join(coord)
        self.ha_coordinator = coord
        LOG.info('hacluster: %s joined cluster %s as %s (%s)', self.host,
                 coord.cluster, coord.node,
                 'single-node' if coord.single_node else coord.url.safe)
        # The driver recovers its own operations when it has the mixin;
        # a plain driver (single-node mode only) gets the mixin's default,
        # database-only recovery, so its claims are recovered too.
        if hasattr(self.driver, 'ha_attach'):
            self._ha_recoverer = self.driver
        else:
            self._ha_recoverer = _driver.DefaultRecovery()
        self._ha_recoverer.ha_attach(coord, self.db, recover=False)
        if not coord.single_node:
            # (manila's locks are never given back: see ha_stop)
            _locks.install(coord, on_stop=self.ha_stop)
            # hacluster.synchronized without a coordinator= takes its locks
            # here too (a driver's, as `hacluster audit` suggests them);
            # never cleared: after the stop it fails closed as well. In
            # single-node mode it stays unset: the fall-back is an
            # oslo.concurrency lock (on manila's own lock file of the name).
            _factory.set_default(coord)
            # [hacluster] metrics_port / metrics_textfile (off by default);
            # stopped by coord.stop()
            _metrics.start_from_conf(coord, CONF)

    def _ha_join(self, coord, max_backoff=60.0):
        """Start ``coord``, retrying until it is a member.

        A node that cannot join (etcd unreachable, or another live process
        uses this node name) must not serve: it cannot lock or claim. As
        manila does for a driver that fails to set up, it keeps trying,
        with backoff (2 s doubling to ``max_backoff``), logging each
        failure -- rather than exiting and being respawned by cotyledon
        every second. Blocks until joined.
        """
        import time
        delay = 2.0
        while True:
            try:
                coord.start()
                return
            except exceptions.HAClusterError as exc:
                LOG.error('hacluster: %s cannot join cluster %s as %s (%s); '
                          'not serving; retrying in %.0f s', self.host,
                          coord.cluster, coord.node, exc, delay)
            time.sleep(_backoff.jittered(delay))
            delay = _backoff.doubled(delay, max_backoff)

    def _ha_update_member(self, **fields):
        """Publish member-record fields; an etcd blip is logged, never
        raised into manila (the RPC server may already be taking work)."""
        try:
            self.ha_coordinator.update_member(**fields)
            return True
        except exceptions.HAClusterError as exc:
            LOG.warning('hacluster: could not publish %s in the member '
                        'record: %s', ', '.join(sorted(fields)), exc)
            return False

    def _ha_start_periodic(self, delay=2.0, max_delay=60.0):
        """Start manila's periodic tasks on a hacluster runner. If etcd or
        the broker fails it, stop what started and retry in a thread (2 s
        doubling to 60 s): the node already serves RPC, and its tasks must
        not be lost to one blip."""
        from hacluster.periodic import runner as _runner
        from manila import rpc as manila_rpc

        runner = _runner.PeriodicRunner(self.ha_coordinator, conf=CONF,
                                        transport=manila_rpc.TRANSPORT)
        for name, task in self._ha_manila_tasks:
            runner.add(self._ha_task(name, task))
        try:
            runner.start()
        except exceptions.ConfigurationError:
            raise                    # a bad spacing: the operator must fix
        except Exception as exc:
            LOG.error('hacluster: periodic tasks did not start (%s); '
                      'retrying in %.0f s', exc, delay)
            try:
                runner.stop()
            except Exception:
                LOG.debug('stopping a half-started runner', exc_info=True)
            import threading
            timer = threading.Timer(
                delay, self._ha_retry_periodic,
                args=(min(delay * 2, max_delay), max_delay))
            timer.daemon = True
            timer.start()
            return
        self.ha_runner = runner

    def _ha_retry_periodic(self, delay, max_delay):
        with self._ha_life_lock:
            if self._ha_stop_began is not None or \
                    self.ha_coordinator is None or \
                    not self.ha_coordinator.running:
                return               # stopped meanwhile
            self._ha_start_periodic(delay, max_delay)

    def _ha_task(self, name, task):
        """A hacluster periodic task running manila's task ``name``."""
        mode = TASK_MODES.get(name, _task.LEADER)
        spacing = self._periodic_spacing.get(name) or 60
        hname = task_name(name)
        if mode == _task.FANOUT:
            lister = getattr(self, '_ha_list_' + name)
            handler = getattr(self, '_ha_handle_' + name)

            def run(ctx):
                return lister(manila_context.get_admin_context())

            def handle(ictx, item_id, payload):
                handler(manila_context.get_admin_context(), item_id, payload)
            return _task.periodic_task(spacing=spacing, mode=mode, name=hname,
                                       handler=handle)(run)

        def run(ctx):
            task(self, manila_context.get_admin_context())
        return _task.periodic_task(spacing=spacing, mode=mode,
                                   name=hname)(run)

    def _ha_hook_rpc_server(self):
        """Have the RPC server that manila's Service builds right after
        :meth:`init_host` (``manila.rpc.get_server``, looked up when
        called) tell this manager when it stops: see
        :class:`_StopNotifyingServer`. One server only; manila's function
        is put back as soon as it is called."""
        from manila import rpc as manila_rpc
        original = manila_rpc.get_server
        manager = self

        def get_server(target, endpoints, serializer=None):
            manila_rpc.get_server = original
            server = original(target, endpoints, serializer)
            if not any(endpoint is manager for endpoint in endpoints):
                return server
            manager._ha_rpcserver = server
            return _StopNotifyingServer(server, manager._ha_begin_stop)
        manila_rpc.get_server = get_server

    def _ha_begin_stop(self):
        """The first phase of a stop, started when manila stops its RPC
        server (or by :meth:`ha_stop`): in a thread of its own, take this
        node out of the serving ones, pass leadership on, stop the
        periodic tasks and the fan-out RPC server. Returns at once;
        idempotent."""
        with self._ha_life_lock:
            if self._ha_stop_began is not None:
                return
            self._ha_stop_began = time.monotonic()
            runner, self.ha_runner = self.ha_runner, None
            coord = self.ha_coordinator
        if coord is None or coord.single_node:
            return
        LOG.info('hacluster: %s leaving cluster %s (graceful_shutdown_timeout '
                 '%g s)', coord.node, coord.cluster,
                 graceful_shutdown_timeout())
        self._ha_quiesce = threading.Thread(
            target=self._ha_stop_work, args=(coord, runner), daemon=True,
            name='hacluster-stop-work')
        self._ha_quiesce.start()

    def _ha_stop_work(self, coord, runner):
        # a node starting while this one stops must not count it as
        # serving (it would skip the ensure pass)
        self._ha_update_member(ready=False, ensured=False)
        # Another node leads at once, not when this one's claims are done
        # or its lease expires; this one's leader-only work ends here.
        try:
            coord.resign()
        except exceptions.HAClusterError as exc:
            LOG.warning('hacluster: resigning the leadership: %s', exc)
        if runner is not None:
            try:
                runner.stop()
            except Exception:
                LOG.exception('hacluster: stopping the periodic tasks')

    def ha_stop(self):
        """Leave the cluster cleanly, within manila's
        ``graceful_shutdown_timeout`` (see :func:`stop_deadlines`). Called
        when manila's Service stops, after its RPC server stopped taking
        messages (whose ``stop`` began the first phase:
        :meth:`_ha_begin_stop`):

        * wait for the RPC operations still running (manila's own
          ``wait``) and the claimed ones, until the claims deadline; hand
          the claims of those still running over to recovery (a survivor
          recovers them at once; their writes are refused from then on);
        * wait for the periodic tasks and the fan-out RPC server to stop,
          until the periodic deadline;
        * stop the coordinator: cluster locks released, membership record
          deleted, session lease revoked.

        Blocks until then (at most until the leave deadline; never
        raises). manila's locks are not given back: the process is
        exiting, and an operation still running must not fall back to
        node-local locks while the other nodes use cluster locks. A lock
        asked for after the coordinator stopped raises (fails closed)."""
        self._ha_begin_stop()
        coord = self.ha_coordinator
        if coord is None:
            return
        claims_by, periodic_by, leave_by = stop_deadlines(
            self._ha_stop_began, graceful_shutdown_timeout())
        server = self._ha_rpcserver
        if server is not None:
            # manila's Service waits for its handlers only after its own
            # stop: wait here, bounded, so that none starts unclaimed once
            # this node has left
            _join_by(threading.Thread(target=server.wait, daemon=True,
                                      name='hacluster-rpc-wait'), claims_by,
                     start=True)
        left = self._ha_inflight.wait(claims_by)
        handed = self._ha_inflight.hand_over(
            'manila-share %s stopped before the operation finished'
            % coord.node)
        if left or handed:
            LOG.warning('hacluster: %s: %d claimed operations still ran at '
                        'the stop deadline: %d handed over to recovery',
                        coord.node, left, handed)
        if self._ha_quiesce is not None and \
                not _join_by(self._ha_quiesce, periodic_by):
            LOG.warning('hacluster: %s: the periodic tasks did not stop in '
                        'time; leaving the cluster all the same', coord.node)
        leaving = threading.Thread(target=self._ha_stop_coordinator,
                                   args=(coord,), daemon=True,
                                   name='hacluster-leave')
        if not _join_by(leaving, leave_by, start=True):
            LOG.error('hacluster: %s did not leave cluster %s in time: its '
                      'lease will expire instead', coord.node, coord.cluster)
            return
        LOG.info('hacluster: %s left cluster %s %.1f s after the stop began',
                 coord.node, coord.cluster,
                 time.monotonic() - self._ha_stop_began)

    @staticmethod
    def _ha_stop_coordinator(coord):
        try:
            coord.stop()
        except Exception:
            LOG.exception('hacluster: stopping the coordinator')

    # -- ensure ---------------------------------------------------------------

    def ensure_driver_resources(self, ctxt, skip_backend_info_check=False):
        """manila's ensure pass; at start-up, on the first node only.

        Serialized by the cluster lock ``hacluster-ensure``. At start-up
        (from :meth:`init_host`) a node that finds another member that has
        ensured or serves (``ensured``/``ready`` in its member record)
        skips it: that member serves the backend's shares, and re-ensuring
        them would flip them all to ``ensuring`` under its feet. The marker
        is written before the lock is released, so of nodes starting
        together exactly one ensures. An operator's explicit request
        (manila's ``ensure-shares`` API) always runs.
        """
        coord = self.ha_coordinator
        if coord is None or coord.single_node:
            return super().ensure_driver_resources(
                ctxt, skip_backend_info_check=skip_backend_info_check)
        lock = coord.get_lock(ENSURE_LOCK)
        lock.acquire(True)
        try:
            if self._ha_starting:
                serving = self._ha_serving_peers(coord)
                if serving and not self._ha_backend_info_changed(ctxt):
                    LOG.info('hacluster: %s: not re-ensuring the backend\'s '
                             'shares: %s already serve(s) them', coord.node,
                             ', '.join(serving))
                    self._ha_update_member(ensured=True)
                    return None
            result = super().ensure_driver_resources(
                ctxt, skip_backend_info_check=skip_backend_info_check)
            self._ha_update_member(ensured=True)
            return result
        finally:
            _locks._release(lock, 'ensure_driver_resources')

    @staticmethod
    def _ha_serving_peers(coord):
        """Other active members that ensured or serve. Unknown (etcd
        unreachable): none -- ensuring once too often is safe, never
        ensuring after a cold start is not."""
        try:
            members = coord.get_members()
        except exceptions.HAClusterError as exc:
            LOG.warning('hacluster: cannot read the members (%s); running '
                        'the ensure pass', exc)
            return []
        return sorted(node for node, record in members.items()
                      if node != coord.node and
                      record.get('state', 'active') == 'active' and
                      (record.get('ready') or record.get('ensured')))

    def _ha_backend_info_changed(self, ctxt):
        """True if the driver reports backend info that differs from what
        manila recorded (a driver or back-end change rolled out node by
        node): then this node ensures, as manila alone would, once -- it
        records the new info. False when unchanged or not implemented."""
        import hashlib
        try:
            info = self.driver.get_backend_info(ctxt)
        except NotImplementedError:
            return False
        except Exception:
            LOG.exception('hacluster: get_backend_info failed; ensuring')
            return True
        if not info:
            return False
        new_hash = hashlib.sha1(
            str(sorted(info.items())).encode('utf-8')).hexdigest()
        old = self.db.backend_info_get(ctxt, self.host)
        return (old or {}).get('info_hash') != new_hash

    # -- fan-out periodic tasks -----------------------------------------------

    def _ha_list_periodic_share_status_update(self, ctx):
        """Share instances whose status the driver must be asked for."""
        items = {}
        for status in ('creating_from_snapshot', 'reverting_to_snapshot'):
            for si in self.db.share_instance_get_all_by_host(
                    ctx, self.host, with_share_data=False, status=status):
                items[si['id']] = None
        return items

    def _ha_handle_periodic_share_status_update(self, ctx, instance_id,
                                                payload):
        try:
            si = self.db.share_instance_get(ctx, instance_id,
                                            with_share_data=True)
        except manila_exception.NotFound:
            return
        if si['status'] not in ('creating_from_snapshot',
                                'reverting_to_snapshot'):
            return          # finished since the leader listed it
        self._update_share_status(ctx,
                                  self._get_share_instance_dict(ctx, si))

    def _ha_list_periodic_share_replica_update(self, ctx):
        from manila.share import utils as share_utils
        backend = share_utils.extract_host(self.host)
        return {r['id']: {'share_id': r['share_id']}
                for r in self.db.share_replicas_get_all(
                    ctx, with_share_data=False, with_share_server=False)
                if share_utils.extract_host(r['host']) == backend and
                r['replica_state'] != 'active'}

    def _ha_handle_periodic_share_replica_update(self, ctx, replica_id,
                                                 payload):
        self._share_replica_update(ctx, replica_id,
                                   share_id=(payload or {}).get('share_id'))


for _method in _claims.CLAIMED_OPERATIONS:
    setattr(HAShareManager, _method, _claimed(_method))
del _method
