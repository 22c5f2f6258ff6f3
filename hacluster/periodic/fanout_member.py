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

"""The members' side of fan-out tasks.

Every member runs an RPC server (:mod:`hacluster.periodic.rpc`) that
receives batches of items from the leader. For each item it checks in the
cycle ledger that the item is still its own (with that attempt number: an
item re-dispatched meanwhile is someone else's), runs the task's handler in
the task's workers and writes a done marker into the ledger. Markers are
written in batches by a flusher thread.
"""

import concurrent.futures
import logging
import threading
import time

from hacluster import exceptions
from hacluster import keys as _keys
from hacluster.periodic import ledger as _ledger
from hacluster.periodic import rpc as _rpc
from hacluster.periodic import task as _task
from hacluster import url as _url

LOG = logging.getLogger(__name__)

#: Done markers waiting that make the flusher write at once.
FLUSH_BATCH = 50
#: Seconds between the flusher's writes otherwise.
FLUSH_EVERY = 0.25
#: Seconds :meth:`FanoutMember.close` keeps trying to write what is left.
DRAIN_FOR = 5


class FanoutMember:
    """This member's part in fan-out tasks: its RPC server, the tasks'
    workers and the done markers.

    :param coord: the coordinator (its node, member id and cluster; the
        cycle ledger; ``update_member`` to publish this member's RPC
        server).
    :param stopping: a ``threading.Event``, set when the runner stops:
        items arriving then are left to the leader's deadlines.
    :param publish_stats: ``publish_stats(state, force)`` (a
        :class:`StatsPublisher`'s ``publish``).

    Thread-safe: items arrive in RPC server threads, handlers run in the
    tasks' workers, markers are written by the flusher thread.
    """

    def __init__(self, coord, stopping, publish_stats):
        self._coord = coord
        self._stopping = stopping
        self._publish_stats = publish_stats
        self._lock = threading.Lock()
        self._states = {}
        self._executors = {}
        self._server = None
        self._server_name = None
        self._janitor = None
        self._done_buffer = []
        self._done_cond = threading.Condition()
        self._flusher = None

    @property
    def server_name(self):
        """This member's RPC server name, once :meth:`serve` started it
        (else None)."""
        return self._server_name

    # -- life cycle --------------------------------------------------------

    def serve(self, transport, tasks, executor=None, janitor=None):
        """Start this member's RPC server on ``transport``, publish it in
        the member record for the fan-out ``tasks`` (names) and start the
        flusher. With a ``janitor`` (:class:`~hacluster.periodic.queues.
        QueueJanitor`), the server's queue is registered first and deleted
        by :meth:`close`. Blocks for the server start and two etcd
        requests.

        :raises HAClusterError: the member record could not be written.
        """
        coord = self._coord
        self._janitor = janitor
        if janitor is not None:
            # before the queue exists: none is ever left unrecorded
            janitor.register(_rpc.safe_name(coord.member_id))
        self._server, self._server_name = _rpc.start_server(
            transport, coord.cluster, coord.member_id, self,
            executor=executor)
        coord.update_member(fanout_server=self._server_name,
                            fanout_tasks=sorted(tasks))
        self._flusher = threading.Thread(target=self._flush_loop,
                                         name='hacluster-done-flusher',
                                         daemon=True)
        self._flusher.start()

    def prepare(self, states):
        """Make the workers of the fan-out tasks among ``states``
        (:class:`TaskState`); items of other tasks are refused."""
        with self._lock:
            for state in states:
                if state.spec.mode != _task.FANOUT:
                    continue
                self._states[state.name] = state
                if state.name not in self._executors:
                    self._executors[state.name] = \
                        concurrent.futures.ThreadPoolExecutor(
                            max_workers=state.spec.max_workers,
                            thread_name_prefix='hacluster-%s' % state.name)

    def withdraw(self):
        """Take this member's RPC server out of its member record, so that
        no new items come from the next cycle on. Blocks for one etcd
        request; an unreachable etcd is ignored."""
        if self._server_name is None:
            return
        try:
            self._coord.update_member(fanout_server=None, fanout_tasks=[])
        except exceptions.HAClusterError:
            pass

    def close(self):
        """Stop the RPC server, wait for the running handlers (queued items
        are dropped: the leader sends them to another member at their
        deadline), stop the flusher and write the markers left, trying for
        :data:`DRAIN_FOR` seconds. Blocks for all of that; never raises."""
        if self._server is not None:
            try:
                self._server.stop()
                self._server.wait()
            except Exception:
                LOG.exception('hacluster: stopping the fan-out RPC server')
            self._server = None
            if self._janitor is not None:
                # No consumer any more: the queue can go now rather than
                # wait for the leader's sweep.
                self._janitor.release(self._server_name)
        with self._lock:
            executors = list(self._executors.items())
        for name, executor in executors:
            executor.shutdown(wait=True, cancel_futures=True)
            with self._lock:
                self._executors.pop(name, None)
        with self._done_cond:
            self._done_cond.notify_all()
        if self._flusher is not None:
            self._flusher.join(10)
            self._flusher = None
        deadline = time.monotonic() + DRAIN_FOR
        while True:
            self._flush()
            with self._done_cond:
                left = len(self._done_buffer)
            if not left or time.monotonic() > deadline:
                break
        if left:
            LOG.warning('hacluster: %d done markers could not be written at '
                        'stop: those items will be handled again', left)

    # -- items -------------------------------------------------------------

    def receive(self, task, cycle_id, items):
        """A batch arrived over RPC (RPC server thread): check which items
        are still ours and queue them for the handler. Blocks for one etcd
        request; never raises (items not queued are sent again by the
        leader at their deadline)."""
        with self._lock:
            state = self._states.get(task)
            executor = self._executors.get(task)
        if state is None or executor is None or self._stopping.is_set():
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
                    executor.submit(self._handle, state, cycle_id, item)
                except RuntimeError:     # executor shut down: stopping
                    return

    def handle_here(self, state, cycle_id, listed):
        """Single-node mode: run the handler of a task on every item of
        ``listed`` (``{item id: payload}``) in the task's workers, without
        done markers. Blocks until every handler returned; a failing
        handler is logged and counted, not raised."""
        with self._lock:
            executor = self._executors[state.name]
        futures = [executor.submit(
            self._handle, state, cycle_id,
            {'q': _keys.quote_segment(str(i)), 'id': str(i), 'attempt': 1,
             'payload': p}, record=False)
            for i, p in listed.items()]
        concurrent.futures.wait(futures)

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
            state.stats.count(items_handled=1)
        except Exception as exc:
            LOG.exception('hacluster: task %s item %s failed', state.name,
                          item['id'])
            marker.update(ok=False, error=_url.scrub('%s: %s' % (
                type(exc).__name__, exc)))
            state.stats.count(items_handled=1, item_failures=1)
        marker['duration'] = round(time.monotonic() - started, 4)
        marker['at'] = time.time()
        if record:
            with self._done_cond:
                self._done_buffer.append((state.name, cycle_id, item['q'],
                                          marker))
                if len(self._done_buffer) >= FLUSH_BATCH:
                    self._done_cond.notify_all()

    # -- done markers ------------------------------------------------------

    def _flush_loop(self):
        # Done markers go out every FLUSH_EVERY seconds, or at once when
        # FLUSH_BATCH are waiting: few etcd requests, and the leader hears
        # of progress promptly.
        while not self._stopping.is_set():
            with self._done_cond:
                if len(self._done_buffer) < FLUSH_BATCH:
                    self._done_cond.wait(FLUSH_EVERY)
            self._flush()

    def _flush(self):
        with self._lock:
            states = list(self._states.values())
        # Stats held back by the throttle go out with the markers.
        for state in [s for s in states if s.stats.dirty]:
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
                state = self._states.get(task)
            if state is not None:
                self._publish_stats(state, force=False)
