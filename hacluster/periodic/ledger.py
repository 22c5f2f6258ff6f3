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
    tasks/<task>/cycles/<cycle>/items/<item>  owner, attempt, sent_at, payload
    tasks/<task>/cycles/<cycle>/done/<item>   written by the worker when the
                                              handler returned

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


class Ledger:
    """The ledger of one task. Thread-safe (stateless over etcd)."""

    def __init__(self, coord, task):
        self._coord = coord
        self._client = coord.client
        self._layout = coord.layout
        self._task = task
        self.cycle_key = coord.layout.task_cycle(task)
        self._cycles = coord.layout.task_cycles(task)

    def _fmt(self, kind, record):
        """``record`` with the ``format`` every live member reads
        (hacluster.protocol)."""
        compat = getattr(self._coord, 'compat', None)
        fmt = compat.write_format(kind) if compat is not None else 1
        return dict(record, format=fmt)

    def readable(self, record, kind='cycle'):
        """True if this version reads ``record`` (a cycle, item or done
        marker) -- False for one a newer version wrote in a newer
        format."""
        compat = getattr(self._coord, 'compat', None)
        if compat is None:
            return True
        try:
            compat.check_format(kind, record)
            return True
        except Exception:       # UnknownFormat
            return False

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
        ops = [_etcd.put_op(prefix + q, json.dumps(self._fmt('item', a)))
               for q, a in items.items()]
        for chunk in _chunks(ops):
            lock.guarded_txn(chunk)
        lock.guarded_txn([_etcd.put_op(
            self.cycle_key, json.dumps(self._fmt('cycle', record)))])

    def assign(self, lock, cycle_id, changes):
        """Rewrite the assignments of some items (re-dispatch)."""
        prefix = self._items_prefix(cycle_id)
        ops = [_etcd.put_op(prefix + q, json.dumps(self._fmt('item', a)))
               for q, a in changes.items()]
        for chunk in _chunks(ops):
            lock.guarded_txn(chunk)

    def update_cycle(self, lock, record):
        lock.guarded_txn([_etcd.put_op(
            self.cycle_key, json.dumps(self._fmt('cycle', record)))])

    def finish(self, lock, record):
        """Record the cycle as finished and drop its item keys (the record
        keeps the counts)."""
        cycle = '%s%s/' % (self._cycles, record['cycle_id'])
        lock.guarded_txn([
            _etcd.put_op(self.cycle_key,
                         json.dumps(self._fmt('cycle', record))),
            _etcd.delete_op(cycle, _keys.prefix_end(cycle))])

    # -- worker writes --------------------------------------------------------

    def mark_done(self, lock, markers):
        """Write done markers: ``[(cycle_id, qid, marker_dict)]``. A
        worker's markers are unguarded (``lock`` None: a marker is a fact
        about work done, whoever leads); the leader's "given up" markers
        are guarded by its task lock."""
        ops = [_etcd.put_op(self.done_prefix(cid) + q,
                            json.dumps(self._fmt('done', m)))
               for cid, q, m in markers]
        for chunk in _chunks(ops):
            if lock is None:
                self._client.txn(success=chunk)
            else:
                lock.guarded_txn(chunk)
