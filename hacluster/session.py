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

"""The coordinator's session: one etcd lease, renewed in the background.

Everything a coordinator holds -- its member record, its locks, its
leadership -- is bound to this one lease, so one refresh keeps everything
alive and a lost session loses everything at once (etcd's own
``concurrency.Session`` works the same way).

Timings (validated when the session is built, client-go style)::

    lease_ttl > renew_deadline > renew_interval > 0

* every ``renew_interval`` seconds the lease is refreshed;
* if no refresh has *succeeded* for ``renew_deadline`` seconds (measured on
  the monotonic clock from when the last successful refresh was *sent*, so
  the lease cannot have expired in etcd yet), the session counts as lost:
  listeners hear ``session_lost`` and must stop acting on anything they held
  (the margin ``lease_ttl - renew_deadline`` is how long they have before
  someone else may take over);
* then the old lease is revoked (best effort) and a new one is granted as
  soon as etcd answers: listeners hear ``session_started`` with a new epoch.

A process that is paused (SIGSTOP, a long GC, a stuck VM) past the deadline
finds out as soon as it runs again: :meth:`Session.valid` compares clocks, it
does not wait for the renewal thread.
"""

import logging
import threading
import time

from hacluster import backoff as _backoff
from hacluster import exceptions
from hacluster import url as _url

LOG = logging.getLogger(__name__)


def _boottime_clock():
    """CLOCK_BOOTTIME where the system has it: monotonic, and -- unlike
    CLOCK_MONOTONIC -- it runs on while the machine is suspended, so a node
    resumed from a suspend sees its renew deadline as passed."""
    clock_id = getattr(time, 'CLOCK_BOOTTIME', None)
    if clock_id is None:
        return time.monotonic
    try:
        time.clock_gettime(clock_id)
    except OSError:
        return time.monotonic
    return lambda: time.clock_gettime(clock_id)


#: The clock every deadline of a session is measured on.
boottime = _boottime_clock()

DEFAULT_LEASE_TTL = 10
DEFAULT_RENEW_DEADLINE = 7.0
DEFAULT_RENEW_INTERVAL = 2.0


