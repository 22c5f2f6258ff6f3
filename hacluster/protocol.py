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

"""The contract between hacluster versions that share a cluster.

During a rolling upgrade, nodes of version N and N+1 run side by side. What
lets them work together is written down here, in one place:

* **Protocol version.** Every change to what nodes exchange (a record's
  fields, a key, the fan-out RPC API) bumps :data:`PROTOCOL`. A version
  interoperates with every protocol from :data:`MIN_PROTOCOL` to its own
  (N-1 and N). A node refuses to join a cluster whose live members it
  cannot interoperate with (:class:`IncompatibleCluster`, naming both
  versions) rather than silently forming a second cluster beside them.
* **Record formats.** Every record a node writes (member, claim, late
  result, ledger cycle and item, done marker, task stats, lock and leader
  queue entries) carries a ``format``; a record without one is format 1
  (written before formats existed). For each kind, a version reads a range
  of formats and writes the newest format that every live member reads
  (:meth:`Compat.write_format`): a new format is only written once no old
  node is left to misread it. A reader meets a format it does not know
  with :class:`UnknownFormat` and leaves the record alone.
* **Fan-out RPC.** Members advertise the fan-out RPC versions they serve;
  the leader sends at the lowest one advertised (cinder's version_cap),
  re-evaluated whenever membership changes, so nothing is dropped as
  UnsupportedVersion (:func:`fanout_cap`).
* **Recoverable claims.** Members advertise which claims they can recover
  (``type:operation``, ``type:*``); a new kind of claim is only written
  once every live member can recover it (:func:`everyone_recovers`).
* **Key layout.** It never changes in place: the layout version is in every
  key (``/hacluster/v1/``) and a new one needs a migration that both
  versions understand (there is none yet: the layout is v1). A new place
  for one kind of record is a new format of that record, written only once
  every live member reads it (cycle format 2 moved the fan-out ledger out
  of the members' watch; the cycle id says which place a cycle uses).

A member's advertisement is the ``compat`` field of its record. A record
without one comes from a version older than this contract: it is read as
protocol 1, every format 1 and fan-out RPC 1.0.

The environment variable ``HACLUSTER_CANARY_PROTOCOL=1`` makes this node
speak the next protocol (a newer fan-out RPC, claim format and claimed
operation), so that an upgrade test can exercise every hazard above even
when two real versions happen to share a protocol. Never set it in
production.

Everything here is pure (no I/O) and thread-safe.
"""

import os

from hacluster import exceptions

#: The protocol this version speaks. History:
#:
#: * 1 - the first contract (member compat, record formats, RPC pinning).
#: * 2 - cycle format 2: a fan-out cycle's items and done markers under
#:   ``~ledger/``, outside the members' watch (hacluster.keys); written once
#:   every live member reads it, format 1 (``tasks/<task>/cycles/``) before.
PROTOCOL = 2
#: The oldest protocol this version interoperates with.
MIN_PROTOCOL = 1

#: Record kind -> ``(oldest format read, newest format written)``.
FORMATS = {
    'member': (1, 1),
    'claim': (1, 1),
    'late': (1, 1),
    'cycle': (1, 2),
    'item': (1, 1),
    'done': (1, 1),
    'stats': (1, 1),
    # a lock queue entry, the leader queue's included
    'lock': (1, 1),
}

#: Fan-out RPC API versions this version serves (see
#: :class:`hacluster.periodic.rpc.FanoutAPI`).
FANOUT_RPC = ('1.0',)

#: What this version does that a member record must say for others to rely
#: on it (absent from older records: never assumed).
#: ``fanout_dedup``: a fan-out member ignores a copy of an item it already
#: has (same cycle and attempt), so a leader adopting a cycle may cast its
#: pending items again at once; to a member without it they are left to
#: the deadline and re-sent at the next attempt, as before.
FEATURES = ('fanout_dedup',)

#: What a record without ``compat`` (an older version) speaks.
LEGACY = {'protocol': 1, 'min_protocol': 1,
          'formats': {kind: [1, 1] for kind in FORMATS},
          'fanout_rpc': ['1.0']}

CANARY_ENV = 'HACLUSTER_CANARY_PROTOCOL'


class IncompatibleCluster(exceptions.ConfigurationError):
    """The cluster's live members speak protocols this version cannot
    interoperate with."""


class UnknownFormat(exceptions.HAClusterError):
    """A record in a format this version does not read (written by a newer
    version); it must be left alone, not overwritten or deleted."""


def _version_tuple(version):
    major, _, minor = str(version).partition('.')
    return int(major), int(minor or 0)


