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

"""Single-node mode: the coordinator interface without etcd.

With ``backend_url`` unset or ``file:///dir``, a deployment that never adds a
second node keeps working: locks are file locks in the directory (shared
between the processes of this machine, exclusive or shared), the fencing
token comes from a persistent counter file, guarded writes go to files, and
the session is never lost. Nothing here talks to the network.
"""

import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid

import fasteners

from hacluster import api as _api
from hacluster import claims as _claims
from hacluster import exceptions
from hacluster import keys as _keys
from hacluster import locks as _locks
from hacluster import membership as _membership
from hacluster.version import __version__

LOG = logging.getLogger(__name__)


def _file_name(name):
    quoted = _keys.quote_segment(name)
    if len(quoted) > 200:
        # File names are limited to 255 bytes: keep a readable head and
        # make the rest unique.
        quoted = quoted[:150] + '-' + hashlib.sha256(
            name.encode('utf-8')).hexdigest()
    return quoted


class _NameState:
    """In-process reader/writer admission in front of one file lock.

    POSIX file locks belong to the process, not the thread, so threads are
    queued here first; only one thread per process holds the file lock for a
    group of readers.
    """

    def __init__(self, path):
        self.cond = threading.Condition()
        self.readers = 0
        self.writer = False
        self.waiting_writers = 0
        self.file = fasteners.InterProcessReaderWriterLock(path)
        self.file_mutex = threading.Lock()
        self.file_readers = 0


# POSIX file locks belong to the process: two coordinators of one process
# (or two Lock objects) must share the in-process state of a lock file, or
# both would "hold" it.
_STATES = {}
_STATES_LOCK = threading.Lock()


def _state_for_path(path):
    with _STATES_LOCK:
        st = _STATES.get(path)
        if st is None:
            st = _STATES[path] = _NameState(path)
        return st


