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

"""Self-fencing: a node that may be thought dead stops acting first.

A lease expiry proves that a node stopped *renewing*, not that it stopped
*working*. Survivors recover a node's claims only once its lease is gone
(:mod:`hacluster.recovery`); the margin ``lease_ttl - renew_deadline`` is
the time a node has, after its renew deadline passed, to stop before that
can happen. What it does then is its fencing mode:

``none``
    The node steps down (locks reported lost, leadership over, guarded
    writes refused) and rejoins. Its claimed operations go on; their final
    writes are fenced (:meth:`hacluster.claims.Claim.finish` is refused
    once a survivor took the claim, and the late result is recorded), but
    backend work done meanwhile may duplicate or undo a recovery.

``exit``
    As soon as the renew deadline has passed while the process holds work
    (an open claim, a cluster lock, a recovery in progress), it exits at
    once (``os._exit``, status :data:`EXIT_STATUS`): before its lease can
    expire when the process is scheduled at all, and at the first fence
    point (a finish, a guarded database write) when it resumes from a
    freeze. Its in-flight operations are then recovered by a survivor from
    a process that is really gone. cotyledon (manila-share) starts a new
    worker, whose new incarnation recovers what is left of its own claims.
    Holding nothing, the node only steps down and rejoins.

``watchdog``
    ``exit``, plus the Linux watchdog device (``/dev/watchdog``, e.g. the
    ``softdog`` module), armed with ``watchdog_timeout`` seconds and petted
    while the session is within its renew deadline (or nothing is held). A
    machine too frozen to run the exit -- a hung kernel, a VM paused by its
    hypervisor, this process stopped with SIGSTOP -- stops petting at the
    deadline and is reset by the watchdog before its lease can expire:
    ``watchdog_timeout <= lease_ttl - renew_deadline``. This is what Patroni
    does for PostgreSQL primaries. The device is opened once per process and
    shared by its coordinators; a graceful stop disarms it (magic close).
    A path that is not a character device (tests) is written as a stand-in:
    each pet rewrites a small JSON status (pid, timeout, pets, disarmed).

What fencing cannot do: stop a write that is already on its way to a store
when the process freezes. Stores that compare on every request -- an etcd
transaction on a fencing token, a conditional database update -- close
that gap; the HA share manager makes manila's final status writes
conditional for exactly that reason.
"""

import fcntl
import json
import logging
import os
import stat
import struct
import sys
import threading
import time

from hacluster import exceptions

LOG = logging.getLogger(__name__)

NONE = 'none'
EXIT = 'exit'
WATCHDOG = 'watchdog'
MODES = (NONE, EXIT, WATCHDOG)

#: Exit status of a process that fenced itself (EX_SOFTWARE would hide it
#: among bugs; 75 is EX_TEMPFAIL: "try again", which cotyledon does).
EXIT_STATUS = 75

DEFAULT_WATCHDOG_DEVICE = '/dev/watchdog'

# linux/watchdog.h: _IOWR('W', 6, int), _IOR('W', 5, int)
_WDIOC_SETTIMEOUT = 0xC0045706
_WDIOC_KEEPALIVE = 0x80045705


def default_watchdog_timeout(lease_ttl, renew_deadline):
    """The longest watchdog timeout that still resets a frozen machine
    before its lease can expire: ``lease_ttl - renew_deadline``, in whole
    seconds (at least 1)."""
    return max(1, int(lease_ttl - renew_deadline))