class Compat:
    """What one node speaks: its protocol range, the formats it reads and
    writes per record kind, the fan-out RPC versions it serves and the
    claims it can recover.

    Build this node's with :func:`local`, another member's with
    :meth:`from_record`.
    """

    def __init__(self, protocol, min_protocol, formats, fanout_rpc,
                 recovers=None, version=None, features=()):
        self.protocol = int(protocol)
        self.min_protocol = int(min_protocol)
        self.formats = {kind: (int(lo), int(hi))
                        for kind, (lo, hi) in formats.items()}
        self.fanout_rpc = tuple(sorted(fanout_rpc, key=_version_tuple))
        #: ``type:operation`` / ``type:*`` claims this node recovers, or
        #: None when it does not say (an older version: unknown)
        self.recovers = None if recovers is None else frozenset(recovers)
        #: hacluster's version string (for messages)
        self.version = version
        #: what it does that others may rely on (:data:`FEATURES`)
        self.features = frozenset(features or ())

    def __repr__(self):
        return '<Compat protocol %d (from %d) rpc %s>' % (
            self.protocol, self.min_protocol, '/'.join(self.fanout_rpc))

    def as_record(self):
        """The ``compat`` field of this node's member record."""
        out = {'protocol': self.protocol, 'min_protocol': self.min_protocol,
               'formats': {k: list(v) for k, v in self.formats.items()},
               'fanout_rpc': list(self.fanout_rpc)}
        if self.recovers is not None:
            out['recovers'] = sorted(self.recovers)
        if self.features:
            out['features'] = sorted(self.features)
        return out

    @classmethod
    def from_record(cls, record):
        """What the member whose record is ``record`` (a dict) speaks."""
        compat = record.get('compat')
        if not isinstance(compat, dict):
            compat = LEGACY
        try:
            return cls(compat.get('protocol', 1),
                       compat.get('min_protocol', 1),
                       dict(LEGACY['formats'],
                            **(compat.get('formats') or {})),
                       compat.get('fanout_rpc') or ['1.0'],
                       compat.get('recovers'), record.get('version'),
                       [f for f in compat.get('features') or ()
                        if isinstance(f, str)])
        except (TypeError, ValueError):
            # A record we cannot make sense of: treat it as the oldest.
            return cls(1, 1, LEGACY['formats'], ['1.0'], None,
                       record.get('version'))

    # -- between nodes ------------------------------------------------------

    def interoperates_with(self, other):
        """True if this node and ``other`` share a protocol."""
        return max(self.min_protocol, other.min_protocol) <= \
            min(self.protocol, other.protocol)

    def check_join(self, members):
        """Refuse to join ``members`` (``{node: record}``) if any of them
        speaks no protocol in common with this node.

        :raises IncompatibleCluster: naming this node's version and
            protocol range and each member that is out of it.
        """
        bad = []
        for node, record in sorted(members.items()):
            other = Compat.from_record(record)
            if not self.interoperates_with(other):
                bad.append('%s (hacluster %s, protocol %d-%d)' % (
                    node, other.version or 'unknown', other.min_protocol,
                    other.protocol))
        if bad:
            raise IncompatibleCluster(
                'this node (hacluster %s, protocol %d-%d) cannot join: '
                'live members speak no protocol in common with it: %s. '
                'Upgrade one version at a time (N to N+1), finishing each '
                'upgrade on every node before the next'
                % (self.version or 'unknown', self.min_protocol,
                   self.protocol, ', '.join(bad)))

    def write_format(self, kind, members=()):
        """The format to write a ``kind`` record in: the newest this node
        writes that every one of ``members`` (Compat objects) reads."""
        lo, hi = self.formats[kind]
        fmt = hi
        for other in members:
            fmt = min(fmt, other.formats.get(kind, (1, 1))[1])
        return max(fmt, lo)

    def reads(self, kind, fmt):
        """True if this node reads ``kind`` records in format ``fmt``."""
        lo, hi = self.formats.get(kind, (1, 1))
        return lo <= fmt <= hi

    def check_format(self, kind, record):
        """The format of ``record`` (a dict; 1 if it has none).

        :raises UnknownFormat: this node does not read it.
        """
        fmt = record.get('format', 1) if isinstance(record, dict) else 1
        try:
            fmt = int(fmt)
        except (TypeError, ValueError):
            fmt = -1
        lo, hi = self.formats[kind]
        if not lo <= fmt <= hi:
            raise UnknownFormat(
                'a %s record in format %s, which hacluster %s does not read '
                '(it reads formats %d to %d): written by another version; '
                'left alone' % (kind, record.get('format'), self.version,
                                lo, hi))
        return fmt


class ClusterCompat:
    """This node's :class:`Compat` and, from the membership view, what the
    cluster's live members speak: the answers every writer and sender
    needs (no requests; thread-safe).

    :param own: callable returning this node's :class:`Compat` (it changes
        as recovery handlers are registered).
    :param members: callable returning ``{node: record}`` of the live
        members (the watch's view), this node included or not.
    :param node: this node's name (left out of ``members``).
    """

    def __init__(self, own, members, node):
        self._own = own
        self._members = members
        self._node = node

    @property
    def own(self):
        return self._own()

    def peers(self):
        """The other live members' :class:`Compat` objects."""
        return [Compat.from_record(r) for n, r in self._members().items()
                if n != self._node]

    def write_format(self, kind):
        return self.own.write_format(kind, self.peers())

    def check_format(self, kind, record):
        return self.own.check_format(kind, record)

    def fanout_cap(self):
        return fanout_cap(self.own, self.peers())

    def everyone_recovers(self, resource_type, operation):
        """True if this node and every live member recover claims of
        ``resource_type``/``operation``."""
        return everyone_recovers([self.own] + self.peers(), resource_type,
                                 operation)


