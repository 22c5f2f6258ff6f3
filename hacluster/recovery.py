"""Recovery: durable claims for in-flight work, cleaned up when a node dies.

A node records a **claim** in etcd when it starts an operation that must not
be left half-done::

    with coord.claim('share', share_id, 'create', data={'size': 10}):
        driver.create_share(...)

The claim key is durable (not bound to the session lease) and removed when
the block exits, normally or by exception (the operation's own error path
owns that case). If the process dies, the claim stays::

    /hacluster/v1/<cluster>/claims/<node>/<type>/<id>/<operation>.<claim id>

**Automatic recovery.** The leader watches for claims whose owner is no
longer a member (its session expired, or it stopped leaving claims open). It
reads the members and the claims in one transaction -- at one revision, so a
claim is never mistaken for an orphan because the view of members lags. It
takes each orphan with a compare-and-swap into ``recovering`` by itself
(``recoverer``), calls the handler registered for the claim's resource type,
and deletes the claim. Two survivors never take the same claim. A claim whose
recoverer died or lost its session is taken again by the next leader. A node
restarting under the same name recovers its previous incarnation's claims
itself at start, race-free with the leader (the same compare-and-swap).

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

from hacluster import _etcd
from hacluster import exceptions
from hacluster import keys as _keys
from hacluster import url as _url

LOG = logging.getLogger(__name__)

ACTIVE = 'active'
RECOVERING = 'recovering'
FAILED = 'failed'


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
            'state': ACTIVE, 'attempt': 0}


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

    ``recovered_elsewhere`` is True if, when the block ended, the claim had
    been taken by a recoverer (this node was thought dead: its session was
    lost while the operation ran).
    """

    def __init__(self, manager, key, record):
        self._manager = manager
        self.key = key
        self.record = record
        self.claim_id = record['claim_id']
        self.revision = None
        self.recovered_elsewhere = False

    def __repr__(self):
        return '<Claim %s %s/%s>' % (self.record['operation'],
                                     self.record['resource_type'],
                                     self.record['resource_id'])

    def __enter__(self):
        self._manager._open(self)
        return self

    def __exit__(self, *exc):
        self._manager._close(self)


