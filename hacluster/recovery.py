"""Recovery: durable claims for in-flight work, cleaned up when a node dies.

A node records a **claim** in etcd when it starts an operation that must not
be left half-done::

    with coord.claim('share', share_id, 'create', data={'size': 10}):
        driver.create_share(...)

The claim key is durable (not bound to the session lease) and removed when
the block exits, normally or by exception (the operation's own error path
owns that case). If the process dies, the claim stays::

    /hacluster/v1/<cluster>/claims/<node>/<type>/<id>/<operation>.<claim id>

**Provable death only.** Every claim records the session lease of the
process that opened it (and rebinds itself to the new lease when that
process's session is replaced). The leader takes a claim only once etcd says
that lease is gone -- a lease never comes back, so its holder can no longer
renew it, and a process that has lost it knows (its renew deadline passed
first; see :mod:`hacluster.fencing` for what it does then). A missing member
record proves nothing (an operator's ``etcdctl del``; the member puts it
back). The take is a compare-and-swap on the claim's revision into
``recovering`` by itself (``recoverer``, ``recoverer_lease``): two survivors
never take the same claim, and a rebind or a finish by the owner in between
makes the take fail. A claim whose recoverer died or lost its session is
taken again by the next leader. A node restarting under the same name
recovers its previous incarnation's claims itself at start, race-free with
the leader (the same compare-and-swap).

**Fenced completion.** An owner that was thought dead may still be running
(a frozen VM resumed, a node cut off from etcd only). Before the final write
of its operation it calls :meth:`Claim.finish`: a compare-and-swap of its own
claim from ``active`` to ``finishing``. It fails if a recoverer took the
claim first; then the final write must not be made (the recovery's outcome
stands) and the late result is recorded under ``late/<claim id>`` for an
operator (``hacluster status`` warns about it). A recoverer never takes a
``finishing`` claim while its owner's lease lives. What this does not fence:
writes between :meth:`Claim.finish` and the end of the block by a process
frozen exactly there past its lease. A store that can compare (manila's
database row status, an etcd transaction) closes that window: the HA share
manager makes its final status write conditional on the transitional status,
as the recovery handlers do.

**Unknown kinds.** A claim no handler here can recover (no handler for its
type, or a handler raising :class:`~hacluster.exceptions.NoRecoveryHandler`)
is kept, marked ``failed`` with the reason, and retried -- at once when
another node leads -- never deleted.

**The promise.** A claim is handled by one recoverer at a time, and its
handler runs once, unless the recoverer dies (or loses its session) after
calling the handler and before deleting the claim: then the handler runs
again under the next recoverer. So: exactly once in the normal case,
at-least-once across recoverer failures. Every claim carries a stable
``claim_id`` and an ``attempt`` number: a handler that records ``claim_id``
with its effect (or checks the resource's state, as a manila handler checks
the share's status) is idempotent, and then the effect happens exactly once.

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
import uuid

from hacluster import etcd as _etcd
from hacluster import exceptions
from hacluster import keys as _keys
from hacluster import url as _url

LOG = logging.getLogger(__name__)

ACTIVE = 'active'
FINISHING = 'finishing'
RECOVERING = 'recovering'
FAILED = 'failed'

#: Format of the claim record this version writes (``format`` field).
CLAIM_FORMAT = 1

#: Seconds a recovered claim's tombstone (who recovered it) is kept.
TOMBSTONE_TTL = 3600


def new_claim_record(node, member_id, resource_type, resource_id, operation,
                     data=None):
    """Validate a claim's arguments and build its record (a dict).

    :raises ConfigurationError: an empty or non-string type, id or
        operation, a control character in one, or data that is not JSON.
    """
    for what, value in (('resource_type', resource_type),
                        ('resource_id', resource_id),
                        ('operation', operation)):
        if not isinstance(value, str) or not value:
            raise exceptions.ConfigurationError(
                'claim %s must be a non-empty string, got %r' % (what, value))
        _keys.validate_lock_name(value)
    try:
        json.dumps(data)
    except (TypeError, ValueError) as exc:
        raise exceptions.ConfigurationError(
            'claim data must be JSON-serialisable: %s' % exc) from exc
    return {'claim_id': uuid.uuid4().hex, 'resource_type': resource_type,
            'resource_id': resource_id, 'operation': operation, 'data': data,
            'node': node, 'member_id': member_id, 'started_at': time.time(),
            'state': ACTIVE, 'attempt': 0, 'format': CLAIM_FORMAT}


class ClaimRecord(dict):
    """A claim as stored: ``claim_id``, ``resource_type``, ``resource_id``,
    ``operation``, ``data``, ``node``, ``member_id``, ``started_at``,
    ``state``, ``attempt`` (recoveries started), ``recoverer``,
    ``last_error``, ``next_retry_at``; the keys are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Claim:
    """An open claim (the object ``coordinator.claim()`` yields).

    ``recovered_elsewhere`` becomes True once this process learns that a
    recoverer took the claim (it was thought dead: its session was lost
    while the operation ran): at :meth:`finish`, when the claim is rebound
    to a new session, or when the block ends.

    Thread-safe: :meth:`finish`, the rebind after a new session and the
    block's end are serialized on the claim.
    """

    def __init__(self, manager, key, record):
        self._manager = manager
        self._lock = threading.Lock()
        self.key = key
        self.record = record
        self.claim_id = record['claim_id']
        self.revision = None
        self.recovered_elsewhere = False
        self.finished = False
        self.late = None
        #: why this process gave the claim up for recovery, or None
        self.handed_over = None

    def __repr__(self):
        return '<Claim %s %s/%s>' % (self.record['operation'],
                                     self.record['resource_type'],
                                     self.record['resource_id'])

    def __enter__(self):
        self._manager._open(self)
        return self

    def __exit__(self, *exc):
        self._manager._close(
            self, failed=exc[0] is not None,
            fenced=exc[0] is not None and issubclass(exc[0],
                                                     exceptions.Fenced))

    def finish(self):
        """Fence the operation's completion: mark the claim ``finishing`` in
        etcd (a compare-and-swap on our own revision) so that no recoverer
        can take it while this process's lease lives. Call it right before
        the final write of the resource; idempotent. Blocks for one etcd
        request (none when already finished).

        :returns: self.
        :raises ClaimRecovered: a recoverer took the claim first: do not
            make the final write (the recovery's outcome stands); the late
            result has been recorded (``late``, and ``hacluster status``).
        :raises BackendUnavailable: etcd did not answer; the claim is left
            as it was (finish again, or let the block end: the claim stays
            and is recovered if this node's lease goes).
        """
        return self._manager._finish(self)

    def hand_over(self, reason):
        """Give this claim up to recovery: when the block ends it is left
        in etcd, bound to no lease, for the leader to recover (instead of
        being removed). For an operation that found it cannot finish safely.
        Thread-safe; no request."""
        self._manager.hand_over(self, reason)

    def record_late(self, current=None):
        """Record that this operation's result came too late (its claim was
        recovered elsewhere, or a store refused the final write): once per
        claim; returns the late record (``message`` says what happened).
        Blocks for one etcd request the first time."""
        with self._lock:
            if self.late is None:
                self.late = self._manager._record_late(self, current)
            return self.late

    def still_owned(self):
        """False once this process knows the claim was recovered elsewhere
        or its session is past the renew deadline. Cheap (no request); a
        True is no promise for the future -- use :meth:`finish`."""
        return not self.recovered_elsewhere and \
            self._manager._session_valid()