def upgrade_view(members):
    """What a rolling upgrade looks like from the member records
    (``[record]``): None when every member runs one version, else a dict
    with ``versions`` (``{version: [nodes]}``), ``newest`` (the version of
    the highest protocol), ``at_newest``, ``members``, ``rpc_pin`` (what a
    leader sends fan-out items at: the newest RPC version every member
    serves) and ``incompatible`` (pairs of nodes with no protocol in
    common: never a clean upgrade). Pure."""
    by_version = {}
    compat = {}
    records = {rec.get('node'): rec for rec in members}
    for rec in members:
        by_version.setdefault(rec.get('version') or 'unknown',
                              []).append(rec.get('node'))
        compat[rec.get('node')] = Compat.from_record(rec)
    if len(by_version) < 2:
        return None

    def rank(version):
        # protocol first; then a member that states its compat is newer
        # than one from before the contract (whose version string may even
        # sort higher: pbr's 0.1.0.devN is below the hand-written 0.1.0 of
        # the versions before it); then the version itself (PEP 440)
        nodes_of = by_version[version]
        return (max(compat[n].protocol for n in nodes_of),
                any(isinstance(records[n].get('compat'), dict)
                    for n in nodes_of),
                _pep440(version))
    newest = max(by_version, key=rank)
    nodes = sorted(compat)
    incompatible = [(a, b) for i, a in enumerate(nodes) for b in nodes[i + 1:]
                    if not compat[a].interoperates_with(compat[b])]
    others = [compat[n] for n in nodes]
    return {'versions': {v: sorted(n) for v, n in by_version.items()},
            'newest': newest, 'at_newest': len(by_version[newest]),
            'members': len(nodes),
            'rpc_pin': fanout_cap(others[0], others[1:]),
            'incompatible': incompatible}


def _pep440(version):
    try:
        from packaging import version as _v
        return (1, _v.Version(version), version)
    except Exception:       # not PEP 440, or no packaging: compare last
        return (0, None, version or '')


def fanout_cap(own, members):
    """The fan-out RPC version to send at: the newest version that this
    node (``own``, a :class:`Compat`) and every one of ``members`` serve.
    Falls back to ``'1.0'``, which every version serves."""
    versions = set(own.fanout_rpc)
    for other in members:
        versions &= set(other.fanout_rpc)
    if not versions:
        return '1.0'
    return max(versions, key=_version_tuple)


def everyone_recovers(members, resource_type, operation):
    """True if every member (Compat objects) that recovers claims of
    ``resource_type`` can recover this ``operation`` (members that recover
    nothing of that type never lead its recovery to a loss: a leader
    without a handler keeps the claim for another one). A member that does
    not say (a version older than this contract) recovers every claim but
    those introduced after it (:data:`NEW_CLAIMS`)."""
    name = '%s:%s' % (resource_type, operation)
    prefix = resource_type + ':'
    for other in members:
        if other.recovers is None:
            if name in NEW_CLAIMS:
                return False
            continue
        of_type = {r for r in other.recovers if r.startswith(prefix)}
        if of_type and name not in of_type and prefix + '*' not in of_type:
            return False
    return True


#: Claimed operations introduced after this contract: a member that does
#: not advertise what it recovers is taken not to recover these.
NEW_CLAIMS = frozenset(['share:canary_resize'])


def canary():
    """True if this process plays the next protocol (test only)."""
    return os.environ.get(CANARY_ENV, '').strip() not in ('', '0')


#: What the canary adds: the next protocol with a newer fan-out RPC
#: (``1.1``: items carry their deadline), a newer claim format (2: the
#: record says which protocol wrote it) and one new claimed operation.
CANARY_FANOUT_RPC = '1.1'
CANARY_CLAIM_FORMAT = 2
CANARY_CLAIM = ('share', 'canary_resize')


def local(version=None, recovers=None):
    """This node's :class:`Compat` (the canary's under
    ``HACLUSTER_CANARY_PROTOCOL``)."""
    formats = dict(FORMATS)
    rpc = list(FANOUT_RPC)
    protocol, min_protocol = PROTOCOL, MIN_PROTOCOL
    if canary():
        protocol = PROTOCOL + 1
        formats['claim'] = (formats['claim'][0], CANARY_CLAIM_FORMAT)
        rpc.append(CANARY_FANOUT_RPC)
        if recovers is not None:
            recovers = set(recovers) | {'%s:%s' % CANARY_CLAIM}
    return Compat(protocol, min_protocol, formats, rpc, recovers, version,
                  FEATURES)