class RecoveryManager:
    """Claims and their recovery for one coordinator. Internal: its public
    face is ``coordinator.claim()``, ``register_recovery()``,
    ``list_claims()`` and ``recover_node()``."""

    def __init__(self, coord, scan_interval=30.0, max_backoff=60.0,
                 claim_grace=30.0, absence_grace=1.0):
        self._coord = coord
        self._prefix = coord.layout.root + 'claims/'
        self._handlers = {}
        self._open_claims = 0
        self._open_cond = threading.Condition()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None
        # A full scan this often; member departures and operator requests
        # wake the loop at once, and retries and graces schedule wake-ups.
        self._scan_interval = scan_interval
        self.max_backoff = max_backoff
        self.claim_grace = claim_grace
        #: Seconds a claim's owner must have been seen absent before its
        #: claim is taken: a member that lost its session re-registers
        #: within milliseconds when etcd is reachable, and must not have
        #: its work recovered under it meanwhile.
        self.absence_grace = absence_grace
        self._absent_since = {}      # member_id -> monotonic first seen gone
        self._inflight = set()       # claim ids whose handler runs here
        self._next_due = None
        self._skipped_types = set()
        self._member_revs = {}
        #: recoveries this node completed / failed (for status and tests)
        self.recovered = 0
        self.failures = 0

    # -- keys ------------------------------------------------------------------

    def _key(self, node, rtype, rid, operation, claim_id):
        return '%s%s/%s/%s/%s.%s' % (
            self._prefix, _keys.quote_segment(node),
            _keys.quote_segment(rtype), _keys.quote_segment(rid),
            _keys.quote_segment(operation), claim_id)

    def node_prefix(self, node):
        return '%s%s/' % (self._prefix, _keys.quote_segment(node))

    # -- claims ----------------------------------------------------------------

    def claim(self, resource_type, resource_id, operation, data=None):
        coord = self._coord
        record = new_claim_record(coord.node, coord.member_id, resource_type,
                                  resource_id, operation, data)
        key = self._key(coord.node, resource_type, resource_id, operation,
                        record['claim_id'])
        return Claim(self, key, record)

    def _open(self, claim):
        self._coord._check_running()
        claim.revision = self._coord.client.put(claim.key,
                                                json.dumps(claim.record))
        with self._open_cond:
            self._open_claims += 1

    def _close(self, claim):
        try:
            resp = self._coord.client.txn(
                compare=[_etcd.mod_revision_is(claim.key, claim.revision)],
                success=[_etcd.delete_op(claim.key)])
            if not resp['succeeded']:
                claim.recovered_elsewhere = True
                LOG.error('hacluster: claim %s (%s %s/%s) was taken for '
                          'recovery while its operation ran here (this '
                          'node was thought dead); the recovery handler '
                          'may have acted on the resource too', claim.claim_id,
                          claim.record['operation'],
                          claim.record['resource_type'],
                          claim.record['resource_id'])
        except exceptions.HAClusterError as exc:
            # The claim stays: better a recovery of finished work (the
            # handler checks the resource) than work left half-done.
            LOG.warning('hacluster: could not remove claim %s (%s); it will '
                        'be recovered when this node leaves',
                        claim.claim_id, _url.scrub(exc))
        finally:
            with self._open_cond:
                self._open_claims -= 1
                self._open_cond.notify_all()

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
        live maps member_id -> (node, member key create revision)."""
        layout = self._coord.layout
        resp = self._coord.client.txn(success=[
            _etcd.range_op(layout.members, _keys.prefix_end(layout.members)),
            _etcd.range_op(prefix, _keys.prefix_end(prefix))])
        live = {}
        self._member_revs = {}
        for kv in _etcd.range_kvs(resp['responses'][0]):
            rec = kv.json()
            live[rec.get('member_id')] = kv.create_revision
            self._member_revs[rec.get('node')] = kv.create_revision
        return live, _etcd.range_kvs(resp['responses'][1])

    def _gone_long_enough(self, member_id, live):
        """True once ``member_id`` has been absent for absence_grace."""
        if member_id in live:
            self._absent_since.pop(member_id, None)
            return False
        first = self._absent_since.setdefault(member_id, time.monotonic())
        left = first + self.absence_grace - time.monotonic()
        if left > 0:
            self._due_in(left)
            return False
        return True

    def _orphaned(self, record, live, now):
        state = record.get('state')
        if state == ACTIVE:
            return self._gone_long_enough(record.get('member_id'), live)
        if state == RECOVERING:
            if record.get('recoverer') == self._coord.member_id:
                # Ours: orphaned only if no handler of ours runs it (an
                # etcd error left it marked after we gave up on it).
                return record.get('claim_id') not in self._inflight
            return self._gone_long_enough(record.get('recoverer'), live)
        if state == FAILED:
            due = (record.get('next_retry_at') or 0) - now
            if due > 0:
                self._due_in(due)
                return False
            return True
        return False

    def scan(self):
        """Recover every orphaned claim this node has a handler for
        (leader only: each take also requires still leading in the term).
        Returns the number recovered."""
        term = self._coord.term
        if term is None:
            return 0
        live, kvs = self._snapshot(self._prefix)
        return self._recover(kvs, live, term=term)

    def recover_node(self, node, own=False, force=False):
        """Recover the orphaned claims of ``node`` now (its claims of live
        members are left alone). With ``own``, the claims of this node's
        earlier incarnations; with ``force`` (an operator who knows the node
        is dead), without waiting for the absence grace. Returns the number
        recovered."""
        live, kvs = self._snapshot(self.node_prefix(node))
        if own:
            live[self._coord.member_id] = 0
        if own or force:
            for kv in kvs:
                mid = kv.json().get('member_id')
                if mid not in live:
                    self._absent_since[mid] = -float('inf')
        return self._recover(kvs, live)

    def _recover(self, kvs, live, term=None):
        now = time.time()
        count = 0
        for kv in kvs:
            if self._stop.is_set():
                break
            if term is not None and self._coord.term != term:
                break               # deposed meanwhile: stop taking claims
            record = ClaimRecord(kv.json())
            if not self._orphaned(record, live, now):
                continue
            rtype = record.get('resource_type')
            handler = self._handlers.get(rtype)
            if handler is None:
                if rtype not in self._skipped_types:
                    self._skipped_types.add(rtype)
                    LOG.warning('hacluster: claims of type %r cannot be '
                                'recovered here (no handler registered on '
                                '%s); they wait for a node that has one',
                                rtype, self._coord.node)
                continue
            if self._take_and_handle(kv, record, handler, term):
                count += 1
        return count

    def _take_and_handle(self, kv, record, handler, term=None):
        coord = self._coord
        taken = dict(record, state=RECOVERING, recoverer=coord.member_id,
                     recoverer_node=coord.node,
                     attempt=int(record.get('attempt') or 0) + 1,
                     taken_at=time.time())
        # Atomically: the claim is as we saw it, and the member we judged
        # gone (owner, or previous recoverer) has not come back since.
        layout = coord.layout
        compare = [_etcd.mod_revision_is(kv.key, kv.mod_revision)]
        judged = record.get('recoverer_node') \
            if record.get('state') == RECOVERING else record.get('node')
        if judged and judged != coord.node:
            compare.append(_etcd.create_revision_is(
                layout.member(judged), self._member_revs.get(judged, 0)))
        put = [_etcd.put_op(kv.key, json.dumps(taken))]
        try:
            if term is not None and coord._election is not None:
                coord._election.guarded_txn(term, put, compare=compare)
                resp = {'succeeded': True, 'responses': [None]}
            else:
                resp = coord.client.txn(compare=compare, success=put)
        except exceptions.NotLeader:
            return False
        except exceptions.HAClusterError as exc:
            # A failed comparison (the claim moved on, the member came back,
            # or we lead no more): not ours to take.
            LOG.debug('hacluster: not taking claim %s: %s',
                      record.get('claim_id'), _url.scrub(exc))
            return False
        if not resp['succeeded']:
            return False            # another recoverer, or it finished
        current = coord.client.get(kv.key)
        if current is None or current.json().get('recoverer') != \
                coord.member_id:
            return False
        revision = current.mod_revision
        self._inflight.add(record.get('claim_id'))
        try:
            return self._handle(kv, record, taken, handler, revision)
        finally:
            self._inflight.discard(record.get('claim_id'))

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
                failed_at=time.time(), next_retry_at=time.time() + backoff)
            LOG.warning('hacluster: recovery of claim %s failed (attempt '
                        '%d): %s; retrying in %.0fs', record.get('claim_id'),
                        taken['attempt'], failed['last_error'], backoff)
            try:
                coord.client.txn(
                    compare=[_etcd.mod_revision_is(kv.key, revision)],
                    success=[_etcd.put_op(kv.key, json.dumps(failed))])
            except exceptions.HAClusterError:
                pass    # left 'recovering' by us: retaken by our next scan
            self._due_in(backoff)
            return False
        try:
            coord.client.txn(
                compare=[_etcd.mod_revision_is(kv.key, revision)],
                success=[_etcd.delete_op(kv.key)])
        except exceptions.HAClusterError as exc:
            # Handled, but still recorded: the next scan runs the handler
            # again (at-least-once; it is idempotent by contract).
            LOG.warning('hacluster: claim %s handled but not removed (%s)',
                        record.get('claim_id'), _url.scrub(exc))
            self._due_in(1.0)
        self.recovered += 1
        return True
