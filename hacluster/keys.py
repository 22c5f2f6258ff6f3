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

"""Name validation and the etcd key layout.

Every key hacluster writes lives under ``/hacluster/v1/<cluster>/`` and every
prefix it reads or deletes ends in ``/``: a range over cluster ``b1`` can never
reach cluster ``b10``, and a lock named ``a`` never sees lock ``ab``.

Cluster and node names are identities chosen by operators: a small charset,
validated. Lock names come from driver code (manila builds them from share ids,
host strings like ``host@backend#pool``, even export paths), so any printable
text is accepted and percent-encoded into one key segment: a ``/`` or ``..`` in
a lock name can never escape its prefix.

Layout (``<lease>`` is the session lease id in hex)::

    /hacluster/v1/<cluster>/members/<node>                 member record
    /hacluster/v1/<cluster>/leader/<lease>-<n>-w           election queue
    /hacluster/v1/<cluster>/locks/<quoted name>/<lease>-<n> lock queue entry
    /hacluster/v1/<cluster>/tasks/<task>/cycle             fan-out cycle now
    /hacluster/v1/<cluster>/tasks/<task>/cycles/<id>/...   its items, dones
                                                            (format 1 cycles)
    /hacluster/v1/<cluster>/tasks/<task>/stats/<node>      per-node run stats
    /hacluster/v1/<cluster>/tasks/<task>/control           paused or not
    /hacluster/v1/<cluster>/fanout/queues/<server>         a fan-out queue
    /hacluster/v1/<cluster>/data/<quoted key>              guarded user data
    /hacluster/v1/<cluster>/~ledger/<task>/<id>-a/...      items, dones of
                                                            format 2 cycles

Keys from ``~`` on (``~`` sorts after every other first character of a
segment here) are outside the cluster watch that every member holds
(:attr:`Layout.watched_end`). A fan-out cycle's ledger lives there when every
member reads cycle format 2 (:mod:`hacluster.protocol`): it is written in
bulk (one key per item and per done marker, tens of thousands per cycle) and
read by the leader alone, so pushing every write to every member's watch
made etcd slower for everyone as members were added. A cycle id says where
its ledger is (:meth:`Layout.ledger_apart`), so a member finds it from the
id a batch of items carries. Every other key stays inside the watch.
"""

import re
from urllib.parse import quote
from urllib.parse import unquote

from hacluster import exceptions
from hacluster.version import KEY_LAYOUT_VERSION

ROOT = '/hacluster/v%d/' % KEY_LAYOUT_VERSION

#: Cluster and node names: letters, digits and ``. _ - @ # : +``. ``@`` and
#: ``#`` because manila host strings (``host@backend#pool``) are natural
#: cluster names.
_IDENT_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._@#:+-]*$')
MAX_IDENT_LEN = 128
MAX_LOCK_NAME_LEN = 512


def validate_ident(value, what):
    """Check a cluster or node name; return it.

    :param value: the name.
    :param what: what the name is for (``'cluster'``, ``'node'``), used in
        the error message.
    :raises InvalidName: naming ``what`` and the offending value.
    """
    if not isinstance(value, str):
        raise exceptions.InvalidName(
            '%s name must be a string, got %s' % (what, type(value).__name__))
    if not value:
        raise exceptions.InvalidName('%s name must not be empty' % what)
    if len(value) > MAX_IDENT_LEN:
        raise exceptions.InvalidName(
            '%s name %r is %d characters long; the limit is %d'
            % (what, value[:40] + '...', len(value), MAX_IDENT_LEN))
    if not _IDENT_RE.match(value):
        raise exceptions.InvalidName(
            '%s name %r may only contain letters, digits and . _ - @ # : + '
            '(and must start with a letter or digit)' % (what, value))
    return value


def validate_lock_name(name):
    """Check a lock name; return it.

    Any printable text is allowed (it is percent-encoded into the key), but
    not empty names, control characters (NUL, newline...) or names longer
    than :data:`MAX_LOCK_NAME_LEN`.

    :raises InvalidName: naming the problem.
    """
    if not isinstance(name, str):
        raise exceptions.InvalidName(
            'lock name must be a string, got %s' % type(name).__name__)
    if not name:
        raise exceptions.InvalidName('lock name must not be empty')
    if len(name) > MAX_LOCK_NAME_LEN:
        raise exceptions.InvalidName(
            'lock name %r... is %d characters long; the limit is %d'
            % (name[:40], len(name), MAX_LOCK_NAME_LEN))
    for ch in name:
        if ord(ch) < 0x20 or ord(ch) == 0x7f:
            raise exceptions.InvalidName(
                'lock name %r contains the control character %r'
                % (name, ch))
    try:
        name.encode('utf-8')
    except UnicodeEncodeError as exc:
        # a lone surrogate (e.g. from bytes decoded with surrogateescape):
        # no etcd key can hold it
        raise exceptions.InvalidName(
            'name %r is not valid Unicode text (%s at position %d)'
            % (name, exc.reason, exc.start), cause=exc) from exc
    return name


def quote_segment(name):
    """Encode free text as one key segment (no ``/`` survives)."""
    return quote(name, safe='')


def unquote_segment(segment):
    return unquote(segment)


def prefix_end(prefix):
    """The etcd ``range_end`` that covers exactly the keys under ``prefix``."""
    if isinstance(prefix, str):
        prefix = prefix.encode('utf-8')
    # Keys are UTF-8 text and prefixes end in '/', so the last byte is never
    # 0xff and incrementing it is enough.
    return prefix[:-1] + bytes([prefix[-1] + 1])


