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
item re-dispatched meanwhile is someone else's; a check that fails is
retried, never a reason to drop the batch), runs the task's handler in the
task's workers and writes a done marker into the ledger. An item it already
has (the same cycle and attempt, cast again by a leader adopting the cycle)
is ignored.

Markers are written in batches by a flusher thread, so that etcd requests
follow items, not timers: a transaction when :data:`FLUSH_BATCH` markers
wait, when this member has no item left queued or running (the leader hears
of the last ones at once), or when the oldest has waited
:data:`FLUSH_MAX_AGE` (a quarter of the task's ``item_timeout`` if that is
less), and at once for an item finished after 3/4 of its ``item_timeout``
counted from its batch's arrival (a marker must never wait past its item's
deadline: the leader would send the item again). The task stats
ride in the same transaction.
"""

import collections
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

#: Done markers waiting that make the flusher write at once: one
#: transaction's worth, less one operation for the stats that ride along.
FLUSH_BATCH = _ledger.BATCH - 1
#: Seconds the oldest done marker may wait for a transaction.
FLUSH_MAX_AGE = 5.0
#: Share of ``item_timeout``, counted from the batch's arrival, after which
#: a marker is written at once: an item finished near its deadline must
#: reach the ledger before the leader sends it again.
FLUSH_BY_DEADLINE = 0.75
#: Seconds between the flusher's looks at stats held back by their
#: throttle while no marker waits.
STATS_EVERY = 1.0
#: Longest pause between two tries of a failed assignment check.
CHECK_BACKOFF_MAX = 2.0
#: Cycles per task whose items are remembered (for ignoring copies).
_CYCLES_KEPT = 3


def _cycle_started(cycle_id):
    """The start time a cycle id begins with (see Ledger.new_cycle_id);
    0 for an id of another shape (forgotten first)."""
    try:
        return int(str(cycle_id).split('-', 1)[0])
    except ValueError:
        return 0


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
    :param stats: the runner's :class:`~hacluster.periodic.stats.
        StatsPublisher` (its ``publication`` rides with the done markers).

    Thread-safe: items arrive in RPC server threads, handlers run in the
    tasks' workers, markers are written by the flusher thread.
    """

    def __init__(self, coord, stopping, stats):
        self._coord = coord
        self._stopping = stopping
        self._stats = stats
        self._lock = threading.Lock()
        self._states = {}
        self._executors = {}
        self._server = None
        self._server_name = None
        self._janitor = None
        # under _done_cond: markers waiting, when the oldest must go,
        # items queued or running here
        self._done_buffer = []
        self._flush_due = None
        self._inflight = 0
        self._done_cond = threading.Condition()
        self._flusher = None
        # under _lock: {task: OrderedDict(cycle id: {qid: attempts})} of
        # the items accepted here (queued, running or done)
        self._accepted = {}

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
        are still ours and queue them for the handler. Items this member
        already has (same cycle, same attempt) are ignored. Blocks for one
        etcd request -- for as long as the task's ``item_timeout`` while
        etcd fails it, retrying with backoff (a batch dropped on a
        transient error would wait for its deadline); never raises (items
        not queued are sent again by the leader at their deadline)."""
        with self._lock:
            state = self._states.get(task)
            executor = self._executors.get(task)
        if state is None or executor is None or self._stopping.is_set():
            LOG.warning('hacluster: ignoring %d items of unknown or stopped '
                        'task %s', len(items), task)
            return
        items = self._accept(task, cycle_id, items)
        if not items:
            return
        ours = self._check(state, cycle_id, items)
        if ours is None:
            self._forget(task, cycle_id, items)
            return
        self._forget(task, cycle_id, [i for i in items if i['q'] not in ours])
        received = time.monotonic()
        for item in items:
            if item['q'] not in ours:
                continue
            with self._done_cond:
                self._inflight += 1
            try:
                executor.submit(self._handle, state, cycle_id, item,
                                received=received)
            except RuntimeError:     # executor shut down: stopping
                with self._done_cond:
                    self._inflight -= 1
                return

    def _accept(self, task, cycle_id, items):
        """The items of a batch this member does not have yet, now
        remembered as its own (before the check: two copies arriving at
        once in two RPC threads are not both taken)."""
        with self._lock:
            cycles = self._accepted.setdefault(task,
                                               collections.OrderedDict())
            if cycle_id not in cycles:
                cycles[cycle_id] = {}
                # Forget the cycle the leader started first (ids begin with
                # its start time), not the first to arrive here: a late
                # copy of an old cycle's batch must not evict the memory of
                # the current one.
                while len(cycles) > _CYCLES_KEPT:
                    del cycles[min(cycles, key=_cycle_started)]
            # (not kept if older than every cycle remembered: its batch is
            # left to the assignment check, which refuses a finished cycle)
            seen = cycles.get(cycle_id, {})
            new = []
            for item in items:
                attempts = seen.setdefault(item['q'], set())
                if item['attempt'] not in attempts:
                    attempts.add(item['attempt'])
                    new.append(item)
        if len(new) < len(items):
            LOG.debug('hacluster: task %s cycle %s: ignoring %d items this '
                      'member has already', task, cycle_id,
                      len(items) - len(new))
        return new

    def _forget(self, task, cycle_id, items):
        """Undo :meth:`_accept` for items not taken after all."""
        with self._lock:
            seen = self._accepted.get(task, {}).get(cycle_id)
            if seen is None:
                return
            for item in items:
                attempts = seen.get(item['q'])
                if attempts is not None:
                    attempts.discard(item['attempt'])

    def _check(self, state, cycle_id, items):
        """``assigned_to`` for a batch, retried with backoff while etcd
        fails it, for up to the task's ``item_timeout`` (by then the
        leader sends the items again anyway) or until this member stops.
        Returns the set of quoted ids still ours, or None."""
        ledger = _ledger.Ledger(self._coord, state.name)
        qids = [i['q'] for i in items]
        attempts = {i['q']: i['attempt'] for i in items}
        deadline = time.monotonic() + state.spec.item_timeout
        delay = 0.1
        tries = 0
        while True:
            tries += 1
            try:
                return ledger.assigned_to(cycle_id, qids, self._server_name,
                                          attempts)
            except exceptions.HAClusterError as exc:
                left = deadline - time.monotonic()
                if self._stopping.is_set() or left <= 0:
                    LOG.warning('hacluster: cannot check assignments of %s '
                                'after %d tries (%s); the items will be sent '
                                'again', state.name, tries, _url.scrub(exc))
                    return None
                LOG.info('hacluster: checking assignments of %d items of %s '
                         'failed (%s); retrying in %.1f s', len(items),
                         state.name, _url.scrub(exc), delay)
                self._stopping.wait(min(delay, left))
                delay = min(delay * 2, CHECK_BACKOFF_MAX)

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

    def _handle(self, state, cycle_id, item, record=True, received=None):
        try:
            self._run_handler(state, cycle_id, item, record, received)
        finally:
            if record:
                with self._done_cond:
                    self._inflight -= 1
                    if not self._inflight:
                        self._done_cond.notify_all()   # idle: flush now

    def _run_handler(self, state, cycle_id, item, record, received=None):
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
            timeout = state.spec.item_timeout
            now = time.monotonic()
            due = now + min(FLUSH_MAX_AGE, timeout / 4.0)
            if received is not None:
                due = min(due, received + FLUSH_BY_DEADLINE * timeout)
            with self._done_cond:
                self._done_buffer.append((state.name, cycle_id, item['q'],
                                          marker))
                if self._flush_due is None or due < self._flush_due:
                    self._flush_due = due
                if len(self._done_buffer) >= FLUSH_BATCH:
                    self._done_cond.notify_all()

    # -- done markers ------------------------------------------------------

    def _flush_wanted(self, now):
        """Under _done_cond: True if the markers waiting must go now."""
        return bool(self._done_buffer) and (
            len(self._done_buffer) >= FLUSH_BATCH or not self._inflight or
            self._flush_due is None or now >= self._flush_due)

    def _flush_loop(self):
        # Done markers go out when FLUSH_BATCH wait, when nothing is left
        # to handle here, or when the oldest has waited long enough: etcd
        # requests follow items, and the leader hears of the last ones at
        # once. With no marker waiting, stats held back by their throttle
        # go out alone every STATS_EVERY seconds.
        while not self._stopping.is_set():
            with self._done_cond:
                while not self._stopping.is_set():
                    now = time.monotonic()
                    if self._flush_wanted(now):
                        break
                    if self._done_buffer and self._flush_due is not None:
                        timeout = self._flush_due - now
                    else:
                        timeout = STATS_EVERY
                    if not self._done_cond.wait(max(0.01, timeout)) and \
                            not self._done_buffer:
                        break       # a quiet while: look at the stats
            self._flush()

    def _flush(self):
        """Write the markers waiting (and the stats with them); with no
        marker waiting, the stats held back. Blocks for the requests;
        never raises (markers not written wait for the next try)."""
        with self._lock:
            states = dict(self._states)
        with self._done_cond:
            batch, self._done_buffer = self._done_buffer, []
            self._flush_due = None
        if not batch:
            for state in [s for s in states.values() if s.stats.dirty]:
                self._stats.publish(state, force=False)
            return
        by_task = {}
        for task, cycle_id, q, marker in batch:
            by_task.setdefault(task, []).append((cycle_id, q, marker))
        tasks = list(by_task.items())
        for i, (task, markers) in enumerate(tasks):
            state = states.get(task)
            stats = self._stats.publication(state, force=False) \
                if state is not None else None
            try:
                _ledger.Ledger(self._coord, task).mark_done(
                    None, markers, extra=[stats] if stats else ())
            except exceptions.HAClusterError as exc:
                if stats:
                    state.stats.mark_dirty()
                # Keep every marker not written yet (this task's and the
                # following tasks'); a lost marker means the item runs again.
                unwritten = [(t,) + m for t, ms in tasks[i:] for m in ms]
                LOG.warning('hacluster: cannot write %d done markers yet '
                            '(%s); retrying', len(unwritten), _url.scrub(exc))
                with self._done_cond:
                    self._done_buffer[:0] = unwritten
                    self._flush_due = time.monotonic() + 0.2
                self._stopping.wait(0.2)
                return
