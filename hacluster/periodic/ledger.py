"""The fan-out cycle ledger, in etcd (durable: not bound to any lease).

Because RPC delivery is at-most-once, the state of a fan-out cycle lives
here, not in the queue::

    tasks/<task>/cycle                        the current (or last) cycle
    tasks/<task>/cycles/<cycle>/items/<item>  owner, attempt, sent_at, payload
    tasks/<task>/cycles/<cycle>/done/<item>   written by the worker when the
                                              handler returned

The leader's writes are guarded by the task lock's fencing token (a leader
that lost its lock cannot overwrite its successor's cycle). Writes are batched
into transactions of at most :data:`BATCH` operations (etcd's default limit
is 128 per transaction).
"""

import json
import time
import uuid

from hacluster import etcd as _etcd
from hacluster import keys as _keys

BATCH = 100


def _chunks(seq, n):
    seq = list(seq)
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


class Ledger:
    """The ledger of one task. Thread-safe (stateless over etcd)."""

    def __init__(self, coord, task):
        self._coord = coord
        self._client = coord.client
        self._layout = coord.layout
        self._task = task
        self.cycle_key = coord.layout.task_cycle(task)
        self._cycles = coord.layout.task_cycles(task)

    def _items_prefix(self, cycle_id):
        return self._layout.cycle_items(self._task, cycle_id)

    def done_prefix(self, cycle_id):
        return self._layout.cycle_done(self._task, cycle_id)

    @staticmethod
    def new_cycle_id():
        return '%d-%s' % (int(time.time()), uuid.uuid4().hex[:8])

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
        for chunk in _chunks(qids, BATCH):
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

    def create(self, lock, record, items):
        """Write a new cycle: its items first, then the cycle record, each
        transaction guarded by ``lock``. Earlier cycles' keys are deleted.

        :raises StaleFencingToken: ``lock`` is no longer held.
        """
        # Everything of earlier cycles goes (including done markers that
        # late workers wrote after their cycle finished).
        lock.guarded_txn([_etcd.delete_op(self._cycles,
                                          _keys.prefix_end(self._cycles))])
        prefix = self._items_prefix(record['cycle_id'])
        ops = [_etcd.put_op(prefix + q, json.dumps(a))
               for q, a in items.items()]
        for chunk in _chunks(ops, BATCH):
            lock.guarded_txn(chunk)
        lock.guarded_txn([_etcd.put_op(self.cycle_key, json.dumps(record))])

    def assign(self, lock, cycle_id, changes):
        """Rewrite the assignments of some items (re-dispatch)."""
        prefix = self._items_prefix(cycle_id)
        ops = [_etcd.put_op(prefix + q, json.dumps(a))
               for q, a in changes.items()]
        for chunk in _chunks(ops, BATCH):
            lock.guarded_txn(chunk)

    def update_cycle(self, lock, record):
        lock.guarded_txn([_etcd.put_op(self.cycle_key, json.dumps(record))])

    def finish(self, lock, record):
        """Record the cycle as finished and drop its item keys (the record
        keeps the counts)."""
        cycle = '%s%s/' % (self._cycles, record['cycle_id'])
        lock.guarded_txn([
            _etcd.put_op(self.cycle_key, json.dumps(record)),
            _etcd.delete_op(cycle, _keys.prefix_end(cycle))])

    # -- worker writes ---------------------------------------------------------

    def mark_done(self, lock, markers):
        """Write done markers: ``[(cycle_id, qid, marker_dict)]``. A
        worker's markers are unguarded (``lock`` None: a marker is a fact
        about work done, whoever leads); the leader's "given up" markers
        are guarded by its task lock."""
        ops = [_etcd.put_op(self.done_prefix(cid) + q, json.dumps(m))
               for cid, q, m in markers]
        for chunk in _chunks(ops, BATCH):
            if lock is None:
                self._client.txn(success=chunk)
            else:
                lock.guarded_txn(chunk)