class LocalLock:
    """A file lock with the interface of :class:`hacluster.locks.Lock`.

    Exclusive or shared across the threads and processes of this machine;
    writers waiting keep new readers out (no writer starvation). The fencing
    token is strictly increasing across holders (a counter file).
    Thread-safe; one object is one holder, as with the etcd lock.
    """

    def __init__(self, coordinator, name, shared=False, on_lost=None):
        self.name = _keys.validate_lock_name(name)
        self.shared = bool(shared)
        self._coord = coordinator
        self._state = coordinator.state_for(name)
        self._mutex = threading.Lock()
        self._on_lost = [on_lost] if on_lost else []
        self._held = False
        self._acquiring = False
        self.fencing_token = None
        self.lost = False
        self.lost_reason = None
        self.acquired_at = None

    def __repr__(self):
        return '<LocalLock %s %s>' % (self.name,
                                      'shared' if self.shared else
                                      'exclusive')

    def on_lost(self, callback):
        self._on_lost.append(callback)

    @property
    def held(self):
        return self._held and not self.lost

    def acquire(self, blocking=True):
        """See :meth:`hacluster.locks.Lock.acquire`. Blocks on file locks
        (polled every 10-100 ms: single-node mode has no watch)."""
        timeout = _locks.parse_blocking(blocking)
        self._coord._check_running()
        deadline = None if timeout is None else time.monotonic() + timeout

        def remaining():
            return None if deadline is None else \
                max(0.0, deadline - time.monotonic())

        with self._mutex:
            if self.held or self._acquiring:
                raise exceptions.HAClusterError(
                    'lock %r is already held (or being acquired) by this '
                    'Lock object; use one Lock object per holder' % self.name)
            self._acquiring = True
        try:
            return self._acquire(remaining)
        finally:
            with self._mutex:
                self._acquiring = False

    def _acquire(self, remaining):
        st = self._state
        with st.cond:
            if not self.shared:
                st.waiting_writers += 1
            try:
                while st.writer or (self.shared and st.waiting_writers) or \
                        (not self.shared and st.readers):
                    left = remaining()
                    if left is not None and left <= 0:
                        return False
                    st.cond.wait(left)
                if self.shared:
                    st.readers += 1
                else:
                    st.writer = True
            finally:
                if not self.shared:
                    st.waiting_writers -= 1
                    # A writer that gives up may have been all that kept
                    # readers waiting.
                    st.cond.notify_all()
        try:
            taken = self._take_file(remaining())
        except Exception as exc:
            taken = exc
        if taken is not True:
            self._leave()
            if isinstance(taken, Exception):
                raise exceptions.HAClusterError(
                    'single-node lock %r: %s' % (self.name, taken),
                    cause=taken) from taken
            return False
        try:
            token = self._coord._next_token()
        except OSError as exc:
            self._held = True
            self.release()
            raise exceptions.HAClusterError(
                'single-node lock %r: cannot update the fencing counter: %s'
                % (self.name, exc), cause=exc) from exc
        with self._mutex:
            self._held = True
            self.lost = False
            self.lost_reason = None
            self.fencing_token = token
            self.acquired_at = time.monotonic()
        self._coord._held.add(self)
        return True

    def _take_file(self, timeout):
        st = self._state
        blocking = timeout is None or timeout > 0
        if not self.shared:
            return st.file.acquire_write_lock(blocking=blocking,
                                              timeout=timeout)
        # Another reader thread of this process may be waiting for the file
        # read lock; wait for it no longer than our own timeout.
        if not st.file_mutex.acquire(timeout=-1 if timeout is None
                                     else timeout):
            return False
        try:
            if st.file_readers == 0:
                if not st.file.acquire_read_lock(blocking=blocking,
                                                 timeout=timeout):
                    return False
            st.file_readers += 1
            return True
        finally:
            st.file_mutex.release()

    def release(self):
        """See :meth:`hacluster.locks.Lock.release`."""
        with self._mutex:
            if not self._held:
                raise exceptions.LockNotHeld(
                    'lock %r is not held by this Lock object' % self.name)
            was_lost = self.lost
            self._held = False
            self.fencing_token = None
        self._coord._held.discard(self)
        st = self._state
        if self.shared:
            with st.file_mutex:
                st.file_readers -= 1
                if st.file_readers == 0:
                    st.file.release_read_lock()
        else:
            st.file.release_write_lock()
        self._leave()
        return not was_lost

    def _leave(self):
        """Give back this holder's place in the in-process admission and
        wake the threads waiting for it."""
        st = self._state
        with st.cond:
            if self.shared:
                st.readers -= 1
            else:
                st.writer = False
            st.cond.notify_all()

    def mark_lost(self, reason, key=None):
        with self._mutex:
            if not self._held or self.lost:
                return
            self.lost = True
            self.lost_reason = reason
        for cb in list(self._on_lost) + self._coord.lock_lost_callbacks():
            try:
                cb(self, reason)
            except Exception:
                LOG.exception('hacluster: on_lost callback of %r failed',
                              self.name)

    def is_still_owner(self):
        """True while held (a file lock cannot be lost while the process
        lives)."""
        return self.held

    def guarded_put(self, key, value):
        """Write a data item (a file) if this lock is held.

        :raises StaleFencingToken: not held; nothing written.
        """
        if not self.held:
            raise exceptions.StaleFencingToken(
                'lock %r is not held: write refused' % self.name)
        self._coord._write_data(key, value)

    def __enter__(self):
        self.acquire(True)
        return self

    def __exit__(self, *exc):
        if self._held:
            self.release()


