"""Running periodic tasks on an oslo.service ThreadGroup.

:class:`PeriodicRunner` runs the tasks of one coordinator (one cluster):

* ``leader`` tasks run on the leader only; ``every`` tasks on each node;
  ``fanout`` tasks list items on the leader, which hands each item to the
  live member that owns it (a consistent hash ring) over oslo.messaging.
* A cycle never overlaps itself: a local guard, and for leader and fan-out
  tasks a cluster lock ``hacluster-task:<name>`` taken without waiting, so a
  new leader cannot start a cycle while its predecessor still runs one. A
  tick that would overlap is skipped and counted.
* Each task is a timer of its own in the ThreadGroup: started, stopped or run
  at once by name while the others keep running; paused and resumed for the
  whole cluster through etcd (``tasks/<name>/control``).
* Stats (runs, skips, failures, last run, duration, where) are kept per node
  and written to etcd after each run, for the status command.

oslo.service is imported in :meth:`PeriodicRunner.start`, never at import
time: the process's own choice of backend (threading for manila 23, eventlet
elsewhere) is used, not pinned by us; if the process has chosen none, the one
matching it is chosen then (eventlet if monkey-patched, else threading). Under the threading backend a running
task cannot be killed: tasks must return (``stop()`` waits for them).

Fan-out is at-least-once per item and cycle (exactly once unless an item is
re-dispatched after its deadline or its owner's departure): handlers must be
idempotent, and get the attempt number to help.
"""

import concurrent.futures
import json
import logging
import random
import threading
import time

from hacluster import exceptions
from hacluster import keys as _keys
from hacluster import url as _url
from hacluster.periodic import ledger as _ledger
from hacluster.periodic import rpc as _rpc
from hacluster.periodic import task as _task

LOG = logging.getLogger(__name__)


class _TaskState:
    def __init__(self, spec, fn, handler):
        self.spec = spec
        self.name = spec.name
        self.fn = fn
        self.handler = handler
        self.spacing = spec.spacing
        self.timer = None
        self.running = threading.Lock()
        self.paused = False           # cluster-wide (etcd control key)
        self.stopped = False          # this node (stop_task)
        self.executor = None
        self.stats = {'runs': 0, 'skips': 0, 'failures': 0,
                      'not_leader': 0, 'last_run_at': None,
                      'last_duration': None, 'last_error': None,
                      'items_handled': 0, 'item_failures': 0,
                      'cycles': 0, 'redispatched': 0, 'rpc_casts': 0}
        self.stats_lock = threading.Lock()
        self.published = 0.0
        self.stats_dirty = False


class _Wake:
    """Watch subscriber: sets an event on any change under a prefix."""

    def __init__(self):
        self.event = threading.Event()

    def notify(self, etype, kv):
        self.event.set()

    def resync(self):
        self.event.set()


def _select_backend():
    """If the process has not chosen an oslo.service backend yet, choose
    the one that matches it: eventlet if threads are monkey-patched, else
    threading. (oslo.service's own default, eventlet, would leave timers in
    an unpatched process never scheduled.) A process that chose already --
    manila-share chooses threading -- keeps its choice."""
    from oslo_service import backend

    patched = False
    try:
        import sys
        if 'eventlet' in sys.modules:
            import eventlet.patcher
            patched = eventlet.patcher.is_monkey_patched('thread')
    except Exception:
        patched = False
    chosen = backend.get_backend_type()
    if chosen is not None:
        if chosen == backend.BackendType.EVENTLET and not patched:
            # e.g. a module imported oslo.service's eventlet-only parts
            # before anyone chose: green timers in an unpatched process run
            # only while the main thread yields to eventlet's hub
            LOG.warning('hacluster: oslo.service runs its eventlet backend '
                        'in a process that is not monkey-patched: periodic '
                        'tasks will not run on time. Choose the threading '
                        'backend (oslo_service.backend.init_backend) before '
                        'importing oslo.service users.')
        return
    try:
        backend.init_backend(backend.BackendType.EVENTLET if patched
                             else backend.BackendType.THREADING)
    except Exception:       # chosen meanwhile by someone else: keep it
        pass