class Layout:
    """Key names of one cluster.

    :param cluster: validated cluster name.
    """

    def __init__(self, cluster):
        self.cluster = validate_ident(cluster, 'cluster')
        self.root = ROOT + cluster + '/'
        self.members = self.root + 'members/'
        self.locks = self.root + 'locks/'
        self.leader = self.root + 'leader/'
        self.tasks = self.root + 'tasks/'
        self.data = self.root + 'data/'
        self.claims = self.root + 'claims/'
        self.late = self.root + 'late/'
        self.tombstones = self.root + 'tombstones/'
        #: operators' recovery requests (a write here wakes the leader)
        self.recovery_requests = self.root + 'recovery/'
        #: the RabbitMQ queue of every fan-out server, until deleted
        #: (owner: hacluster.periodic.queues)
        self.fanout_queues = self.root + 'fanout/queues/'
        #: the members' cluster watch covers [root, watched_end): keys
        #: from '~' on are left out of it (read and watched on purpose
        #: by the one part that needs them)
        self.watched_end = self.root + '~'
        #: fan-out ledgers of format 2 cycles (owner: the ledger)
        self.ledgers = self.root + '~ledger/'

    def member(self, node):
        return self.members + node

    def lock_prefix(self, name):
        return self.locks + quote_segment(name) + '/'

    def lock_name_from_key(self, key):
        """Return the lock name of a lock queue key, or None."""
        if not key.startswith(self.locks):
            return None
        rest = key[len(self.locks):]
        segment, sep, _ = rest.partition('/')
        return unquote_segment(segment) if sep else None

    def task(self, name):
        """Prefix of one periodic task's keys (cycle ledger, stats...)."""
        return self.tasks + quote_segment(name) + '/'

    def task_control(self, name):
        """A task's cluster-wide control record (paused or not)."""
        return self.task(name) + 'control'

    def task_stats_prefix(self, name):
        """Prefix of a task's per-node run statistics."""
        return self.task(name) + 'stats/'

    def task_stats(self, name, node):
        return self.task_stats_prefix(name) + quote_segment(node)

    def task_cycle(self, name):
        """The record of a fan-out task's current cycle."""
        return self.task(name) + 'cycle'

    def task_cycles(self, name):
        """Prefix of a fan-out task's cycles (items, done markers)."""
        return self.task(name) + 'cycles/'

    def parse_task_key(self, key):
        """``(task name, what, node)`` of a key under ``tasks/``: what is
        ``'control'``, ``'cycle'``, ``'stats'`` (with the node),
        ``'cycles'`` (the ledger) or None for a key this version does not
        know; None for a key outside ``tasks/``."""
        if not key.startswith(self.tasks):
            return None
        segment, _, sub = key[len(self.tasks):].partition('/')
        name = unquote_segment(segment)
        if sub in ('control', 'cycle'):
            return name, sub, None
        if sub.startswith('stats/'):
            return name, 'stats', unquote_segment(sub[len('stats/'):])
        if sub.startswith('cycles/'):
            return name, 'cycles', None
        return name, None, None

    #: what ends the id of a cycle whose ledger is apart
    APART_SUFFIX = '-a'

    @classmethod
    def ledger_apart(cls, cycle_id):
        """True if the ledger of cycle ``cycle_id`` lies outside the
        cluster watch (under :attr:`ledgers`): ids of such cycles end in
        :data:`APART_SUFFIX`, which no id of an older version does."""
        return str(cycle_id).endswith(cls.APART_SUFFIX)

    def task_ledgers(self, name):
        """Prefix of a fan-out task's format 2 cycles."""
        return self.ledgers + quote_segment(name) + '/'

    def cycle_root(self, name, cycle_id):
        """Prefix of everything of one cycle (items and done markers),
        wherever its id says it lives."""
        if self.ledger_apart(cycle_id):
            return '%s%s/' % (self.task_ledgers(name), cycle_id)
        return '%s%s/' % (self.task_cycles(name), cycle_id)

    def cycle_items(self, name, cycle_id):
        return self.cycle_root(name, cycle_id) + 'items/'

    def cycle_done(self, name, cycle_id):
        return self.cycle_root(name, cycle_id) + 'done/'

    def watched(self, key):
        """True if ``key`` is inside the members' cluster watch."""
        return key.startswith(self.root) and key < self.watched_end

    def claims_of(self, node):
        """Prefix of the claims opened by ``node`` (any incarnation)."""
        return self.claims + quote_segment(node) + '/'

    def claim(self, node, resource_type, resource_id, operation, claim_id):
        """Key of one claim (durable: not bound to a lease)."""
        return '%s%s/%s/%s.%s' % (
            self.claims_of(node), quote_segment(resource_type),
            quote_segment(resource_id), quote_segment(operation), claim_id)

    def fanout_queue(self, server_name):
        """Key recording one fan-out server's RabbitMQ queue (durable:
        it outlives its member, so the leader can delete the queue)."""
        return self.fanout_queues + quote_segment(server_name)

    def recovery_request(self):
        return self.recovery_requests + 'request'

    def tombstone(self, claim_id):
        """Key of the note a recoverer leaves when it removes a claim (who
        recovered it; bound to a short lease)."""
        return self.tombstones + claim_id

    def late_result(self, claim_id):
        """Key of the record of an operation that finished after its claim
        was recovered elsewhere (durable; an operator clears it)."""
        return self.late + claim_id

    def data_key(self, key):
        """Key of a user data item written with a guarded write."""
        validate_lock_name(key)
        return self.data + quote_segment(key)
