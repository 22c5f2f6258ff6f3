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

"""Distributed locks on etcd: FIFO, exclusive or shared, fenced.

The recipe (etcd's Mutex, extended to read/write):

* every acquisition puts its own key under ``locks/<name>/``, bound to the
  coordinator's session lease -- one key per acquisition, not per process, so
  two threads of one process contending for one name queue like two
  processes would (a lease-keyed Mutex would let both "hold" it);
* the queue order is the keys' create revision; the holder(s) are:
  exclusive -- the entry with no earlier entry at all; shared -- an entry
  with no earlier *exclusive* entry. A writer waits for everything before it,
  and readers that arrive after a writer wait for it: no writer starvation;
* a waiter does not poll: it waits for the deletion of the one entry it is
  blocked behind (or of its own entry), delivered by the coordinator's
  watch, then re-reads the queue (one range request). A resync of the watch
  (events missed: compaction) wakes it too. What bounds a lost event: the
  safety check, below;
* the fencing token is the create revision of the holder's key: etcd's
  global revision, so strictly increasing across successive holders of a
  name, for free;
* enqueueing and reading the queue is one transaction: an uncontended
  acquire costs one request and a release one more -- the floor for any lock
  on etcd.

When the session is lost, every lock held under it is marked lost and its
``on_lost`` callbacks run (in the session thread). When someone else deletes
a held lock's key, the watch sees it and does the same.

**The safety check of a blocked waiter.** The watch is the waiter's only
wake-up while all is well; an idle waiter (every election candidate is one)
sends no request of its own. Besides, every ``renew_interval`` it checks,
locally: is its session still valid (if not, it queues again on the new
one), and has etcd's revision moved past the revision of its last read of
the queue? Any deletion -- the blocker released, expired or deleted by an
operator, the waiter's own entry deleted -- makes a new revision, and the
coordinator's client learns the current revision from every answer,
the session's keep-alive (every ``renew_interval``) among them
(:attr:`hacluster.etcd.Client.revision`). Only when it has moved, and the
safety period has passed since the last read, does the waiter re-read its
queue (one keys-only range). The period starts at ``renew_interval`` and
doubles after each such re-read that finds the queue as it was, up to
``lease_ttl``; a re-read that finds a change (or a wake-up) sets it back.
So in an idle cluster a waiter costs nothing, and on a busy etcd at most
one read per period.

What bounds the hand-off when the watch does not deliver (an event lost, a
stream stalled without an error -- it is re-opened after its idle timeout
anyway --, a member frozen, history compacted): the blocker's key goes at
time t; the first keep-alive sent after t reports the new revision (by
``t + renew_interval + one request``); the waiter's next check finds it
(``renew_interval`` later at most) and re-reads once the period allows.
The waiter acquires, or learns that it must queue again, by
``t + lease_ttl + renew_interval + 2 requests`` (``t + 2 x renew_interval
+ 2 requests`` while the period is at its start, as it is in a cluster
that was idle). A session that ends while waiting is noticed at the next
check (``renew_interval``), or at once through the deletion event of the
waiter's own entry when the old lease is revoked.
"""

import itertools
import json
import logging
import os
import socket
import threading
import time

from hacluster import backoff as _backoff
from hacluster import etcd as _etcd
from hacluster import exceptions
from hacluster import keys as _keys
from hacluster import url as _url

LOG = logging.getLogger(__name__)

EXCLUSIVE = 'w'
SHARED = 'r'


def entry_mode(key):
    """The mode letter (``'w'`` or ``'r'``) at the end of a queue key."""
    return key[-1]


def find_blocker(entries, my_revision, shared):
    """Decide whether a queue entry holds its lock.

    :param entries: ``(create_revision, key)`` pairs of the queue (any
        order; may include the caller's own entry).
    :param my_revision: the caller's entry create revision.
    :param shared: whether the caller wants the lock shared.
    :returns: the ``(create_revision, key)`` of the entry to wait for (the
        latest earlier entry that conflicts), or None if the caller holds the
        lock.
    """
    blocker = None
    for revision, key in entries:
        if revision >= my_revision:
            continue
        if shared and entry_mode(key) == SHARED:
            continue
        if blocker is None or revision > blocker[0]:
            blocker = (revision, key)
    return blocker


def holders(entries):
    """The entries that hold their lock now: ``(create_revision, key)``
    pairs of one queue (any order) -> those of them :func:`find_blocker`
    says hold, oldest first. The rule every waiter applies to itself, for
    whoever looks from outside (the status command)."""
    ordered = sorted(entries)
    return [e for e in ordered
            if find_blocker(ordered, e[0], entry_mode(e[1]) == SHARED)
            is None]


