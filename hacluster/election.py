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

"""One leader per cluster: a campaign on the lock recipe, with terms.

Candidates queue under ``/hacluster/v1/<cluster>/leader/`` exactly like
exclusive lock waiters (one key each, on the session lease, FIFO by create
revision, woken by the watch). The head of the queue leads; its create
revision is the **term**, a fencing token: strictly increasing from one
leadership to the next, and usable to make etcd writes conditional on still
leading in that term.

Callback contract (per candidate):

* ``on_started_leading(term)`` -- called in the campaign thread when this
  candidate becomes leader. Must return promptly: start work elsewhere.
* ``on_stopped_leading(term)`` -- called exactly once for every term that
  started, whatever ends it: :meth:`resign`, coordinator stop, session lost
  (renew deadline passed without renewal), the leader key deleted by someone
  else. Never called while ``on_started_leading`` of the same term is still
  running (it waits for it to return). On a session loss it runs in the
  session thread *before* the lease is revoked, so the next leader cannot
  start before it returns: successive leaders' callbacks do not overlap.
* ``on_new_leader(record)`` -- called (in the watch thread) whenever the
  observed leader changes, with the leader's record including ``term``, or
  None when there is no leader.

After a lost session a candidate campaigns again on its new session.
"""

import logging
import threading

from hacluster import etcd as _etcd
from hacluster import exceptions
from hacluster import locks as _locks
from hacluster.membership import MemberRecord
from hacluster import url as _url

LOG = logging.getLogger(__name__)


def _safe(fn, *args):
    if fn is None:
        return
    try:
        fn(*args)
    except Exception:
        LOG.exception('hacluster: leadership callback %r failed', fn)


def head_of(kvs):
    """The leader among the ``leader/`` queue's KVs: the oldest entry (the
    lowest create revision, which is also the term), or None. The one rule
    for "who leads", used by the view below, ``get_leader`` and status."""
    return min(kvs, key=lambda kv: kv.create_revision) if kvs else None


class LeaderView:
    """The leader queue as seen through the cluster watch (no requests):
    fires ``on_new_leader`` callbacks when the head changes."""

    def __init__(self, ctx):
        self._ctx = ctx
        self._entries = {}           # key -> (create_revision, record)
        self._lock = threading.Lock()
        self._head = None            # (key, revision)
        self._callbacks = []

    def add_callback(self, callback):
        """Register ``callback(record_or_None)``; it is called at once with
        the current leader if there is one (a node joining a cluster that
        already has a leader learns it now, not at the next change)."""
        self._callbacks.append(callback)
        current = self.current()
        if current is not None:
            _safe(callback, current)

    def load(self, kvs):
        with self._lock:
            self._entries = {kv.key: (kv.create_revision, kv.json())
                             for kv in kvs}
            self._head = self._compute_head()

    def _compute_head(self):
        if not self._entries:
            return None
        key = min(self._entries, key=lambda k: self._entries[k][0])
        return key, self._entries[key][0]

    def current(self):
        """The leader's record with ``term``, or None (no request)."""
        with self._lock:
            if self._head is None:
                return None
            rev, value = self._entries[self._head[0]]
        record = MemberRecord(value)
        record['term'] = rev
        return record

    def notify(self, etype, kv):
        with self._lock:
            if etype == 'DELETE':
                self._entries.pop(kv.key, None)
            else:
                self._entries[kv.key] = (kv.create_revision, kv.json())
        self._head_changed()

    def resync(self):
        """Re-read the leader queue. :raises HAClusterError: etcd could not
        be read (the coordinator retries)."""
        kvs, _ = self._ctx.client.get_prefix(self._ctx.layout.leader)
        with self._lock:
            self._entries = {kv.key: (kv.create_revision, kv.json())
                             for kv in kvs}
        self._head_changed()

    def _head_changed(self):
        with self._lock:
            head = self._compute_head()
            changed = head != self._head
            self._head = head
        if not changed:
            return
        record = self.current()
        if record is None:
            LOG.info('hacluster: %s: no leader', self._ctx.cluster)
        else:
            LOG.info('hacluster: %s: leader is now %s (node %s), term %d',
                     self._ctx.cluster, record.get('member_id'),
                     record.get('node'), record['term'])
        for cb in list(self._callbacks):
            _safe(cb, record)