class _LocalClaim:
    def __init__(self, coord, record):
        self._coord = coord
        self.record = record
        self.claim_id = record['claim_id']
        self.recovered_elsewhere = False

    def __enter__(self):
        self._coord._check_running()
        path = self._coord._claim_path(self.claim_id)
        tmp = path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(self.record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return self

    def finish(self):
        """As :meth:`hacluster.claims.Claim.finish`. Single-node mode has
        no survivor that could recover the claim while this process lives:
        always granted."""
        return self

    def still_owned(self):
        return True

    def hand_over(self, reason):
        """Single-node mode: the claim file stays, for the next start to
        recover."""
        self._keep = reason

    def __exit__(self, *exc):
        if getattr(self, '_keep', None):
            return
        try:
            os.unlink(self._coord._claim_path(self.claim_id))
        except FileNotFoundError:
            pass


class LocalCoordinator(_api.CoordinatorAPI):
    """Single-node coordinator: local file locks in ``lock_path``.

    :param lock_path: directory for lock, counter and data files (created
        if missing).
    :raises ConfigurationError: no ``lock_path``.
    """

    single_node = True

    def __init__(self, cluster, node, lock_path, timings=None, config=None,
                 rpc_version=None):
        if not lock_path:
            raise exceptions.ConfigurationError(
                'single-node mode needs a lock directory: set backend_url to '
                'file:///path/to/dir, or pass lock_path')
        self.cluster = _keys.validate_ident(cluster, 'cluster')
        self.node = _keys.validate_ident(node, 'node')
        self.lock_path = lock_path
        self._dir = os.path.join(lock_path, 'hacluster-' + _file_name(cluster))
        self._held = set()
        self._running = False
        self.url = None
        self.clock = time.monotonic
        self.member_id = '%s-%s' % (node, uuid.uuid4().hex[:8])
        self._record = _membership.MemberRecord(
            node=node, member_id=self.member_id, host=socket.gethostname(),
            pid=os.getpid(), version=__version__, rpc_version=rpc_version,
            config_fingerprint=_membership.fingerprint(config),
            joined_at=None, state='active', mode='single-node')
        self._leading = None        # (term, [on_stopped]) while leading
        self._leader_callbacks = []
        self._lock_lost = []
        self._handlers = {}

    def __repr__(self):
        return '<LocalCoordinator %s/%s %s>' % (self.cluster, self.node,
                                                self._dir)

    @property
    def running(self):
        return self._running

    def start(self, timeout=None):
        """Create the lock directory. Never blocks on the network."""
        try:
            os.makedirs(os.path.join(self._dir, 'data'), exist_ok=True)
            os.makedirs(os.path.join(self._dir, 'claims'), exist_ok=True)
        except OSError as exc:
            raise exceptions.ConfigurationError(
                'cannot create the single-node lock directory %s: %s'
                % (self._dir, exc), cause=exc)
        self._running = True
        self._record['joined_at'] = time.time()
        self._recover_previous()
        return self

    def stop(self, claim_grace=None):
        """Resign leadership, release every lock still held (marking it
        lost, "coordinator stopped"). ``claim_grace`` is accepted for the
        API's sake: one node has nobody to hand claims over to; they are
        recovered by this node's next start."""
        if not self._running:
            return
        self.resign()
        self._running = False
        for lock in list(self._held):
            lock.mark_lost('coordinator stopped')
            try:
                lock.release()
            except exceptions.LockNotHeld:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def fence_point(self):
        """As :meth:`hacluster.coordinator.Coordinator.fence_point`: no
        session, no survivor, nothing to fence in single-node mode."""

    def _check_running(self):
        if not self._running:
            raise exceptions.NotStarted(
                'coordinator %s/%s is not started' % (self.cluster,
                                                      self.node))

    def get_lock(self, name, shared=False, on_lost=None):
        return LocalLock(self, name, shared=shared, on_lost=on_lost)

    def held_locks(self):
        return [lock for lock in list(self._held) if lock.held]

    def on_lock_lost(self, callback):
        """``callback(lock, reason)``: single-node locks are only lost when
        the coordinator stops while they are held."""
        self._lock_lost.append(callback)

    def lock_lost_callbacks(self):
        return list(self._lock_lost)

    def on_session_lost(self, callback):
        """Never called: single-node mode has no session to lose."""

    def on_session_started(self, callback):
        """Never called: single-node mode has no session."""

    # -- membership and leadership: one node, always the leader -------------

    def get_members(self):
        """``{node: record}`` with this node only."""
        return {self.node: _membership.MemberRecord(self._record)}

    def update_member(self, **fields):
        self._record.update(fields)

    def live_members(self):
        return self.get_members()

    def on_member_join(self, callback):
        """Never called: no other member can join a single node."""

    def on_member_leave(self, callback):
        """Never called: no other member can leave a single node."""

    def run_for_leader(self, on_started_leading, on_stopped_leading,
                       on_new_leader=None):
        """Lead at once (the only node). Calls ``on_started_leading(term)``
        (and ``on_new_leader``) before returning."""
        self._check_running()
        if on_new_leader is not None:
            self._leader_callbacks.append(on_new_leader)
        if self._leading is not None:
            term, stops = self._leading
            stops.append(on_stopped_leading)
            on_started_leading(term)
            return self
        term = self._next_token()
        self._leading = (term, [on_stopped_leading])
        on_started_leading(term)
        for cb in self._leader_callbacks:
            cb(self.get_leader())
        return self

    def campaign(self):
        return self.run_for_leader(lambda term: None, lambda term: None)

    def resign(self):
        leading, self._leading = self._leading, None
        if leading is not None:
            term, stops = leading
            for on_stopped in stops:
                try:
                    on_stopped(term)
                except Exception:
                    LOG.exception('hacluster: on_stopped_leading failed')
            for cb in self._leader_callbacks:
                cb(None)

    @property
    def is_leader(self):
        return self._leading is not None

    @property
    def term(self):
        return self._leading[0] if self._leading else None

    def get_leader(self):
        if self._leading is None:
            return None
        record = _membership.MemberRecord(self._record)
        record['term'] = self._leading[0]
        return record

    def on_new_leader(self, callback):
        self._leader_callbacks.append(callback)

    def guarded_put_as_leader(self, term, key, value):
        if self.term != term:
            raise exceptions.NotLeader('%s is not leading in term %s'
                                       % (self.node, term))
        self._write_data(key, value)

    # -- claims: files, recovered by the next incarnation ---------------------

    def can_claim(self, resource_type, operation):
        """Always True: one node, one version."""
        return True

    def claim(self, resource_type, resource_id, operation, data=None):
        """As :meth:`hacluster.coordinator.Coordinator.claim`; the record
        is a file in the lock directory, recovered by this node's next
        incarnation (single-node mode has no survivor)."""
        record = _claims.new_claim_record(self.node, self.member_id,
                                          resource_type, resource_id,
                                          operation, data)
        return _LocalClaim(self, record)

    def register_recovery(self, resource_type, handler):
        if not callable(handler):
            raise exceptions.ConfigurationError(
                'recovery handler for %r must be callable' % resource_type)
        self._handlers[resource_type] = handler
        if self._running:
            self._recover_previous()

    def list_claims(self, node=None):

        out = []
        directory = os.path.join(self._dir, 'claims')
        for name in sorted(os.listdir(directory)) if os.path.isdir(
                directory) else []:
            if not name.endswith('.json'):
                continue        # e.g. a .tmp left by a crash mid-write
            try:
                with open(os.path.join(directory, name)) as f:
                    out.append(_claims.ClaimRecord(json.load(f)))
            except (OSError, ValueError):
                continue
        return out

    def recover_node(self, node):
        raise exceptions.HAClusterError(
            'single-node mode: claims are recovered by the node itself when '
            'it starts again')

    def _claim_path(self, claim_id):
        return os.path.join(self._dir, 'claims', claim_id + '.json')

    def _recover_previous(self):

        for record in self.list_claims():
            if record.get('member_id') == self.member_id:
                continue
            handler = self._handlers.get(record.get('resource_type'))
            if handler is None:
                continue
            path = self._claim_path(record['claim_id'])
            taken = dict(record, state=_claims.RECOVERING,
                         recoverer=self.member_id,
                         attempt=int(record.get('attempt') or 0) + 1)
            try:
                handler(_claims.ClaimRecord(taken))
            except Exception as exc:
                LOG.warning('hacluster: recovery of claim %s failed: %s',
                            record['claim_id'], exc)
                taken.update(state=_claims.FAILED, last_error='%s: %s' % (
                    type(exc).__name__, exc))
                with open(path, 'w') as f:
                    json.dump(taken, f)
                continue
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def state_for(self, name):
        """The per-name state shared by this coordinator's locks (for
        :class:`LocalLock`)."""
        return _state_for_path(os.path.realpath(
            os.path.join(self._dir, _file_name(name) + '.lock')))

    def _next_token(self):
        path = os.path.join(self._dir, 'fencing-token')
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.read(fd, 64).strip()
            value = int(raw) + 1 if raw else 1
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, str(value).encode())
            os.fsync(fd)
            return value
        finally:
            os.close(fd)

    def _data_path(self, key):
        _keys.validate_lock_name(key)
        return os.path.join(self._dir, 'data', _file_name(key))

    def _write_data(self, key, value):
        path = self._data_path(key)
        if value is None:
            try:
                os.unlink(path)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
            return
        if isinstance(value, str):
            value = value.encode('utf-8')
        tmp = '%s.%d.tmp' % (path, os.getpid())
        with open(tmp, 'wb') as f:
            f.write(value)
        os.replace(tmp, path)

    def get_data(self, key):
        """``(value, 0)`` or ``(None, 0)``."""
        try:
            with open(self._data_path(key), 'rb') as f:
                return f.read(), 0
        except FileNotFoundError:
            return None, 0