def parse_blocking(blocking):
    """Normalize ``blocking`` to a timeout: None (forever), 0 (try once) or
    seconds.

    :raises ConfigurationError: for a negative or non-numeric value.
    """
    if blocking is True:
        return None
    if blocking is False or blocking is None:
        return 0.0
    if isinstance(blocking, (int, float)):
        if blocking < 0:
            raise exceptions.ConfigurationError(
                'blocking must be True, False or a number of seconds >= 0, '
                'got %r' % blocking)
        return float(blocking)
    raise exceptions.ConfigurationError(
        'blocking must be True, False or a number of seconds, got %r'
        % (blocking,))


def safety_read_due(seen_revision, read_revision, since_read, period):
    """Whether a blocked waiter that no event woke should re-read its queue
    now (see the safety check in the module docstring).

    :param seen_revision: the highest revision etcd has reported to this
        process (:attr:`hacluster.etcd.Client.revision`).
    :param read_revision: the store revision of the waiter's last read of
        its queue.
    :param since_read: seconds since that read.
    :param period: the current safety period in seconds.
    :returns: True only if something changed in etcd since the read (any
        deletion makes a new revision) and the period has passed (give or
        take 5%: a timed wait may return a hair early).

    Pure; thread-safe.
    """
    return seen_revision > read_revision and since_read >= 0.95 * period


def next_safety_period(period, changed, woken, start, ceiling):
    """The safety period after a re-read of the queue: back to ``start``
    when the read was woken by the watch or found the queue changed,
    else doubled up to ``ceiling``. Pure; thread-safe."""
    if changed or woken:
        return start
    return min(ceiling, period * 2.0)


class _Waiter:
    """Wakes one acquisition when the entry it waits behind, or its own
    entry, is deleted, or when the watch resyncs.

    Subscribed before the queue is read, so a deletion that happens between
    the read and the wait is still seen (it is remembered in ``deleted``).
    Thread-safe: :meth:`notify` and :meth:`resync` run in the watch thread.
    """

    def __init__(self, own_key):
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._own = own_key
        self._target = None
        self._deleted = set()
        self._kicked = False

    def notify(self, etype, kv):
        if etype != 'DELETE':
            return
        with self._lock:
            self._deleted.add(kv.key)
            # Our own entry gone (an operator, the lease revoked after a
            # lost session): no need to wait for the blocker to learn it.
            if self._target is None or kv.key in (self._target, self._own):
                self._event.set()

    def resync(self):
        # Remembered under the lock: a resync (or a cancel) arriving just
        # before wait_for clears the event must still wake it.
        with self._lock:
            self._kicked = True
            self._event.set()

    def wait_for(self, key, timeout):
        """Block until ``key`` or the waiter's own entry is deleted, or
        ``timeout`` passes; True if woken (a deletion, or a resync asking
        for a re-read), False on the timeout."""
        with self._lock:
            self._target = key
            if key in self._deleted or self._own in self._deleted or \
                    self._kicked:
                self._kicked = False
                return True
            self._event.clear()
        return self._event.wait(timeout)