def validate(mode, lease_ttl, renew_deadline, watchdog_timeout=None):
    """Check a fencing mode and its watchdog timeout against the session
    timings; return ``(mode, watchdog_timeout)``.

    :raises ConfigurationError: naming ``fencing`` or ``watchdog_timeout``.
    """
    if mode not in MODES:
        raise exceptions.ConfigurationError(
            'fencing must be one of %s, got %r' % (', '.join(MODES), mode))
    if mode != WATCHDOG:
        return mode, None
    if watchdog_timeout is None:
        watchdog_timeout = default_watchdog_timeout(lease_ttl,
                                                    renew_deadline)
    if isinstance(watchdog_timeout, bool) or \
            not isinstance(watchdog_timeout, int) or watchdog_timeout < 1:
        raise exceptions.ConfigurationError(
            'watchdog_timeout must be a whole number of seconds >= 1 (the '
            'device counts in seconds), got %r' % (watchdog_timeout,))
    if watchdog_timeout > lease_ttl - renew_deadline:
        raise exceptions.ConfigurationError(
            'watchdog_timeout (%s) must be at most lease_ttl - '
            'renew_deadline (%s - %s): petting stops at the renew deadline, '
            'and the reset must come before the lease can expire for others'
            % (watchdog_timeout, lease_ttl, renew_deadline))
    return mode, watchdog_timeout


