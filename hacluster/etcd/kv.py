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

"""etcd's key-value wire format: one owner for it.

The operations a transaction is built from (:func:`put_op`,
:func:`range_op`, :func:`delete_op`; comparisons :func:`create_revision_is`,
:func:`mod_revision_is`), the decoded key-value :class:`KV`, and
:class:`TxnResult`, a transaction's answer with typed accessors. Nothing
outside :mod:`hacluster.etcd` indexes a gateway response: it asks these.

Pure functions and immutable-after-construction objects: thread-safe, no
I/O.
"""

import base64
import binascii
import json
import re


def b64(value):
    if isinstance(value, str):
        value = value.encode('utf-8')
    return base64.b64encode(value).decode('ascii')


def unb64(value):
    return base64.b64decode(value) if value else b''


class KV:
    """One decoded etcd key-value: ``key`` (str), ``value`` (bytes),
    ``create_revision``, ``mod_revision``, ``version``, ``lease`` (ints)."""

    __slots__ = ('key', 'value', 'create_revision', 'mod_revision',
                 'version', 'lease')

    def __init__(self, raw):
        self.key = unb64(raw.get('key')).decode('utf-8')
        self.value = unb64(raw.get('value'))
        self.create_revision = int(raw.get('create_revision', 0))
        self.mod_revision = int(raw.get('mod_revision', 0))
        self.version = int(raw.get('version', 0))
        self.lease = int(raw.get('lease', 0))

    def json(self):
        """The value decoded as JSON (``{}`` when empty or not JSON)."""
        try:
            return json.loads(self.value.decode('utf-8')) if self.value \
                else {}
        except ValueError:
            return {}

    def __repr__(self):
        return '<KV %s c=%d m=%d>' % (self.key, self.create_revision,
                                      self.mod_revision)


def _json_or_empty(value):
    try:
        return json.loads(value.decode('utf-8')) if value else {}
    except ValueError:
        return {}


#: A closing brace then a comma: where one value could end an element of
#: the batch array and begin another (see decode_records).
_SPLIT = re.compile(rb'}\s*,')


def decode_records(raw_kvs):
    """Decode many gateway KVs at once for a bulk reader (the status
    command reads 200,000): ``[(key, create_revision, lease, data)]`` where
    ``data`` is the value decoded as :meth:`KV.json` decodes it (``{}`` for
    an empty value, as a keys-only read gives).

    About twice as fast as ``KV(raw).json()`` per record: no object per
    record, and the values -- JSON objects, as hacluster writes them --
    parsed as one JSON array. A value can only add elements to that array
    through a top-level ``}`` followed by a comma (it starts with ``{``);
    values with that pattern anywhere (nested objects, or crafted ones)
    are parsed each on its own, and so is every value when the array has
    not exactly one element per batched value (two values merged into
    one). So no value can spill into another's record, and a value that
    is not JSON gives ``{}``.

    Pure; thread-safe.
    """
    a2b = binascii.a2b_base64
    keys, values, revisions, leases = [], [], [], []
    batched = []          # indexes of the values parsed in the array
    for raw in raw_kvs:
        keys.append(a2b(raw.get('key') or '').decode('utf-8'))
        value = a2b(raw.get('value') or '')
        if value and value[:1] == b'{' and value[-1:] == b'}' and \
                not _SPLIT.search(value):
            batched.append(len(values))
        values.append(value)
        revisions.append(int(raw.get('create_revision', 0)))
        leases.append(int(raw.get('lease', 0)))
    data = [{} if not v else None for v in values]
    if batched:
        try:
            parsed = json.loads(
                b'[' + b','.join(values[i] for i in batched) + b']')
        except ValueError:
            parsed = None
        if parsed is not None and len(parsed) == len(batched):
            for i, obj in zip(batched, parsed):
                data[i] = obj
    for i, v in enumerate(values):
        if data[i] is None:
            data[i] = _json_or_empty(v)
    return list(zip(keys, revisions, leases, data))