def assign_bounded(members, item_ids, slack=0.05, partitions=2 ** 8):
    """``{item_id: member}``: consistent hashing (tooz.hashring) with
    bounded loads -- no member gets more than ``ceil((1 + slack) * n / m)``
    items. Deterministic for the same members and items."""
    import math

    from tooz import hashring

    if not members:
        raise exceptions.HAClusterError('no member to assign items to')
    ring = hashring.HashRing(members, partitions=partitions)
    cap = max(1, math.ceil((1 + slack) * len(item_ids) / len(members)))
    load = dict.fromkeys(members, 0)
    full = set()
    owners = {}
    for item_id in sorted(item_ids):
        owner = next(iter(ring.get_nodes(item_id.encode('utf-8'),
                                         ignore_nodes=full)))
        owners[item_id] = owner
        load[owner] += 1
        if load[owner] >= cap and len(full) < len(members) - 1:
            full.add(owner)
    return owners


class PeriodicRunner:
    """The periodic tasks of one coordinator.

    :param coordinator: a started coordinator.
    :param conf: an oslo.config ``ConfigOpts`` (for ``[hacluster]
        task_spacing`` and, for fan-out, ``transport_url``).
    :param transport: an oslo.messaging RPC transport (else one is made
        from ``conf``/``transport_url`` when there are fan-out tasks).
    :param transport_url: the messaging URL when no transport is given.
    :param spacing: ``{task name: seconds}`` overriding configuration.
    :param rpc_executor: oslo.messaging executor name (default: its own).

    Public methods are thread-safe.
    """

    def __init__(self, coordinator, conf=None, transport=None,
                 transport_url=None, spacing=None, rpc_executor=None):
        self._coord = coordinator
        self._conf = conf
        self._transport = transport
        self._own_transport = False
        self._transport_url = transport_url
        self._spacing = dict(spacing or {})
        self._rpc_executor = rpc_executor
        self._tasks = {}
        self._lock = threading.RLock()
        self._tg = None
        self._server = None
        self._server_name = None
        self._api = None
        self._started = False
        self._done_buffer = []
        self._done_cond = threading.Condition()
        self._flusher = None
        self._stopping = threading.Event()
        self._control_subs = []
        self._adopt_hooked = False

    # -- declaring ---------------------------------------------------------------

    def add(self, fn):
        """Add a task: a function or bound method tagged with
        :func:`periodic_task`. Returns its name.

        :raises ConfigurationError: not tagged, a duplicate name, or a
            fan-out handler that cannot be found.
        """
        spec = _task.spec_of(fn)
        if spec is None:
            raise exceptions.ConfigurationError(
                '%r is not a periodic task (decorate it with '
                'hacluster.periodic.periodic_task)' % (fn,))
        handler = spec.handler
        if isinstance(handler, str):
            owner = getattr(fn, '__self__', None)
            if owner is None or not callable(getattr(owner, handler, None)):
                raise exceptions.ConfigurationError(
                    'periodic task %r: handler %r is not a method of %r'
                    % (spec.name, handler, owner))
            handler = getattr(owner, handler)
        with self._lock:
            if self._started:
                raise exceptions.ConfigurationError(
                    'periodic task %r: add tasks before start() (its spacing, '
                    'RPC server and leadership are set up there)' % spec.name)
            if spec.name in self._tasks:
                raise exceptions.ConfigurationError(
                    'periodic task %r is already added' % spec.name)
            self._tasks[spec.name] = _TaskState(spec, fn, handler)
        return spec.name

    def add_all(self, obj):
        """Add every tagged method of ``obj``; returns their names."""
        names = []
        for attr in sorted(dir(obj)):
            if attr.startswith('__'):
                continue
            try:
                member = getattr(obj, attr)
            except Exception:
                continue
            if callable(member) and _task.spec_of(member) is not None:
                names.append(self.add(member))
        return names

    @property
    def tasks(self):
        with self._lock:
            return sorted(self._tasks)

    def spacing_of(self, name):
        return self._state(name).spacing

    # -- life cycle ----------------------------------------------------------------

    def _resolve_spacing(self, state):
        name = state.name
        if name in self._spacing:
            value = self._spacing[name]
            source = 'spacing=%r' % (self._spacing,)
        else:
            value, source = state.spec.spacing, 'the task default'
            if self._conf is not None:
                from hacluster import opts
                opts.register_opts(self._conf)
                configured = self._conf.hacluster.task_spacing or {}
                if name in configured:
                    value = configured[name]
                    source = '[hacluster] task_spacing'
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = None
        if value is None or value <= 0:
            raise exceptions.ConfigurationError(
                'periodic task %r: spacing from %s must be a positive number '
                'of seconds' % (name, source))
        state.spacing = value

    def start(self):
        """Start every task's timer (and, with fan-out tasks, this member's
        RPC server). Campaigns for leadership if the coordinator does not
        yet. Blocks for the RPC server start.

        :raises ConfigurationError: a spacing or the transport is invalid.
        """
        _select_backend()
        from oslo_service import threadgroup   # lazily: see module doc

        with self._lock:
            if self._started:
                return self
            for state in self._tasks.values():
                self._resolve_spacing(state)
            modes = {s.spec.mode for s in self._tasks.values()}
            coord = self._coord
            if modes & {_task.LEADER, _task.FANOUT}:
                coord.campaign()
            self._stopping.clear()
            if _task.FANOUT in modes:
                self._start_fanout()
                if not coord.single_node and not self._adopt_hooked:
                    coord.on_new_leader(self._on_new_leader)
                    self._adopt_hooked = True
            self._tg = threadgroup.ThreadGroup()
            self._started = True
            for state in self._tasks.values():
                self._prepare(state)
            self._watch_controls()
            for state in self._tasks.values():
                if not state.paused:
                    self._start_timer(state)
            # every task shows in `hacluster status` from the start, not
            # only after its first run (manila has tasks an hour apart)
            self._tg.add_thread(self._publish_all)
        LOG.info('hacluster: %s/%s periodic tasks started: %s',
                 self._coord.cluster, self._coord.node,
                 ', '.join('%s (%s, %gs)' % (s.name, s.spec.mode, s.spacing)
                           for s in self._tasks.values()))
        return self

    def _prepare(self, state):
        if state.spec.mode == _task.FANOUT and state.executor is None:
            state.executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=state.spec.max_workers,
                thread_name_prefix='hacluster-%s' % state.name)

    def _start_fanout(self):
        if self._coord.single_node:
            return          # one node: items are handled in-process
        if self._transport is None:
            from oslo_config import cfg
            conf = self._conf if self._conf is not None else cfg.ConfigOpts()
            if self._conf is None:
                conf([], project='hacluster', default_config_files=[])
            self._transport = _rpc.get_transport(conf, self._transport_url)
            self._own_transport = True
        self._api = _rpc.FanoutAPI(self._transport, self._coord.cluster)
        self._server, self._server_name = _rpc.start_server(
            self._transport, self._coord.cluster, self._coord.member_id,
            self, executor=self._rpc_executor)
        fanout = sorted(s.name for s in self._tasks.values()
                        if s.spec.mode == _task.FANOUT)
        self._coord.update_member(fanout_server=self._server_name,
                                  fanout_tasks=fanout)
        self._flusher = threading.Thread(target=self._flush_loop,
                                         name='hacluster-done-flusher',
                                         daemon=True)
        self._flusher.start()

    def _start_timer(self, state):
        if state.timer is not None or state.stopped or state.paused:
            return
        delay = state.spec.initial_delay
        if delay is None:
            delay = state.spacing
        if state.spec.jitter:
            delay += random.uniform(0, state.spec.jitter * state.spacing)
        state.timer = self._tg.add_timer_args(
            state.spacing, self._tick, args=[state], initial_delay=delay,
            stop_on_exception=False)

    @staticmethod
    def _take_timer(state):
        """Detach and stop a task's timer (call under ``self._lock``);
        returns it for :meth:`_finish_timer`, or None."""
        timer, state.timer = state.timer, None
        if timer is not None:
            timer.stop()
        return timer

    def _finish_timer(self, timer, name, wait=True):
        """Wait for a stopped timer's running call (outside the lock: a
        cycle may take a while, and the watch thread needs the lock for
        pause/resume events meanwhile) and drop it from the group."""
        if timer is None:
            return
        if wait:
            try:
                timer.wait()
            except Exception:
                LOG.exception('hacluster: waiting for task %s', name)
        self._tg.timer_done(timer)

    def stop(self):
        """Stop all timers, wait for running cycles and item handlers to
        return, flush done markers and stop the RPC server. Blocks for as
        long as the running tasks take."""
        with self._lock:
            if not self._started:
                return
            self._started = False
            self._stopping.set()
            timers = [(self._take_timer(state), state.name)
                      for state in self._tasks.values()]
            for prefix, sub in self._control_subs:
                self._coord.unsubscribe(prefix, sub)
            self._control_subs = []
        # No new items for us from the next cycle on.
        if self._server_name is not None:
            try:
                self._coord.update_member(fanout_server=None,
                                          fanout_tasks=[])
            except exceptions.HAClusterError:
                pass
        for timer, name in timers:
            self._finish_timer(timer, name)
        if self._server is not None:
            try:
                self._server.stop()
                self._server.wait()
            except Exception:
                LOG.exception('hacluster: stopping the fan-out RPC server')
            self._server = None
        for state in self._tasks.values():
            if state.executor is not None:
                # Items queued but not started are dropped: the leader sends
                # them to another member at their deadline.
                state.executor.shutdown(wait=True, cancel_futures=True)
                state.executor = None
        with self._done_cond:
            self._done_cond.notify_all()
        if self._flusher is not None:
            self._flusher.join(10)
            self._flusher = None
        deadline = time.monotonic() + 5
        while True:
            self._flush()
            with self._done_cond:
                left = len(self._done_buffer)
            if not left or time.monotonic() > deadline:
                break
        if left:
            LOG.warning('hacluster: %d done markers could not be written at '
                        'stop: those items will be handled again', left)
        for state in self._tasks.values():
            if state.stats_dirty:
                self._publish_stats(state)
        if self._tg is not None:
            self._tg.stop(graceful=True)
            self._tg = None
        if self._own_transport and self._transport is not None:
            self._transport.cleanup()
            self._transport = None
            self._own_transport = False

    # -- run-time control -----------------------------------------------------------

    def _state(self, name):
        with self._lock:
            state = self._tasks.get(name)
        if state is None:
            raise exceptions.ConfigurationError(
                'no periodic task named %r (known: %s)'
                % (name, ', '.join(self.tasks) or 'none'))
        return state

    def stop_task(self, name):
        """Stop one task on this node (its current run finishes); the others
        keep running. Blocks until a running cycle of it returns."""
        state = self._state(name)
        with self._lock:
            state.stopped = True
            timer = self._take_timer(state) if self._started else None
        self._finish_timer(timer, name)

    def start_task(self, name):
        """Start one task again on this node (no-op if running or paused for
        the cluster)."""
        state = self._state(name)
        with self._lock:
            state.stopped = False
            if self._started:
                self._start_timer(state)

    def run_now(self, name, wait=False):
        """Run one tick of a task now (skipped and counted if a cycle is
        already running). With ``wait`` it runs in the caller's thread and
        returns when done; else in the ThreadGroup."""
        state = self._state(name)
        if wait or self._tg is None:
            self._tick(state)
        else:
            self._tg.add_thread(self._tick, state)

    def pause_task(self, name):
        """Pause a task on every node of the cluster (through etcd)."""
        self._state(name)
        self._coord.client.put(self._control_key(name),
                               json.dumps({'paused': True,
                                           'by': self._coord.node,
                                           'at': time.time()}))

    def resume_task(self, name):
        """Resume a task paused with :meth:`pause_task`, cluster-wide."""
        self._state(name)
        self._coord.client.put(self._control_key(name),
                               json.dumps({'paused': False,
                                           'by': self._coord.node,
                                           'at': time.time()}))

    def _control_key(self, name):
        return self._coord.layout.task_control(name)

    def _watch_controls(self):
        if self._coord.single_node:
            return
        for state in self._tasks.values():
            prefix = self._coord.layout.task(state.name)

            class Sub:
                def __init__(sub, st):
                    sub.state = st

                def notify(sub, etype, kv):
                    if kv.key.endswith('/control'):
                        self._apply_control(sub.state, kv if etype == 'PUT'
                                            else None)

                def resync(sub):
                    try:
                        kv = self._coord.client.get(
                            self._control_key(sub.state.name))
                    except exceptions.HAClusterError:
                        return
                    self._apply_control(sub.state, kv)
            sub = Sub(state)
            self._coord.subscribe(prefix, sub)
            self._control_subs.append((prefix, sub))
            kv = self._coord.client.get(
                self._coord.layout.task_control(state.name))
            state.paused = bool(kv and kv.json().get('paused'))

    def _apply_control(self, state, kv):
        paused = bool(kv and kv.json().get('paused'))
        with self._lock:
            if paused == state.paused:
                return
            state.paused = paused
            LOG.info('hacluster: task %s %s for the cluster', state.name,
                     'paused' if paused else 'resumed')
            if not self._started:
                return
            if paused:
                # Not waiting here: this runs in the watch thread.
                self._finish_timer(self._take_timer(state), state.name,
                                   wait=False)
            else:
                self._start_timer(state)

    def stats(self, name=None):
        """Local stats: of one task, or ``{name: stats}`` of all."""
        if name is not None:
            state = self._state(name)
            with state.stats_lock:
                return dict(state.stats, spacing=state.spacing,
                            mode=state.spec.mode, paused=state.paused,
                            stopped=state.stopped)
        return {n: self.stats(n) for n in self.tasks}

    # -- a tick ------------------------------------------------------------------

    def _count(self, state, **delta):
        with state.stats_lock:
            for key, value in delta.items():
                state.stats[key] = state.stats.get(key, 0) + value

    def _tick(self, state):
        """One timer tick. Never raises (a raising timer callback would be
        logged by oslo.service; ours record failures in stats instead)."""
        if state.paused or state.stopped or self._stopping.is_set():
            return
        coord = self._coord
        mode = state.spec.mode
        if mode != _task.EVERY and not coord.is_leader:
            self._count(state, not_leader=1)
            return
        if not state.running.acquire(blocking=False):
            self._count(state, skips=1)
            LOG.info('hacluster: task %s still running here: tick skipped',
                     state.name)
            return
        started = time.monotonic()
        error = None
        ran = False
        try:
            if mode == _task.EVERY:
                ran = True
                state.fn(_task.CycleContext(state.name, coord))
            else:
                lock = coord.get_lock('hacluster-task:' + state.name)
                try:
                    got = lock.acquire(blocking=False)
                except exceptions.HAClusterError as exc:
                    got = False
                    error = exc
                if not got:
                    if error is None:
                        self._count(state, skips=1)
                        LOG.info('hacluster: task %s is running elsewhere '
                                 '(a previous leader?): tick skipped',
                                 state.name)
                    return
                try:
                    ran = True
                    term = coord.term
                    if mode == _task.LEADER:
                        state.fn(_task.CycleContext(state.name, coord,
                                                    term=term))
                    else:
                        self._run_cycle(state, lock, term)
                finally:
                    if lock.held or lock.lost:
                        try:
                            lock.release()
                        except exceptions.HAClusterError:
                            pass
        except Exception as exc:
            error = exc
            LOG.exception('hacluster: periodic task %s failed', state.name)
        finally:
            state.running.release()
            if ran or error is not None:
                self._record_run(state, started, error)

    def _record_run(self, state, started, error):
        duration = time.monotonic() - started
        with state.stats_lock:
            state.stats['runs'] += 1
            if error is not None:
                state.stats['failures'] += 1
            state.stats['last_run_at'] = time.time()
            state.stats['last_duration'] = round(duration, 4)
            state.stats['last_error'] = None if error is None else \
                _url.scrub('%s: %s' % (type(error).__name__, error))
        self._publish_stats(state)

    def _publish_all(self):
        for state in list(self._tasks.values()):
            self._publish_stats(state)

    def _publish_stats(self, state, force=True):
        """Write this node's stats of a task to etcd; unless ``force``, at
        most once a second (item handling calls it often)."""
        if self._coord.single_node:
            return
        now = time.monotonic()
        with state.stats_lock:
            if not force and now - state.published < 1.0:
                state.stats_dirty = True
                return
            state.published = now
            state.stats_dirty = False
            record = dict(state.stats, node=self._coord.node,
                          member_id=self._coord.member_id,
                          mode=state.spec.mode, spacing=state.spacing,
                          stopped=state.stopped)
        try:
            self._coord.client.put(
                self._coord.layout.task_stats(state.name, self._coord.node),
                json.dumps(record))
        except exceptions.HAClusterError as exc:
            LOG.warning('hacluster: cannot publish stats of %s: %s',
                        state.name, _url.scrub(exc))

    # -- fan-out: the leader's side ----------------------------------------------

    def _on_new_leader(self, record):
        """Watch thread: when this node becomes leader, finish what the
        previous leader left at once, not a whole spacing later."""
        if record is None or record.get('member_id') != \
                self._coord.member_id or not self._started:
            return
        for state in list(self._tasks.values()):
            if state.spec.mode == _task.FANOUT and self._tg is not None:
                self._tg.add_thread(self._adopt_if_unfinished, state)

    def _adopt_if_unfinished(self, state):
        deadline = time.monotonic() + self._coord.session.renew_deadline
        while not self._coord.is_leader and time.monotonic() < deadline:
            time.sleep(0.05)     # the campaign thread is taking office
        # The previous leader may still hold the task lock for a moment (a
        # graceful hand-over: its monitor notices within a second): retry,
        # with backoff, for a bounded time.
        delay, until = 0.2, time.monotonic() + 4 * \
            self._coord.session.renew_deadline
        while self._coord.is_leader and not self._stopping.is_set():
            try:
                current = _ledger.Ledger(self._coord, state.name).current()
            except exceptions.HAClusterError:
                current = None
            if not current or current.get('status') != 'running':
                return
            before = state.stats['cycles']
            self._tick(state)
            if state.stats['cycles'] > before or time.monotonic() > until:
                return
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _fanout_members(self, task):
        """``{rpc server: node}`` of the live members that run ``task``."""
        servers = {}
        for node, rec in self._coord.live_members().items():
            server = rec.get('fanout_server')
            if server and task in (rec.get('fanout_tasks') or ()):
                servers[server] = node
        return servers

    def _run_cycle(self, state, lock, term):
        spec = state.spec
        coord = self._coord
        if coord.single_node:
            return self._run_cycle_locally(state, term)
        ledger = _ledger.Ledger(coord, state.name)
        current = ledger.current()
        if current and current.get('status') == 'running':
            cycle_id = current['cycle_id']
            record = current
            items = ledger.items(cycle_id)
            record.update(adopted_by=coord.member_id,
                          adopted_by_node=coord.node, term=term)
            LOG.info('hacluster: task %s: adopting unfinished cycle %s '
                     '(%d items) left by %s', state.name, cycle_id,
                     len(items), current.get('member_id'))
            ledger.update_cycle(lock, record)
            to_send = {}
        else:
            cycle_id = ledger.new_cycle_id()
            ctx = _task.CycleContext(state.name, coord, term=term,
                                     cycle_id=cycle_id)
            listed = state.fn(ctx)
            items = self._assign_new(state, listed)
            record = {'cycle_id': cycle_id, 'status': 'running',
                      'started_at': time.time(), 'node': coord.node,
                      'member_id': coord.member_id, 'term': term,
                      'items': len(items), 'fencing_token':
                      lock.fencing_token}
            ledger.create(lock, record, items)
            to_send = items
        self._count(state, cycles=1)
        unsent = self._dispatch(state, cycle_id, to_send) if to_send \
            else set()
        wake = _Wake()
        done_prefix = ledger.done_prefix(cycle_id)
        coord.subscribe(done_prefix, wake)
        try:
            result = self._monitor(state, ledger, lock, cycle_id, items,
                                   wake, unsent)
        finally:
            coord.unsubscribe(done_prefix, wake)
        if result is None:
            return          # aborted: the next leader adopts the cycle
        done, failed, redispatched = result
        per_node = {}
        for marker in done.values():
            node = marker.get('node') or '(given up)'
            per_node[node] = per_node.get(node, 0) + 1
        record.update(status='done', finished_at=time.time(),
                      done=len(done), failed=failed,
                      redispatched=redispatched, per_node=per_node)
        ledger.finish(lock, record)
        LOG.info('hacluster: task %s cycle %s done: %d items, %d failed, '
                 '%d re-dispatched', state.name, cycle_id, len(done),
                 failed, redispatched)

    def _assign_new(self, state, listed):
        """Owners for a new cycle's items: consistent hashing with bounded
        loads. The ring picks each item's member (the same one cycle after
        cycle while membership is stable), but no member takes more than
        5% over an even share; the overflow goes to the next member on the
        ring. (Plain consistent hashing over 3 members gives one of them
        ~20% more than its share of 300 items: the cycle lasts as long as
        the busiest member.)"""
        if listed is None:
            listed = {}
        if not isinstance(listed, dict):
            listed = {item: None for item in listed}
        servers = self._fanout_members(state.name)
        if self._server_name and self._server_name not in servers:
            servers[self._server_name] = self._coord.node
        owners = assign_bounded(sorted(servers),
                                [str(i) for i in listed])
        items = {}
        now = time.time()
        for item_id, payload in listed.items():
            item_id = str(item_id)
            items[_keys.quote_segment(item_id)] = {
                'id': item_id, 'owner': owners[item_id], 'attempt': 1,
                'sent_at': now, 'payload': payload}
        return items

    def _dispatch(self, state, cycle_id, items):
        """Cast items to their owners. Returns the ids that could not be
        handed to the broker: not an attempt (nobody got them); the caller
        keeps them unsent and tries again."""
        by_owner = {}
        for q, a in items.items():
            by_owner.setdefault(a['owner'], []).append(
                {'q': q, 'id': a['id'], 'attempt': a['attempt'],
                 'payload': a.get('payload')})
        size = state.spec.batch_size
        unsent = set()
        for owner, batch in by_owner.items():
            for i in range(0, len(batch), size):
                chunk = batch[i:i + size]
                try:
                    self._api.process_items(owner, state.name, cycle_id,
                                            chunk)
                    self._count(state, rpc_casts=1)
                except exceptions.HAClusterError as exc:
                    LOG.warning('hacluster: %s; retrying', _url.scrub(exc))
                    unsent.update(item['q'] for item in chunk)
        return unsent

    def _monitor(self, state, ledger, lock, cycle_id, items, wake, unsent):
        """Wait until every item is done; re-dispatch those whose owner left
        or whose deadline passed, and send again those the broker did not
        take (``unsent``). Returns ``(done, failed, redispatched)``, or None
        if this node lost the right to run the cycle.

        Cheap while nothing goes wrong: woken by done-marker events
        (debounced), it only counts the done markers; it reads them all
        only when an owner left, a deadline is due, or the count is full.
        """
        from tooz import hashring

        spec = state.spec
        failed = redispatched = 0
        next_deadline = min((a.get('sent_at') or 0) for a in items.values()) \
            + spec.item_timeout if items else 0
        pending_set = set(items)
        while True:
            wake.event.clear()
            if self._stopping.is_set() or not lock.held or \
                    not self._coord.is_leader:
                LOG.info('hacluster: task %s: leaving cycle %s unfinished '
                         'for the next leader', state.name, cycle_id)
                return None
            now = time.time()
            live = self._fanout_members(state.name)
            if self._server_name:
                live.setdefault(self._server_name, self._coord.node)
            # Only owners of items still pending matter: the owner of an
            # item already done may leave without consequence.
            owners = {items[q]['owner'] for q in pending_set}
            count = ledger.done_count(cycle_id)
            if count < len(items) and not unsent and owners <= set(live) \
                    and now < next_deadline:
                wake.event.wait(max(0.05, min(1.0, next_deadline - now)))
                time.sleep(0.1)     # let a burst of done markers land
                continue
            done = ledger.done(cycle_id)
            pending = [q for q in items if q not in done]
            pending_set = set(pending)
            if not pending:
                return done, failed, redispatched
            retry = {q: items[q] for q in pending if q in unsent and
                     items[q]['owner'] in live}
            if retry:
                unsent = self._dispatch(state, cycle_id, retry)
                for q in retry:
                    if q not in unsent:     # its deadline starts now
                        items[q] = dict(items[q], sent_at=time.time())
                if unsent:
                    wake.event.wait(0.5)    # the broker is still away
                    continue
            changes, gave_up = {}, []
            next_deadline = now + spec.item_timeout
            ring = hashring.HashRing(sorted(live), partitions=2 ** 8)
            for q in pending:
                a = items[q]
                if q in unsent:
                    unsent.discard(q)       # owner left: re-dispatched below
                    a = items[q] = dict(a, sent_at=0)
                expired = now - (a.get('sent_at') or 0) > spec.item_timeout
                if a['owner'] in live and not expired:
                    next_deadline = min(next_deadline,
                                        a['sent_at'] + spec.item_timeout)
                    continue
                if a['attempt'] >= spec.max_attempts:
                    gave_up.append(q)
                    continue
                # Another live member if there is one: the owner left, or
                # it is too slow.
                ignore = [a['owner']] if len(live) > 1 else []
                owner = next(iter(ring.get_nodes(a['id'].encode('utf-8'),
                                                 ignore_nodes=ignore)))
                changes[q] = dict(a, owner=owner, attempt=a['attempt'] + 1,
                                  sent_at=now)
            if gave_up:
                ledger.mark_done(lock, [(cycle_id, q, {
                    'ok': False, 'node': None, 'attempt':
                        items[q]['attempt'],
                    'error': 'given up after %d attempts' %
                             items[q]['attempt'], 'at': now})
                    for q in gave_up])
                failed += len(gave_up)
                self._count(state, item_failures=len(gave_up))
            if changes:
                ledger.assign(lock, cycle_id, changes)
                items.update(changes)
                redispatched += len(changes)
                self._count(state, redispatched=len(changes))
                LOG.info('hacluster: task %s cycle %s: re-dispatching %d '
                         'items', state.name, cycle_id, len(changes))
                unsent |= self._dispatch(state, cycle_id, changes)
                next_deadline = min(next_deadline, now + spec.item_timeout)
                continue
            if not retry:
                # Nothing to change this pass: wait for progress or the
                # next deadline, never spin.
                wake.event.wait(max(0.05, min(1.0, next_deadline - now)))

    def _run_cycle_locally(self, state, term):
        """Single-node mode: list and handle every item here."""
        cycle_id = _ledger.Ledger.new_cycle_id()
        ctx = _task.CycleContext(state.name, self._coord, term=term,
                                 cycle_id=cycle_id)
        listed = state.fn(ctx) or {}
        if not isinstance(listed, dict):
            listed = {item: None for item in listed}
        futures = [state.executor.submit(
            self._handle, state, cycle_id,
            {'q': _keys.quote_segment(str(i)), 'id': str(i), 'attempt': 1,
             'payload': p}, record=False)
            for i, p in listed.items()]
        concurrent.futures.wait(futures)
        self._count(state, cycles=1)

    # -- fan-out: the members' side ----------------------------------------------

    def _receive(self, task, cycle_id, items):
        """A batch arrived over RPC (RPC server thread): check which items
        are still ours and queue them for the handler."""
        with self._lock:
            state = self._tasks.get(task)
        if state is None or state.executor is None or \
                self._stopping.is_set():
            LOG.warning('hacluster: ignoring %d items of unknown or stopped '
                        'task %s', len(items), task)
            return
        ledger = _ledger.Ledger(self._coord, task)
        try:
            ours = ledger.assigned_to(cycle_id, [i['q'] for i in items],
                                      self._server_name,
                                      {i['q']: i['attempt'] for i in items})
        except exceptions.HAClusterError as exc:
            LOG.warning('hacluster: cannot check assignments of %s (%s); '
                        'the items will be sent again', task,
                        _url.scrub(exc))
            return
        for item in items:
            if item['q'] in ours:
                try:
                    state.executor.submit(self._handle, state, cycle_id,
                                          item)
                except RuntimeError:     # executor shut down: stopping
                    return

    def _handle(self, state, cycle_id, item, record=True):
        if self._stopping.is_set() and record:
            return          # sent again by the leader at its deadline
        ctx = _task.ItemContext(state.name, cycle_id, item['id'],
                                item['attempt'], self._coord.member_id)
        started = time.monotonic()
        marker = {'node': self._coord.node,
                  'member_id': self._coord.member_id,
                  'attempt': item['attempt'], 'ok': True}
        try:
            state.handler(ctx, item['id'], item.get('payload'))
            self._count(state, items_handled=1)
        except Exception as exc:
            LOG.exception('hacluster: task %s item %s failed', state.name,
                          item['id'])
            marker.update(ok=False, error=_url.scrub('%s: %s' % (
                type(exc).__name__, exc)))
            self._count(state, items_handled=1, item_failures=1)
        marker['duration'] = round(time.monotonic() - started, 4)
        marker['at'] = time.time()
        if record:
            with self._done_cond:
                self._done_buffer.append((state.name, cycle_id, item['q'],
                                          marker))
                if len(self._done_buffer) >= 50:
                    self._done_cond.notify_all()

    def _flush_loop(self):
        # Done markers go out every 0.25 s, or at once when 50 are waiting:
        # few etcd requests, and the leader hears of progress promptly.
        while not self._stopping.is_set():
            with self._done_cond:
                if len(self._done_buffer) < 50:
                    self._done_cond.wait(0.25)
            self._flush()

    def _flush(self):
        with self._lock:
            dirty = [st for st in self._tasks.values() if st.stats_dirty]
        for state in dirty:
            self._publish_stats(state, force=False)
        with self._done_cond:
            batch, self._done_buffer = self._done_buffer, []
        if not batch:
            return
        by_task = {}
        for task, cycle_id, q, marker in batch:
            by_task.setdefault(task, []).append((cycle_id, q, marker))
        tasks = list(by_task.items())
        for i, (task, markers) in enumerate(tasks):
            try:
                _ledger.Ledger(self._coord, task).mark_done(None, markers)
            except exceptions.HAClusterError as exc:
                # Keep every marker not written yet (this task's and the
                # following tasks'); a lost marker means the item runs again.
                unwritten = [(t,) + m for t, ms in tasks[i:] for m in ms]
                LOG.warning('hacluster: cannot write %d done markers yet '
                            '(%s); retrying', len(unwritten), _url.scrub(exc))
                with self._done_cond:
                    self._done_buffer[:0] = unwritten
                time.sleep(0.2)
                return
        for task in by_task:
            with self._lock:
                state = self._tasks.get(task)
            if state is not None:
                self._publish_stats(state, force=False)
