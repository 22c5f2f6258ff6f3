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

"""The fan-out cycle ledger, in etcd (durable: not bound to any lease).

Because RPC delivery is at-most-once, the state of a fan-out cycle lives
here, not in the queue::

    tasks/<task>/cycle                        the current (or last) cycle
    ~ledger/<task>/<cycle>/items/<item>       owner, attempt, sent_at, payload
    ~ledger/<task>/<cycle>/done/<item>        written by the worker when the
                                              handler returned

Where a cycle's items and done markers live depends on its format, which
its id says (:meth:`hacluster.keys.Layout.cycle_root`):

* **format 2** (ids ending in ``-a``): under ``~ledger/``, outside the
  cluster watch of every member; the leader watches them on its own
  (:meth:`hacluster.coordinator.Coordinator.subscribe` opens a watch for
  that range while someone subscribes to it). Written once every live
  member reads cycle format 2.
* **format 1**: under ``tasks/<task>/cycles/``, inside every member's
  watch: the only place older versions know, used while one of them is a
  member.

A cycle keeps the format it was created in until it finishes, whoever
adopts it: its record says where its items are, and rewriting it in
another format would send an adopter to look in the wrong place.

A cycle in progress is recorded as ``running`` while every live member
reads its format, and as ``underway`` while one does not
(:meth:`Ledger.in_progress_status`; the leader keeps the record in step as
members come and go). Versions from before the format contract adopt any
``running`` cycle without reading its format: one that took office while a
format 2 cycle was running would look for its items in the old place, find
none and record the cycle done with 0 items. A status such versions do not
know makes them start a fresh cycle instead, which lists every item again;
the versions that read the format still adopt the cycle whenever they can
(they read both words, :meth:`Ledger.in_progress`).

The leader's writes are guarded by the task lock's fencing token (a leader
that lost its lock cannot overwrite its successor's cycle). Writes are batched
into transactions of at most :data:`BATCH` operations (etcd's default limit
is 128 per transaction) and :data:`MAX_TXN_BYTES` (etcd refuses a request
over 1.5 MiB by default); an item whose own record exceeds
:data:`MAX_ITEM_BYTES` is refused by :func:`check_item`.
"""

import json
import time
import uuid

from hacluster import etcd as _etcd
from hacluster import exceptions
from hacluster import keys as _keys

BATCH = 100
#: Bytes of operations in one transaction (etcd's --max-request-bytes is
#: 1.5 MiB by default; base64 and JSON add a third, hence the headroom).
MAX_TXN_BYTES = 768 * 1024
#: The largest item record (assignment and payload) a cycle may hold.
MAX_ITEM_BYTES = 512 * 1024


def _op_size(op):
    return len(json.dumps(op))