class Election:
    """A running campaign. Built by
    :meth:`hacluster.coordinator.Coordinator.run_for_leader`."""

    def __init__(self, ctx, registry, leader_view, on_started_leading,
                 on_stopped_leading, on_new_leader=None):
        if not callable(on_started_leading) or \
                not callable(on_stopped_leading):
            raise exceptions.ConfigurationError(
                'run_for_leader needs callable on_started_leading and '
                'on_stopped_leading')
        if on_new_leader is not None and not callable(on_new_leader):
            raise exceptions.ConfigurationError(
                'on_new_leader must be callable or None')
        self._ctx = ctx
        self._registry = registry
        self._listeners = [(on_started_leading, on_stopped_leading)]
        self._stop = threading.Event()
        self._ended = threading.Event()
        self._term_lock = threading.RLock()
        self._mutex = threading.Lock()
        self._pending = None
        self._lock = None
        self._term = None
        self._thread = threading.Thread(
            target=self._campaign, daemon=True,
            name='hacluster-election-%s' % ctx.node)
        if on_new_leader is not None:
            leader_view.add_callback(on_new_leader)

    def start(self):
        self._thread.start()
        return self

    def in_callback_thread(self):
        """True when called from this election's own thread (its
        leadership callbacks run there)."""
        return threading.current_thread() is self._thread

    def add_listener(self, on_started_leading, on_stopped_leading):
        """Add another pair of callbacks to this campaign (same contract).
        If this candidate leads now, ``on_started_leading`` is called at
        once, in the caller's thread."""
        with self._term_lock:
            self._listeners.append((on_started_leading, on_stopped_leading))
            with self._mutex:
                term = self._term
            if term is not None:
                _safe(on_started_leading, term)

    @property
    def is_leader(self):
        """True while this candidate leads and its session is within its
        renew deadline. Cheap (no request)."""
        with self._mutex:
            lock = self._lock
        return lock is not None and lock.held and \
            self._ctx.session.valid(lock.epoch)

    @property
    def term(self):
        """The current term while leading, else None."""
        return self._term if self.is_leader else None

    def _campaign(self):
        coord = self._ctx
        while not self._stop.is_set():
            lock = _locks.Lock(coord, self._registry, 'leader',
                               _prefix=coord.layout.leader)
            lock.on_lost(lambda lk, why: self._end_term(lk, why))
            with self._mutex:
                self._pending = lock
            if self._stop.is_set():
                break
            try:
                got = lock.acquire(True)
            except exceptions.NotStarted:
                break
            except exceptions.HAClusterError as exc:
                LOG.warning('hacluster: %s/%s: campaign failed (%s); '
                            'retrying', coord.cluster, coord.node,
                            _url.scrub(exc))
                self._stop.wait(coord.session.renew_interval)
                continue
            if not got:
                continue
            with self._term_lock:
                if not lock.held or self._stop.is_set():
                    if lock.held:
                        lock.release()
                    continue
                term = lock.fencing_token
                with self._mutex:
                    self._lock, self._term = lock, term
                self._ended.clear()
                LOG.info('hacluster: %s/%s (member %s) started leading, '
                         'term %d', coord.cluster, coord.node,
                         coord.member_id, term)
                for on_started, _ in list(self._listeners):
                    _safe(on_started, term)
            self._ended.wait()

    def _end_term(self, lock, reason):
        """End the term of ``lock`` (once): call on_stopped_leading."""
        with self._term_lock:
            with self._mutex:
                if self._lock is not lock or self._term is None:
                    return False
                term = self._term
                self._lock, self._term = None, None
            LOG.info('hacluster: %s/%s (member %s) stopped leading, term '
                     '%d: %s', self._ctx.cluster, self._ctx.node,
                     self._ctx.member_id, term, reason)
            for _, on_stopped in list(self._listeners):
                _safe(on_stopped, term)
        self._ended.set()
        return True

    def resign(self):
        """Stop leading (if leading) and stop campaigning.

        ``on_stopped_leading`` runs before the leader key is deleted, so the
        next leader starts after it. Blocks for one etcd request. Call
        ``run_for_leader`` again to campaign anew.

        Called from inside a leadership callback, it returns at once and
        resigns in another thread as soon as the callbacks have returned
        (``on_stopped_leading`` never runs inside ``on_started_leading``).
        """
        if threading.current_thread() is self._thread:
            self._stop.set()
            threading.Thread(target=self.resign, daemon=True,
                             name='hacluster-resign').start()
            return
        self._stop.set()
        with self._mutex:
            pending, lock = self._pending, self._lock
        if pending is not None:
            pending.cancel()
        if lock is not None and self._end_term(lock, 'resigned'):
            try:
                lock.release()
            except exceptions.HAClusterError as exc:
                LOG.warning('hacluster: releasing leadership: %s',
                            _url.scrub(exc))
        self._ended.set()
        if self._thread.is_alive() and \
                self._thread is not threading.current_thread():
            self._thread.join(self._ctx.session.renew_interval + 5)

    def guarded_txn(self, term, success, compare=()):
        """Run etcd operations only if still leading in ``term``.

        :raises NotLeader: not leading in ``term`` (locally known).
        :raises StaleFencingToken: etcd refused: the term is over.
        """
        with self._mutex:
            lock = self._lock
        if lock is None or self._term != term or not lock.held:
            raise exceptions.NotLeader(
                '%s is not leading cluster %s in term %s'
                % (self._ctx.node, self._ctx.cluster, term))
        return lock.guarded_txn(success, compare=compare)

    def guarded_put(self, term, key, value):
        """Write data ``key`` only if still leading in ``term``."""
        if isinstance(value, str):
            value = value.encode('utf-8')
        self.guarded_txn(term, [_etcd.put_op(
            self._ctx.layout.data_key(key), value)])
