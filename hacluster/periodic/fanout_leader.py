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

"""The leader's side of fan-out tasks.

A cycle: the leader lists the task's items, assigns each to a live member
running the task (:func:`assign_bounded`: a consistent hash ring with
bounded loads), records the assignments in the cycle ledger
(:mod:`hacluster.periodic.ledger`) and casts them to their owners in
batches, one owner after the other in turn (:func:`interleave`), each batch
as soon as its items are in the ledger: every member starts while the rest
of the ledger is written. Then it waits for the members' done markers
(counted from the watch's events, checked against etcd every
``renew_interval``), re-dispatching items whose owner left or whose
deadline passed, until every item is done or given up. A new leader adopts
the cycle its predecessor left unfinished and casts its pending items
again at once (a member ignores an item it already has).

Fan-out is at-least-once per item and cycle (exactly once unless an item is
re-dispatched after its deadline or its owner's departure).
"""

import collections
import itertools
import logging
import threading
import time

from hacluster import exceptions
from hacluster import keys as _keys
from hacluster.periodic import ledger as _ledger
from hacluster.periodic import stats as _stats
from hacluster.periodic import task as _task
from hacluster import url as _url

LOG = logging.getLogger(__name__)


def assign_bounded(members, item_ids, slack=0.05, partitions=2 ** 8):
    """``{item_id: member}``: consistent hashing (tooz.hashring) with
    bounded loads -- no member gets more than ``ceil((1 + slack) * n / m)``
    items. Deterministic for the same members and items.

    :raises HAClusterError: no member.
    """
    import math

    from tooz import hashring

    if not members:
        raise exceptions.HAClusterError('no member to assign items to')
    ring = hashring.HashRing(members, partitions=partitions)
    cap = max(1, math.ceil((1 + slack) * len(item_ids) / len(members)))
    load = dict.fromkeys(members, 0)
    full = set()
    owners = {}
    for item_id in sorted(item_ids):
        owner = next(iter(ring.get_nodes(item_id.encode('utf-8'),
                                         ignore_nodes=full)))
        owners[item_id] = owner
        load[owner] += 1
        if load[owner] >= cap and len(full) < len(members) - 1:
            full.add(owner)
    return owners


def interleave(items, size):
    """The batches to cast ``items`` (``{qid: assignment}``) in:
    ``[(owner, [qid, ...])]`` of at most ``size`` items each, taking one
    batch of each owner in turn (owners sorted, items in their order), so
    that every owner gets its first batch before any gets its second.
    Pure."""
    by_owner = {}
    for q, a in items.items():
        by_owner.setdefault(a['owner'], []).append(q)
    queues = [[(owner, qs[i:i + size]) for i in range(0, len(qs), size)]
              for owner, qs in sorted(by_owner.items())]
    return [batch for turn in itertools.zip_longest(*queues)
            for batch in turn if batch is not None]


def _as_dict(listed):
    """A lister's result as ``{item id: payload}`` (a lister may return
    a dict, any iterable of ids, or None)."""
    if listed is None:
        return {}
    if not isinstance(listed, dict):
        return {item: None for item in listed}
    return listed


class _DoneWake:
    """Watch subscriber on a cycle's done markers: keeps the markers the
    events bring (so that the leader counts them without asking etcd) and
    sets an event on any change, or when events may have been missed
    (:attr:`missed`: then what it keeps must be checked against etcd).
    Thread-safe (events arrive in the watch thread)."""

    def __init__(self):
        self.event = threading.Event()
        self._lock = threading.Lock()
        self._markers = {}
        self._missed = False

    def notify(self, etype, kv):
        if etype == 'PUT':
            with self._lock:
                self._markers[kv.key.rsplit('/', 1)[-1]] = kv
        self.event.set()

    def resync(self):
        with self._lock:
            self._missed = True
        self.event.set()

    def merge(self, done):
        """Add ``done`` (``{qid: marker}``, read from etcd)."""
        with self._lock:
            for q, marker in done.items():
                self._markers.setdefault(q, marker)

    def take_missed(self):
        """True once after events may have been missed."""
        with self._lock:
            missed, self._missed = self._missed, False
            return missed

    def count(self):
        with self._lock:
            return len(self._markers)

    def done(self):
        """``{qid: marker dict}`` of the markers kept."""
        with self._lock:
            markers = dict(self._markers)
        return {q: m.json() if hasattr(m, 'json') else m
                for q, m in markers.items()}