def _chunks(ops, n=BATCH, max_bytes=MAX_TXN_BYTES):
    """Transactions of at most ``n`` operations and ``max_bytes`` bytes."""
    chunk, size = [], 0
    for op in ops:
        op_size = _op_size(op)
        if chunk and (len(chunk) >= n or size + op_size > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(op)
        size += op_size
    if chunk:
        yield chunk


def _chunks_of(seq, n=BATCH):
    """Plain slices of ``n`` (reads: their requests are small)."""
    seq = list(seq)
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def check_item(task, item_id, assignment):
    """Refuse an item too large for the ledger.

    :raises ConfigurationError: naming the task, the item and the sizes.
    """
    size = len(json.dumps(assignment))
    if size > MAX_ITEM_BYTES:
        raise exceptions.ConfigurationError(
            'fan-out task %r: item %r is %d bytes in the cycle ledger, over '
            'the limit of %d: return ids (and small payloads) from the '
            'lister, not the data itself' % (task, item_id, size,
                                             MAX_ITEM_BYTES))


def new_cycle_id(apart=False):
    """A cycle id: its start time (seconds), a random part and, for a cycle
    whose ledger is apart from the members' watch, the suffix that says so
    (:meth:`hacluster.keys.Layout.ledger_apart`)."""
    return '%d-%s%s' % (int(time.time()), uuid.uuid4().hex[:8],
                        _keys.Layout.APART_SUFFIX if apart else '')


#: ``status`` of a cycle in progress that every live member can adopt
RUNNING = 'running'
#: ``status`` of a cycle in progress while a member that does not read its
#: format is live (versions from before the format contract do not adopt
#: it)
UNDERWAY = 'underway'
#: ``status`` of a finished cycle
DONE = 'done'


class Ledger:
    """The ledger of one task. Thread-safe (stateless over etcd)."""

    def __init__(self, coord, task):
        self._coord = coord
        self._client = coord.client
        self._layout = coord.layout
        self._task = task
        self.cycle_key = coord.layout.task_cycle(task)
        #: where earlier cycles' keys may be, in either format
        self._all_cycles = (coord.layout.task_cycles(task),
                            coord.layout.task_ledgers(task))

    def write_format(self, kind):
        """The format every live member reads for ``kind`` records
        (hacluster.protocol). Costs a look at every live member's record:
        take it once per call, never per record (a cycle of 30,000 items
        over 30 members made it 900,000 look-ups). No request."""
        compat = getattr(self._coord, 'compat', None)
        return compat.write_format(kind) if compat is not None else 1

    def _fmt(self, kind, record, fmt=None):
        """``record`` with ``format`` ``fmt`` (default: the one every live
        member reads, :meth:`write_format`)."""
        return dict(record, format=self.write_format(kind)
                    if fmt is None else fmt)

    def readable(self, record, kind='cycle'):
        """True if this version reads ``record`` (a cycle, item or done
        marker) -- False for one a newer version wrote in a newer
        format."""
        compat = getattr(self._coord, 'compat', None)
        if compat is None:
            return True
        try:
            fmt = compat.check_format(kind, record)
        except Exception:       # UnknownFormat
            return False
        # A cycle's format and its id must agree on where its ledger is
        # (a record edited by hand, or a future format of the id): never
        # look for its items in a place its writer did not use.
        return kind != 'cycle' or \
            fmt == self.cycle_format(record.get('cycle_id', ''))

    def _items_prefix(self, cycle_id):
        return self._layout.cycle_items(self._task, cycle_id)

    def done_prefix(self, cycle_id):
        return self._layout.cycle_done(self._task, cycle_id)

    def new_cycle_id(self):
        """A new cycle's id: of a format 2 cycle (its ledger apart from the
        members' watch) if every live member reads that format, else of a
        format 1 cycle. No request."""
        return new_cycle_id(apart=self.write_format('cycle') >= 2)

    @staticmethod
    def cycle_format(cycle_id):
        """The format of the records of cycle ``cycle_id``: 2 if its ledger
        is apart, else 1."""
        return 2 if _keys.Layout.ledger_apart(cycle_id) else 1

    def in_progress_status(self, cycle_id, leaving=False):
        """The ``status`` that records cycle ``cycle_id`` as in progress
        now: ``running`` if every live member reads its format (always, for
        format 1), else ``underway``, which no version adopts unless it
        reads both words (see the module's docstring). ``leaving``: its
        leader stops, and the next one may be of an older release (a
        rollback restarts every node on it): ``underway`` unless format 1.
        No request."""
        fmt = self.cycle_format(cycle_id)
        if fmt == 1 or not leaving and self.write_format('cycle') >= fmt:
            return RUNNING
        return UNDERWAY

    @staticmethod
    def in_progress(record):
        """True if cycle ``record`` (a dict, or None) is in progress: not
        finished, adoptable by a leader that reads its format."""
        return bool(record) and record.get('status') in (RUNNING, UNDERWAY)

    # -- reads ---------------------------------------------------------------

    def current(self):
        """The current cycle record (dict) or None."""
        kv = self._client.get(self.cycle_key)
        return kv.json() if kv else None

    def items(self, cycle_id):
        """``{quoted_id: assignment}`` of a cycle."""
        kvs, _ = self._client.get_prefix(self._items_prefix(cycle_id))
        return {kv.key.rsplit('/', 1)[-1]: kv.json() for kv in kvs}

    def done(self, cycle_id):
        """``{quoted_id: marker}`` of the items done in a cycle."""
        kvs, _ = self._client.get_prefix(self.done_prefix(cycle_id))
        return {kv.key.rsplit('/', 1)[-1]: kv.json() for kv in kvs}

    def done_count(self, cycle_id):
        """How many items of a cycle are done (a count-only read)."""
        return self._client.count_prefix(self.done_prefix(cycle_id))

    def assigned_to(self, cycle_id, qids, server, attempts):
        """Of ``qids``, those still assigned to ``server`` with the given
        attempt number (``attempts[qid]``): one request."""
        prefix = self._items_prefix(cycle_id)
        ours = set()
        for chunk in _chunks_of(qids):
            resp = self._client.txn(success=[
                _etcd.range_op(prefix + q) for q in chunk])
            for i, q in enumerate(chunk):
                kvs = resp.kvs(i)
                if kvs:
                    a = kvs[0].json()
                    if a.get('owner') == server and \
                            a.get('attempt') == attempts[q]:
                        ours.add(q)
        return ours

    # -- leader writes (guarded) ---------------------------------------------

    def create(self, lock, record, items, written=None):
        """Write a new cycle: its items first, in the order of ``items``,
        then the cycle record, each transaction guarded by ``lock``.
        Earlier cycles' keys are deleted. After each transaction of items,
        ``written(qids)`` (if given) is called with the quoted ids it
        wrote, so that the caller can cast them while the rest is written.
        Blocks for ``2 + len(items) / BATCH`` requests (and whatever
        ``written`` does).

        The cycle record comes last on purpose: until it is written the
        cycle is not adoptable (a next leader sees the previous cycle,
        finished, and lists the items again), so an adopter never takes
        a cycle whose items are not all in the ledger. Items cast before
        that are safe: their keys exist when the members check them.

        :raises StaleFencingToken: ``lock`` is no longer held.
        """
        # Everything of earlier cycles goes, in either format (including
        # done markers that late workers wrote after their cycle finished).
        lock.guarded_txn([_etcd.delete_op(p, _keys.prefix_end(p))
                          for p in self._all_cycles])
        prefix = self._items_prefix(record['cycle_id'])
        fmt = self.write_format('item')
        qids = list(items)
        ops = [_etcd.put_op(prefix + q, json.dumps(self._fmt('item',
                                                             items[q], fmt)))
               for q in qids]
        at = 0
        for chunk in _chunks(ops):
            lock.guarded_txn(chunk)
            if written is not None:
                written(qids[at:at + len(chunk)])
            at += len(chunk)
        lock.guarded_txn([_etcd.put_op(
            self.cycle_key, json.dumps(self._cycle_record(record)))])

    def _cycle_record(self, record):
        """``record`` with the format of its cycle (never the one members
        read now: see the module's docstring)."""
        return self._fmt('cycle', record,
                         self.cycle_format(record['cycle_id']))

    def assign(self, lock, cycle_id, changes):
        """Rewrite the assignments of some items (re-dispatch)."""
        prefix = self._items_prefix(cycle_id)
        fmt = self.write_format('item')
        ops = [_etcd.put_op(prefix + q, json.dumps(self._fmt('item', a,
                                                             fmt)))
               for q, a in changes.items()]
        for chunk in _chunks(ops):
            lock.guarded_txn(chunk)

    def update_cycle(self, lock, record):
        lock.guarded_txn([_etcd.put_op(
            self.cycle_key, json.dumps(self._cycle_record(record)))])

    def finish(self, lock, record):
        """Record the cycle as finished and drop its item keys (the record
        keeps the counts)."""
        cycle = self._layout.cycle_root(self._task, record['cycle_id'])
        lock.guarded_txn([
            _etcd.put_op(self.cycle_key,
                         json.dumps(self._cycle_record(record))),
            _etcd.delete_op(cycle, _keys.prefix_end(cycle))])

    # -- worker writes --------------------------------------------------------

    def mark_done(self, lock, markers, extra=()):
        """Write done markers: ``[(cycle_id, qid, marker_dict)]``. A
        worker's markers are unguarded (``lock`` None: a marker is a fact
        about work done, whoever leads); the leader's "given up" markers
        are guarded by its task lock. ``extra`` writes (``[(key, value)]``
        of another owner's keys, e.g. the task stats of
        :meth:`hacluster.periodic.stats.StatsPublisher.publication`) ride
        in the last transaction, or one of their own when it is full.
        Blocks for ``len(markers) / BATCH`` requests, at least one if
        ``extra``.

        :raises HAClusterError: etcd could not be reached (nothing of the
            failed transaction was written; earlier ones were).
        """
        fmt = self.write_format('done')
        ops = [_etcd.put_op(self.done_prefix(cid) + q,
                            json.dumps(self._fmt('done', m, fmt)))
               for cid, q, m in markers]
        chunks = list(_chunks(ops))
        extra = [_etcd.put_op(key, value) for key, value in extra]
        if extra:
            if chunks and len(chunks[-1]) + len(extra) <= BATCH and \
                    sum(map(_op_size, chunks[-1] + extra)) <= MAX_TXN_BYTES:
                chunks[-1] = chunks[-1] + extra
            else:
                chunks.append(extra)
        for chunk in chunks:
            if lock is None:
                self._client.txn(success=chunk)
            else:
                lock.guarded_txn(chunk)