def validate_timings(lease_ttl, renew_deadline, renew_interval):
    """Check the three session timings; return them as numbers.

    :raises ConfigurationError: naming the option that is wrong and why.
    """
    def number(name, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise exceptions.ConfigurationError(
                '%s must be a number of seconds, got %r' % (name, value))
        if value <= 0:
            raise exceptions.ConfigurationError(
                '%s must be positive, got %r' % (name, value))
        return value

    number('lease_ttl', lease_ttl)
    number('renew_deadline', renew_deadline)
    number('renew_interval', renew_interval)
    if int(lease_ttl) != lease_ttl:
        raise exceptions.ConfigurationError(
            'lease_ttl must be a whole number of seconds (etcd leases are '
            'granted in seconds), got %r' % lease_ttl)
    if lease_ttl < 2:
        raise exceptions.ConfigurationError(
            'lease_ttl must be at least 2 seconds (etcd\'s minimum lease), '
            'got %r' % lease_ttl)
    if not renew_deadline < lease_ttl:
        raise exceptions.ConfigurationError(
            'lease_ttl (%s) must be greater than renew_deadline (%s): a node '
            'must give up what it holds before its lease can expire for '
            'others' % (lease_ttl, renew_deadline))
    if not renew_interval < renew_deadline:
        raise exceptions.ConfigurationError(
            'renew_deadline (%s) must be greater than renew_interval (%s): '
            'otherwise one late renewal loses the session'
            % (renew_deadline, renew_interval))
    return int(lease_ttl), float(renew_deadline), float(renew_interval)


class Session:
    """One etcd lease kept alive by a background thread.

    :param client: :class:`hacluster.etcd.Client`.
    :param lease_ttl, renew_deadline, renew_interval: see the module doc.
    :param clock: monotonic clock (default CLOCK_BOOTTIME, see
        :data:`boottime`; injectable for tests).
    :param name: used in thread names and log lines.

    Listeners (objects with ``session_lost(epoch, lease_id, reason)`` and
    ``session_started(epoch, lease_id)``) are called in the renewal thread,
    in the order they were added; a listener that raises is logged and the
    others still run.

    All methods are thread-safe.
    """

    def __init__(self, client, lease_ttl=DEFAULT_LEASE_TTL,
                 renew_deadline=DEFAULT_RENEW_DEADLINE,
                 renew_interval=DEFAULT_RENEW_INTERVAL, clock=boottime,
                 name='hacluster'):
        (self.lease_ttl, self.renew_deadline,
         self.renew_interval) = validate_timings(lease_ttl, renew_deadline,
                                                 renew_interval)
        self._client = client
        self._clock = clock
        self._name = name
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = None
        self._listeners = []
        self.lease_id = None
        self.epoch = 0
        self.active = False
        self._last_ok = None
        #: Successful and failed refreshes, sessions lost (for status).
        self.renewals = 0
        self.renew_failures = 0
        self.renew_failures_in_a_row = 0
        self.losses = 0
        self.last_loss_reason = None
        #: ``observe(seconds)`` of each successful renewal's latency, or
        #: None (metrics off: hacluster.metrics sets it)
        self.observe_renewal = None
        self._forced_reason = None
        # Set once the renew deadline of the current session has passed (as
        # seen by anyone): from then on the session is over, whatever a
        # late keepalive answer says, and must go through _lose().
        self._doomed = False

    # -- listeners ---------------------------------------------------------

    def add_listener(self, listener):
        with self._cond:
            self._listeners.append(listener)

    def _notify(self, method, *args):
        with self._cond:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                getattr(listener, method)(*args)
            except Exception:
                LOG.exception('hacluster %s: %s listener %r failed',
                              self._name, method, listener)

    # -- state -------------------------------------------------------------

    def current(self):
        """``(epoch, lease_id)`` of the live session, or ``(epoch, None)``
        when there is none right now. Never blocks on etcd."""
        with self._cond:
            if self.active and self._within_deadline():
                return self.epoch, self.lease_id
            return self.epoch, None

    def _within_deadline(self):
        if self._doomed or self._last_ok is None:
            return False
        if self._clock() - self._last_ok >= self.renew_deadline:
            self._doomed = True
            self._wake.set()
            return False
        return True

    def valid(self, epoch=None):
        """True while the session (of ``epoch``, if given) is live and its
        last successful renewal is younger than ``renew_deadline``.

        Cheap (no etcd request). A False caused by the clock alone wakes the
        renewal thread so the loss is processed at once."""
        with self._cond:
            return self.active and (epoch is None or epoch == self.epoch) \
                and self._within_deadline()

    def time_left(self, epoch=None):
        """Seconds until the renew deadline of the live session (of
        ``epoch``, if given), or 0.0 when it is not valid. No request."""
        with self._cond:
            if not (self.active and (epoch is None or epoch == self.epoch)
                    and self._within_deadline()):
                return 0.0
            return max(0.0, self.renew_deadline -
                       (self._clock() - self._last_ok))

    def since_renewal(self):
        """Seconds since the last successful renewal (or the grant) of the
        live session was sent, or None when there is no live session. No
        request."""
        with self._cond:
            if not self.active or self._last_ok is None:
                return None
            return max(0.0, self._clock() - self._last_ok)

    def wait_active(self, timeout=None):
        """Block until a session is live (or ``timeout`` seconds pass, or the
        session is stopped). Returns ``(epoch, lease_id)``; lease_id is None
        if no session became live in time."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not (self.active and self._within_deadline()):
                if self._stopping:
                    return self.epoch, None
                remaining = None if deadline is None else \
                    deadline - self._clock()
                if remaining is not None and remaining <= 0:
                    return self.epoch, None
                # Wake at least every renew_interval: a live-but-stale
                # session only turns valid again through the renew thread.
                self._cond.wait(min(remaining or self.renew_interval,
                                    self.renew_interval))
            return self.epoch, self.lease_id

    # -- life cycle ----------------------------------------------------------

    def start(self, timeout=None):
        """Grant the first lease and start renewing it.

        Blocks until etcd grants the lease, retrying for up to ``timeout``
        seconds (default: ``lease_ttl``).

        :raises BackendUnavailable: etcd did not answer in time.
        """
        if timeout is None:
            timeout = self.lease_ttl
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                raise exceptions.HAClusterError('session already started')
            self._stopping = False
        deadline = self._clock() + timeout
        while True:
            try:
                if not self._grant():
                    raise exceptions.NotStarted('session stopped while '
                                                'starting')
                break
            except exceptions.BackendUnavailable:
                if self._clock() >= deadline:
                    raise
                time.sleep(min(0.5, max(0.0, deadline - self._clock())))
        self._thread = threading.Thread(target=self._run,
                                        name='%s-session' % self._name,
                                        daemon=True)
        self._thread.start()

    def _grant(self):
        """Grant a new lease and make it the live session. Returns False
        (having revoked it) if the session was stopped meanwhile."""
        sent = self._clock()
        lease_id, ttl = self._client.lease_grant(self.lease_ttl)
        with self._cond:
            stopping = self._stopping
            if not stopping:
                self.lease_id = lease_id
                self.epoch += 1
                self.active = True
                self._doomed = False
                self._forced_reason = None
                self.renew_failures_in_a_row = 0
                self._last_ok = sent
                epoch = self.epoch
                self._cond.notify_all()
        if stopping:
            try:
                self._client.lease_revoke(lease_id, timeout=1.0)
            except exceptions.HAClusterError:
                pass
            return False
        LOG.info('hacluster %s: session %d started (lease %x, ttl %ss)',
                 self._name, epoch, lease_id, ttl)
        self._notify('session_started', epoch, lease_id)
        return True

    def stop(self, revoke=True):
        """Stop renewing; with ``revoke`` (the default) revoke the lease so
        everything bound to it is released in etcd at once. Blocks for at
        most one request timeout. Idempotent."""
        with self._cond:
            self._stopping = True
            was_active = self.active
            lease_id = self.lease_id
            self.active = False
            self._cond.notify_all()
        self._wake.set()
        if self._thread is not None and \
                self._thread is not threading.current_thread():
            self._thread.join(self._client.timeout + self.renew_interval)
        if revoke and was_active and lease_id is not None:
            try:
                self._client.lease_revoke(lease_id)
            except exceptions.HAClusterError as exc:
                LOG.warning('hacluster %s: could not revoke lease %x at '
                            'stop (%s); it expires in %ss', self._name,
                            lease_id, _url.scrub(exc), self.lease_ttl)

    def expire_now(self, reason='requested', epoch=None):
        """Declare the session (of ``epoch``, if given) lost now (used by
        tests and by callers who know better, e.g. a duplicate member, a
        lease etcd no longer has). Returns at once; the loss is processed in
        the renewal thread."""
        with self._cond:
            if epoch is not None and epoch != self.epoch:
                return
            self._doomed = True
            self._forced_reason = reason
        self._wake.set()

    def _run(self):
        # Whatever goes wrong, this thread must not die: without it nothing
        # would ever tell holders that their session is gone.
        while True:
            try:
                self._loop()
                return
            except Exception:
                LOG.exception('hacluster %s: unexpected error in the session '
                              'thread; carrying on', self._name)
                self._wake.wait(min(1.0, self.renew_interval))
                self._wake.clear()

    def _loop(self):
        next_attempt = None
        while True:
            with self._cond:
                if self._stopping:
                    return
                active = self.active
                last_ok = self._last_ok
            if not active:
                self._regain()
                next_attempt = None
                continue
            now = self._clock()
            if self._doomed or now - last_ok >= self.renew_deadline:
                reason = self._forced_reason or (
                    'no successful renewal for %.1fs (renew_deadline %ss)'
                    % (now - last_ok, self.renew_deadline))
                self._forced_reason = None
                self._lose(reason)
                continue
            if next_attempt is None:
                next_attempt = last_ok + self.renew_interval
            if next_attempt > now:
                self._wake.wait(min(next_attempt,
                                    last_ok + self.renew_deadline) - now)
                self._wake.clear()
                continue
            sent = self._clock()
            remaining = last_ok + self.renew_deadline - sent
            try:
                # The whole attempt, over every endpoint, must end by the
                # deadline: a hung endpoint must not delay the step-down.
                ttl = self._client.lease_keepalive(
                    self.lease_id, budget=max(0.2, remaining))
            except exceptions.HAClusterError as exc:
                # Retry sooner while renewals fail: every renew_interval/4.
                next_attempt = self._clock() + self.renew_interval / 4.0
                self.renew_failures += 1
                self.renew_failures_in_a_row += 1
                LOG.warning('hacluster %s: lease renewal failed (%s); '
                            '%.1fs left before renew_deadline', self._name,
                            _url.scrub(exc), remaining)
                continue
            if ttl <= 0:
                self._lose('etcd says lease %x has expired' % self.lease_id)
                continue
            self.renewals += 1
            self.renew_failures_in_a_row = 0
            next_attempt = sent + self.renew_interval
            observe = self.observe_renewal
            if observe is not None:
                observe(self._clock() - sent)
            with self._cond:
                # A renewal answered after the deadline passed (a slow
                # answer, a pause while it was in flight) does not revive
                # the session: holders may already have been told it is
                # gone.
                if not self._doomed and self._within_deadline():
                    self._last_ok = sent

    def _lose(self, reason):
        with self._cond:
            if not self.active:
                return
            self.active = False
            self._doomed = True
            lease_id = self.lease_id
            epoch = self.epoch
            self.losses += 1
            self.last_loss_reason = reason
            self._cond.notify_all()
        LOG.warning('hacluster %s: session %d lost (%s); stepping down '
                    'and starting a new session', self._name, epoch, reason)
        self._notify('session_lost', epoch, lease_id, reason)
        # Anything still bound to the old lease must go now, not when the
        # lease finally expires: others may already be waiting for it.
        try:
            self._client.lease_revoke(lease_id, timeout=1.0)
        except exceptions.HAClusterError:
            pass

    def _regain(self):
        delay = 0.1
        while True:
            with self._cond:
                if self._stopping:
                    return
            try:
                self._grant()
                return
            except exceptions.HAClusterError as exc:
                if self._stopping:
                    return
                LOG.warning('hacluster %s: cannot start a new session yet '
                            '(%s); retrying', self._name, _url.scrub(exc))
                self._wake.wait(_backoff.jittered(delay))
                self._wake.clear()
                delay = _backoff.doubled(delay, self.renew_interval)
