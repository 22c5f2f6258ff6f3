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
  whole cluster through etcd (the task's control key).
* Stats (runs, skips, failures, last run, duration, where) are kept per node
  and written to etcd after each run, for the status command.

The runner is a facade over its roles, each an object of its own:

* :class:`~hacluster.periodic.timers.Timers` -- the ThreadGroup, a timer
  per task, and the choice of oslo.service backend;
* :class:`~hacluster.periodic.control.PauseControl` -- cluster-wide pause
  and resume (the watched control keys);
* :class:`~hacluster.periodic.stats.StatsPublisher` -- the stats in etcd;
* :class:`~hacluster.periodic.fanout_leader.FanoutLeader` -- listing,
  assigning, casting, the cycle ledger, re-dispatch and adoption;
* :class:`~hacluster.periodic.fanout_member.FanoutMember` -- the RPC
  server, the item handlers and their done markers.

oslo.service is imported in :meth:`PeriodicRunner.start`, never at import
time: the process's own choice of backend (threading for manila 23, eventlet
elsewhere) is used, not pinned by us; if the process has chosen none, the one
matching it is chosen then (eventlet if monkey-patched, else threading).
Under the threading backend a running task cannot be killed: tasks must
return (``stop()`` waits for them).

Fan-out is at-least-once per item and cycle (exactly once unless an item is
re-dispatched after its deadline or its owner's departure): handlers must be
idempotent, and get the attempt number to help.
"""

import logging
import threading
import time

from hacluster import exceptions
from hacluster.periodic import control as _control
from hacluster.periodic import fanout_leader as _fanout_leader
from hacluster.periodic import fanout_member as _fanout_member
from hacluster.periodic import queues as _queues
from hacluster.periodic import rpc as _rpc
from hacluster.periodic import state as _state
from hacluster.periodic import stats as _stats
from hacluster.periodic import task as _task
from hacluster.periodic import timers as _timers

LOG = logging.getLogger(__name__)

# Kept importable from here, where callers and tests import them.
assign_bounded = _fanout_leader.assign_bounded
_select_backend = _timers.select_backend


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
        self._started = False
        self._stopping = threading.Event()
        self._adopt_hooked = False
        self._janitor = None
        # A single-node coordinator has no etcd: no client, layout or watch
        # (nothing is published or watched there).
        etcd = not coordinator.single_node
        client = coordinator.client if etcd else None
        layout = coordinator.layout if etcd else None
        self._timers = _timers.Timers(self._tick)
        self._stats = _stats.StatsPublisher(client, layout, coordinator.node,
                                            coordinator.member_id)
        self._control = _control.PauseControl(
            client, layout, coordinator.node,
            coordinator.subscribe if etcd else None,
            coordinator.unsubscribe if etcd else None, self._set_paused)
        self._member = _fanout_member.FanoutMember(
            coordinator, self._stopping, self._stats)
        self._leader = _fanout_leader.FanoutLeader(
            coordinator, self._stopping, self._member.handle_here,
            self._tick)

    # -- declaring -----------------------------------------------------------

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
                    'periodic task %r: add tasks before start() (its '
                    'spacing, RPC server and leadership are set up there)'
                    % spec.name)
            if spec.name in self._tasks:
                raise exceptions.ConfigurationError(
                    'periodic task %r is already added' % spec.name)
            self._tasks[spec.name] = _state.TaskState(spec, fn, handler)
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

    # -- life cycle ----------------------------------------------------------

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
        self._timers.prepare()      # imports oslo.service: see module doc

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
                    # a member left, or came back as a new incarnation
                    coord.on_member_leave(self._on_member_change)
                    coord.on_member_join(self._on_member_change)
                    self._adopt_hooked = True
            self._timers.open()
            self._started = True
            self._member.prepare(self._tasks.values())
            if not coord.single_node:
                for state in self._tasks.values():
                    state.paused = self._control.watch(state)
            for state in self._tasks.values():
                if not state.paused:
                    self._timers.start(state)
            # every task shows in `hacluster status` from the start, not
            # only after its first run (manila has tasks an hour apart)
            self._timers.spawn(self._stats.publish_all,
                               list(self._tasks.values()))
        LOG.info('hacluster: %s/%s periodic tasks started: %s',
                 self._coord.cluster, self._coord.node,
                 ', '.join('%s (%s, %gs)' % (s.name, s.spec.mode, s.spacing)
                           for s in self._tasks.values()))
        return self

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
        api = _rpc.FanoutAPI(self._transport, self._coord.cluster)
        fanout = [s.name for s in self._tasks.values()
                  if s.spec.mode == _task.FANOUT]
        coord = self._coord
        self._janitor = _queues.QueueJanitor(
            coord.client, coord.layout, coord.node, coord.member_id,
            coord.get_members, _queues.Broker(self._transport))
        self._member.serve(self._transport, fanout,
                           executor=self._rpc_executor,
                           janitor=self._janitor)
        self._leader.open(api, self._member.server_name)

    def stop(self):
        """Stop all timers, wait for running cycles and item handlers to
        return, flush done markers and stop the RPC server. Blocks for as
        long as the running tasks take."""
        with self._lock:
            if not self._started:
                return
            self._started = False
            self._stopping.set()
            timers = [(self._timers.take(state.name), state.name)
                      for state in self._tasks.values()]
            self._control.unwatch()
        # No new items for us from the next cycle on.
        self._member.withdraw()
        for timer, name in timers:
            self._timers.finish(timer, name)
        self._member.close()
        self._stats.publish_dirty(self._tasks.values(), force=True)
        self._timers.close()
        if self._own_transport and self._transport is not None:
            self._transport.cleanup()
            self._transport = None
            self._own_transport = False

    # -- run-time control ----------------------------------------------------

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
            timer = self._timers.take(name) if self._started else None
        self._timers.finish(timer, name)

    def start_task(self, name):
        """Start one task again on this node (no-op if running or paused for
        the cluster)."""
        state = self._state(name)
        with self._lock:
            state.stopped = False
            if self._started:
                self._timers.start(state)

    def run_now(self, name, wait=False):
        """Run one tick of a task now (skipped and counted if a cycle is
        already running). With ``wait`` it runs in the caller's thread and
        returns when done; else in the ThreadGroup."""
        state = self._state(name)
        if wait or not self._timers.spawn(self._tick, state):
            self._tick(state)

    def pause_task(self, name):
        """Pause a task on every node of the cluster (through etcd; in
        single-node mode, here: this node is the whole cluster).

        :raises HAClusterError: etcd could not be reached.
        """
        state = self._state(name)
        if self._coord.single_node:
            self._set_paused(state, True)
        else:
            self._control.pause(name)

    def resume_task(self, name):
        """Resume a task paused with :meth:`pause_task`, cluster-wide."""
        state = self._state(name)
        if self._coord.single_node:
            self._set_paused(state, False)
        else:
            self._control.resume(name)

    def _set_paused(self, state, paused):
        """The control key of a task changed (watch thread)."""
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
                self._timers.finish(self._timers.take(state.name),
                                    state.name, wait=False)
            else:
                self._timers.start(state)

    def stats(self, name=None):
        """Local stats: of one task, or ``{name: stats}`` of all."""
        if name is not None:
            state = self._state(name)
            return dict(state.stats.snapshot(), spacing=state.spacing,
                        mode=state.spec.mode, paused=state.paused,
                        stopped=state.stopped)
        return {n: self.stats(n) for n in self.tasks}

    # -- a tick --------------------------------------------------------------

    def _tick(self, state):
        """One timer tick. Never raises (a raising timer callback would be
        logged by oslo.service; ours record failures in stats instead)."""
        if state.paused or state.stopped or self._stopping.is_set():
            return
        coord = self._coord
        mode = state.spec.mode
        if mode != _task.EVERY and not coord.is_leader:
            state.stats.count(not_leader=1)
            return
        if not state.running.acquire(blocking=False):
            state.stats.count(skips=1)
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
                        state.stats.count(skips=1)
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
                        self._leader.run_cycle(state, lock, term)
                        self._sweep_queues()
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
                state.stats.record_run(time.monotonic() - started, error)
                self._stats.publish(state)

    # -- fan-out: queues of departed members --------------------------------

    def _on_member_change(self, record, graceful=None):
        """Watch thread: an incarnation is gone (a leave: ``record,
        graceful``; a join of a new incarnation: ``record``); its fan-out
        queue can go."""
        janitor = self._janitor
        if janitor is None or not self._started:
            return
        janitor.note_departure()
        if self._coord.is_leader:
            self._timers.spawn(self._sweep_queues)

    def _sweep_queues(self):
        janitor = self._janitor
        if janitor is not None and self._coord.is_leader:
            janitor.sweep_if_due()

    # -- fan-out: adoption ---------------------------------------------------

    def _on_new_leader(self, record):
        """Watch thread: when this node becomes leader, finish what the
        previous leader left at once, not a whole spacing later."""
        if record is None or record.get('member_id') != \
                self._coord.member_id or not self._started:
            return
        for state in list(self._tasks.values()):
            if state.spec.mode == _task.FANOUT:
                self._timers.spawn(self._leader.adopt_if_unfinished, state)
