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

"""Recovery: a dead node's claims (:mod:`hacluster.claims`) are repaired
by a survivor, exactly once in the normal case.

**Provable death only.** The leader takes a claim only once etcd says the
session lease it records is gone -- a lease never comes back, so its holder
can no longer renew it, and a process that has lost it knows (its renew
deadline passed first; see :mod:`hacluster.fencing` for what it does then).
A missing member record proves nothing (an operator's ``etcdctl del``; the
member puts it back). A lease seen gone is waited on for ``absence_grace``
first (a holder whose lease was cut short while it runs rebinds its claims
at once). The take is a compare-and-swap on the claim's revision into
``recovering`` by itself (``recoverer``, ``recoverer_lease``), guarded by
the leader's term: two survivors never take the same claim, and a rebind or
a finish by the owner in between makes the take fail. A claim whose
recoverer died or lost its session is taken again by the next leader. A
node restarting under the same name recovers its previous incarnation's
claims itself at start, race-free with the leader (the same
compare-and-swap). A claim handed over by its owner (lease 0) is taken at
once.

**The promise.** A claim is handled by one recoverer at a time, and its
handler runs once, unless the recoverer dies (or loses its session) after
calling the handler and before deleting the claim: then the handler runs
again under the next recoverer. So: exactly once in the normal case,
at-least-once across recoverer failures. Every claim carries a stable
``claim_id`` and an ``attempt`` number: a handler that records ``claim_id``
with its effect (or checks the resource's state, as a manila handler checks
the share's status) is idempotent, and then the effect happens exactly once.
A removed claim leaves a tombstone naming its recoverer (for a late owner's
late result), bound to a lease of :data:`TOMBSTONE_TTL` seconds.

**Unknown kinds.** A claim no handler here can recover (no handler for its
type, or a handler raising :class:`~hacluster.exceptions.NoRecoveryHandler`)
is kept, marked ``failed`` with the reason, and retried -- at once when
another node leads -- never deleted.

**Failures.** A handler that raises leaves the claim ``failed`` with its
attempt count and last error (visible to the status command); it is retried
with exponential backoff (1 s, 2 s, 4 s ... at most ``max_backoff``).

**Graceful stop.** ``coordinator.stop()`` waits up to ``claim_grace``
seconds for open claims to finish, then leaves the rest for recovery.
"""

import json
import logging
import threading
import time

from hacluster import backoff as _backoff
from hacluster import claims as _claims
from hacluster.claims import ACTIVE
from hacluster.claims import CLAIM_FORMAT
from hacluster.claims import ClaimRecord
from hacluster.claims import FAILED
from hacluster.claims import FINISHING
from hacluster.claims import RECOVERING
from hacluster import etcd as _etcd
from hacluster import exceptions
from hacluster import keys as _keys
from hacluster import protocol as _protocol
from hacluster import url as _url

LOG = logging.getLogger(__name__)

#: Seconds a recovered claim's tombstone (who recovered it) is kept.
TOMBSTONE_TTL = 3600