class Watchdog:
    """The watchdog device of this process (one per path, shared).

    Thread-safe. :meth:`pet` never blocks for long (one write or ioctl).
    """

    _by_path = {}
    _registry_lock = threading.Lock()

    @classmethod
    def get(cls, path, timeout):
        """The process's Watchdog for ``path``, opened and armed on first
        use.

        :raises ConfigurationError: the device cannot be opened (naming it:
            missing module, permissions, or another process holds it).
        """
        with cls._registry_lock:
            dog = cls._by_path.get(path)
            if dog is None or dog.closed:
                dog = cls(path, timeout)
                cls._by_path[path] = dog
            elif dog.timeout != timeout:
                raise exceptions.ConfigurationError(
                    'watchdog_timeout %s differs from the %s s that %s is '
                    'armed with in this process' % (timeout, dog.timeout,
                                                    path))
            dog.users += 1
            return dog

    def __init__(self, path, timeout):
        self.path = path
        self.timeout = timeout
        self.users = 0
        self.pets = 0
        self.closed = False
        self._lock = threading.Lock()
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError as exc:
            raise exceptions.ConfigurationError(
                'watchdog_device %s cannot be opened (%s): load a watchdog '
                'driver (modprobe softdog), make it writable for this user, '
                'and make sure no other process (a watchdog daemon) holds it'
                % (path, exc.strerror), cause=exc) from exc
        self.real = stat.S_ISCHR(os.fstat(self._fd).st_mode)
        if self.real:
            try:
                fcntl.ioctl(self._fd, _WDIOC_SETTIMEOUT,
                            struct.pack('i', timeout))
            except OSError as exc:
                os.write(self._fd, b'V')
                os.close(self._fd)
                raise exceptions.ConfigurationError(
                    'watchdog_device %s refused a timeout of %s s (%s)'
                    % (path, timeout, exc.strerror), cause=exc) from exc
        LOG.info('hacluster: watchdog %s armed (%s, timeout %s s)', path,
                 'device' if self.real else 'stand-in file', timeout)
        self.pet()

    def pet(self):
        with self._lock:
            if self.closed:
                return
            self.pets += 1
            if self.real:
                fcntl.ioctl(self._fd, _WDIOC_KEEPALIVE, struct.pack('i', 0))
            else:
                self._write_status(False)

    def _write_status(self, disarmed):
        body = json.dumps({'pid': os.getpid(), 'timeout': self.timeout,
                           'pets': self.pets, 'at': time.time(),
                           'disarmed': disarmed}).encode()
        # overwrite, then cut: a reader never sees an empty file
        os.pwrite(self._fd, body + b'\n', 0)
        os.ftruncate(self._fd, len(body) + 1)

    def release(self, disarm=True):
        """One user is done; the last one closes the device, disarming it
        (magic close) when ``disarm``."""
        with self._registry_lock:
            self.users -= 1
            if self.users > 0:
                return
            self.close(disarm)

    def close(self, disarm):
        """Close the device now (disarming it first when ``disarm``),
        whoever else uses it: the process is exiting."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            try:
                if disarm:
                    if self.real:
                        os.write(self._fd, b'V')
                    else:
                        self._write_status(True)
                os.close(self._fd)
            except OSError:
                pass


class Fencer:
    """Self-fencing for one coordinator's session (a session listener).

    :param mode: ``none``, ``exit`` or ``watchdog``.
    :param session: the :class:`hacluster.session.Session` it guards.
    :param holding: callable returning a short description of the work
        held (claims, locks) or '' when nothing is held.
    :param name: for log lines.
    :param watchdog_timeout: seconds (watchdog mode).
    :param watchdog_device: path (watchdog mode).
    :param exit: how to exit (injectable for tests; default ``os._exit``).

    Thread-safe. Must be added to the session's listeners *before* anything
    that gives up locks at a loss, so that it sees what was held.
    """

    def __init__(self, mode, session, holding, name='hacluster',
                 watchdog_timeout=None,
                 watchdog_device=DEFAULT_WATCHDOG_DEVICE, exit=os._exit):
        self.mode, self.watchdog_timeout = validate(
            mode, session.lease_ttl, session.renew_deadline,
            watchdog_timeout)
        self._session = session
        self._holding = holding
        self._name = name
        self._device = watchdog_device
        self._exit = exit
        self._dog = None
        self._stop = threading.Event()
        self._thread = None
        #: (monotonic time, reason) when this process fenced itself
        self.fenced = None

    # -- life cycle -----------------------------------------------------------

    def start(self):
        """Open and arm the watchdog (watchdog mode) and start petting it.

        :raises ConfigurationError: the device cannot be used.
        """
        if self.mode != WATCHDOG or self._dog is not None:
            return
        self._dog = Watchdog.get(self._device, self.watchdog_timeout)
        self._stop.clear()
        self._thread = threading.Thread(target=self._pet_loop, daemon=True,
                                        name='%s-watchdog' % self._name)
        self._thread.start()

    def stop(self):
        """Graceful stop: stop petting and disarm the watchdog."""
        self._stop.set()
        if self._thread is not None and \
                self._thread is not threading.current_thread():
            self._thread.join(2)
        dog, self._dog = self._dog, None
        if dog is not None:
            dog.release(disarm=True)

    def _pet_loop(self):
        period = min(self._session.renew_interval,
                     self.watchdog_timeout / 3.0)
        while not self._stop.wait(period):
            try:
                # Petting stops at the renew deadline while work is held:
                # a machine frozen past it is reset before the lease can
                # expire. Holding nothing, there is nothing to fence.
                if self._session.valid() or not self._holding():
                    self._dog.pet()
            except Exception:
                LOG.exception('hacluster %s: watchdog pet failed', self._name)

    # -- the fence ----------------------------------------------------------

    def check(self):
        """A fence point: in ``exit``/``watchdog`` mode, exit now if the
        renew deadline has passed while work is held. Cheap (no request).
        Call it right before a write that a recovery must not race.

        In ``none`` mode it does nothing: the claim's finish and the
        store's own comparisons decide (a node whose session comes back
        must still be able to finish what it started).
        """
        if self.mode == NONE or self._session.valid():
            return
        held = self._holding()
        if not held:
            return
        self.fence('session past its renew deadline while holding %s'
                   % held)

    def fence(self, reason):
        """Exit the process now (``exit``/``watchdog`` mode)."""
        self.fenced = (time.monotonic(), reason)
        try:
            LOG.critical('hacluster %s: fencing: exiting now (%s) so that a '
                         'survivor can recover this node\'s work from a '
                         'process that is really gone', self._name, reason)
            sys.stderr.write('hacluster %s: FENCED (%s); exit %d\n'
                             % (self._name, reason, EXIT_STATUS))
            sys.stderr.flush()
            dog = self._dog
            if dog is not None:
                # The process is gone for good: nothing left to reset for.
                dog.close(disarm=True)
        finally:
            self._exit(EXIT_STATUS)

    # Session listener interface (called in the session thread, first).
    def session_lost(self, epoch, lease_id, reason):
        if self.mode == NONE:
            return
        held = self._holding()
        if held:
            self.fence('session %d lost (%s) while holding %s'
                       % (epoch, reason, held))

    def session_started(self, epoch, lease_id):
        pass
