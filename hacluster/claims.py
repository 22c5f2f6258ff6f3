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

"""Claims: durable records of in-flight work, and their fenced end.

A node records a **claim** in etcd when it starts an operation that must not
be left half-done::

    with coord.claim('share', share_id, 'create', data={'size': 10}) as c:
        driver.create_share(...)
        c.finish()                  # before the final write
        db.mark_available(share_id)

The claim key is durable (not bound to the session lease) and removed when
the block exits, normally or by exception (the operation's own error path
owns that case). If the process dies, the claim stays and the leader
recovers it (:mod:`hacluster.recovery`)::

    /hacluster/v1/<cluster>/claims/<node>/<type>/<id>/<operation>.<claim id>

Every claim records the session lease of the process that opened it, and is
rebound to the new lease when that process's session is replaced: a claim
is recovered only once etcd says its lease is gone.

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
manager makes its status writes conditional on the transitional status, as
the recovery handlers do. An owner that cannot finish safely hands the
claim over (:meth:`Claim.hand_over`): it is left for recovery, bound to no
lease.

This module owns the claim record's format (:data:`CLAIM_FORMAT`) and the
late-result record; :mod:`hacluster.recovery` reads them.
"""

import json
import logging
import threading
import time
import uuid

from hacluster import backoff as _backoff
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


def holder(record):
    """``(member_id, lease)`` of the process whose death orphans the claim
    ``record``: its owner while ``active`` or ``finishing``, its recoverer
    while ``recovering``; None when nobody holds it (``failed``). A lease of
    0 means handed over (orphaned at once); None, a record written before
    leases were recorded (judged by the member's presence). The one rule,
    for recovery and for the status command."""
    state = record.get('state')
    if state in (ACTIVE, FINISHING):
        return record.get('member_id'), record.get('lease')
    if state == RECOVERING:
        return record.get('recoverer'), record.get('recoverer_lease')
    return None


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

    def __init__(self, book, key, record):
        self._manager = book
        #: serializes finish, rebind and the block's end (the book takes it)
        self.mutex = threading.Lock()
        self.key = key
        self.record = record
        self.claim_id = record['claim_id']
        self.revision = None
        self.recovered_elsewhere = False
        self.finished = False
        self.late = None
        #: why this process gave the claim up for recovery, or None
        self.handed_over = None
        #: True once the claim's record was ended in etcd ahead of its
        #: block (handed over by a stopping coordinator)
        self.ended = False

    def __repr__(self):
        return '<Claim %s %s/%s>' % (self.record['operation'],
                                     self.record['resource_type'],
                                     self.record['resource_id'])

    def __str__(self):
        """``claim <id> (<operation> <type>/<id>)``, for log lines."""
        return 'claim %s (%s %s/%s)' % (
            self.claim_id, self.record['operation'],
            self.record['resource_type'], self.record['resource_id'])

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
        with self.mutex:
            if self.late is None:
                self.late = self._manager._record_late(self, current)
            return self.late

    def still_owned(self):
        """False once this process knows the claim was recovered elsewhere
        or its session is past the renew deadline. Cheap (no request); a
        True is no promise for the future -- use :meth:`finish`."""
        return not self.recovered_elsewhere and \
            self._manager._session_valid()