class RangePage:
    """One answer to a range read that may be one page of several (etcd
    answers at most ``limit`` keys and says whether there are ``more``).

    ``more``: whether keys after this page remain; ``revision``: the store
    revision it was read at; ``last_key``: the last key it holds (None when
    empty), after which the next page starts; :meth:`records` its KVs
    decoded by :func:`decode_records` (on demand, so that a reader thread
    can fetch the next page while another decodes this one).
    """

    __slots__ = ('more', 'revision', 'count', '_raw')

    def __init__(self, response, revision):
        response = response or {}
        self._raw = response.get('kvs') or []
        self.more = bool(response.get('more', False))
        self.count = int(response.get('count', 0) or 0)
        self.revision = revision

    def __len__(self):
        return len(self._raw)

    @property
    def last_key(self):
        if not self._raw:
            return None
        return unb64(self._raw[-1].get('key')).decode('utf-8')

    def records(self):
        """``[(key, create_revision, lease, data)]``, see
        :func:`decode_records`."""
        return decode_records(self._raw)


def put_op(key, value, lease=0):
    op = {'key': b64(key), 'value': b64(value)}
    if lease:
        op['lease'] = lease
    return {'request_put': op}


def range_op(key, range_end=None, sort_create=False, keys_only=False,
             limit=None, max_create_revision=None, revision=None):
    op = {'key': b64(key)}
    if revision:
        op['revision'] = revision   # read the store as it was then
    if range_end is not None:
        op['range_end'] = b64(range_end)
    if sort_create:
        op['sort_order'] = 1    # ASCEND
        op['sort_target'] = 2   # CREATE
    if keys_only:
        op['keys_only'] = True
    if limit:
        op['limit'] = limit
    if max_create_revision:
        op['max_create_revision'] = max_create_revision
    return {'request_range': op}


def delete_op(key, range_end=None):
    op = {'key': b64(key)}
    if range_end is not None:
        op['range_end'] = b64(range_end)
    return {'request_delete_range': op}


def create_revision_is(key, revision):
    """Txn compare: ``key`` exists with this create revision (0 = absent)."""
    return {'key': b64(key), 'target': 'CREATE', 'result': 'EQUAL',
            'create_revision': revision}


def mod_revision_is(key, revision):
    return {'key': b64(key), 'target': 'MOD', 'result': 'EQUAL',
            'mod_revision': revision}


def _range_kvs(response):
    return [KV(kv) for kv in
            (response or {}).get('response_range', {}).get('kvs', [])]


class TxnResult:
    """The answer to a transaction.

    ``succeeded``: whether the comparisons held (the ``success`` branch
    ran); ``revision``: the store revision after it (that of every write it
    made); :meth:`kvs` the decoded result of its ``i``-th operation when
    that was a range read. A ``TxnResult`` is also what a guarded write of
    a lock or of the leader returns.
    """

    __slots__ = ('succeeded', 'revision', '_responses')

    def __init__(self, raw):
        self.succeeded = bool(raw.get('succeeded', False))
        self.revision = int((raw.get('header') or {}).get('revision', 0))
        self._responses = raw.get('responses') or []

    def __len__(self):
        return len(self._responses)

    def kvs(self, i):
        """The KVs read by operation ``i`` (a :func:`range_op`), [] when it
        read nothing (or was not a read)."""
        return _range_kvs(self._responses[i] if i < len(self._responses)
                          else None)

    def page(self, i):
        """Operation ``i`` (a :func:`range_op`) as a :class:`RangePage`,
        read at this transaction's revision."""
        resp = self._responses[i] if i < len(self._responses) else {}
        return RangePage(resp.get('response_range'), self.revision)

    def deleted(self, i):
        """How many keys operation ``i`` (a :func:`delete_op`) deleted."""
        resp = self._responses[i] if i < len(self._responses) else {}
        return int((resp.get('response_delete_range') or {}).get(
            'deleted', 0))

    def __repr__(self):
        return '<TxnResult %s rev=%d, %d responses>' % (
            'succeeded' if self.succeeded else 'failed', self.revision,
            len(self._responses))
