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

"""Cluster membership: who is in the cluster, with a record others can read.

Every started coordinator publishes a member record at
``/hacluster/v1/<cluster>/members/<node>``, bound to its session lease (so it
vanishes when the member dies), created with a create-if-absent transaction
(so a node name is held by one live process at a time). Fields:

``node``, ``member_id`` (this process incarnation: stable across a lost and
renewed session, new at every process start), ``host``, ``pid``, ``version``
(hacluster's), ``rpc_version``, ``config_fingerprint``, ``joined_at`` (UNIX
time), ``lease`` (hex), ``lease_ttl``, ``renew_interval``, ``state``
(``'active'`` or ``'leaving'``).

Every coordinator keeps a view of the members, fed by the cluster watch (not
polling), and calls join / leave callbacks. A leave says whether it was
graceful (the member marked itself ``leaving`` before revoking its lease) or
an expiry (the lease ran out: a crash, a pause, a partition).
"""

import hashlib
import json
import logging
import os
import socket
import threading
import time

from hacluster import backoff as _backoff
from hacluster import etcd as _etcd
from hacluster import exceptions
from hacluster import url as _url
from hacluster.version import __version__
from hacluster.version import KEY_LAYOUT_VERSION

LOG = logging.getLogger(__name__)

_SECRET_WORDS = ('password', 'passwd', 'secret', 'token', 'credential',
                 'private_key', 'privatekey', 'auth_key', 'api_key')


class DuplicateMember(exceptions.ConfigurationError):
    """Another live process already uses this node name in the cluster."""


def _is_secret(key):
    key = str(key).lower()
    return any(word in key for word in _SECRET_WORDS)


def fingerprint(config):
    """A short, stable hash of a configuration dict, secrets excluded.

    Keys whose name suggests a secret (password, token, secret, ...) are
    left out, and passwords inside URL values are masked, so the fingerprint
    says nothing about them (a hash of a short password could be brute
    forced). Nested dicts and lists are walked. Returns None for None.
    """
    if config is None:
        return None
    canonical = json.dumps(_clean(config), sort_keys=True,
                           separators=(',', ':'))
    return hashlib.sha256(canonical.encode('utf-8')).hexdigest()[:16]


def fingerprints(config):
    """``{key: short hash}`` of each top-level key of a configuration dict
    (secrets excluded as in :func:`fingerprint`), or None for None.

    Drift is judged per key, on the keys two members both have: a version
    that adds a key to what it fingerprints does not look drifted from the
    version before it for the whole of a rolling upgrade, while a real
    difference in a key both have still shows."""
    if config is None:
        return None
    cleaned = _clean(config)
    if not isinstance(cleaned, dict):
        cleaned = {'': cleaned}
    out = {}
    for key, value in cleaned.items():
        canonical = json.dumps(value, sort_keys=True, separators=(',', ':'))
        out[key] = hashlib.sha256(canonical.encode('utf-8')).hexdigest()[:8]
    return out


def drifted(a, b):
    """The keys whose values differ between two members' per-key
    fingerprints (:func:`fingerprints`); keys only one has are not drift.
    Empty when either member has none."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return []
    return sorted(k for k in set(a) & set(b) if a[k] != b[k])


def _clean(config):
    def clean(value):
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()
                    if not _is_secret(k)}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, str):
            return _url.scrub(value)
        if value is None or isinstance(value, (bool, int, float)):
            return value
        return str(value)
    return clean(config)


class MemberRecord(dict):
    """A member's record: a dict, with the fields also as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @classmethod
    def from_kv(cls, kv):
        record = cls(kv.json())
        record.setdefault('node', kv.key.rsplit('/', 1)[-1])
        record['_revision'] = kv.create_revision
        return record


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def machine_identity():
    """``(machine id, boot id)`` of this machine: two hosts cloned with one
    hostname still differ here, and a reboot changes the boot id."""
    return (_read('/etc/machine-id') or _read('/var/lib/dbus/machine-id'),
            _read('/proc/sys/kernel/random/boot_id'))