class ClaimBook:
    """The claims this process opens: their records, finish, hand-over,
    rebind after a new session, and late results. Internal: its public face
    is ``coordinator.claim()``.

    :param ctx: the coordinator's :class:`hacluster.context.Context`.

    Thread-safe.
    """

    def __init__(self, ctx):
        self._ctx = ctx
        self._open_claims = 0
        self._claims = {}            # claim_id -> open Claim of ours
        self._open_cond = threading.Condition()
        self._stop = threading.Event()
        #: late results this process recorded (its claim had been recovered)
        self.late_results = 0
        #: claims this process opened (for the metrics)
        self.opened = 0

    def close(self):
        """Stop retrying claim ends in the background (coordinator stop)."""
        self._stop.set()

    def _session_valid(self):
        return self._ctx.session.valid()

    def claim(self, resource_type, resource_id, operation, data=None):
        coord = self._ctx
        record = new_claim_record(coord.node, coord.member_id, resource_type,
                                  resource_id, operation, data)
        if coord.compat is not None:
            # the newest format every live member reads (hacluster.protocol)
            record['format'] = coord.compat.write_format('claim')
            if record['format'] >= 2:
                record['written_by'] = coord.compat.own.protocol
        key = coord.layout.claim(coord.node, resource_type, resource_id,
                                 operation, record['claim_id'])
        return Claim(self, key, record)

    @property
    def open_count(self):
        """Claims of this process open now (thread-safe, no request)."""
        with self._open_cond:
            return self._open_claims

    def _open(self, claim):
        coord = self._ctx
        coord.check_running()
        _epoch, lease = coord.session.current()
        if lease is None:
            raise exceptions.SessionLost(
                'cannot open a claim for %s of %s %s: %s/%s has no live '
                'session' % (claim.record['operation'],
                             claim.record['resource_type'],
                             claim.record['resource_id'], coord.cluster,
                             coord.node))
        with claim.mutex:
            claim.record['lease'] = lease
            claim.revision = coord.client.put(claim.key,
                                              json.dumps(claim.record))
        with self._open_cond:
            self._open_claims += 1
            self.opened += 1
            self._claims[claim.claim_id] = claim
        _epoch, now = coord.session.current()
        if now is not None and now != lease:
            # The session was replaced while we wrote (the rebind of the
            # open claims may have missed this one): rebind it now.
            self.rebind(now, [claim])

    def _finish(self, claim):
        self._ctx.fence_point()
        with claim.mutex:
            if claim.finished:
                return claim
            if claim.recovered_elsewhere:
                raise self._refused(claim)
            if claim.ended:
                raise exceptions.Fenced(
                    '%s was handed over to recovery (%s): its result must '
                    'not be written' % (claim, claim.handed_over))
            record = dict(claim.record, state=FINISHING,
                          finishing_at=time.time())
            resp = self._ctx.client.txn(
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
                resp = self._ctx.client.txn(
                    compare=[_etcd.create_revision_is(claim.key, 0)],
                    success=[_etcd.put_op(claim.key, json.dumps(record))])
                if resp.succeeded:
                    LOG.warning('hacluster: %s was deleted from etcd by '
                                'someone else (not recovered); put it back',
                                claim)
                    claim.revision = resp.revision
                    claim.record = record
                    claim.finished = True
                    return claim
            claim.recovered_elsewhere = True
            raise self._refused(claim, current)

    def _tombstone_of(self, claim):
        """The tombstone a recoverer left for ``claim`` (naming itself), or
        None. Blocks for one request.

        :raises HAClusterError: etcd could not be read."""
        kv = self._ctx.client.get(self._ctx.layout.tombstone(
            claim.claim_id))
        return kv.json() if kv else None

    def hand_over(self, claim, reason):
        """This process gives up ``claim`` (it cannot finish it safely, e.g.
        etcd did not confirm its finish): at the block's end the claim is
        left for recovery, bound to no lease, instead of being removed."""
        with claim.mutex:
            if claim.handed_over is None:
                claim.handed_over = reason
                LOG.error('hacluster: %s handed over to recovery: %s',
                          claim, reason)

    def _refused(self, claim, current=None):
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
                current = self._tombstone_of(claim)
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
        LOG.error('hacluster: %s (%s)', message, claim)
        self.late_results += 1
        try:
            self._ctx.client.put(self._ctx.layout.late_result(
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
            if not claim.ended:
                self._end(claim, failed)
        except exceptions.HAClusterError as exc:
            LOG.warning('hacluster: could not end %s (%s); retrying in the '
                        'background', claim, _url.scrub(exc))
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
            time.sleep(_backoff.jittered(delay))
            try:
                self._end(claim, failed)
                return
            except exceptions.HAClusterError:
                delay = _backoff.doubled(delay, 5.0)

    def _end(self, claim, failed):
        current = None
        with claim.mutex:
            if claim.recovered_elsewhere:
                taken = True
            else:
                if claim.handed_over is not None:
                    record = dict(claim.record, state=ACTIVE, lease=0,
                                  handed_over=claim.handed_over)
                    success = [_etcd.put_op(claim.key, json.dumps(record))]
                else:
                    success = [_etcd.delete_op(claim.key)]
                resp = self._ctx.client.txn(
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
            LOG.error('hacluster: %s was taken for recovery while its '
                      'operation ran here (this node was thought dead); the '
                      'operation failed here too', claim)

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
            with claim.mutex:
                # (under the claim's lock: of two rebinds racing, an older
                # one never lands after a newer one)
                if claim.recovered_elsewhere or claim.revision is None or \
                        claim.handed_over is not None or \
                        claim.record.get('lease') == lease or \
                        self._ctx.session.current()[1] != lease:
                    continue
                record = dict(claim.record, lease=lease)
                try:
                    resp = self._ctx.client.txn(
                        compare=[_etcd.mod_revision_is(claim.key,
                                                       claim.revision)],
                        success=[_etcd.put_op(claim.key, json.dumps(record))])
                except exceptions.HAClusterError as exc:
                    LOG.warning('hacluster: could not rebind %s to the new '
                                'session: %s', claim, _url.scrub(exc))
                    continue
                if resp.succeeded:
                    claim.revision = resp.revision
                    claim.record = record
                else:
                    claim.recovered_elsewhere = True
                    LOG.error('hacluster: %s was recovered by another node '
                              'while this one had no session; its result '
                              'will not be written', claim)

    def hand_over_open(self, reason):
        """Hand every claim still open over to recovery and end its record
        now (left in etcd bound to no lease, so the leader recovers it at
        once instead of after this session's lease and the absence grace):
        for a coordinator that stops while operations still run. Their
        blocks may still end later; their ``finish()`` raises
        :class:`~hacluster.exceptions.Fenced`. Returns how many were handed
        over. Blocks for one etcd request per claim; a claim etcd did not
        take is left to the lease revoke (recovered a little later)."""
        with self._open_cond:
            claims = list(self._claims.values())
        handed = 0
        for claim in claims:
            with claim.mutex:
                if claim.finished or claim.ended or claim.revision is None:
                    continue    # finishing: its own write ends it
            self.hand_over(claim, reason)
            try:
                self._end(claim, failed=True)
            except exceptions.HAClusterError as exc:
                LOG.warning('hacluster: could not hand %s over (%s); it is '
                            'recovered once the lease is revoked', claim,
                            _url.scrub(exc))
                continue
            claim.ended = True
            handed += 1
        return handed

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