class Lock:
    """A distributed lock on etcd. Get one with
    :meth:`hacluster.coordinator.Coordinator.get_lock` (it is built from
    the coordinator's :class:`~hacluster.context.Context` and its
    :class:`LockRegistry`).

    One Lock object is one would-be holder: acquire it, release it, acquire
    it again. To hold a name from several threads at once (shared mode) or
    to have threads queue for it, give each thread its own Lock object.
    The methods are thread-safe (an internal mutex), but acquiring an object
    that is already held raises :class:`HAClusterError`.

    Attributes: ``name``, ``shared``, ``fencing_token`` (int while held,
    else None), ``lost`` (True once a held lock was lost, until the next
    acquire).
    """

    _seq = itertools.count(1)

    def __init__(self, ctx, registry, name, shared=False, on_lost=None,
                 _prefix=None):
        self.name = _keys.validate_lock_name(name)
        self.shared = bool(shared)
        # What a lock needs of its coordinator: the Context (client,
        # session, layout, identity, dispatcher) and the lock registry.
        self._ctx = ctx
        self._registry = registry
        # _prefix: hacluster's own queues (the election) use the recipe on
        # a prefix of their own.
        self._prefix = _prefix or ctx.layout.lock_prefix(name)
        self._mutex = threading.Lock()
        self._cancelled = threading.Event()
        self._waiter = None
        # Cluster locks are measured (hacluster.metrics); hacluster's own
        # queues on a prefix (the election's campaign) are not.
        self._measured = _prefix is None
        self._on_lost = [on_lost] if on_lost else []
        self._key = None
        self._epoch = None
        self._held = False
        self._acquiring = False
        self._releasing = False
        self.fencing_token = None
        self.lost = False
        self.lost_reason = None
        self.acquired_at = None

    def __repr__(self):
        return '<Lock %s %s%s>' % (
            self.name, 'shared' if self.shared else 'exclusive',
            ' held token=%s' % self.fencing_token if self._held else '')

    def on_lost(self, callback):
        """Register ``callback(lock, reason)``, called once each time this
        lock is lost while held (session lost, key deleted by someone else).
        It runs in a hacluster thread: keep it short, never block on etcd."""
        self._on_lost.append(callback)

    def cancel(self):
        """Make a pending :meth:`acquire` of this object give up at once
        and return False, leaving nothing in the queue; every later acquire
        of this object returns False too. Does not release a lock already
        held. Thread-safe; never blocks."""
        self._cancelled.set()
        waiter = self._waiter
        if waiter is not None:
            waiter.resync()

    @property
    def held(self):
        """Local view: acquired, not known to be lost, and the session is
        within its renew deadline. Cheap (no request); for an answer checked
        with etcd use :meth:`is_still_owner`."""
        return self._held and not self.lost and \
            self._ctx.session.valid(self._epoch)

    @property
    def key(self):
        """The etcd key of this acquisition while held, else None."""
        return self._key

    @property
    def epoch(self):
        """The session epoch this lock was acquired in."""
        return self._epoch

    @property
    def taken(self):
        """Acquired and not known to be lost, whatever the session's
        deadline says (for self-fencing: what this process may still be
        acting under). Cheap, no request."""
        return self._held and not self.lost

    # -- acquire / release ------------------------------------------------

    def acquire(self, blocking=True):
        """Acquire the lock.

        :param blocking: True to wait as long as it takes, False to try once,
            or a number of seconds to wait at most.
        :returns: True if acquired, False if not acquired in time.
        :raises HAClusterError: this object already holds the lock.
        :raises BackendUnavailable: etcd could not be reached (at once with
            ``blocking=False``; with a timeout, if it was still unreachable
            when the time ran out; a blocking acquire keeps retrying).
        :raises NotStarted: the coordinator is not running.

        Blocks (see ``blocking``). Waiting is by etcd watch, never polling:
        a blocked acquire sends no request while nothing changes in etcd,
        and acquires within ``lease_ttl + renew_interval`` and two requests
        of its blocker's key going even if the watch never delivers that
        deletion (see the module docstring).
        """
        timeout = parse_blocking(blocking)
        coord = self._ctx
        clock = coord.clock
        started = clock()
        deadline = None if timeout is None else started + timeout
        with self._mutex:
            if self._acquiring or (self._held and not self.lost):
                raise exceptions.HAClusterError(
                    'lock %r is already %s by this Lock object; use one '
                    'Lock object per holder' % (
                        self.name,
                        'being acquired' if self._acquiring else 'held'))
            self._acquiring = True
            stale, self._key = self._key, None
            self._held = False
            self.lost = False
            self.lost_reason = None
            self.fencing_token = None
        if stale is not None:
            # Lost earlier and never released: make sure its entry is gone
            # before queueing again (it would block us and everyone).
            self._registry.untrack(stale)
            self._registry.discard_key(stale, self._lease_of(stale))
        try:
            got = self._acquire_loop(deadline)
        finally:
            with self._mutex:
                self._acquiring = False
        # metrics off: one attribute test (acquire is a hot path)
        observe = self._registry.observe_wait
        if observe is not None and self._measured:
            observe(got, clock() - started)
        return got

    def _lease_of(self, key):
        return int(key[len(self._prefix):].split('-', 1)[0], 16)

    def _acquire_loop(self, deadline):
        coord = self._ctx
        clock = coord.clock
        last_error = None
        while True:
            coord.check_running()
            if self._cancelled.is_set():
                return False
            remaining = None if deadline is None else deadline - clock()
            epoch, lease = coord.session.wait_active(
                timeout=remaining if remaining is not None else None)
            if lease is None:
                coord.check_running()
                if deadline is not None and clock() >= deadline:
                    if isinstance(last_error, exceptions.BackendUnavailable) \
                            or coord.session.renew_failures_in_a_row:
                        raise exceptions.BackendUnavailable(
                            'cannot acquire lock %r: no etcd session (etcd '
                            'unreachable at %s)' % (
                                self.name,
                                ', '.join(coord.client.endpoints)),
                            cause=last_error)
                    return False     # the time ran out during a new session
                time.sleep(0.01)
                continue
            try:
                got = self._attempt(epoch, lease, deadline)
            except exceptions.SessionLost as exc:
                # etcd no longer knows our lease: the session is over. Make
                # the renewal thread start a new one, and queue again then.
                last_error = exc
                coord.session.expire_now('etcd lost lease %x' % lease)
                continue
            except exceptions.BackendUnavailable as exc:
                last_error = exc
                if deadline is not None and clock() >= deadline:
                    raise
                LOG.warning('hacluster: acquiring lock %r: %s; retrying',
                            self.name, _url.scrub(exc))
                time.sleep(0.2)
                continue
            if got is None:
                continue    # session changed while waiting: queue again
            return got

    def _attempt(self, epoch, lease, deadline):
        """One pass on one session: True held, False timed out, None the
        session changed (retry)."""
        coord = self._ctx
        clock = coord.clock
        key = '%s%x-%d-%s' % (self._prefix, lease, next(Lock._seq),
                              SHARED if self.shared else EXCLUSIVE)
        value = json.dumps({
            'node': coord.node, 'member_id': coord.member_id,
            'host': socket.gethostname(), 'pid': os.getpid(),
            'thread': threading.current_thread().name,
            'mode': 'shared' if self.shared else 'exclusive',
            'queued_at': time.time(), 'format': 1})
        waiter = self._waiter = _Waiter(key)
        coord.subscribe(self._prefix, waiter)
        # Set before the request: a put whose answer was lost may still
        # have landed, and an entry left behind would block the queue for
        # as long as our session lives.
        enqueued = True
        try:
            resp = coord.client.txn(success=[
                _etcd.put_op(key, value, lease),
                _etcd.range_op(self._prefix, _keys.prefix_end(self._prefix),
                               keys_only=True)])
            entries = [(kv.create_revision, kv.key)
                       for kv in resp.kvs(1)]
            # Our place is our key's create revision as etcd stored it, not
            # this response's revision: if the request was sent twice (the
            # first answer lost, then fail-over), the key kept the revision
            # of the first put.
            my_rev = next((rev for rev, k in entries if k == key), None)
            if my_rev is None:
                return None
            # what the re-reads below see too (later entries never block)
            entries = [e for e in entries if e[0] <= my_rev]
            # The safety check (module docstring): no request while nothing
            # changed in etcd since our last read of the queue.
            interval = coord.session.renew_interval
            ceiling = max(interval, float(coord.session.lease_ttl))
            period = interval
            read_rev, read_at = resp.revision, clock()
            looked = False
            while True:
                blocker = find_blocker(entries, my_rev, self.shared)
                if blocker is None:
                    if not self._set_held(key, my_rev, epoch):
                        return None
                    enqueued = False   # now owned by the held state
                    return True
                if self._cancelled.is_set():
                    return False
                remaining = None if deadline is None else deadline - clock()
                last_look = False
                if remaining is not None and remaining <= 0:
                    # Out of time. If etcd changed since our last read, one
                    # last look: the deletion that freed the lock may be an
                    # event that never came, and the safety period (up to
                    # lease_ttl) may be longer than what was left.
                    if looked or coord.client.revision <= read_rev:
                        return False
                    looked = last_look = True
                woken = False
                if not last_look:
                    wait = interval if remaining is None \
                        else min(remaining, interval)
                    woken = waiter.wait_for(blocker[1], wait)
                    if self._cancelled.is_set():
                        return False
                if not coord.session.valid(epoch):
                    return None
                if not woken and not last_look and not safety_read_due(
                        coord.client.revision, read_rev, clock() - read_at,
                        period):
                    continue
                kvs, read_rev = coord.client.get_prefix(
                    self._prefix, keys_only=True, max_create_revision=my_rev)
                read_at = clock()
                fresh = [(kv.create_revision, kv.key) for kv in kvs]
                if not any(k == key for _, k in fresh):
                    # Our entry is gone (lease lost, or deleted by an
                    # operator): queue again.
                    return None
                period = next_safety_period(
                    period, sorted(fresh) != sorted(entries), woken,
                    interval, ceiling)
                entries = fresh
        finally:
            self._waiter = None
            coord.unsubscribe(self._prefix, waiter)
            if enqueued:
                self._registry.discard_key(key, lease)

    def _set_held(self, key, token, epoch):
        with self._mutex:
            self._key = key
            self._epoch = epoch
            self._held = True
            self._releasing = False
            self.lost = False
            self.fencing_token = token
            self.acquired_at = self._ctx.clock()
        # Tracked before the validity check: a session loss from now on
        # finds this lock and reports it.
        self._registry.track(self)
        if not self._ctx.session.valid(epoch):
            with self._mutex:
                self._key = None
                self._held = False
                self.fencing_token = None
            self._registry.untrack(key)
            return False
        return True

    def release(self):
        """Release the lock.

        :returns: True if it was held and is now released; False if it had
            been lost meanwhile (nothing to release; the loss was already
            reported through ``on_lost``).
        :raises LockNotHeld: it was not acquired.

        Blocks for one etcd request. If etcd is unreachable, the entry is
        deleted later by the coordinator (or goes with the session lease).
        """
        with self._mutex:
            if not self._held:
                raise exceptions.LockNotHeld(
                    'lock %r is not held by this Lock object' % self.name)
            was_lost = self.lost
            key, self._key = self._key, None
            self._held = False
            self._releasing = True
            self.fencing_token = None
        observe = self._registry.observe_hold
        if observe is not None and self._measured and not was_lost:
            observe(self._ctx.clock() - self.acquired_at)
        self._registry.untrack(key)
        self._registry.discard_key(key, self._lease_of(key))
        return not was_lost

    def mark_lost(self, reason, key=None):
        """Report the loss of the lock held under ``key`` (default: the
        current one), once."""
        with self._mutex:
            if not self._held or self.lost or self._releasing or \
                    (key is not None and key != self._key):
                return
            self.lost = True
            self.lost_reason = reason
            key = self._key
            callbacks = list(self._on_lost)
        self._registry.untrack(key)
        LOG.warning('hacluster: lock %r (token %s) lost: %s', self.name,
                    self.fencing_token, reason)
        for cb in callbacks:
            try:
                cb(self, reason)
            except Exception:
                LOG.exception('hacluster: on_lost callback of lock %r failed',
                              self.name)
        self._registry.lost(self, reason)

    # -- ownership and fencing ---------------------------------------------

    def is_still_owner(self):
        """Ask etcd whether this object still holds the lock.

        False if it was never acquired, was released, its session is past
        its renew deadline, or its key is gone or was replaced (then the loss
        is reported through ``on_lost`` as well). If etcd cannot be reached,
        answers from the session's own deadline (the lease cannot have
        expired for others before it).

        Blocks for one etcd request; thread-safe.
        """
        with self._mutex:
            if not self._held or self.lost:
                return False
            key, token, epoch = self._key, self.fencing_token, self._epoch
        if not self._ctx.session.valid(epoch):
            self.mark_lost('session past its renew deadline')
            return False
        try:
            kv = self._ctx.client.get(key)
        except exceptions.BackendUnavailable:
            return self._ctx.session.valid(epoch)
        if kv is None or kv.create_revision != token:
            self.mark_lost('lock key %s is gone from etcd' % key)
            return False
        return True

    def _guard(self):
        with self._mutex:
            if not self._held or self.lost:
                raise exceptions.StaleFencingToken(
                    'lock %r is not held (%s): write refused'
                    % (self.name, self.lost_reason or 'not acquired'))
            key, token, epoch = self._key, self.fencing_token, self._epoch
        if not self._ctx.session.valid(epoch):
            self.mark_lost('session past its renew deadline')
            raise exceptions.StaleFencingToken(
                'lock %r (token %s): session past its renew deadline: '
                'write refused' % (self.name, token))
        return key, token

    def guarded_txn(self, success, compare=()):
        """Run etcd operations only if this lock is still held with its
        fencing token, atomically (one transaction comparing the lock key's
        create revision).

        :param success: etcd txn operations (:func:`hacluster.etcd.put_op`,
            ``delete_op``, ``range_op``).
        :param compare: extra comparisons.
        :returns: the :class:`hacluster.etcd.TxnResult`.
        :raises StaleFencingToken: the lock is no longer held with this
            token (the write was not made).
        :raises OutcomeUnknown: no answer came before this session's renew
            deadline (the write may have been made; by then this process
            must act as if the lock were lost).
        """
        key, token = self._guard()
        session = self._ctx.session
        epoch = self._epoch
        # The request may not outlive the time this process is entitled to
        # write: an answer arriving after its step-down (quorum lost, etcd
        # answering again later) must not be taken for a success.
        budget = session.time_left(epoch)
        if budget <= 0:
            self._guard()           # raises: the deadline just passed
        try:
            resp = self._ctx.client.txn(
                compare=[_etcd.create_revision_is(key, token)] +
                list(compare), success=success, budget=budget)
        except exceptions.BackendUnavailable as exc:
            if session.valid(epoch):
                raise
            raise exceptions.OutcomeUnknown(
                'lock %r (token %s): no answer from etcd before the renew '
                'deadline; the write may or may not have been made'
                % (self.name, token), cause=exc) from exc
        if resp.succeeded and not session.valid(epoch):
            raise exceptions.OutcomeUnknown(
                'lock %r (token %s): etcd answered after the renew deadline; '
                'the write may have been made but is not reported as done'
                % (self.name, token))
        if not resp.succeeded:
            # Either our key is gone or an extra comparison failed.
            kv = self._ctx.client.get(key)
            if kv is None or kv.create_revision != token:
                self.mark_lost('lock key %s is gone from etcd' % key)
                raise exceptions.StaleFencingToken(
                    'lock %r: fencing token %s is stale: write refused'
                    % (self.name, token))
            raise exceptions.HAClusterError(
                'guarded write under lock %r: a comparison failed'
                % self.name)
        return resp

    def guarded_put(self, key, value):
        """Write ``value`` at data ``key`` (under the cluster's ``data/``
        prefix) only if this lock is still held with its token.

        :raises StaleFencingToken: not held any more; nothing written.
        """
        if isinstance(value, str):
            value = value.encode('utf-8')
        self.guarded_txn([_etcd.put_op(self._ctx.layout.data_key(key),
                                       value)])

    def __enter__(self):
        if not self.acquire(True):     # pragma: no cover - blocking=True
            raise exceptions.AcquireTimeout(
                'could not acquire lock %r' % self.name)
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._held:
            self.release()


