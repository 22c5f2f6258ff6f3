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

"""Task statistics: counted per node, published to etcd for ``hacluster
status``.

:class:`TaskStats` holds one task's counters on this node (runs, skips,
failures, last run, duration, fan-out counts); :class:`StatsPublisher`
writes them to ``tasks/<task>/stats/<node>`` after each run and, while items
are handled, at most once a second.
"""

import json
import logging
import threading
import time
import weakref

from hacluster import exceptions
from hacluster import url as _url

LOG = logging.getLogger(__name__)

#: Seconds between two throttled publications of one task's stats (item
#: handling counts often; etcd needs to hear of it only now and then).
THROTTLE = 1.0

#: Where the done markers of items given up are counted in a cycle's
#: ``per_node`` (no node handled them).
GIVEN_UP = '(given up)'

# member id -> the StatsPublishers of that coordinator incarnation's
# runners (weakly: a runner dropped is forgotten), so that the metrics
# (hacluster.metrics) find the tasks of a coordinator at scrape time.
_publishers = {}
_publishers_lock = threading.Lock()


def states_of(member_id):
    """``{task name: TaskState}`` of the tasks the runners of coordinator
    incarnation ``member_id`` run in this process (each known from its
    first publication: at the runner's start, or its first run). No
    request."""
    with _publishers_lock:
        publishers = list(_publishers.get(member_id, ()))
    states = {}
    for publisher in publishers:
        states.update(publisher.states())
    return states


class TaskStats:
    """The counters of one task on this node.

    Thread-safe (a lock of its own); nothing here blocks on etcd.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._counts = {'runs': 0, 'skips': 0, 'failures': 0,
                        'not_leader': 0, 'last_run_at': None,
                        'last_duration': None, 'last_error': None,
                        'items_handled': 0, 'item_failures': 0,
                        'cycles': 0, 'redispatched': 0, 'rpc_casts': 0}
        self._published = 0.0
        self._dirty = False
        #: durations of the fan-out cycles this node led (a
        #: hacluster.metrics.Histogram, made at the first cycle)
        self.cycle_seconds = None
        #: ``{node: items}`` of the last fan-out cycle this node led
        self.last_cycle_items = {}

    def count(self, **delta):
        """Add ``delta`` to the named counters."""
        with self._lock:
            for key, value in delta.items():
                self._counts[key] = self._counts.get(key, 0) + value

    def get(self, key):
        """One counter's value."""
        with self._lock:
            return self._counts.get(key)

    def record_run(self, duration, error):
        """Count one run that took ``duration`` seconds and raised ``error``
        (None if it returned)."""
        with self._lock:
            self._counts['runs'] += 1
            if error is not None:
                self._counts['failures'] += 1
            self._counts['last_run_at'] = time.time()
            self._counts['last_duration'] = round(duration, 4)
            self._counts['last_error'] = None if error is None else \
                _url.scrub('%s: %s' % (type(error).__name__, error))

    def record_cycle(self, duration, per_node):
        """Record one finished fan-out cycle led here: it took
        ``duration`` seconds and ``per_node`` (``{node: items done}``) is
        who handled its items (items given up are not a node's)."""
        from hacluster import metrics as _metrics
        with self._lock:
            if self.cycle_seconds is None:
                self.cycle_seconds = _metrics.Histogram(
                    _metrics.CYCLE_BUCKETS)
            self.last_cycle_items = {n: c for n, c in per_node.items()
                                     if n != GIVEN_UP}
        self.cycle_seconds.observe(duration)

    def snapshot(self):
        """A copy of the counters (a dict)."""
        with self._lock:
            return dict(self._counts)

    @property
    def dirty(self):
        """True if a throttled publication was held back."""
        return self._dirty

    def mark_dirty(self):
        """Hold the counters for a later publication (one that was taken
        by :meth:`take_for_publishing` could not be written)."""
        with self._lock:
            self._dirty = True

    def take_for_publishing(self, force):
        """A copy of the counters to publish now, marking them published;
        or None (and marked dirty, for a later try) if they were published
        less than :data:`THROTTLE` seconds ago and ``force`` is false."""
        now = time.monotonic()
        with self._lock:
            if not force and now - self._published < THROTTLE:
                self._dirty = True
                return None
            self._published = now
            self._dirty = False
            return dict(self._counts)


class StatsPublisher:
    """Writes this node's stats of tasks to etcd.

    :param client: the coordinator's etcd client (None in single-node mode:
        nothing is published there).
    :param layout: the cluster's :class:`hacluster.keys.Layout`.
    :param node: this node's name (the stats key's last segment).
    :param member_id: this process's member id (recorded with the stats).

    Thread-safe. Each publication blocks for one etcd request; a failed one
    is logged, never raised.
    """

    def __init__(self, client, layout, node, member_id):
        self._client = client
        self._layout = layout
        self._node = node
        self._member_id = member_id
        self._states = {}
        with _publishers_lock:
            for gone in [m for m, s in _publishers.items() if not s]:
                del _publishers[gone]       # runners dropped long ago
            _publishers.setdefault(member_id, weakref.WeakSet()).add(self)

    def states(self):
        """``{task name: TaskState}`` of the tasks published here."""
        return dict(self._states)

    def publication(self, state, force=True):
        """The write that publishes one task's stats (a
        :class:`TaskState`) now, as ``(key, value)``, for the caller to
        send in a transaction of its own (a fan-out member sends it with
        its done markers: no request of its own); None if there is
        nothing to write (single-node mode, or the throttle held it
        back, unless ``force``). The counters count as published: a
        caller whose write fails calls ``state.stats.mark_dirty()``.
        No request; thread-safe."""
        self._states[state.name] = state
        if self._client is None:
            return None
        counts = state.stats.take_for_publishing(force)
        if counts is None:
            return None
        record = dict(counts, node=self._node, member_id=self._member_id,
                      mode=state.spec.mode, spacing=state.spacing,
                      stopped=state.stopped, rpc_pin=state.rpc_pin,
                      format=1)
        return (self._layout.task_stats(state.name, self._node),
                json.dumps(record))

    def publish(self, state, force=True):
        """Write the stats of one task (a :class:`TaskState`); unless
        ``force``, at most once every :data:`THROTTLE` seconds. Blocks for
        one request; a failure is logged, not raised."""
        write = self.publication(state, force)
        if write is None:
            return
        try:
            self._client.put(*write)
        except exceptions.HAClusterError as exc:
            state.stats.mark_dirty()
            LOG.warning('hacluster: cannot publish stats of %s: %s',
                        state.name, _url.scrub(exc))

    def publish_all(self, states):
        """Write the stats of every task in ``states``."""
        for state in list(states):
            self.publish(state)

    def publish_dirty(self, states, force):
        """Write the stats of the tasks whose last throttled publication
        was held back."""
        for state in [s for s in states if s.stats.dirty]:
            self.publish(state, force=force)