class RecoveryManager:
    """Claims and their recovery for one coordinator. Internal: its public
    face is ``coordinator.claim()``, ``register_recovery()``,
    ``list_claims()`` and ``recover_node()``."""

    def __init__(self, coord, scan_interval=30.0, max_backoff=60.0,
                 claim_grace=30.0, absence_grace=1.0):
        self._coord = coord
        self._prefix = coord.layout.claims
        self._handlers = {}
        self._open_claims = 0
        self._claims = {}            # claim_id -> open Claim of ours
        self._open_cond = threading.Condition()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None
        # A full scan this often; member departures and operator requests
        # wake the loop at once, and retries and graces schedule wake-ups.
        self._scan_interval = scan_interval
        self.max_backoff = max_backoff
        self.claim_grace = claim_grace
        #: Seconds a claim whose lease is gone is left to its owner when the
        #: owner itself is a live member again (it lost its session and
        #: re-registered, and is rebinding its claims to the new lease).
        self.absence_grace = absence_grace
        self._absent_since = {}      # claim_id or member_id -> monotonic
        self._inflight = set()       # claim ids whose handler runs here
        self._inflight_lock = threading.Lock()
        self._next_due = None
        self._skipped_types = set()
        #: recoveries this node completed / failed (for status and tests)
        self.recovered = 0
        self.failures = 0
        #: late results this process recorded (its claim had been recovered)
        self.late_results = 0
        self._tomb = None            # (lease, monotonic granted at)

    # -- keys ------------------------------------------------------------------

    def node_prefix(self, node):
        return self._coord.layout.claims_of(node)

    def _session_valid(self):
        return self._coord.session.valid()

    # -- claims ----------------------------------------------------------------

    def claim(self, resource_type, resource_id, operation, data=None):
        coord = self._coord
        record = new_claim_record(coord.node, coord.member_id, resource_type,
                                  resource_id, operation, data)
        key = coord.layout.claim(coord.node, resource_type, resource_id,
                                 operation, record['claim_id'])
        return Claim(self, key, record)

    @property
    def recovering_count(self):
        """Recoveries whose handler runs here now (no request)."""
        with self._inflight_lock:
            return len(self._inflight)

    @property
    def open_count(self):
        """Claims of this process open now (thread-safe, no request)."""
        with self._open_cond:
            return self._open_claims

    def _open(self, claim):
        coord = self._coord
        coord._check_running()
        _epoch, lease = coord.session.current()
        if lease is None:
            raise exceptions.SessionLost(
                'cannot open a claim for %s of %s %s: %s/%s has no live '
                'session' % (claim.record['operation'],
                             claim.record['resource_type'],
                             claim.record['resource_id'], coord.cluster,
                             coord.node))
        with claim._lock:
            claim.record['lease'] = lease
            claim.revision = coord.client.put(claim.key,
                                              json.dumps(claim.record))
        with self._open_cond:
            self._open_claims += 1
            self._claims[claim.claim_id] = claim
        _epoch, now = coord.session.current()
        if now is not None and now != lease:
            # The session was replaced while we wrote (the rebind of the
            # open claims may have missed this one): rebind it now.
            self.rebind(now, [claim])

    def _finish(self, claim):
        self._coord.fence_point()
        with claim._lock:
            if claim.finished:
                return claim
            if claim.recovered_elsewhere:
                raise self._refused(claim, 'finish')
            record = dict(claim.record, state=FINISHING,
                          finishing_at=time.time())
            resp = self._coord.client.txn(
                compare=[_etcd.mod_revision_is(claim.key, claim.revision)],
                success=[_etcd.put_op(claim.key, json.dumps(record))],
                failure=[_etcd.range_op(claim.key)])
            if resp.succeeded:
                claim.revision = resp.revision
                claim.record = record
                claim.finished = True
                return claim
            kvs = resp.kvs(0)
            current = kvs[0].json() if kvs else None
            if current is None and self._tombstone_of(claim) is None:
                # Gone without a recovery (an operator's delete): nobody
                # acted on the resource; put the claim back, finishing.
                resp = self._coord.client.txn(
                    compare=[_etcd.create_revision_is(claim.key, 0)],
                    success=[_etcd.put_op(claim.key, json.dumps(record))])
                if resp.succeeded:
                    LOG.warning('hacluster: claim %s was deleted from etcd '
                                'by someone else (not recovered); put it '
                                'back', claim.claim_id)
                    claim.revision = resp.revision
                    claim.record = record
                    claim.finished = True
                    return claim
            claim.recovered_elsewhere = True
            raise self._refused(claim, 'finish', current)

    def _tombstone_of(self, claim):
        kv = self._coord.client.get(self._coord.layout.tombstone(
            claim.claim_id))
        return kv.json() if kv else None

    def hand_over(self, claim, reason):
        """This process gives up ``claim`` (it cannot finish it safely, e.g.
        etcd did not confirm its finish): at the block's end the claim is
        left for recovery, bound to no lease, instead of being removed."""
        with claim._lock:
            if claim.handed_over is None:
                claim.handed_over = reason
                LOG.error('hacluster: claim %s (%s %s/%s) handed over to '
                          'recovery: %s', claim.claim_id,
                          claim.record['operation'],
                          claim.record['resource_type'],
                          claim.record['resource_id'], reason)

    def _refused(self, claim, when, current=None):
        """Record the late result of ``claim`` (taken by a recoverer) and
        return the ClaimRecovered to raise."""
        if claim.late is None:
            claim.late = self._record_late(claim, current)
        return exceptions.ClaimRecovered(claim.late['message'],
                                         late=claim.late)

    def _record_late(self, claim, current):
        rec = claim.record
        if current is None:
            try:
                kv = self._coord.client.get(self._coord.layout.tombstone(
                    claim.claim_id))
                current = kv.json() if kv else None
            except exceptions.HAClusterError:
                current = None
        by = (current or {}).get('recoverer_node') or 'another node'
        message = ('node %s finished %s of %s %s after it was recovered by '
                   '%s: its result was not written; the recovery\'s outcome '
                   'stands and what the operation made (a backend object) '
                   'may exist' % (rec['node'], rec['operation'],
                                  rec['resource_type'], rec['resource_id'],
                                  by))
        late = {'claim_id': claim.claim_id, 'node': rec['node'],
                'member_id': rec['member_id'],
                'resource_type': rec['resource_type'],
                'resource_id': rec['resource_id'],
                'operation': rec['operation'], 'data': rec.get('data'),
                'recovered_by': by, 'at': time.time(), 'message': message,
                'format': CLAIM_FORMAT}
        LOG.error('hacluster: %s (claim %s)', message, claim.claim_id)
        self.late_results += 1
        try:
            self._coord.client.put(self._coord.layout.late_result(
                claim.claim_id), json.dumps(late))
        except exceptions.HAClusterError as exc:
            LOG.warning('hacluster: could not record the late result of '
                        'claim %s: %s', claim.claim_id, _url.scrub(exc))
        return late

    def _close(self, claim, failed=False, fenced=False):
        """End the claim's block: remove the claim (a compare-and-swap on
        our revision), or -- handed over, or the block died fenced -- leave
        it for recovery, bound to no lease. A claim a recoverer took is
        reported. etcd unreachable: retried in the background."""
        if fenced and claim.handed_over is None:
            self.hand_over(claim, 'the operation was fenced midway')
        try:
            self._end(claim, failed)
        except exceptions.HAClusterError as exc:
            LOG.warning('hacluster: could not end claim %s (%s); retrying in '
                        'the background', claim.claim_id, _url.scrub(exc))
            threading.Thread(target=self._end_later, args=(claim, failed),
                             daemon=True, name='hacluster-claim-end').start()
        finally:
            with self._open_cond:
                self._open_claims -= 1
                self._claims.pop(claim.claim_id, None)
                self._open_cond.notify_all()

    def _end_later(self, claim, failed):
        delay = 0.2
        while not self._stop.is_set():
            time.sleep(delay)
            try:
                self._end(claim, failed)
                return
            except exceptions.HAClusterError:
                delay = min(delay * 2, 5.0)

    def _end(self, claim, failed):
        current = None
        with claim._lock:
            if claim.recovered_elsewhere:
                taken = True
            else:
                if claim.handed_over is not None:
                    record = dict(claim.record, state=ACTIVE, lease=0,
                                  handed_over=claim.handed_over)
                    success = [_etcd.put_op(claim.key, json.dumps(record))]
                else:
                    success = [_etcd.delete_op(claim.key)]
                resp = self._coord.client.txn(
                    compare=[_etcd.mod_revision_is(claim.key,
                                                   claim.revision)],
                    success=success, failure=[_etcd.range_op(claim.key)])
                taken = not resp.succeeded
                if taken:
                    kvs = resp.kvs(0)
                    current = kvs[0].json() if kvs else None
                else:
                    claim.revision = resp.revision
        if not taken:
            return
        claim.recovered_elsewhere = True
        if claim.late is None and not failed:
            # The block ran to its end without finish(): record it all
            # the same, the recovery may have undone its work.
            claim.late = self._record_late(claim, current)
        elif claim.late is None:
            LOG.error('hacluster: claim %s (%s %s/%s) was taken for recovery '
                      'while its operation ran here (this node was thought '
                      'dead); the operation failed here too', claim.claim_id,
                      claim.record['operation'],
                      claim.record['resource_type'],
                      claim.record['resource_id'])

    def rebind(self, lease, claims=None):
        """Move every open claim of ours onto ``lease`` (our new session):
        a claim stays bound to a live lease while its operation runs. A
        claim a recoverer took meanwhile is marked recovered_elsewhere.
        Blocks for one etcd request per open claim; errors are logged (the
        claim stays on the old lease and may be recovered: its finish will
        then be refused)."""
        if claims is None:
            with self._open_cond:
                claims = list(self._claims.values())
        for claim in claims:
            with claim._lock:
                # (under the claim's lock: of two rebinds racing, an older
                # one never lands after a newer one)
                if claim.recovered_elsewhere or claim.revision is None or \
                        claim.handed_over is not None or \
                        claim.record.get('lease') == lease or \
                        self._coord.session.current()[1] != lease:
                    continue
                record = dict(claim.record, lease=lease)
                try:
                    resp = self._coord.client.txn(
                        compare=[_etcd.mod_revision_is(claim.key,
                                                       claim.revision)],
                        success=[_etcd.put_op(claim.key, json.dumps(record))])
                except exceptions.HAClusterError as exc:
                    LOG.warning('hacluster: could not rebind claim %s to the '
                                'new session: %s', claim.claim_id,
                                _url.scrub(exc))
                    continue
                if resp.succeeded:
                    claim.revision = resp.revision
                    claim.record = record
                else:
                    claim.recovered_elsewhere = True
                    LOG.error('hacluster: claim %s (%s %s/%s) was recovered '
                              'by another node while this one had no '
                              'session; its result will not be written',
                              claim.claim_id, claim.record['operation'],
                              claim.record['resource_type'],
                              claim.record['resource_id'])

    def wait_open_claims(self, timeout):
        """Block until no claim of this process is open, or ``timeout``;
        returns the number still open."""
        deadline = time.monotonic() + timeout
        with self._open_cond:
            while self._open_claims > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._open_cond.wait(left)
            return self._open_claims

    def list_claims(self, node=None):
        """Every claim (of ``node``, if given) as ClaimRecords, with the
        etcd ``key`` and ``mod_revision`` added."""
        prefix = self.node_prefix(node) if node else self._prefix
        kvs, _ = self._coord.client.get_prefix(prefix)
        out = []
        for kv in kvs:
            rec = ClaimRecord(kv.json())
            rec['key'] = kv.key
            rec['mod_revision'] = kv.mod_revision
            out.append(rec)
        return out

    # -- handlers and the recovery loop ------------------------------------------

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
                    self.recover_node(self._coord.node, own=True)
                    own_done = True
                if self._coord.is_leader and self._handlers:
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
        layout = self._coord.layout
        resp = self._coord.client.txn(success=[
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
            ttl = self._coord.client.lease_time_to_live(lease)
            cache[lease] = ttl
            if ttl >= 0:
                # Alive: look again when it could have expired (its holder
                # may have died without a member record to tell us).
                self._due_in(min(self._scan_interval, ttl + 0.2))
        return cache[lease] < 0

    def _graced(self, key):
        """True once ``key`` has been waited on for absence_grace."""
        first = self._absent_since.setdefault(key, time.monotonic())
        left = first + self.absence_grace - time.monotonic()
        if left > 0:
            self._due_in(left)
            return False
        return True

    def _holder_gone(self, record, member_key, lease_key, live, leases):
        """Is the process that holds ``record`` provably gone? Its session
        lease must be gone; if that process is a live member again (a new
        session), it gets absence_grace to rebind the claim first."""
        member_id = record.get(member_key)
        lease = record.get(lease_key)
        if lease is None:
            # A record without a lease (written before leases were
            # recorded): judge by the member's presence, with the grace.
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

    def _orphaned(self, record, live, now, leases):
        state = record.get('state')
        if state in (ACTIVE, FINISHING):
            return self._holder_gone(record, 'member_id', 'lease', live,
                                     leases)
        if state == RECOVERING:
            if record.get('recoverer') == self._coord.member_id:
                # Ours: orphaned only if no handler of ours runs it (an
                # etcd error left it marked after we gave up on it).
                with self._inflight_lock:
                    return record.get('claim_id') not in self._inflight
            return self._holder_gone(record, 'recoverer', 'recoverer_lease',
                                     live, leases)
        if state == FAILED:
            if record.get('failed_by') not in (None, self._coord.member_id):
                # Failed on another node (which may have had no handler for
                # it): this node may have one; try at once.
                return True
            due = (record.get('next_retry_at') or 0) - now
            if due > 0:
                self._due_in(due)
                return False
            return True
        return False

    def scan(self):
        """Recover every orphaned claim (leader only: each take also
        requires still leading in the term). Returns the number recovered."""
        term = self._coord.term
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
            live.pop(self._coord.member_id, None)
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
            if term is not None and self._coord.term != term:
                break               # deposed meanwhile: stop taking claims
            record = ClaimRecord(kv.json())
            if record.get('member_id') == self._coord.member_id and \
                    record.get('state') in (ACTIVE, FINISHING):
                continue            # our own, running here
            if not self._orphaned(record, live, now, leases):
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
                                rtype, self._coord.node)
            if self._take_and_handle(kv, record, handler, term):
                count += 1
        return count

    def _tombstone_lease(self):
        """A lease of TOMBSTONE_TTL seconds shared by the tombstones of one
        stretch of recoveries (renewed after a while, never kept alive)."""
        now = time.monotonic()
        if self._tomb is None or now - self._tomb[1] > TOMBSTONE_TTL / 2:
            lease, _ttl = self._coord.client.lease_grant(TOMBSTONE_TTL)
            self._tomb = (lease, now)
        return self._tomb[0]

    def _no_handler(self, claim):
        raise exceptions.NoRecoveryHandler(
            'no recovery handler for claims of type %r on node %s'
            % (claim.resource_type, self._coord.node))

    def _take_and_handle(self, kv, record, handler, term=None):
        coord = self._coord
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
        coord = self._coord
        # The holder's lease was seen gone (for good: leases never come
        # back); the claim must still be as we saw it -- a rebind or a
        # finish by its owner, or another recoverer, changed its revision.
        compare = [_etcd.mod_revision_is(kv.key, kv.mod_revision)]
        put = [_etcd.put_op(kv.key, json.dumps(taken))]
        try:
            if term is not None and coord._election is not None:
                resp = coord._election.guarded_txn(term, put,
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
        coord = self._coord
        LOG.info('hacluster: recovering claim %s: %s %s/%s of %s (member '
                 '%s), attempt %d', record.get('claim_id'),
                 record.get('operation'), record.get('resource_type'),
                 record.get('resource_id'), record.get('node'),
                 record.get('member_id'), taken['attempt'])
        try:
            handler(ClaimRecord(taken))
        except Exception as exc:
            self.failures += 1
            backoff = min(self.max_backoff, 2.0 ** (taken['attempt'] - 1))
            failed = dict(taken, state=FAILED, last_error=_url.scrub(
                '%s: %s' % (type(exc).__name__, exc)),
                failed_at=time.time(), failed_by=coord.member_id,
                failed_on=coord.node, next_retry_at=time.time() + backoff)
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
                coord.client.txn(
                    compare=[_etcd.mod_revision_is(kv.key, revision)],
                    success=[_etcd.put_op(kv.key, json.dumps(failed))])
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