class LockRegistry:
    """The cluster locks one coordinator holds: what a session loss or a
    deleted key must report lost, and the queue entries to clean up.

    :param ctx: the coordinator's :class:`hacluster.context.Context`.
    :param running: callable, True while the coordinator runs.

    Thread-safe.
    """

    def __init__(self, ctx, running):
        self._ctx = ctx
        self._running = running
        self._held = {}              # queue key -> Lock
        self._callbacks = []
        #: locks lost while held (for the metrics)
        self.lost_count = 0
        #: metrics hooks, None while metrics are off (hacluster.metrics
        #: sets them): ``observe_wait(acquired, seconds)`` after each
        #: acquire of a cluster lock, ``observe_hold(seconds)`` at release
        self.observe_wait = None
        self.observe_hold = None

    def track(self, lock):
        self._held[lock.key] = lock

    def untrack(self, key):
        if key is not None:
            self._held.pop(key, None)

    def get(self, key):
        return self._held.get(key)

    def items(self):
        """``[(queue key, Lock)]``, a snapshot."""
        return list(self._held.items())

    def held(self):
        """The locks held now (a snapshot list)."""
        return [lock for lock in list(self._held.values()) if lock.held]

    def on_lost(self, callback):
        self._callbacks.append(callback)

    def lost(self, lock, reason):
        """Tell the coordinator's lock-lost callbacks."""
        if lock._measured:
            self.lost_count += 1
        for cb in list(self._callbacks):
            try:
                cb(lock, reason)
            except Exception:
                LOG.exception('hacluster: lock_lost callback %r failed', cb)

    def discard_key(self, key, lease):
        """Delete a lock queue entry, retrying in the background if etcd is
        unreachable (an entry left behind would block the queue for as long
        as our session lives)."""
        client, session = self._ctx.client, self._ctx.session
        try:
            client.delete(key)
            return
        except exceptions.HAClusterError as exc:
            LOG.warning('hacluster: could not delete %s now (%s); retrying '
                        'in the background', key, _url.scrub(exc))

        def retry():
            delay = 0.1
            while self._running() and session.lease_id == lease:
                try:
                    client.delete(key)
                    return
                except exceptions.HAClusterError:
                    time.sleep(_backoff.jittered(delay))
                    delay = _backoff.doubled(delay, session.renew_interval)
        threading.Thread(target=retry, daemon=True,
                         name='hacluster-discard').start()