def pid_start(pid):
    """The start time (clock ticks since boot) of ``pid``, or None."""
    stat = _read('/proc/%s/stat' % int(pid))
    if not stat:
        return None
    try:
        return int(stat.rsplit(')', 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def _same_machine(record):
    machine, boot = machine_identity()
    return bool(machine and boot and record.get('machine_id') == machine and
                record.get('boot_id') == boot)


def _incarnation_dead(record):
    """True only when ``record`` was written on this very machine and
    boot, and its process is gone (or its pid now belongs to another
    process). Anything less certain is decided by watching the lease."""
    if not _same_machine(record):
        return False
    pid = record.get('pid')
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, TypeError):
        return False
    started = pid_start(pid)
    return started is not None and record.get('pid_start') is not None \
        and started != record.get('pid_start')


class Membership:
    """This coordinator's record and its view of the cluster's members.

    Internal to :class:`hacluster.coordinator.Coordinator`; its public face
    is ``coordinator.get_members()`` and the ``on_member_*`` callbacks.
    """

    def __init__(self, ctx, member_id, config=None, rpc_version=None,
                 compat=None):
        self._ctx = ctx
        self._compat = compat or (lambda: None)
        self.member_id = member_id
        self._fingerprint = fingerprint(config)
        self._fingerprints = fingerprints(config)
        self._rpc_version = rpc_version
        self._joined_at = None
        self._key = ctx.layout.member(ctx.node)
        self._own_leases = set()
        self._registered = None      # (lease, create_revision)
        self._view = {}              # node -> MemberRecord
        self._view_lock = threading.Lock()
        self._callbacks = {'join': [], 'leave': [], 'update': []}
        self._extra = {}

    # -- our record ----------------------------------------------------------

    def _record(self, lease, state='active'):
        coord = self._ctx
        return dict(self._extra, **{
            'node': coord.node, 'member_id': self.member_id,
            'host': socket.gethostname(), 'pid': os.getpid(),
            'pid_start': pid_start(os.getpid()),
            'machine_id': machine_identity()[0],
            'boot_id': machine_identity()[1],
            'version': __version__, 'rpc_version': self._rpc_version,
            'protocol': KEY_LAYOUT_VERSION,
            'compat': self._compat(), 'format': 1,
            'config_fingerprint': self._fingerprint,
            'config_fingerprints': self._fingerprints,
            'joined_at': self._joined_at, 'lease': '%x' % lease,
            'lease_ttl': coord.session.lease_ttl,
            'renew_interval': coord.session.renew_interval,
            'state': state,
        })

    def update(self, **fields):
        """Add or change extra fields of our record (e.g. the RPC server a
        periodic runner listens on) and rewrite it. Blocks for one etcd
        request when registered; later registrations carry them too."""
        self._extra.update(fields)
        reg = self._registered
        if reg is None:
            return
        lease, rev = reg
        self._ctx.client.txn(
            compare=[_etcd.create_revision_is(self._key, rev)],
            success=[_etcd.put_op(self._key,
                                  json.dumps(self._record(lease)), lease)])

    def register(self, timeout=None):
        """Publish our record on the current session lease.

        Blocks until it is published. If a record for our node name exists
        on another lease: a dead previous incarnation on this host is taken
        over at once; a stale one elsewhere is waited for (until its lease
        expires); a live one is refused.

        :raises DuplicateMember: another live process uses our node name.
        :raises BackendUnavailable: etcd did not answer in time.
        """
        coord = self._ctx
        ttl = coord.session.lease_ttl
        deadline = coord.clock() + (timeout if timeout is not None
                                    else 2 * ttl + 2)
        while True:
            epoch, lease = coord.session.wait_active(
                max(0.0, deadline - coord.clock()))
            if lease is None:
                raise exceptions.BackendUnavailable(
                    'cannot register member %s: no etcd session'
                    % coord.node)
            if self._joined_at is None:
                self._joined_at = time.time()
            self._own_leases.add(lease)
            resp = coord.client.txn(
                compare=[_etcd.create_revision_is(self._key, 0)],
                success=[_etcd.put_op(self._key,
                                      json.dumps(self._record(lease)),
                                      lease)],
                failure=[_etcd.range_op(self._key)])
            if resp.succeeded:
                rev = resp.revision
                self._registered = (lease, rev)
                LOG.info('hacluster: %s/%s joined as member %s (lease %x, '
                         'revision %d)', coord.cluster, coord.node,
                         self.member_id, lease, rev)
                return
            kvs = resp.kvs(0)
            if not kvs:
                continue             # gone in the meantime: try again
            existing = kvs[0]
            if existing.lease == lease:
                self._registered = (lease, existing.create_revision)
                return
            other = MemberRecord.from_kv(existing)
            if existing.lease in self._own_leases or \
                    other.get('member_id') == self.member_id:
                # Our own record from a session we already lost.
                coord.client.lease_revoke(existing.lease)
                continue
            if other.get('pid') != os.getpid() and \
                    _incarnation_dead(other):
                LOG.warning('hacluster: %s/%s: previous incarnation %s '
                            '(pid %s) is dead; taking over its '
                            'registration', coord.cluster, coord.node,
                            other.get('member_id'), other.get('pid'))
                coord.client.lease_revoke(existing.lease)
                continue
            if self._is_alive(existing, deadline):
                raise DuplicateMember(
                    'node name %r is already used by a live member of '
                    'cluster %r (member %s, host %s, pid %s): give every '
                    'node its own node name ([hacluster] node_name)'
                    % (coord.node, coord.cluster, other.get('member_id'),
                       other.get('host'), other.get('pid')))
            if coord.clock() >= deadline:
                raise DuplicateMember(
                    'node name %r in cluster %r is still registered by '
                    'member %s (host %s, pid %s), whose lease has not '
                    'expired; try again later' % (
                        coord.node, coord.cluster, other.get('member_id'),
                        other.get('host'), other.get('pid')))

    def _is_alive(self, existing, deadline):
        """Watch another member's lease: True if it is being renewed, False
        once it is gone (or at ``deadline``)."""
        client = self._ctx.client
        first = None
        lowest = None
        while self._ctx.clock() < deadline:
            ttl = client.lease_time_to_live(existing.lease)
            if ttl < 0:
                return False
            if first is None:
                first = self._ctx.clock() + ttl + 1.5
            if lowest is not None and ttl > lowest:
                return True          # renewed while we watched
            lowest = ttl if lowest is None else min(lowest, ttl)
            if self._ctx.clock() > first:
                return True          # outlived its TTL: it is renewed
            time.sleep(0.2)
        return False

    def mark_leaving(self):
        """Rewrite our record with ``state: leaving`` before a graceful stop,
        so watchers tell a goodbye from a crash. Best effort; never raises."""
        reg = self._registered
        if reg is None:
            return
        lease, rev = reg
        try:
            self._ctx.client.txn(
                compare=[_etcd.create_revision_is(self._key, rev)],
                success=[_etcd.put_op(
                    self._key, json.dumps(self._record(lease, 'leaving')),
                    lease)])
        except exceptions.HAClusterError as exc:
            LOG.warning('hacluster: could not mark %s leaving: %s',
                        self._ctx.node, _url.scrub(exc))

    def session_lost(self):
        self._registered = None

    def _restore_if_deleted(self):
        """Our record was deleted while our session lives (an operator's
        ``etcdctl del``, a buggy peer): put it back, in a thread of its own
        (never the watch thread). A missing record proves nothing about our
        liveness -- recovery judges by our lease -- but others need it to
        see us."""
        reg = self._registered
        coord = self._ctx
        if reg is None or not coord.is_running():
            return
        epoch, lease = coord.session.current()
        if lease != reg[0]:
            return                   # that session is over; rejoin handles
        LOG.warning('hacluster: %s/%s: our member record was deleted while '
                    'our session lives; putting it back', coord.cluster,
                    coord.node)
        self._registered = None
        self.rejoin(epoch)

    def rejoin(self, epoch):
        """Put our record back after a lost session: in a thread of its
        own (never the session thread, which must keep renewing), retried
        with backoff for as long as session ``epoch`` lives."""
        def run():
            coord = self._ctx
            delay = 0.1
            while coord.is_running() and coord.session.epoch == epoch:
                try:
                    self.register()
                    return
                except DuplicateMember as exc:
                    LOG.error('hacluster: %s/%s cannot rejoin: %s',
                              coord.cluster, coord.node, exc)
                except _etcd.LeaseNotFound:
                    # our lease is gone (revoked, expired): the session
                    # must find out now, not at its next renewal
                    coord.session.expire_now('lease not found in etcd',
                                             epoch=epoch)
                except exceptions.HAClusterError as exc:
                    LOG.warning('hacluster: %s/%s rejoin failed (%s); '
                                'retrying', coord.cluster, coord.node,
                                _url.scrub(exc))
                time.sleep(_backoff.jittered(delay))
                delay = _backoff.doubled(delay,
                                         coord.session.renew_interval)
        threading.Thread(target=run, daemon=True,
                         name='hacluster-rejoin').start()

    # -- the view of all members ---------------------------------------------

    def load(self, kvs):
        """Set the initial view from a range read (no callbacks)."""
        with self._view_lock:
            self._view = {}
            for kv in kvs:
                record = MemberRecord.from_kv(kv)
                self._view[record['node']] = record

    def view(self):
        with self._view_lock:
            return dict(self._view)

    def add_callback(self, kind, callback):
        self._callbacks[kind].append(callback)

    def _fire(self, kind, *args):
        for cb in list(self._callbacks[kind]):
            try:
                cb(*args)
            except Exception:
                LOG.exception('hacluster: member %s callback %r failed',
                              kind, cb)

    # Watch subscriber interface (called in the watch thread).
    def notify(self, etype, kv):
        node = kv.key.rsplit('/', 1)[-1]
        cluster = self._ctx.cluster
        if etype == 'DELETE':
            if node == self._ctx.node:
                self._restore_if_deleted()
            with self._view_lock:
                old = self._view.pop(node, None)
            if old is None:
                return
            graceful = old.get('state') == 'leaving'
            LOG.info('hacluster: %s: member %s (node %s) left (%s)',
                     cluster, old.get('member_id'), node,
                     'graceful' if graceful else 'lease expired')
            self._fire('leave', old, graceful)
            return
        record = MemberRecord.from_kv(kv)
        with self._view_lock:
            old = self._view.get(node)
            self._view[node] = record
        if old is None or old.get('member_id') != record.get('member_id') \
                or old.get('_revision') != record.get('_revision'):
            LOG.info('hacluster: %s: member %s (node %s, host %s, pid %s, '
                     'version %s) joined', cluster, record.get('member_id'),
                     node, record.get('host'), record.get('pid'),
                     record.get('version'))
            self._fire('join', record)
        else:
            self._fire('update', record)

    def resync(self):
        """Events may have been missed: re-read and report the difference.

        :raises HAClusterError: etcd could not be read (the coordinator
            retries the resync until it succeeds)."""
        kvs, _ = self._ctx.client.get_prefix(self._ctx.layout.members)
        fresh = {}
        for kv in kvs:
            record = MemberRecord.from_kv(kv)
            fresh[record['node']] = record
        with self._view_lock:
            old, self._view = self._view, fresh
        if self._ctx.node not in fresh:
            self._restore_if_deleted()
        for node, record in old.items():
            now = fresh.get(node)
            if now is None or now.get('_revision') != record.get('_revision'):
                self._fire('leave', record,
                           record.get('state') == 'leaving')
        for node, record in fresh.items():
            before = old.get(node)
            if before is None or \
                    before.get('_revision') != record.get('_revision'):
                self._fire('join', record)
