"""The HA share manager: manila-share active-active on one backend.

Configure every node of a backend alike, except the node name::

    [DEFAULT]
    host = hagroup                      # the same on every node
    enabled_share_backends = dummy      # required when clustered
    share_manager = hacluster.manila.manager.HAShareManager
    [coordination]
    backend_url = etcd3+http://10.0.0.5:2379,10.0.0.6:2379
    [hacluster]
    node_name = node-a                  # unique per node (default hostname)

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

In single-node mode (``backend_url`` unset or ``file://``, manila's
default) locks, periodic tasks and ensure stay manila's own; claims are
kept in local files and recovered when the node starts again.
"""

import functools
import inspect
import logging

from oslo_config import cfg

from manila import context as manila_context
from manila import exception as manila_exception
from manila.share import manager as share_manager

from hacluster import backoff as _backoff
from hacluster import exceptions
from hacluster import opts as _opts
from hacluster import url as _url
from hacluster.manila import claims as _claims
from hacluster.manila import driver as _driver
from hacluster.manila import locks as _locks
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
        with _SafeClaim(self.ha_coordinator, resource_type, resource_id,
                        operation, data) as claim, \
                _claims.operation(self.ha_coordinator, claim, resource_type,
                                  resource_id, operation):
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
        self._claim = claim
        return claim

    def __exit__(self, *exc):
        if self._claim is not None:
            try:
                self._claim.__exit__(*exc)
            except (exceptions.HAClusterError, OSError) as err:
                # the operation is over; a claim left behind is recovered
                # as if this node died (idempotent handlers)
                LOG.error('hacluster: could not remove the claim for %s of '
                          '%s %s: %s', self._args[2], self._args[0],
                          self._args[1], err)
        return False


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
        _opts.register_opts(CONF)
        backend_url = CONF.coordination.backend_url
        try:
            parsed = _url.parse(backend_url)
        except exceptions.ConfigurationError as exc:
            raise exceptions.ConfigurationError(
                '[coordination] backend_url: %s' % exc, cause=exc) from exc
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
                'needs a backend section (clustered mode, [coordination] '
                'backend_url = %s)' % parsed.safe)
        if CONF.hacluster.cluster and len(backends) > 1:
            raise exceptions.ConfigurationError(
                '[hacluster] cluster = %s is set while enabled_share_backends '
                'names %d backends (%s): each backend is a cluster of its own '
                '(named host@backend by default); unset [hacluster] cluster'
                % (CONF.hacluster.cluster, len(backends), ', '.join(backends)))
        self.ha_cluster = CONF.hacluster.cluster or self.host
        driver = self.driver
        if self.ha_clustered and not getattr(driver, 'SUPPORTS_ACTIVE_ACTIVE',
                                             False):
            raise exceptions.ConfigurationError(
                'share driver %s of backend %s does not support '
                'active-active (it does not mix in hacluster.manila.driver.'
                'HAShareDriverMixin / set SUPPORTS_ACTIVE_ACTIVE); refusing '
                'to run it on several nodes. Unset [coordination] '
                'backend_url (or use file://) for single-node mode.'
                % (type(driver).__name__, self.host))
        # Fail now, in the master, on bad timings or names -- not in a
        # worker that cotyledon would restart forever.
        _opts.coordinator_from_conf(CONF, cluster=self.ha_cluster,
                                    lock_path=parsed.path)
        self.ha_coordinator = None
        self.ha_runner = None
        self._ha_starting = False
        self._ha_manila_tasks = list(type(self)._periodic_tasks)
        if self.ha_clustered:
            # A claimed operation's final writes are fenced by its claim: a
            # node thought dead never writes over a recovery.
            self.db = _claims.FencedDB(self.db)
            # manila built its access helpers with the raw API already
            for helper in ('access_helper', 'snapshot_access_helper'):
                helper = getattr(self, helper, None)
                if helper is not None and hasattr(helper, 'db'):
                    helper.db = self.db
            # manila's own periodic loop (Service.periodic_tasks) runs
            # nothing: every task runs on hacluster's runner, in its mode.
            self._periodic_tasks = []

    # -- start and stop ---------------------------------------------------------

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

    def init_host_with_rpc(self, *args, **kwargs):
        """Once the node serves: recovery handlers (which make it run for
        leader -- only a node that serves may lead), then the periodic
        tasks."""
        super().init_host_with_rpc(*args, **kwargs)
        coord = self.ha_coordinator
        if coord is not None:
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
        parsed = _url.parse(CONF.coordination.backend_url)
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
            config=coord_config, rpc_version=self.RPC_API_VERSION)
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
        if self.ha_coordinator is None or not self.ha_coordinator.running:
            return                   # stopped meanwhile
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

    def ha_stop(self):
        """Leave the cluster cleanly: stop the periodic tasks, then the
        coordinator, which waits (up to its claim grace, 30 s) for the
        operations still running under claims -- manila's RPC server stops
        taking messages before this, but does not wait for the handlers
        that run. Called when manila's Service stops. Blocks.

        manila's locks are not given back: the process is exiting, and an
        operation still running must not fall back to node-local locks
        while the other nodes use cluster locks. A lock asked for after the
        coordinator stopped raises (fails closed)."""
        coord = self.ha_coordinator
        if coord is not None and not coord.single_node:
            # a node starting while this one stops must not count it as
            # serving (it would skip the ensure pass)
            self._ha_update_member(ready=False, ensured=False)
        runner, self.ha_runner = self.ha_runner, None
        if runner is not None:
            try:
                runner.stop()
            except Exception:
                LOG.exception('hacluster: stopping the periodic tasks')
        if coord is not None:
            coord.stop()

    # -- ensure -------------------------------------------------------------------

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

    # -- fan-out periodic tasks -------------------------------------------------------

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