class RecoveryManager:
    """The recovery of orphaned claims for one coordinator. Internal: its
    public face is ``coordinator.register_recovery()``, ``list_claims()``
    and ``recover_node()``.

    :param ctx: the coordinator's :class:`hacluster.context.Context`.
    :param leadership: what recovery needs of the election: ``is_leader``,
        ``term`` (properties) and ``guarded_txn(term, ops, compare)``.

    Thread-safe; its loop runs in a thread of its own.
    """

    def __init__(self, ctx, leadership, scan_interval=30.0,
                 max_backoff=60.0, claim_grace=30.0, absence_grace=1.0):
        self._ctx = ctx
        self._leadership = leadership
        self._prefix = ctx.layout.claims
        self._handlers = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None
        # A full scan this often; member departures and operator requests
        # wake the loop at once, and retries and graces schedule wake-ups.
        self._scan_interval = scan_interval
        self.max_backoff = max_backoff
        self.claim_grace = claim_grace
        #: Seconds a claim whose holder's lease was seen gone is left to
        #: its holder: one whose lease was cut short while it runs rebinds
        #: its claims to its new session in that time.
        self.absence_grace = absence_grace
        # what was first seen when, on this node's monotonic clock: a
        # member gone, ('lease', id) gone, ('failed', claim, revision)
        self._absent_since = {}
        self._inflight = set()       # claim ids whose handler runs here
        self._inflight_lock = threading.Lock()
        self._next_due = None
        self._skipped_types = set()
        self._unreadable = set()     # claim keys in a format not read here
        #: recoveries this node completed / failed (for status and tests)
        self.recovered = 0
        self.failures = 0
        self._tomb = None            # (lease, monotonic granted at)

    def node_prefix(self, node):
        return self._ctx.layout.claims_of(node)

    @property
    def recovering_count(self):
        """Recoveries whose handler runs here now (no request)."""
        with self._inflight_lock:
            return len(self._inflight)

    def list_claims(self, node=None):
        """Every claim (of ``node``, if given) as ClaimRecords, with the
        etcd ``key`` and ``mod_revision`` added."""
        prefix = self.node_prefix(node) if node else self._prefix
        kvs, _ = self._ctx.client.get_prefix(prefix)
        out = []
        for kv in kvs:
            rec = ClaimRecord(kv.json())
            rec['key'] = kv.key
            rec['mod_revision'] = kv.mod_revision
            out.append(rec)
        return out

    # -- handlers and the recovery loop ---------------------------------------

    @property
    def has_handlers(self):
        return bool(self._handlers)

    def recovers(self):
        """What this node can recover, for its member record:
        ``type:operation`` for a handler that lists its ``operations``
        (an attribute), else ``type:*``."""
        out = set()
        for rtype, handler in list(self._handlers.items()):
            ops = getattr(handler, 'operations', None)
            if ops is None:
                out.add('%s:*' % rtype)
            else:
                out.update('%s:%s' % (rtype, op) for op in ops)
        return out

    def register(self, resource_type, handler):
        if not callable(handler):
            raise exceptions.ConfigurationError(
                'recovery handler for %r must be callable' % resource_type)
        self._handlers[resource_type] = handler
        self._wake.set()

    def start(self):
        """Start the recovery thread (it acts while this node leads), and
        recover our own previous incarnation's claims now."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='hacluster-recovery')
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._wake.set()
        if self._thread is not None and \
                self._thread is not threading.current_thread():
            self._thread.join(10)

    def kick(self, *args):
        """Wake the recovery loop (a member left, leadership started...)."""
        self._wake.set()

    # Watch subscriber for ``recovery/``: an operator's request.
    def notify(self, etype, kv):
        self._wake.set()

    def resync(self):
        self._wake.set()

    def _run(self):
        own_done = False
        while not self._stop.is_set():
            self._next_due = None
            try:
                if not own_done and self._handlers:
                    # A restart under our node name: finish what our
                    # previous incarnation left, whoever leads.
                    self.recover_node(self._ctx.node, own=True)
                    own_done = True
                if self._leadership.is_leader and self._handlers:
                    self.scan()
            except exceptions.HAClusterError as exc:
                LOG.warning('hacluster: recovery scan failed: %s',
                            _url.scrub(exc))
                self._due_in(1.0)
            except Exception:
                LOG.exception('hacluster: recovery scan failed')
                self._due_in(1.0)
            wait = self._scan_interval
            if self._next_due is not None:
                wait = max(0.05, min(wait, self._next_due - time.monotonic()))
            self._wake.wait(wait)
            self._wake.clear()

    def _due_in(self, seconds):
        due = time.monotonic() + seconds
        if self._next_due is None or due < self._next_due:
            self._next_due = due

    def _snapshot(self, prefix):
        """Members and claims at one revision: ``(live, claim KVs)`` where
        live maps member_id -> node."""
        layout = self._ctx.layout
        resp = self._ctx.client.txn(success=[
            _etcd.range_op(layout.members, _keys.prefix_end(layout.members)),
            _etcd.range_op(prefix, _keys.prefix_end(prefix))])
        live = {}
        for kv in resp.kvs(0):
            rec = kv.json()
            live[rec.get('member_id')] = rec.get('node')
        return live, resp.kvs(1)

    def _lease_gone(self, lease, cache):
        """True if etcd no longer has ``lease`` (cached for one scan)."""
        if lease not in cache:
            ttl = self._ctx.client.lease_time_to_live(lease)
            cache[lease] = ttl
            if ttl >= 0:
                # Alive: look again when it could have expired (its holder
                # may have died without a member record to tell us).
                self._due_in(min(self._scan_interval, ttl + 0.2))
        return cache[lease] < 0

    def _graced(self, key, seconds=None):
        """True once ``key`` has been waited on for ``seconds`` (default
        absence_grace) since this node first saw it; else schedules a
        wake-up for then."""
        if seconds is None:
            seconds = self.absence_grace
        first = self._absent_since.setdefault(key, time.monotonic())
        left = first + seconds - time.monotonic()
        if left > 0:
            self._due_in(left)
            return False
        return True

    def _holder_gone(self, member_id, lease, live, leases):
        """Is the process holding a claim provably gone? Its session lease
        must be gone (waited on for absence_grace: a holder cut short
        rebinds); lease 0: handed over; no lease recorded: its member must
        be absent (with the grace)."""
        if lease is None:
            if member_id in live:
                self._absent_since.pop(member_id, None)
                return False
            return self._graced(member_id)
        if int(lease) == 0:
            return True             # handed over by its owner
        if not self._lease_gone(int(lease), leases):
            return False
        # Gone for good -- but a holder whose lease was cut short while it
        # runs (revoked by hand, an etcd stall) rebinds its claims to its
        # new session within moments: give it absence_grace (a rebind makes
        # the take's comparison fail).
        return self._graced(('lease', int(lease)))

    def _orphaned(self, record, live, now, leases, revision=None):
        state = record.get('state')
        if state == RECOVERING and \
                record.get('recoverer') == self._ctx.member_id:
            # Ours: orphaned only if no handler of ours runs it (an etcd
            # error left it marked after we gave up on it).
            with self._inflight_lock:
                return record.get('claim_id') not in self._inflight
        held_by = _claims.holder(record)
        if held_by is not None:
            return self._holder_gone(held_by[0], held_by[1], live, leases)
        if state == FAILED:
            if record.get('failed_by') not in (None, self._ctx.member_id):
                # Failed on another node (which may have had no handler for
                # it): this node may have one; try at once.
                return True
            if record.get('retry_in') is not None:
                # Judged on this node's monotonic clock, from when it first
                # saw this failure: never on another node's wall clock.
                return self._graced(
                    ('failed', record.get('claim_id'), revision),
                    float(record['retry_in']))
            due = (record.get('next_retry_at') or 0) - now
            if due > 0:
                self._due_in(due)
                return False
            return True
        return False

    def scan(self):
        """Recover every orphaned claim (leader only: each take also
        requires still leading in the term). Returns the number recovered."""
        term = self._leadership.term
        if term is None:
            return 0
        live, kvs = self._snapshot(self._prefix)
        return self._recover(kvs, live, term=term)

    def recover_node(self, node, own=False, force=False):
        """Recover the orphaned claims of ``node`` now. With ``own``, the
        claims of this node's earlier incarnations; with ``force`` (an
        operator who knows the node is dead), without the absence grace.
        A claim whose holder's lease is alive is never taken. Returns the
        number recovered."""
        live, kvs = self._snapshot(self.node_prefix(node))
        if own or force:
            for kv in kvs:
                rec = kv.json()
                for key in (rec.get('member_id'), rec.get('recoverer')):
                    self._absent_since[key] = -float('inf')
                for lease in (rec.get('lease'), rec.get('recoverer_lease')):
                    if lease is not None:
                        self._absent_since[('lease', int(lease))] = \
                            -float('inf')
        if own:
            live.pop(self._ctx.member_id, None)
        return self._recover(kvs, live)

    def _recover(self, kvs, live, term=None):
        now = time.time()
        if len(self._absent_since) > 1000:
            # forget graces of long ago (they only ever delay a take)
            old = time.monotonic() - 600
            self._absent_since = {k: v for k, v in self._absent_since.items()
                                  if v > old}
        leases = {}
        count = 0
        for kv in kvs:
            if self._stop.is_set():
                break
            if term is not None and self._leadership.term != term:
                break               # deposed meanwhile: stop taking claims
            record = ClaimRecord(kv.json())
            if record.get('member_id') == self._ctx.member_id and \
                    record.get('state') in (ACTIVE, FINISHING):
                continue            # our own, running here
            if not self._readable(kv, record):
                continue
            if not self._orphaned(record, live, now, leases,
                                  revision=kv.mod_revision):
                continue
            rtype = record.get('resource_type')
            handler = self._handlers.get(rtype)
            if handler is None:
                handler = self._no_handler
                if rtype not in self._skipped_types:
                    self._skipped_types.add(rtype)
                    LOG.warning('hacluster: claims of type %r cannot be '
                                'recovered here (no handler registered on '
                                '%s); they are kept and retried',
                                rtype, self._ctx.node)
            if self._take_and_handle(kv, record, handler, term):
                count += 1
        return count

    def _readable(self, kv, record):
        """False for a claim in a format this version does not read
        (written by a newer version): it is left exactly as it is, for a
        leader that reads it -- never taken, marked failed or rewritten in
        an older format. Warned about once per claim."""
        compat = self._ctx.compat
        if compat is None:
            return True
        try:
            compat.check_format('claim', record)
            return True
        except _protocol.UnknownFormat as exc:
            if kv.key not in self._unreadable:
                self._unreadable.add(kv.key)
                LOG.warning('hacluster: claim %s of %s: %s', record.get(
                    'claim_id'), record.get('node'), exc)
            return False

    def _tombstone_lease(self):
        """A lease of TOMBSTONE_TTL seconds shared by the tombstones of one
        stretch of recoveries (renewed after a while, never kept alive)."""
        now = time.monotonic()
        if self._tomb is None or now - self._tomb[1] > TOMBSTONE_TTL / 2:
            lease, _ttl = self._ctx.client.lease_grant(TOMBSTONE_TTL)
            self._tomb = (lease, now)
        return self._tomb[0]

    def _no_handler(self, claim):
        raise exceptions.NoRecoveryHandler(
            'no recovery handler for claims of type %r on node %s'
            % (claim.resource_type, self._ctx.node))

    def _take_and_handle(self, kv, record, handler, term=None):
        coord = self._ctx
        _epoch, lease = coord.session.current()
        if lease is None:
            return False            # no session: we could not finish it
        taken = dict(record, state=RECOVERING, recoverer=coord.member_id,
                     recoverer_node=coord.node, recoverer_lease=lease,
                     attempt=int(record.get('attempt') or 0) + 1,
                     taken_at=time.time())
        claim_id = record.get('claim_id')
        with self._inflight_lock:
            # one take per claim at a time in this process (the loop and an
            # operator's recover_node may race)
            if claim_id in self._inflight:
                return False
            self._inflight.add(claim_id)
        try:
            return self._take(kv, record, handler, term, taken, lease)
        finally:
            with self._inflight_lock:
                self._inflight.discard(claim_id)

    def _take(self, kv, record, handler, term, taken, lease):
        coord = self._ctx
        # The holder's lease was seen gone (for good: leases never come
        # back); the claim must still be as we saw it -- a rebind or a
        # finish by its owner, or another recoverer, changed its revision.
        compare = [_etcd.mod_revision_is(kv.key, kv.mod_revision)]
        put = [_etcd.put_op(kv.key, json.dumps(taken))]
        try:
            if term is not None:
                resp = self._leadership.guarded_txn(term, put,
                                                    compare=compare)
            else:
                resp = coord.client.txn(compare=compare, success=put)
        except exceptions.NotLeader:
            return False
        except exceptions.HAClusterError as exc:
            # A failed comparison (the claim moved on, or we lead no
            # more): not ours to take.
            LOG.debug('hacluster: not taking claim %s: %s',
                      record.get('claim_id'), _url.scrub(exc))
            return False
        if not resp.succeeded:
            return False            # another recoverer, or it finished
        current = coord.client.get(kv.key)
        if current is None or current.json().get('recoverer') != \
                coord.member_id:
            return False
        return self._handle(kv, record, taken, handler, current.mod_revision)

    def _handle(self, kv, record, taken, handler, revision):
        coord = self._ctx
        LOG.info('hacluster: recovering claim %s: %s %s/%s of %s (member '
                 '%s), attempt %d', record.get('claim_id'),
                 record.get('operation'), record.get('resource_type'),
                 record.get('resource_id'), record.get('node'),
                 record.get('member_id'), taken['attempt'])
        try:
            handler(ClaimRecord(taken))
        except Exception as exc:
            self.failures += 1
            backoff = _backoff.jittered(
                min(self.max_backoff, 2.0 ** (taken['attempt'] - 1)))
            failed = dict(taken, state=FAILED, last_error=_url.scrub(
                '%s: %s' % (type(exc).__name__, exc)),
                failed_at=time.time(), failed_by=coord.member_id,
                failed_on=coord.node, retry_in=round(backoff, 3),
                next_retry_at=time.time() + backoff)
            if isinstance(exc, exceptions.NoRecoveryHandler):
                LOG.warning('hacluster: claim %s (%s %s/%s) kept: %s; '
                            'retrying in %.0fs (and at once on another '
                            'leader)', record.get('claim_id'),
                            record.get('operation'),
                            record.get('resource_type'),
                            record.get('resource_id'), exc, backoff)
            else:
                LOG.warning('hacluster: recovery of claim %s failed (attempt '
                            '%d): %s; retrying in %.0fs',
                            record.get('claim_id'), taken['attempt'],
                            failed['last_error'], backoff)
            try:
                resp = coord.client.txn(
                    compare=[_etcd.mod_revision_is(kv.key, revision)],
                    success=[_etcd.put_op(kv.key, json.dumps(failed))])
                if resp.succeeded:
                    # The retry's wait starts now, when this node failed,
                    # not when its next scan first reads the failure (that
                    # made every retry wait about twice its retry_in).
                    self._absent_since.setdefault(
                        ('failed', record.get('claim_id'), resp.revision),
                        time.monotonic())
            except exceptions.HAClusterError:
                pass    # left 'recovering' by us: retaken by our next scan
            self._due_in(backoff)
            return False
        try:
            # The claim goes; a tombstone saying who recovered it stays for
            # a while, for a late owner to name in its late result.
            tomb = {'claim_id': record.get('claim_id'),
                    'recoverer_node': coord.node,
                    'recoverer': coord.member_id, 'at': time.time(),
                    'format': CLAIM_FORMAT}
            ops = [_etcd.delete_op(kv.key),
                   _etcd.put_op(coord.layout.tombstone(
                       record.get('claim_id')), json.dumps(tomb),
                       self._tombstone_lease())]
            try:
                coord.client.txn(
                    compare=[_etcd.mod_revision_is(kv.key, revision)],
                    success=ops)
            except _etcd.LeaseNotFound:
                # the tombstones' lease went (revoked by hand): a new one
                self._tomb = None
                ops[1] = _etcd.put_op(coord.layout.tombstone(
                    record.get('claim_id')), json.dumps(tomb),
                    self._tombstone_lease())
                coord.client.txn(
                    compare=[_etcd.mod_revision_is(kv.key, revision)],
                    success=ops)
        except exceptions.HAClusterError as exc:
            # Handled, but still recorded: the next scan runs the handler
            # again (at-least-once; it is idempotent by contract).
            LOG.warning('hacluster: claim %s handled but not removed (%s)',
                        record.get('claim_id'), _url.scrub(exc))
            self._due_in(1.0)
        self.recovered += 1
        return True