class FanoutLeader:
    """Runs the cycles of fan-out tasks while this node leads.

    :param coord: the coordinator (leadership, live members and their
        records, watch subscriptions, the cycle ledger; passed on to the
        listers in their :class:`CycleContext`).
    :param stopping: a ``threading.Event``, set when the runner stops: a
        cycle being monitored is then left for the next leader.
    :param handle_here: ``handle_here(state, cycle_id, {id: payload})``:
        single-node mode handles the items in-process
        (:meth:`FanoutMember.handle_here`).
    :param tick: ``tick(state)``: one tick of a task, as the runner's
        timer runs it (used to adopt an unfinished cycle at once).

    Thread-safe: each task's cycles are serialised by the runner (its
    ``running`` guard and the cluster task lock).
    """

    def __init__(self, coord, stopping, handle_here, tick):
        self._coord = coord
        self._stopping = stopping
        self._handle_here = handle_here
        self._tick = tick
        self._api = None
        self._server_name = None

    def open(self, api, server_name):
        """Cast through ``api`` (a :class:`hacluster.periodic.rpc.
        FanoutAPI`); ``server_name`` is this member's own RPC server, an
        owner of items like the others. No request."""
        self._api = api
        self._server_name = server_name

    # -- adoption ------------------------------------------------------------

    def adopt_if_unfinished(self, state):
        """Run a tick of a fan-out task at once if its ledger shows a cycle
        left running by a previous leader; retried with backoff for a
        bounded time while that leader still holds the task lock. Blocks
        for up to ``5 * renew_deadline`` plus the cycle; never raises
        (the tick does not)."""
        session = self._coord.session
        deadline = time.monotonic() + session.renew_deadline
        while not self._coord.is_leader and time.monotonic() < deadline:
            time.sleep(0.05)     # the campaign thread is taking office
        # The previous leader may still hold the task lock for a moment (a
        # graceful hand-over: its monitor notices within a second): retry,
        # with backoff, for a bounded time.
        delay, until = 0.2, time.monotonic() + 4 * session.renew_deadline
        while self._coord.is_leader and not self._stopping.is_set():
            try:
                current = _ledger.Ledger(self._coord, state.name).current()
            except exceptions.HAClusterError:
                current = None
            if not _ledger.Ledger.in_progress(current):
                return
            before = state.stats.get('cycles')
            self._tick(state)
            if state.stats.get('cycles') > before or \
                    time.monotonic() > until:
                return
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    # -- a cycle -------------------------------------------------------------

    def run_cycle(self, state, lock, term):
        """Run (or adopt) one cycle of a fan-out task, holding its task
        ``lock`` in leadership ``term``. Blocks until every item is done or
        given up, or until this node may no longer run the cycle (it stays
        unfinished for the next leader).

        :raises HAClusterError: etcd could not be reached (the cycle stays
            in the ledger for the next tick to adopt).
        :raises StaleFencingToken: the task lock was lost.
        :raises Exception: whatever the task's lister raised.
        """
        coord = self._coord
        if coord.single_node:
            return self._run_here(state, term)
        started = time.monotonic()
        ledger = _ledger.Ledger(coord, state.name)
        current = ledger.current()
        if ledger.in_progress(current) and not ledger.readable(current):
            # Left by a newer version, in a format this one does not read:
            # never adopt what cannot be understood. A fresh cycle lists
            # the items again (each handled again at worst, as after any
            # lost cycle).
            LOG.warning('hacluster: task %s: cycle %s was left running in '
                        'format %s, which this version does not read; '
                        'starting a new cycle instead of adopting it',
                        state.name, current.get('cycle_id'),
                        current.get('format'))
            current = None
        wake = _DoneWake()
        adopted = ledger.in_progress(current)
        cycle_id = current['cycle_id'] if adopted else ledger.new_cycle_id()
        done_prefix = ledger.done_prefix(cycle_id)
        # Subscribed before anything is cast: no marker event is missed.
        coord.subscribe(done_prefix, wake)
        try:
            if adopted:
                record = current
                items = ledger.items(cycle_id)
                done = ledger.done(cycle_id)
                wake.merge(done)
                record.update(adopted_by=coord.member_id,
                              adopted_by_node=coord.node, term=term,
                              status=ledger.in_progress_status(cycle_id))
                ledger.update_cycle(lock, record)
                state.stats.count(cycles=1)
                # Cast what is not done yet again at once, at the same
                # attempt (no ledger write): the previous leader may have
                # died before casting it, and waiting item_timeout for
                # items nobody got is what adoption must not do. Only to
                # members that ignore a copy of an item they have (an
                # older one would handle it twice, at once): the items of
                # the others, and of owners that left, are left to the
                # monitor's re-dispatch at their deadline.
                live = self._live(state.name, cycle_id)
                dedup = self._dedup_servers(state.name)
                again = {q: a for q, a in items.items()
                         if q not in done and a.get('owner') in live and
                         a.get('owner') in dedup}
                LOG.info('hacluster: task %s: adopting unfinished cycle %s '
                         '(%d items, %d done, %d cast again) left by %s',
                         state.name, cycle_id, len(items), len(done),
                         len(again), current.get('member_id'))
                self._pin(state)
                unsent = self._dispatch(state, cycle_id, again)
            else:
                ctx = _task.CycleContext(state.name, coord, term=term,
                                         cycle_id=cycle_id)
                listed = state.fn(ctx)
                items = self._assign_new(state, listed, cycle_id)
                record = {'cycle_id': cycle_id,
                          'status': ledger.in_progress_status(cycle_id),
                          'started_at': time.time(), 'node': coord.node,
                          'member_id': coord.member_id, 'term': term,
                          'items': len(items), 'fencing_token':
                          lock.fencing_token}
                unsent = self._create_and_cast(state, ledger, lock, record,
                                               items)
                state.stats.count(cycles=1)
            result = self._monitor(state, ledger, lock, record, items,
                                   wake, unsent)
        finally:
            coord.unsubscribe(done_prefix, wake)
        if result is None:
            return          # aborted: the next leader adopts the cycle
        done, failed, redispatched = result
        per_node = {}
        for marker in done.values():
            node = marker.get('node') or _stats.GIVEN_UP
            per_node[node] = per_node.get(node, 0) + 1
        record.update(status=_ledger.DONE, finished_at=time.time(),
                      done=len(done), failed=failed,
                      redispatched=redispatched, per_node=per_node)
        ledger.finish(lock, record)
        # (for the metrics: hacluster_fanout_cycle_seconds and _items)
        state.stats.record_cycle(time.monotonic() - started, per_node)
        LOG.info('hacluster: task %s cycle %s done: %d items, %d failed, '
                 '%d re-dispatched', state.name, cycle_id, len(done),
                 failed, redispatched)

    def _run_here(self, state, term):
        """Single-node mode: list and handle every item here."""
        cycle_id = _ledger.new_cycle_id()
        ctx = _task.CycleContext(state.name, self._coord, term=term,
                                 cycle_id=cycle_id)
        listed = state.fn(ctx) or {}
        self._handle_here(state, cycle_id, _as_dict(listed))
        state.stats.count(cycles=1)

    def _fanout_members(self, task, cycle_id=None):
        """``{rpc server: node}`` of the live members that run ``task``
        (and, for a cycle whose ledger is apart, read its format: an older
        member would look for its items in the wrong place, find none and
        drop them). No request."""
        from hacluster import protocol as _protocol
        fmt = None if cycle_id is None else \
            _ledger.Ledger.cycle_format(cycle_id)
        servers = {}
        for node, rec in self._coord.live_members().items():
            server = rec.get('fanout_server')
            if server and task in (rec.get('fanout_tasks') or ()):
                if fmt is not None and not _protocol.Compat.from_record(
                        rec).reads('cycle', fmt):
                    continue
                servers[server] = node
        return servers

    def _dedup_servers(self, task):
        """The rpc servers of ``task`` (this node's included) whose member
        records say they ignore a copy of an item they have
        (``fanout_dedup``, hacluster.protocol). No request."""
        from hacluster import protocol as _protocol
        servers = set()
        for rec in self._coord.live_members().values():
            server = rec.get('fanout_server')
            if server and task in (rec.get('fanout_tasks') or ()) and \
                    'fanout_dedup' in _protocol.Compat.from_record(
                        rec).features:
                servers.add(server)
        if self._server_name and \
                'fanout_dedup' in self._coord.compat.own.features:
            servers.add(self._server_name)
        return servers

    def _rpc_cap(self, task):
        """The fan-out RPC version to send ``task``'s items at: the newest
        that this node and every live member running ``task`` serve
        (hacluster.protocol), so an older member is never sent a message it
        would drop as UnsupportedVersion. Read afresh at every dispatch:
        a member joining or leaving moves the pin at once."""
        from hacluster import protocol as _protocol
        members = [_protocol.Compat.from_record(rec)
                   for rec in self._coord.live_members().values()
                   if rec.get('fanout_server') and
                   task in (rec.get('fanout_tasks') or ())]
        return _protocol.fanout_cap(self._coord.compat.own, members)

    def _pin(self, state):
        """The version to send at now (:meth:`_rpc_cap`), recorded in the
        task's state (published with its stats) and logged when it
        moves."""
        version = self._rpc_cap(state.name)
        if version != state.rpc_pin:
            LOG.info('hacluster: task %s: fan-out RPC pinned to %s',
                     state.name, version)
            state.rpc_pin = version
        return version

    def _assign_new(self, state, listed, cycle_id=None):
        """Owners for a new cycle's items: consistent hashing with bounded
        loads. The ring picks each item's member (the same one cycle after
        cycle while membership is stable), but no member takes more than
        5% over an even share; the overflow goes to the next member on the
        ring. (Plain consistent hashing over 3 members gives one of them
        ~20% more than its share of 300 items: the cycle lasts as long as
        the busiest member.)"""
        listed = _as_dict(listed)
        servers = self._fanout_members(state.name, cycle_id)
        if self._server_name and self._server_name not in servers:
            servers[self._server_name] = self._coord.node
        owners = assign_bounded(sorted(servers),
                                [str(i) for i in listed])
        items = {}
        now = time.time()
        for item_id, payload in listed.items():
            item_id = str(item_id)
            assignment = {'id': item_id, 'owner': owners[item_id],
                          'attempt': 1, 'sent_at': now, 'payload': payload}
            try:
                _ledger.check_item(state.name, item_id, assignment)
            except exceptions.ConfigurationError as exc:
                # one bad item must not break the task for good: the
                # others of the cycle go on
                LOG.error('hacluster: %s; item left out of this cycle', exc)
                state.stats.count(items_rejected=1)
                continue
            items[_keys.quote_segment(item_id)] = assignment
        return items

    def _live(self, task, cycle_id=None):
        """``{rpc server: node}`` of the live members that run ``task``
        (and read the format of ``cycle_id``, :meth:`_fanout_members`),
        this node's own server included. No request."""
        live = self._fanout_members(task, cycle_id)
        if self._server_name:
            live.setdefault(self._server_name, self._coord.node)
        return live

    def _create_and_cast(self, state, ledger, lock, record, items):
        """Write a new cycle into the ledger and cast its items while it
        is written: the items go in in the order they are cast
        (:func:`interleave`), and each batch is cast as soon as the
        transaction holding its last item is written. Returns the ids the
        broker did not take (see :meth:`_dispatch`). Blocks for the
        writes and the casts.

        A leader that dies half-way leaves items cast but no cycle record
        (it is written last): the members may handle them, and the next
        leader, seeing no unfinished cycle, lists them again -- handled
        twice at worst, never lost.

        :raises StaleFencingToken: the task lock was lost.
        :raises HAClusterError: etcd could not be reached.
        """
        cycle_id = record['cycle_id']
        batches = interleave(items, state.spec.batch_size)
        ordered = {q: items[q] for _, qs in batches for q in qs}
        written = set()
        waiting = collections.deque(batches)
        unsent = set()
        version = self._pin(state)

        def cast_written(qids):
            written.update(qids)
            while waiting and written.issuperset(waiting[0][1]):
                owner, qs = waiting.popleft()
                if not self._cast(state, cycle_id, owner, qs, items,
                                  version):
                    unsent.update(qs)

        ledger.create(lock, record, ordered, written=cast_written)
        return unsent

    def _cast(self, state, cycle_id, owner, qids, items, version):
        """Cast one batch; False if the broker did not take it."""
        chunk = [{'q': q, 'id': items[q]['id'],
                  'attempt': items[q]['attempt'],
                  'payload': items[q].get('payload')} for q in qids]
        try:
            self._api.process_items(
                owner, state.name, cycle_id, chunk, version=version,
                item_timeout=state.spec.item_timeout)
            state.stats.count(rpc_casts=1)
            return True
        except exceptions.HAClusterError as exc:
            LOG.warning('hacluster: %s; retrying', _url.scrub(exc))
            return False

    def _dispatch(self, state, cycle_id, items):
        """Cast items to their owners, in batches, one owner after the
        other in turn. Returns the ids that could not be handed to the
        broker: not an attempt (nobody got them); the caller keeps them
        unsent and tries again."""
        unsent = set()
        if not items:
            return unsent
        version = self._pin(state)
        for owner, qids in interleave(items, state.spec.batch_size):
            if not self._cast(state, cycle_id, owner, qids, items,
                              version):
                unsent.update(qids)
        return unsent

    @staticmethod
    def _set_status(state, ledger, lock, record, status):
        """Record cycle ``record`` as in progress with ``status``
        (:meth:`hacluster.periodic.ledger.Ledger.in_progress_status`) unless
        it already says so. Best effort: a write etcd did not take leaves
        the record as it was, to be tried again at the next pass. One
        guarded write, or none.

        :raises StaleFencingToken: the task lock was lost (as any other
            write of the cycle would).
        """
        if record.get('status') == status:
            return
        try:
            ledger.update_cycle(lock, dict(record, status=status))
        except exceptions.StaleFencingToken:
            raise
        except exceptions.HAClusterError as exc:
            LOG.warning('hacluster: task %s: could not record cycle %s as '
                        '%s (%s); trying again', state.name,
                        record['cycle_id'], status, exc)
            return
        LOG.info('hacluster: task %s: cycle %s now %s', state.name,
                 record['cycle_id'], status)
        record['status'] = status

    def _monitor(self, state, ledger, lock, record, items, wake, unsent):
        """Wait until every item is done; re-dispatch those whose owner left
        or whose deadline passed, and send again those the broker did not
        take (``unsent``); keep the cycle ``record``'s status in step with
        the members (:meth:`Ledger.in_progress_status`). Returns ``(done,
        failed, redispatched)``, or None if this node lost the right to run
        the cycle.

        Cheap while nothing goes wrong: woken by done-marker events
        (debounced), it counts the markers those events brought, without a
        request; every ``renew_interval`` (and after the watch may have
        missed events) it checks that count against etcd's, a count-only
        read, so that a lost event costs latency, never the cycle. It
        reads the markers themselves only when an owner left, a deadline
        is due, or the broker did not take a batch.
        """
        from tooz import hashring

        cycle_id = record['cycle_id']
        spec = state.spec
        failed = redispatched = 0
        # Deadlines on this node's monotonic clock, never on the wall-clock
        # sent_at in the ledger: a clock stepped here (or another leader's
        # clock, after an adoption) must neither re-send every item nor
        # stall them. An adopted item's deadline starts at the adoption.
        started = time.monotonic()
        sent = {q: started for q in items}
        next_deadline = started + spec.item_timeout
        recheck_every = getattr(self._coord.session, 'renew_interval', 2.0)
        next_recheck = started + recheck_every
        # owners of the items not known done (recomputed after each full
        # pass, not on every wake-up: O(items))
        owners = {a['owner'] for a in items.values()}
        while True:
            wake.event.clear()
            if self._stopping.is_set() or not lock.held or \
                    not self._coord.is_leader:
                LOG.info('hacluster: task %s: leaving cycle %s unfinished '
                         'for the next leader', state.name, cycle_id)
                if self._stopping.is_set() and lock.held:
                    # (one that reads the format adopts either status)
                    try:
                        self._set_status(state, ledger, lock, record,
                                         ledger.in_progress_status(
                                             cycle_id, leaving=True))
                    except exceptions.StaleFencingToken:
                        pass
                return None
            now = time.time()           # for the records only
            mono = time.monotonic()
            live = self._live(state.name, cycle_id)
            # A member that does not read the cycle's format joined (or the
            # last such one left): say so before it could take office, so
            # that it never adopts what it cannot read.
            self._set_status(state, ledger, lock, record,
                             ledger.in_progress_status(cycle_id))
            if wake.take_missed() or mono >= next_recheck:
                next_recheck = mono + recheck_every
                if ledger.done_count(cycle_id) > wake.count():
                    wake.merge(ledger.done(cycle_id))   # events were lost
            count = wake.count()
            # Only owners of items still pending matter: the owner of an
            # item already done may leave without consequence.
            if count < len(items) and not unsent and owners <= set(live) \
                    and mono < next_deadline:
                wake.event.wait(max(0.05, min(1.0, min(
                    next_recheck, next_deadline) - mono)))
                time.sleep(0.05)    # let a burst of done markers land
                continue
            if count >= len(items):
                done = wake.done()
            else:
                done = ledger.done(cycle_id)
                wake.merge(done)
            pending = [q for q in items if q not in done]
            owners = {items[q]['owner'] for q in pending}
            if not pending:
                return done, failed, redispatched
            retry = {q: items[q] for q in pending if q in unsent and
                     items[q]['owner'] in live}
            if retry:
                unsent = self._dispatch(state, cycle_id, retry)
                for q in retry:
                    if q not in unsent:     # its deadline starts now
                        items[q] = dict(items[q], sent_at=time.time())
                        sent[q] = time.monotonic()
                if unsent:
                    wake.event.wait(0.5)    # the broker is still away
                    continue
            changes, gave_up = {}, []
            next_deadline = mono + spec.item_timeout
            ring = hashring.HashRing(sorted(live), partitions=2 ** 8)
            for q in pending:
                a = items[q]
                if q in unsent:
                    unsent.discard(q)       # owner left: re-dispatched below
                    a = items[q] = dict(a, sent_at=0)
                    sent[q] = float('-inf')
                expired = mono - sent[q] > spec.item_timeout
                if a['owner'] in live and not expired:
                    next_deadline = min(next_deadline,
                                        sent[q] + spec.item_timeout)
                    continue
                if a['attempt'] >= spec.max_attempts:
                    gave_up.append(q)
                    continue
                # Another live member if there is one: the owner left, or
                # it is too slow.
                ignore = [a['owner']] if len(live) > 1 else []
                owner = next(iter(ring.get_nodes(a['id'].encode('utf-8'),
                                                 ignore_nodes=ignore)))
                changes[q] = dict(a, owner=owner, attempt=a['attempt'] + 1,
                                  sent_at=now)
                sent[q] = mono
            if gave_up:
                ledger.mark_done(lock, [(cycle_id, q, {
                    'ok': False, 'node': None, 'attempt':
                        items[q]['attempt'],
                    'error': 'given up after %d attempts' %
                             items[q]['attempt'], 'at': now})
                    for q in gave_up])
                failed += len(gave_up)
                state.stats.count(item_failures=len(gave_up))
            if changes:
                ledger.assign(lock, cycle_id, changes)
                items.update(changes)
                redispatched += len(changes)
                state.stats.count(redispatched=len(changes))
                LOG.info('hacluster: task %s cycle %s: re-dispatching %d '
                         'items', state.name, cycle_id, len(changes))
                unsent |= self._dispatch(state, cycle_id, changes)
                next_deadline = min(next_deadline, mono + spec.item_timeout)
                continue
            if not retry:
                # Nothing to change this pass: wait for progress or the
                # next deadline, never spin.
                wake.event.wait(max(0.05, min(1.0, next_deadline - mono)))
